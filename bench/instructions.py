"""Instructions per packet of the whole pipeline, this checkout against another one (valgrind
callgrind's instruction count): a before/after check of a hot-path change that the load of
a shared machine cannot blur, as it blurs packets/s.

    .venv/bin/python bench/instructions.py /tmp/base ../shared/corpus/zeek/testing/btest/Traces/smb/smb2.pcap
    .venv/bin/python bench/instructions.py --reader /tmp/base CAPTURE

``/tmp/base`` is the other version's tree (e.g. ``git archive main | tar -x -C /tmp/base``); it
runs on this checkout's interpreter with PYTHONPATH pointing at it. Each version runs the
capture 0 and REPEATS times (bulk lane on) so start-up and imports cancel out. By default the
packets are read beforehand (the pipeline alone); ``--reader`` counts reader and pipeline
together, fed as replay feeds them (the batch entry where the tree has one, else frame by frame).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REPEATS = 4
# One run of the pipeline over the capture, packets read beforehand (the reader is not measured).
RUN = """
import sys
from sensor.capture.pcapfile import open_capture
from sensor.pipeline import Pipeline
packets = list(open_capture(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    pipe = Pipeline()
    feed = pipe.feed
    for ts, linktype, data, frame in packets:
        feed(ts, linktype, data, frame)
    pipe.close()
"""

# Reader and pipeline together, as `dfs-sensor replay` runs them.
RUN_READER = """
import sys
from sensor.capture.pcapfile import open_capture
from sensor.pipeline import Pipeline
for _ in range(int(sys.argv[2])):
    pipe = Pipeline()
    reader = open_capture(sys.argv[1])
    if hasattr(reader, "replay_into"):
        for _records in reader.replay_into(pipe):
            pass
    else:
        feed = pipe.feed
        for ts, linktype, data, frame in reader:
            feed(ts, linktype, data, frame)
    pipe.close()
"""


def instructions(tree: Path, script: str, capture: str, repeats: int) -> int:
    # A fixed hash seed: set and dict layouts (and so their instruction counts) repeat.
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
    result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                             sys.executable, script, capture, str(repeats)],
                            env=env, capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", result.stderr).group(1))


def per_packet(tree: Path, script: str, capture: str, packets: int) -> float:
    return (instructions(tree, script, capture, REPEATS) - instructions(tree, script, capture, 0)) / (REPEATS * packets)


if __name__ == "__main__":
    args = sys.argv[1:]
    with_reader = args[:1] == ["--reader"]
    if with_reader:
        args = args[1:]
    base = Path(args[0]).resolve()
    from sensor.capture.pcapfile import open_capture

    with tempfile.NamedTemporaryFile("w", suffix=".py") as script:
        script.write(RUN_READER if with_reader else RUN)
        script.flush()
        print("| capture | packets | base instr/packet | this instr/packet | change |")
        print("|---|---:|---:|---:|---:|")
        for capture in args[1:]:
            packets = sum(1 for _ in open_capture(capture))
            before = per_packet(base, script.name, capture, packets)
            after = per_packet(REPO, script.name, capture, packets)
            print(f"| {Path(capture).name} | {packets} | {before:,.0f} | {after:,.0f} | {(after / before - 1) * 100:+.2f} % |")
