"""The global memory bound of the DCE/RPC stage: stubs of uncatalogued interfaces are never
buffered, and the stubs being joined by all associations share one ByteBudget. Floods measured
with tracemalloc against that bound."""
from __future__ import annotations

from pathlib import Path

from sensor.budget import ByteBudget
from sensor.capture.pcapfile import open_capture
from sensor.dcerpc.association import STUB_BUDGET_BYTES, RpcAssociation, RpcSettings
from sensor.dcerpc.events import RpcCall
from sensor.pipeline import Pipeline
from tests.dcerpc import dcerpc_wire as wire
from tests.robustness.test_floods import peak_of

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
FIRST, LAST = 0x01, 0x02
CATALOGUED = frozenset({wire.NETDFS})
STUB = b"\xaa" * 8192


def bound(settings: RpcSettings, iface: str, ctx_id: int = 0) -> RpcAssociation:
    assoc = RpcAssociation(wire.FLOW, settings)
    assoc.feed(True, 0.0, wire.bind(1, [(ctx_id, iface, (3, 0), wire.NDR20)]), 1)
    assoc.feed(False, 0.0, wire.bind_ack(1, [(0, wire.NDR20)]), 2)
    return assoc


def test_uncatalogued_interface_calls_are_counted_but_their_stubs_not_buffered():
    settings = RpcSettings(stub_interfaces=CATALOGUED)
    assoc = bound(settings, wire.SRVSVC)
    calls = 64

    def flood():   # 64 calls in flight, each 16 fragments of 8 KiB: 8 MiB if buffered
        out = []
        for i in range(16):
            for call_id in range(calls):
                flags = (FIRST if i == 0 else 0) | (LAST if i == 15 else 0)
                out += assoc.feed(True, 0.0, wire.request(call_id, 15, STUB, flags=flags), i)
        return [e for e in out if isinstance(e, RpcCall)]
    done, peak = peak_of(flood)
    assert [(c.call_id, c.opnum, c.interface_uuid, c.stub, c.stub_skipped) for c in done] == \
        [(i, 15, wire.SRVSVC, b"", True) for i in range(calls)]
    assert assoc.stats["stub_bytes_skipped"] == calls * 16 * len(STUB)
    assert peak < 1 << 20, f"{peak} bytes"


def test_catalogued_and_unknown_contexts_keep_their_stubs():
    settings = RpcSettings(stub_interfaces=CATALOGUED)
    netdfs = bound(settings, wire.NETDFS)
    [call] = netdfs.feed(True, 0.0, wire.request(5, 12, STUB), 3)
    assert call.stub == STUB and not call.stub_skipped
    midstream = RpcAssociation(wire.FLOW, settings)    # bind missed: the stub may still name the interface
    [call] = midstream.feed(True, 0.0, wire.request(5, 12, STUB, ctx_id=3), 3)
    assert call.interface_uuid is None and call.stub == STUB and not call.stub_skipped


def test_never_finished_calls_on_many_associations_stay_under_the_shared_budget():
    limit = 4 << 20
    budget = ByteBudget(limit)
    settings = RpcSettings(stub_interfaces=CATALOGUED, budget=budget)
    assocs = [bound(settings, wire.NETDFS) for _ in range(100)]

    def flood():   # 100 associations x 32 unfinished calls x 8 KiB = 25 MiB without the budget
        for call_id in range(32):
            for assoc in assocs:
                assoc.feed(True, 0.0, wire.request(call_id, 12, STUB, flags=FIRST), call_id)
    _, peak = peak_of(flood)
    assert budget.used <= limit and budget.peak <= limit
    assert peak < limit + (2 << 20), f"{peak} bytes under a {limit}-byte budget"
    dropped = sum(a.stats["calls_dropped_by_stub_budget"] for a in assocs)
    assert dropped == budget.evictions == 100 * 32 - limit // len(STUB)
    assert sum(a.stats["anomaly.dcerpc_stub_budget_exceeded"] for a in assocs) == dropped
    # After the flood a new call still completes whole, and everything is given back.
    fresh = bound(settings, wire.NETDFS)
    out = fresh.feed(True, 1.0, wire.request(77, 12, STUB, flags=FIRST), 9)
    out += fresh.feed(True, 1.0, wire.request(77, 12, STUB, flags=LAST), 10)
    assert [c.stub for c in out if isinstance(c, RpcCall)] == [STUB + STUB]
    for assoc in assocs:
        assoc.close(1.0)
    assert budget.used == 0


def test_pipeline_associations_share_one_budget_and_give_it_back():
    pipe = Pipeline()
    assert pipe.stub_budget.limit == STUB_BUDGET_BYTES
    events = []
    for ts, linktype, frame, number in open_capture(PCAPS / "dfscoerce-fragmented.pcap"):
        events += pipe.feed(ts, linktype, frame, number)
    events += pipe.close()
    assert pipe.stub_budget.peak > 0 and pipe.stub_budget.used == 0
    assert any(getattr(e, "action_rpc_func_opnum", None) in (12, 13) for e in events)
