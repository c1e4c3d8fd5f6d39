"""Where live's time per packet goes: the ring read path against the pipeline (issue 14, part 4).

    .venv/bin/python bench/live_split.py [CAPTURE] [--frames 50000] [--runs 5]     # root

The first FRAMES frames of CAPTURE (default: the small-message workload, pcaps/small/small.pcap)
are sent with ``tcpreplay --topspeed`` over a veth into a ``LiveCapture`` (with a ring of
RING_MB, so that they all fit) that is not being read, so every frame waits in the ring (0
drops is checked), then the ring is drained and the process's CPU time (user + sys) counted,
in three ways:

- ``ring read``: the read path alone (``LiveCapture.blocks``, the frames counted);
- ``ring -> sensor``: the read path feeding a ``Sensor`` as ``dfs-sensor live`` does
  (``service.supervised`` into ``Sensor.process``: pipeline, store, detector);
- ``file -> sensor``: the same frames from the file through ``dfs-sensor replay``'s path
  (the mmap reader feeding the same ``Sensor``), for the pipeline's own cost.

No sender competes for the CPU while it is measured, so the numbers are the sensor's own cost
per packet; the rate one worker sustains live is about 1 / (ring -> sensor) per core, less what
the kernel's softirq work for the same packets takes on that core. Median of RUNS.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_curve import HOST, NAMESPACE, PEER, veth_down, veth_up  # noqa: E402

from sensor.capture.live import LiveCapture  # noqa: E402
from sensor.capture.pcapfile import open_capture  # noqa: E402
from sensor.config import load_config  # noqa: E402
from sensor.outputs import open_outputs  # noqa: E402
from sensor.sensor import Sensor  # noqa: E402
from sensor.daemon import Signals  # noqa: E402
from sensor.service import supervised  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Room for 50,000 frames of either workload (up to ~1.5 KB of ring each).
RING_MB = 256
# The ring hands over a partly filled block after sensor.capture.live.RING_BLOCK_TIMEOUT_MS.
SETTLE_SECONDS = 0.5


def cpu() -> float:
    """This process's user + sys CPU seconds (ns resolution, unlike os.times' clock ticks)."""
    return time.process_time()


class StopAfter(Signals):
    """The service's signal flags, "stop" once the capture has delivered ``frames``."""

    def __init__(self, live: LiveCapture, frames: int) -> None:
        super().__init__()
        self.live, self.frames = live, frames

    def stopping(self) -> bool:
        return self.live.stats["capture.frames"] >= self.frames


def fresh_sensor(tmp: Path) -> Sensor:
    for name in ("s.db", "s.db-wal", "s.db-shm"):
        (tmp / name).unlink(missing_ok=True)
    return Sensor(load_config(None, {"db": str(tmp / "s.db")}), open_outputs(None, None))


def parked(capture_file: Path, frames: int) -> LiveCapture:
    """A capture whose ring holds all ``frames`` of the file, none read yet."""
    live = LiveCapture([HOST], ring_mb=RING_MB)
    subprocess.run(["ip", "netns", "exec", NAMESPACE, "tcpreplay", "-q", "--topspeed", "-i", PEER,
                    str(capture_file)], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while live.kernel_counters()[HOST].packets < frames:
        assert time.monotonic() < deadline, live.kernel_counters()
        time.sleep(0.05)
    time.sleep(SETTLE_SECONDS)
    counters = live.kernel_counters()[HOST]
    assert counters.drops == 0 and counters.packets == frames, f"the ring did not hold the file: {counters}"
    return live


def ring_read(capture_file: Path, frames: int, tmp: Path) -> float:
    live = parked(capture_file, frames)
    started = cpu()
    for block in live.blocks(lambda: live.stats["capture.frames"] >= frames):
        pass
    spent = cpu() - started
    assert live.stats["capture.frames"] == frames
    live.close()
    return spent


def ring_sensor(capture_file: Path, frames: int, tmp: Path) -> float:
    live = parked(capture_file, frames)
    sensor = fresh_sensor(tmp)
    started = cpu()
    sensor.process(supervised(live, StopAfter(live, frames), sensor.outputs, lambda: None, 0, sensor))
    spent = cpu() - started
    assert sensor.pipeline.stats["packets"] == frames
    sensor.finish()
    live.close()
    return spent


def file_sensor(capture_file: Path, frames: int, tmp: Path) -> float:
    sensor = fresh_sensor(tmp)
    with open_capture(str(capture_file)) as reader:
        started = cpu()
        sensor.process(reader)
        spent = cpu() - started
    assert sensor.pipeline.stats["packets"] == frames
    sensor.finish()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", type=Path, nargs="?", default=REPO / "pcaps" / "small" / "small.pcap")
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dfs-live-split-") as tmp_name:
        tmp = Path(tmp_name)
        capture_file = tmp / f"{args.capture.stem}-{args.frames}.pcap"
        subprocess.run(["editcap", "-F", "pcap", "-r", str(args.capture), str(capture_file), f"1-{args.frames}"],
                       check=True)
        with open_capture(str(capture_file)) as reader:
            frames = sum(1 for _ in reader)
        veth_up()
        try:
            print(f"{capture_file.name}: {frames:,} frames, median of {args.runs}, load average "
                  f"{os.getloadavg()[0]:.2f} at the start")
            print("| path | CPU s | us/packet | packets/s per core |")
            print("|---|---:|---:|---:|")
            for name, measure in (("ring read", ring_read), ("ring -> sensor", ring_sensor),
                                  ("file -> sensor", file_sensor)):
                spent = statistics.median(measure(capture_file, frames, tmp) for _ in range(args.runs))
                print(f"| {name} | {spent:.3f} | {spent / frames * 1e6:.2f} | {frames / spent:,.0f} |", flush=True)
            print(f"load average {os.getloadavg()[0]:.2f} at the end")
        finally:
            veth_down()


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("live_split.py: needs root (network namespace, AF_PACKET)")
    main()
