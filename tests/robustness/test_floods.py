"""Resource exhaustion: each flood drives one stage's table past its bound. The table stays at
its bound, the oldest state goes with a counter, and the heap peak (tracemalloc) stays under
the bound documented here and in the README."""
from __future__ import annotations

import socket

from sensor.dcerpc.association import (
    MAX_CALLS_IN_FLIGHT,
    MAX_STUB_BYTES,
    RpcAssociation,
)
from sensor.net.flows import FlowSettings, FlowTable
from sensor.smb.connection import SmbConnection
from sensor.smb.events import PipeClosed, PipeData, PipeOpened
from sensor.smb.pipes import PIPES_LIMIT
from tests.dcerpc import dcerpc_wire as wire
from tests.robustness.memory import peak_of
from tests.smb.conftest import FLOW
from tests.smb.test_smb2 import (
    FID,
    create,
    create_response,
    login_and_open,
    play,
    write,
)

# Documented worst cases (README): a half-open flow costs at most this much heap ...
FLOW_BYTES = 2048
# ... and a pipe's table entry plus its events at most this much.
PIPE_BYTES = 4096
SYN = 0x02


def test_half_open_flood_keeps_the_table_at_its_bound_and_evicts_oldest():
    limit, sent = 3000, 12000
    table = FlowTable(FlowSettings(max_flows=limit))
    server = socket.inet_aton("10.0.0.10")

    def flood():
        anomalies = 0
        for i in range(sent):
            src = socket.inet_aton(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
            anomalies += len(table.feed(1.0, (src, server, 1024 + i % 60000, 445, i, 0, SYN, b"", ()), i))
        return anomalies
    anomalies, peak = peak_of(flood)
    assert table.active == limit
    assert table.stats["flows_evicted"] == sent - limit == anomalies
    assert table.stats["anomaly.flow_table_full"] == sent - limit
    assert peak < limit * FLOW_BYTES, f"{peak / limit:.0f} bytes per half-open flow"


def test_never_finished_fragments_keep_calls_in_flight_and_stub_bounded():
    assoc = RpcAssociation(FLOW)
    stub = b"\xaa" * 8192
    calls = 300

    def flood():
        for call_id in range(calls):   # first fragments whose last never comes
            assoc.feed(True, 0.0, wire.request(call_id, 12, stub, flags=0x01), call_id)
    _, peak = peak_of(flood)
    assert assoc.stats["anomaly.dcerpc_too_many_calls"] == calls - MAX_CALLS_IN_FLIGHT
    assert peak < MAX_CALLS_IN_FLIGHT * len(stub) * 2

    one = RpcAssociation(FLOW)
    fragments = 3 * MAX_STUB_BYTES // len(stub)

    def endless():
        one.feed(True, 0.0, wire.request(7, 12, stub, flags=0x01), 0)
        for i in range(fragments):
            one.feed(True, 0.0, wire.request(7, 12, stub, flags=0x00), i)
    _, peak = peak_of(endless)
    assert one.stats["anomaly.dcerpc_stub_truncated"] == 1
    assert peak < 2 * MAX_STUB_BYTES


def test_pipes_that_never_close_evict_the_oldest_so_a_new_pipe_is_still_seen():
    """An attacker opens PIPES_LIMIT pipes and never closes them, then opens netdfs: the new pipe
    must still be tracked (oldest evicted, counted), or the coercion after it goes unseen."""
    conn = SmbConnection(FLOW)
    extra = 100
    script = login_and_open("srvsvc")[:-2]
    for i in range(PIPES_LIMIT + extra):
        fid = i.to_bytes(16, "little")
        script += [(True, create(10 + i, "srvsvc")), (False, create_response(10 + i, fid))]

    def flood():
        return play(conn, script)
    events, peak = peak_of(flood)
    closed = [e for e in events if isinstance(e, PipeClosed)]
    assert len(closed) == extra and conn.stats["anomaly.pipe_table_full"] == extra
    assert closed[0].pipe[3] == (0).to_bytes(16, "little")      # the oldest went first
    assert peak < (PIPES_LIMIT + extra) * PIPE_BYTES
    mid = 10 + PIPES_LIMIT + extra
    events = play(conn, [(True, create(mid, "netdfs")), (False, create_response(mid, FID)),
                         (True, write(mid + 1, FID, wire.bind(1, [(0, wire.NETDFS, (3, 0), wire.NDR20)])))])
    assert [e.name for e in events if isinstance(e, PipeOpened)] == ["netdfs"]
    assert [e.pipe[3] for e in events if isinstance(e, PipeData)] == [FID]
