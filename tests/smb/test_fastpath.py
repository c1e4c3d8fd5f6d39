"""The SMB fast path (sensor/smb/fastpath.py) and its SMB2 header triage change nothing but speed:
the same records and counters with them and without, on every shipped capture (the coercion
family's too), on the small-message lab workload (slow; there also compiled core vs pure Python,
sensor/compiled.py, and the reader's batch entry vs frame by frame), on real attack flows re-cut at the TCP
layer, on flows the flow memory budget evicts, and on a
script of the cases the triage must leave to the full parser (pipe adoption by a DCE/RPC
write, pipe closes and reads, a tree reconnected as IPC$, malformed and unmatched messages);
and on messages split over segments, which the fast path keeps in the NetBIOS stage's buffer
(cut at several points, under a full message budget, with a segment lost inside one, the
attack flows cut into small segments), and on a 4-tuple reused after its flow ended.
Every capture and the corpus with every fast path on vs off: tests/net/test_lane.py.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor import compiled
from sensor.events import RpcCallEvent
from sensor.net.frames import LINKTYPE_ETHERNET
from sensor.pipeline import Pipeline, PipelineSettings
from sensor.smb.connection import SmbConnection
from sensor.smb.events import KerberosAuthentication, NtlmAuthentication, SmbSession
from tests.conftest import PCAPS, ROOT, decode_capture
from tests.net.test_lane import (ATTACKS, KNOBS, MSS, assert_batch_same, bulk_frames, decode_pure, decode_readable,
                                 run_frames)
from tests.robustness.recut import event_facts, extract_flows
from tests.robustness.test_flow_memory import feed_flows
from tests.smb.conftest import FLOW, nbss
from tests.smb.test_smb2 import (DISK_FID, FID, RPC_BIND, close, create, create_response, login_and_open, read,
                                 read_response, tree_connect, write, write_response)

# The small-message lab workload: built into pcaps/small by pcaps/lab/build-small (root, the lab,
# about 70 s; not in CI), or the benchmark machine's copy beside the checkout.
SMALL = os.environ.get("DFS_SENSOR_SMALL") or next(
    (str(p) for p in (PCAPS / "small" / "small.pcap", ROOT.parent / "bench-data" / "small" / "small.pcap")
     if p.is_file()), str(PCAPS / "small" / "small.pcap"))
# Captures whose frames the fast path cannot match: IPv6, and only 802.1Q-tagged frames; the
# family's ncacn_ip_tcp captures have no SMB flow.
NOT_ON_THE_FAST_PATH = {"dfscoerce-ipv6.pcap", "dfscoerce-vlan.pcap", "efsr-tcp.pcap", "par-tcp.pcap",
                        "efsr-tcp-rpc-privacy.pcap", "par-tcp-rpc-privacy.pcap"}
# The DFSCoerce captures and the coercion family's (issue 13: other pipes, NTLM and Kerberos
# back-authentication over SMB, SMB3 encryption).
SHIPPED = sorted(PCAPS.glob("*.pcap")) + sorted((PCAPS / "family").glob("*.pcap"))


def fast_both_ways(run):
    """(records, stats, frames on the fast path) with the fast path, then without."""
    results = []
    for fast in (True, False):
        records, stats = run(PipelineSettings(fast_path=fast))
        results.append((records, stats, stats.pop("smb_fast_path_packets", 0)))
    return results


def assert_same(run) -> tuple[list, int]:
    (records, stats, used), (plain, plain_stats, plain_used) = fast_both_ways(run)
    assert plain_used == 0
    assert records == plain
    assert stats == plain_stats
    return records, used


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_captures_same_with_and_without_the_fast_path(path):
    _, used = assert_same(lambda s: decode_readable(path, s))
    assert used > 0 or path.name in NOT_ON_THE_FAST_PATH


@pytest.mark.parametrize("name,kind", [("efsr-backauth-kerberos.pcap", KerberosAuthentication),
                                       ("efsr-backauth-smb.pcap", NtlmAuthentication)])
def test_session_setups_reach_the_full_parser_on_the_fast_path(name, kind):
    """The back-authentication's SESSION_SETUP (a Kerberos AP-REQ, an NTLMSSP AUTHENTICATE)
    arrives on a flow the fast path follows, and still gives its record."""
    records, used = assert_same(lambda s: decode_readable(PCAPS / "family" / name, s))
    assert used > 0
    assert any(isinstance(r, kind) for r in records)


def test_flows_the_memory_budget_evicts_leave_the_fast_path_and_the_records_are_the_same():
    """256 KiB of flow state: 60 open SMB connections (the lab's impacket connection,
    re-addressed; tests/robustness/test_flow_memory.py) fill it, then one client leaves 1500
    READs unanswered, each taken on the fast path and charged there, which evicts the others.
    No evicted flow stays armed on the fast path or the bulk lane, each eviction is routed at
    the frame that made it, and records and counters are the same with the fast path and without."""
    script = login_and_open() + [(True, read(100 + n, DISK_FID, tree_id=6)) for n in range(1500)]
    flood = bulk_frames(FLOW, [(side, nbss(message)) for side, message in script], None, {})

    def run(settings: PipelineSettings):
        pipeline = Pipeline(replace(settings, flow_memory_budget=256 << 10))

        def nothing_evicted_stays_armed(_n: int = 0) -> None:
            assert not pipeline._evicted           # routed at the frame that evicted them
            live = {id(state) for state in pipeline._flows.values()}
            if pipeline.fast is not None:
                assert {id(entry.owner) for entry in pipeline.fast.entries.values()} <= live
            assert {id(owner) for owner in pipeline.lane._owners} <= live
        frame, records = feed_flows(pipeline, 0, 60, after_each=nothing_evicted_stays_armed)
        for n, data in enumerate(flood, frame + 1):
            records += pipeline.feed(1_700_000_010.0 + n / 1000, LINKTYPE_ETHERNET, data, n)
            nothing_evicted_stays_armed()
        records += pipeline.close()
        return records, pipeline.stats
    records, used = assert_same(run)
    evicted = [r for r in records if getattr(r, "name", "") == "flow_memory_budget_exceeded"]
    assert len(evicted) >= 55 and used > 1500


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(SMALL), reason="the small-message lab capture is not built "
                    "(flock /tmp/dfs-lab.lock pcaps/lab/build-small, as root)")
def test_small_message_workload_same_and_almost_all_on_the_fast_path():
    from pathlib import Path

    path = Path(SMALL)
    records, used = assert_same(lambda s: decode_readable(path, s))
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert used > 0.95 * manifest["packets"]
    calls = {(e.net_capture_frame, e.action_rpc_func_opnum) for e in records if isinstance(e, RpcCallEvent)}
    for call in manifest["calls"]:
        if call["decodable"]:
            assert (call["frame"], call["opnum"]) in calls
    # The compiled core (when built) gives the pure-Python modules' records and counters.
    if compiled.COMPILED:
        assert decode_readable(path, PipelineSettings()) == decode_pure([path])[0]
    # The reader's batch entry (replay) gives the per-frame path's, with every fast path and none.
    assert_batch_same(path)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(ATTACKS), knobs=KNOBS, seed=st.integers(0, 2**32 - 1))
def test_any_recut_of_an_attack_flow_gives_the_same_records_with_and_without_the_fast_path(name, knobs, seed):
    rng = random.Random(seed)
    frames = [f for flow in extract_flows(PCAPS / name) for f in bulk_frames(flow.key, flow.turns, rng, knobs)]
    assert_same(lambda s: run_frames(frames, s))


def triage_script() -> list[tuple[bool, bytes]]:
    """Every message in its own turn: what the triage must hand to the full parser, between
    plain disk-share traffic it takes."""
    script = login_and_open()                                  # pipe FID open on IPC$ (tree 5)
    script += [
        (True, create(20, "docs\\a.txt", tree_id=6)), (False, create_response(20, DISK_FID, tree_id=6)),
        (True, write(21, DISK_FID, b"plain file bytes", tree_id=6)), (False, write_response(21, 16)),
        (True, read(22, DISK_FID, tree_id=6)), (False, read_response(22, b"plain file bytes")),
        # a write whose data starts a DCE/RPC PDU on a handle never opened: adopted as a pipe
        (True, write(23, bytes(16 * [0xAB]), RPC_BIND, tree_id=6)), (False, write_response(23, len(RPC_BIND))),
        # the open pipe's traffic, then its close
        (True, write(24, FID, RPC_BIND)), (False, write_response(24, len(RPC_BIND))),
        (True, read(25, FID)), (False, read_response(25, b"\x05\x00\x0c\x03" + b"A" * 60)),
        (True, close(26, FID)), (False, close(26, FID, response=True)),
        (True, close(27, DISK_FID, tree_id=6)), (False, close(27, DISK_FID, response=True)),
        # a CREATE on tree 6, then tree 6 reconnected as IPC$ before the CREATE's answer
        (True, create(28, "srvsvc", tree_id=6)),
        (True, tree_connect(29, "\\\\10.0.0.10\\IPC$", 0)), (False, tree_connect(29, None, 6, share_type=2)),
        (False, create_response(28, bytes(16 * [0xCD]), tree_id=6)),
        # malformed and unmatched
        (False, write_response(99, 4)),                        # no request
        (True, write(30, DISK_FID, b"x" * 40, tree_id=6)[:-20]),   # data runs past the message
        (False, create_response(31, DISK_FID, tree_id=6)[:100]),   # no request, short
    ]
    return script


def test_triage_leaves_pipes_adoption_reconnects_and_broken_messages_to_the_parser():
    turns = [(side, nbss(message)) for side, message in triage_script()]
    frames = bulk_frames(FLOW, turns, None, {})
    records, stats = run_frames(frames, PipelineSettings(fast_path=True))
    assert stats["smb_fast_path_packets"] >= len(turns) // 2
    assert_same(lambda s: run_frames(frames, s))
    assert stats["smb_pipes_opened"] == 2          # netdfs, and srvsvc on the reconnected tree
    assert stats["smb_pipes_adopted"] == 1
    assert stats["anomaly.smb2_unmatched_response"] == 2
    assert stats["anomaly.smb2_bad_structure"] == 1


# Cut inside the SMB2 header: the NetBIOS stage buffers the first part and reassembles the message.
SPLIT_AT = 4 + 36


def test_triage_of_messages_reassembled_from_segments_leaves_the_same_cases_to_the_parser():
    """The same script with every message split over two segments: the NetBIOS stage
    reassembles each and the header triage (Smb2Protocol.quick_whole) sees it whole, as the
    fast path's sees a whole one; without the fast path setting the full parser takes all."""
    turns = []
    for side, message in triage_script():
        data = nbss(message)
        turns += [(side, data[:SPLIT_AT]), (side, data[SPLIT_AT:])]
    frames = bulk_frames(FLOW, turns, None, {})
    records, stats = run_frames(frames, PipelineSettings(fast_path=True))
    assert_same(lambda s: run_frames(frames, s))
    assert stats["nbss_messages"] == len(turns) // 2
    assert stats["smb_pipes_opened"] == 2
    assert stats["smb_pipes_adopted"] == 1
    assert stats["anomaly.smb2_unmatched_response"] == 2
    assert stats["anomaly.smb2_bad_structure"] == 1


# -- messages split over segments, kept in the NetBIOS stage's buffer by the fast path ----------
def cut_turns(script: list[tuple[bool, bytes]], cuts: tuple[int, ...]) -> list[tuple[bool, bytes]]:
    """Each message a session message cut after each of ``cuts`` bytes that falls inside it."""
    turns = []
    for side, message in script:
        data = nbss(message)
        bounds = [0, *(c for c in cuts if c < len(data)), len(data)]
        turns += [(side, data[a:b]) for a, b in zip(bounds, bounds[1:])]
    return turns


def observed(frames: list[bytes], settings: PipelineSettings):
    """``run_frames`` with every bind and request the DCE/RPC stage saw appended (pipe, kind)."""
    seen: list = []
    records, stats = run_frames(frames, replace(settings, rpc_observer=lambda flow, pipe, ev: seen.append(
        (pipe, type(ev).__name__, getattr(ev, "opnum", None)))))
    return records + seen, stats


@pytest.mark.parametrize("cuts", [(8,), (8, 70, 130), (64, 200), (100, 101, 102)], ids=str)
def test_messages_split_over_several_segments_are_taken_and_give_what_whole_ones_give(monkeypatch, cuts):
    """Every message of the triage script cut after ``cuts`` bytes (8: only the session header
    and protocol id in the first segment): the fast path takes every segment it takes with the
    messages whole, without the NetBIOS stage's ``feed`` (the start of a message and its next
    bytes kept in its buffer, the message handed on when its last segment comes); the pipe
    traffic among them (reassembled, then parsed in full) opens, adopts and feeds the same
    pipes (the DCE/RPC stage gets the same bytes: the same bad headers, the same bytes skipped
    to resync), and every counter but the frame counts is the one with every message in one
    segment; with the fast path and without, the same."""
    fed = []
    feed = SmbConnection.feed
    monkeypatch.setattr(SmbConnection, "feed", lambda self, *args: fed.append(args) or feed(self, *args))
    turns = cut_turns(triage_script(), cuts)
    frames = bulk_frames(FLOW, turns, None, {})
    _, stats = run_frames(frames, PipelineSettings(fast_path=True))
    split_fed = len(fed)
    assert_same(lambda s: run_frames(frames, s))
    whole_turns = [(side, nbss(message)) for side, message in triage_script()]
    fed.clear()
    _, whole_stats = run_frames(bulk_frames(FLOW, whole_turns, None, {}), PipelineSettings())
    assert split_fed == len(fed) <= 1        # the first segment, before the flow is followed
    assert stats["smb_fast_path_packets"] - whole_stats["smb_fast_path_packets"] == len(turns) - len(whole_turns)
    assert stats["nbss_messages"] == len(whole_turns)
    for frame_counts in (stats, whole_stats):
        for name in ("packets", "bytes", "smb_fast_path_packets"):
            del frame_counts[name]
    assert stats == whole_stats
    assert stats["smb_pipes_opened"] == 2 and stats["smb_pipes_adopted"] == 1
    assert stats["anomaly.dcerpc_bad_header"] > 0 and stats["resync_bytes_skipped"] > 0


WRITE_SIZE = 4096       # a split WRITE of the small-message workload: 3 segments of MSS


def writes(flow_port: int, count: int, fid: bytes = DISK_FID, tree_id: int = 6) -> tuple:
    """(flow key, turns): a login, then ``count`` WRITEs of WRITE_SIZE bytes and their answers."""
    script = login_and_open()
    for n in range(count):
        script += [(True, write(100 + n, fid, bytes([n]) * WRITE_SIZE, tree_id=tree_id)),
                   (False, write_response(100 + n, WRITE_SIZE, tree_id=tree_id))]
    return replace(FLOW, client_port=flow_port), [(side, nbss(message)) for side, message in script]


def test_messages_kept_over_segments_under_a_full_message_budget_are_the_same():
    """Three connections write 4 KiB messages in MSS segments at the same time under an 8 KiB
    message budget: keeping a segment would evict another connection's partial message, so
    that segment goes through the NetBIOS stage, which evicts and reports it; the records and
    counters are the same with the fast path and without."""
    flows = [bulk_frames(key, turns, None, {}) for key, turns in (writes(port, 4) for port in (50000, 50001, 50002))]
    frames = [f for group in zip(*flows) for f in group]

    def run(settings: PipelineSettings):
        pipe = Pipeline(settings)
        pipe.message_budget.limit = 8 << 10
        records = []
        for i, data in enumerate(frames, 1):
            records.extend(pipe.feed(1_700_000_000.0 + i / 1000, LINKTYPE_ETHERNET, data, i))
        records.extend(pipe.close())
        return records, pipe.stats
    records, used = assert_same(run)
    _, stats = run(PipelineSettings())
    assert stats["anomaly.nbss_message_budget_exceeded"] > 0 and stats["nbss_messages_dropped_by_budget"] > 0
    assert used > len(frames) // 2


@pytest.mark.parametrize("fid,tree_id", [(DISK_FID, 6), (FID, 5)], ids=["disk", "pipe"])
def test_a_segment_lost_inside_a_message_kept_over_segments_resyncs_as_without_the_fast_path(fid, tree_id):
    """The middle segment of the second 4 KiB WRITE (to a disk file; to the open pipe) is lost
    and the server's answer acknowledges past it: the start kept by the fast path is dropped
    by the NetBIOS stage's gap handling (a resync), exactly as when the stage kept it itself."""
    key, turns = writes(50000, 3, fid, tree_id)
    message = next(data for side, data in turns if side and len(data) > WRITE_SIZE and data[-1] == 1)
    lost = message[MSS:2 * MSS]
    frames = [f for f in bulk_frames(key, turns, None, {}) if not f.endswith(lost)]
    records, used = assert_same(lambda s: run_frames(frames, s))
    assert used > 0
    assert any(getattr(r, "name", "") == "smb_resync" for r in records)


AUTHENTICATIONS = (NtlmAuthentication, KerberosAuthentication, SmbSession)


def without_times(records: list) -> list:
    return [replace(r, ts=0.0, **({"frame": 0} if hasattr(r, "frame") else {}))
            for r in records if isinstance(r, AUTHENTICATIONS)]


@pytest.mark.parametrize("mss", [100, 536])
@pytest.mark.parametrize("name", ATTACKS + ["family/efsr-backauth-kerberos.pcap", "family/efsr-backauth-smb.pcap"])
def test_attack_flows_cut_into_small_segments_give_every_call_bind_and_authentication(name, mss):
    """The lab's attack captures with every TCP payload re-cut into ``mss``-byte segments
    (session setups, tree connects, binds and the coercing request all split over segments):
    the same records with the fast path and without, and the same calls, binds and
    requests, and authentications as the capture decoded as it was captured."""
    path = PCAPS / name
    frames = [f for flow in extract_flows(path) for f in bulk_frames(flow.key, flow.turns, None, {}, mss)]
    records, used = assert_same(lambda s: observed(frames, s))
    baseline, _ = observed_capture(path)
    assert used > 0
    assert event_facts(records) == event_facts(baseline) and event_facts(records)
    assert without_times(records) == without_times(baseline)
    assert [r for r in records if isinstance(r, tuple)] == [r for r in baseline if isinstance(r, tuple)]


def observed_capture(path):
    seen: list = []
    records, stats = decode_capture(path, PipelineSettings(rpc_observer=lambda flow, pipe, ev: seen.append(
        (pipe, type(ev).__name__, getattr(ev, "opnum", None)))))
    return records + seen, stats


def test_a_4_tuple_reused_after_its_flow_ended_is_followed_anew():
    """Two connections on the same 4-tuple one after the other, the second interleaved with
    a third connection: the fast path finds the new flow's directions (not the ended flow's,
    which it looked at last) and takes as many of its frames as when it comes alone; the
    same records and counters with the fast path and without."""
    first = bulk_frames(FLOW, cut_turns(triage_script(), (100,)), None, {})
    second = bulk_frames(FLOW, [(side, nbss(message)) for side, message in login_and_open()], None, {})
    key, turns = writes(50001, 2)
    other = bulk_frames(key, turns, None, {})
    frames = first + [f for pair in zip(second, other) for f in pair]

    def taken(frames: list[bytes]) -> int:
        return run_frames(frames, PipelineSettings())[1]["smb_fast_path_packets"]
    records, used = assert_same(lambda s: run_frames(frames, s))
    assert used == taken(first) + taken(second) + taken(other[:len(second)]) > len(second)
    assert sum(isinstance(r, SmbSession) for r in records) >= 2
