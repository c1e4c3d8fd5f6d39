"""--evidence: a pcap per alert, named by alert_id, that tshark opens and that holds the
attack call's frames (and, for a coercion alert, the back-authentication's flow too): from
the capture file in replay, from the per-flow rings live (tests/live/test_live_outputs.py)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import requires_tshark
from sensor import evidence
from sensor.alerts import AlertEnvelope, Flow, RuleMeta
from sensor.capture.pcapfile import open_capture
from sensor.evidence import Evidence

ROOT = Path(__file__).resolve().parents[1]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
CAPTURE = ROOT / "pcaps" / "coerced-auth-clear.pcap"


def tshark_fields(pcap: Path, display_filter: str, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-r", str(pcap), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@requires_tshark
def test_each_alert_has_a_pcap_with_its_flows(tmp_path):
    directory = tmp_path / "evidence"
    done = subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "s.db"), "--evidence", str(directory),
                           str(CAPTURE)], capture_output=True, text=True, check=True)
    alerts = {a["rule"]["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{a['alert_id']}.pcap" for a in alerts.values())
    rare = directory / f"{alerts['dfscoerce-rare-dfsnm-root-call']['alert_id']}.pcap"
    # the attack call, as tshark decodes it, byte for byte the capture's frame
    [call] = tshark_fields(rare, "netdfs && dcerpc.pkt_type == 0", "dcerpc.opnum", "frame.time_epoch", "frame.len")
    [original] = tshark_fields(CAPTURE, "netdfs && dcerpc.pkt_type == 0", "dcerpc.opnum", "frame.time_epoch",
                               "frame.len")
    assert call == original and call[0] == "13"
    # replay reads the capture again: the flow whole, the fault that answered the call included
    flow = f"tcp.port == {alerts['dfscoerce-rare-dfsnm-root-call']['src_port']}"
    assert tshark_fields(rare, "frame", "frame.time_epoch") == tshark_fields(CAPTURE, flow, "frame.time_epoch")
    assert tshark_fields(rare, "dcerpc.pkt_type == 3", "dcerpc.cn_status") != []
    coercion = directory / f"{alerts['coercion-confirmed']['alert_id']}.pcap"
    streams = {tuple(row) for row in tshark_fields(coercion, "tcp.flags.syn == 1 && tcp.flags.ack == 0",
                                                   "ip.src", "ip.dst", "tcp.dstport")}
    assert streams == {("10.0.0.66", "10.0.0.10", "445"), ("10.0.0.10", "10.0.0.66", "445")}
    assert tshark_fields(coercion, "ntlmssp.auth.username == \"DC01$\"", "ntlmssp.auth.username") == [["DC01$"]]
    assert tshark_fields(coercion, "netdfs && dcerpc.pkt_type == 0", "dcerpc.opnum") == [["13"]]


def test_rings_and_directory_stay_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(evidence, "MAX_FRAMES_PER_FLOW", 5)
    frames = list(open_capture(str(CAPTURE)))
    keep = Evidence(str(tmp_path), max_bytes=1)
    for frame in frames:
        keep.observe(*frame)
    assert all(len(ring) <= 5 for ring in keep._rings.values())
    rule = RuleMeta("r", "R", 1, "low", None)
    first = AlertEnvelope(rule, 1.0, ["a"], "1970-01-01", (Flow("10.0.0.66", 36620, "10.0.0.10", 445),), "s")
    second = AlertEnvelope(rule, 2.0, ["b"], "1970-01-01", (Flow("10.0.0.66", 36620, "10.0.0.10", 445),), "s")
    assert keep.write(first) is not None and keep.write(second) is not None
    assert [p.name for p in tmp_path.iterdir()] == [f"{second.alert_id}.pcap"]   # the oldest went
    assert keep.stats["evidence_removed"] == 1
    unknown = AlertEnvelope(rule, 3.0, ["c"], "1970-01-01", (Flow("10.9.9.9", 1, "10.9.9.8", 2),), "s")
    assert keep.write(unknown) is None and keep.stats["evidence_without_frames"] == 1
