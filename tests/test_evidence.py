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


def _alert(key: str, ts: float, *flows: Flow) -> AlertEnvelope:
    return AlertEnvelope(RuleMeta("r", "R", 1, "low", None), ts, [key], "1970-01-01", flows, "s")


CALL = Flow("10.0.0.66", 36620, "10.0.0.10", 445)            # frames 1-37 of CAPTURE
BACK_AUTHENTICATION = Flow("10.0.0.10", 53570, "10.0.0.66", 445)   # frames 38-69; 47 is the AUTHENTICATE


def test_rings_and_directory_stay_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(evidence, "MAX_FRAMES_PER_FLOW", 5)
    frames = list(open_capture(str(CAPTURE)))
    keep = Evidence(str(tmp_path), max_bytes=1)
    for frame in frames:
        keep.observe(*frame)
    assert all(len(ring) <= 5 for ring in keep._rings.values())
    first, second = _alert("a", 1.0, CALL), _alert("b", 2.0, CALL)
    keep.write(first)
    keep.close()
    keep.write(second)
    keep.close()
    assert [p.name for p in tmp_path.iterdir()] == [f"{second.alert_id}.pcap"]   # the oldest went
    assert keep.stats["evidence_removed"] == 1
    keep.write(_alert("c", 3.0, Flow("10.9.9.9", 1, "10.9.9.8", 2)))
    keep.close()
    assert keep.stats["evidence_without_frames"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{second.alert_id}.pcap"]


def _frame_times(pcap: Path, display_filter: str = "frame") -> list[list[str]]:
    return tshark_fields(pcap, display_filter, "frame.time_epoch", "frame.len", "tcp.seq_raw")


@requires_tshark
def test_frames_after_the_alert_are_in_its_pcap(tmp_path):
    """Raised at the back-authentication's AUTHENTICATE (frame 47), as live raises it: the
    pcap also holds what came after it (the SESSION_SETUP answer, the share's use, the
    teardown) and the call's flow before it: every frame of both flows, as in the capture."""
    frames = list(open_capture(str(CAPTURE)))
    keep = Evidence(str(tmp_path))
    alert = _alert("coerced", frames[46][0], CALL, BACK_AUTHENTICATION)
    for frame in frames[:47]:
        keep.observe(*frame)
    keep.write(alert)
    assert not (tmp_path / f"{alert.alert_id}.pcap").exists()     # the window is open
    for frame in frames[47:]:
        keep.observe(*frame)
    keep.tick()                                                    # not yet POST_ALERT_SECONDS
    assert not (tmp_path / f"{alert.alert_id}.pcap").exists()
    keep.close()
    pcap = tmp_path / f"{alert.alert_id}.pcap"
    assert _frame_times(pcap) == _frame_times(CAPTURE)
    assert tshark_fields(pcap, "smb2.cmd == 1 && smb2.flags.response == 1 && smb2.nt_status == 0 && "
                               "tcp.dstport == 53570", "frame.number") != []
    assert not list(tmp_path.glob(".*.part"))


def test_the_window_is_bounded_in_time_and_bytes(tmp_path, monkeypatch):
    frames = list(open_capture(str(CAPTURE)))
    monkeypatch.setattr(evidence, "POST_ALERT_SECONDS", 0.0)       # closed at the next tick
    keep = Evidence(str(tmp_path))
    for frame in frames[:47]:
        keep.observe(*frame)
    closed = _alert("closed", frames[46][0], BACK_AUTHENTICATION)
    keep.write(closed)
    keep.tick()
    for frame in frames[47:]:
        keep.observe(*frame)
    keep.close()
    assert len(list(open_capture(str(tmp_path / f"{closed.alert_id}.pcap")))) == 47 - 37
    monkeypatch.setattr(evidence, "POST_ALERT_SECONDS", 60.0)
    monkeypatch.setattr(evidence, "POST_ALERT_BYTES", 1)           # the first frame after reaches it
    keep = Evidence(str(tmp_path))
    for frame in frames[:47]:
        keep.observe(*frame)
    cut = _alert("cut", frames[46][0], BACK_AUTHENTICATION)
    keep.write(cut)
    for frame in frames[47:]:
        keep.observe(*frame)
    keep.close()
    assert len(list(open_capture(str(tmp_path / f"{cut.alert_id}.pcap")))) == 47 - 37 + 1
    assert keep.stats["evidence_post_alert_cut"] == 1


@requires_tshark
def test_workers_write_their_flows_and_the_parent_merges_them(tmp_path):
    """live --workers: the parent raises the coercion alert and holds no frame; each flow is
    in another worker's rings. The parent's request reaches both; each writes its part (ring,
    then the frames after), and the parent merges them into one pcap in time order."""
    frames = list(open_capture(str(CAPTURE)))
    parent = Evidence(str(tmp_path))
    channels = [evidence.request_channel() for _ in range(2)]
    parent.ask_workers([parent_end for _, parent_end in channels])
    workers = [Evidence(str(tmp_path)) for _ in channels]
    for worker, (worker_end, _) in zip(workers, channels):
        worker.take_requests(worker_end)
    owner = lambda frame: workers[0] if frame[3] <= 37 else workers[1]     # the fanout hash, by flow
    for frame in frames[:47]:
        owner(frame).observe(*frame)
    alert = _alert("coerced", frames[46][0], CALL, BACK_AUTHENTICATION)
    parent.write(alert)
    for worker in workers:
        worker.tick()                     # a worker's idle tick takes the request
    for frame in frames[47:]:
        owner(frame).observe(*frame)
    for worker in workers:
        worker.close()
    assert len(list(tmp_path.glob(f".{alert.alert_id}.*.part"))) == 2
    parent.close()
    pcap = tmp_path / f"{alert.alert_id}.pcap"
    assert _frame_times(pcap) == _frame_times(CAPTURE)
    assert not list(tmp_path.glob(".*.part"))


def test_too_many_open_windows_close_the_oldest_early(tmp_path, monkeypatch):
    monkeypatch.setattr(evidence, "MAX_OPEN_WINDOWS", 1)
    frames = list(open_capture(str(CAPTURE)))
    keep = Evidence(str(tmp_path))
    for frame in frames[:47]:
        keep.observe(*frame)
    oldest, newest = _alert("call", frames[27][0], CALL), _alert("coerced", frames[46][0], BACK_AUTHENTICATION)
    keep.write(oldest)
    keep.write(newest)              # the oldest is written now, with what it had
    assert [p.name for p in tmp_path.glob("*.pcap")] == [f"{oldest.alert_id}.pcap"]
    for frame in frames[47:]:
        keep.observe(*frame)
    keep.close()
    assert len(list(open_capture(str(tmp_path / f"{oldest.alert_id}.pcap")))) == 37
    assert len(list(open_capture(str(tmp_path / f"{newest.alert_id}.pcap")))) == 69 - 37
    assert not list(tmp_path.glob(".*.part"))
