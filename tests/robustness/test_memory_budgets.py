"""Process-wide bounds on per-flow buffers: TCP out-of-order queues and NetBIOS partial messages.

Each is bounded per flow too, but per-flow bounds multiply by 100 000 flows. A flood of
flows that each fill their buffer stays under the shared ByteBudget: the oldest holder is
evicted (counted, the charger reports the anomaly), and the heap peak (tracemalloc) stays
near the budget, not near flows x per-flow bound.
"""
from __future__ import annotations

import socket

from sensor.budget import ByteBudget
from sensor.net.flows import FlowSettings, FlowTable
from sensor.net.stream import FlowKey, StreamData, StreamGap
from sensor.smb.connection import SmbConnection
from sensor.smb.events import PipeData
from tests.robustness.memory import peak_of
from tests.smb.conftest import nbss
from tests.smb.test_smb2 import FID, login_and_open, play, write

ACK = 0x10
LIMIT = 2 << 20


def test_out_of_order_flood_stays_under_the_global_budget_and_the_oldest_queue_becomes_a_gap():
    table = FlowTable(FlowSettings(ooo_budget_bytes=LIMIT))
    server = socket.inet_aton("10.0.0.10")
    flows, segments, size = 64, 64, 4096     # 256 KiB queued per flow (its own bound: 1 MiB)
    isn = 1_000_000

    def flood():
        out = []
        for f in range(flows):
            client = socket.inet_aton(f"10.1.{f >> 8}.{f & 255}")
            seg = (client, server, 40000 + f, 445, isn, 0, ACK, b"\x00" * 100, ())
            out += table.feed(1.0, seg, f)           # in order: the stream starts here
            for k in range(segments):                # a hole at [isn+100, isn+size), then data
                seq = isn + size * (k + 1)
                out += table.feed(1.0, (client, server, 40000 + f, 445, seq, 0, ACK, b"\xaa" * size, ()), f)
        return out
    out, peak = peak_of(flood)
    budget = table.ooo_budget
    assert budget.used <= LIMIT and budget.peak <= LIMIT + size
    assert table.stats["tcp_queues_dropped_by_budget"] == budget.evictions > flows // 2
    exceeded = [u for u in out if getattr(u, "name", "") == "tcp_ooo_budget_exceeded"]
    assert exceeded and table.stats["anomaly.tcp_ooo_budget_exceeded"] == len(exceeded)
    assert peak < 2 * LIMIT, f"peak {peak} for {flows * segments * size} bytes sent out of order"

    # The first flow's queue was given up: its hole and its queued bytes become one gap when
    # the flow goes on, and the data after it is delivered.
    first = socket.inet_aton("10.1.0.0")
    later = isn + size * (segments + 1)
    units = table.feed(2.0, (first, server, 40000, 445, later, 0, ACK, b"\xbb" * 10, ()), 0)
    units = [u for u in units if isinstance(u, (StreamData, StreamGap))]
    assert [type(u) for u in units] == [StreamGap, StreamData]
    assert units[0].length == later - (isn + 100)
    assert bytes(units[1].data) == b"\xbb" * 10
    table.close(2.0)
    assert budget.used == 0


def pipe_write(mid: int, n: int) -> bytes:
    return nbss(write(mid, FID, b"\x05\x00\x00\x03\x10\x00\x00\x00" + b"\xaa" * (n - 8)))


def test_partial_pipe_message_flood_stays_under_the_global_budget_and_the_oldest_resyncs():
    budget = ByteBudget(LIMIT)
    message = 1 << 20                         # a pipe write whose second half never comes
    conns = [SmbConnection(FlowKey(f"10.2.0.{i}", 50000, "10.0.0.10", 445), budget=budget) for i in range(16)]
    for conn in conns:
        play(conn, login_and_open())

    def flood():
        events = []
        for conn in conns:
            data = pipe_write(100, message)
            for at in range(0, message // 2, 1448):
                events += conn.feed(True, 2.0, data[at:min(at + 1448, message // 2)], 9)
        return events
    events, peak = peak_of(flood)
    assert budget.used <= LIMIT
    dropped = sum(c.stats["nbss_messages_dropped_by_budget"] for c in conns)
    assert dropped == budget.evictions >= 16 - LIMIT // (message // 2)
    exceeded = [e for e in events if getattr(e, "name", "") == "nbss_message_budget_exceeded"]
    assert exceeded and len(exceeded) == sum(c.stats["anomaly.nbss_message_budget_exceeded"] for c in conns)
    assert peak < 3 * LIMIT, f"peak {peak} for {16 * message // 2} bytes of partial messages"

    # The oldest connection dropped its partial message and hunts for the next header: the
    # rest of the lost message is passed over, and the next pipe write is seen whole.
    oldest = conns[0]
    assert oldest.stats["nbss_messages_dropped_by_budget"] == 1
    rest = pipe_write(100, message)[message // 2:]
    after = oldest.feed(True, 3.0, rest, 10) + oldest.feed(True, 3.0, pipe_write(101, 200), 11)
    pipe_data = [e for e in after if isinstance(e, PipeData)]
    assert len(pipe_data) == 1 and len(pipe_data[0].data) == 200
    for conn in conns:
        conn.close(4.0)
    assert budget.used == 0
