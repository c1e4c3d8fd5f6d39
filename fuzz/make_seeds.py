"""Rebuild the committed seed corpus fuzz/seeds/<target>/ from the lab captures in pcaps/.

    .venv/bin/python -m fuzz.make_seeds

Seeds are real traffic, cut small (SEED_BYTES) so the CI run stays fast.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from fuzz.targets import ndr_input, pack_records
from sensor.capture.pcapfile import open_capture
from sensor.dcerpc.association import RpcAssociation
from sensor.dcerpc.events import RpcCall
from tests.dcerpc.dcerpc_wire import FLOW
from tests.robustness.recut import extract_flows
from tests.robustness.test_dcerpc_refragment import pipe_streams

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "fuzz" / "seeds"
# Bytes per seed: big enough for a whole session setup + bind + request, small enough that
# hundreds of mutations of it run in seconds.
SEED_BYTES = 16_384
CAPTURES = ["dfscoerce-smb21.pcap", "dfscoerce-smb1.pcap", "dfscoerce-nbss139.pcap", "dfscoerce-fragmented.pcap",
            "dfscoerce-rpc-integrity.pcap", "dfscoerce-ipv6.pcap", "dfscoerce-vlan.pcap"]


def write(target: str, name: str, data: bytes) -> None:
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data[:SEED_BYTES])


def main() -> None:
    shutil.rmtree(SEEDS, ignore_errors=True)
    for name in CAPTURES:
        stem = name.removesuffix(".pcap")
        path = ROOT / "pcaps" / name
        packets = list(open_capture(path))
        big = [p for p in packets if len(p[2]) > 200][:3]
        for i, (_, _, frame, _) in enumerate(big):
            write("frames", f"{stem}-{i}", frame)
        items, size = [], 0
        for _, _, frame, _ in packets:
            if size + len(frame) + 2 > SEED_BYTES:
                break
            items.append((False, frame))
            size += len(frame) + 2
        write("pipeline", stem, pack_records(items))
        for i, flow in enumerate(extract_flows(path)):
            write("smb", f"{stem}-{i}", pack_records([(c, d[:4096]) for c, d in flow.turns]))
        if "ipv6" in name or "vlan" in name:
            continue
        for i, turns in enumerate(pipe_streams(name)):
            write("dcerpc", f"{stem}-{i}", pack_records(turns))
            assoc = RpcAssociation(FLOW)
            for c, d in turns:
                for ev in assoc.feed(c, 0.0, d, 0):
                    if isinstance(ev, RpcCall) and ev.stub:
                        write("ndr", f"{stem}-{i}-{ev.call_id}", ndr_input(ev.opnum, ev.little_endian, ev.stub))
        write("capture_file", f"{stem}.pcap", path.read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        ng = Path(tmp) / "x.pcapng"
        subprocess.run(["editcap", "-F", "pcapng", str(ROOT / "pcaps" / CAPTURES[0]), str(ng)], check=True)
        write("capture_file", "dfscoerce-smb21.pcapng", ng.read_bytes())


if __name__ == "__main__":
    main()
