"""The held-call stage both engines use: pairing by (association, call_id), and every held
call let go exactly once, with or without its exception code."""
from __future__ import annotations

from sensor.held_calls import HeldCalls
from sensor.net.stream import FlowKey
from tests.rarity_events import rpc_event

FLOW = FlowKey("10.0.0.66", 40000, "10.0.0.10", 445)
OTHER_FLOW = FlowKey("10.0.0.66", 40001, "10.0.0.10", 445)
NETDFS = (FLOW, (2, 1, 1, b"\x01" * 16))
SRVSVC = (FLOW, (2, 1, 1, b"\x02" * 16))
ERROR_NOT_SUPPORTED = 0x32


def call(call_id: int, ts: float = 100.0):
    return rpc_event(ts, call_id=call_id)


def test_an_answer_gives_its_call_the_exception_code_on_that_association_only():
    held = HeldCalls()
    first, second = call(1), call(2)
    assert held.hold(NETDFS, 1, 100.0, first) == []
    assert held.hold(SRVSVC, 1, 100.0, second) == []
    assert held.answer(NETDFS, 1, ERROR_NOT_SUPPORTED) == first.with_exception_code(ERROR_NOT_SUPPORTED)
    assert held.answer(NETDFS, 1, 0) is None               # answered once
    assert held.close(200.0) == [second]                   # the other pipe's call_id 1 waited on


def test_a_reused_call_id_lets_the_first_call_go_without_a_code():
    held = HeldCalls()
    first, again = call(7, 100.0), call(7, 101.0)
    held.hold(NETDFS, 7, 100.0, first)
    assert held.hold(NETDFS, 7, 101.0, again) == [first]
    assert held.answer(NETDFS, 7, 5) == again.with_exception_code(5)


def test_a_full_table_lets_the_oldest_go_and_counts_it():
    held = HeldCalls(limit=2)
    events = [call(i) for i in range(3)]
    assert held.hold(NETDFS, 0, 100.0, events[0]) == []
    assert held.hold(NETDFS, 1, 100.0, events[1]) == []
    assert held.hold(NETDFS, 2, 100.0, events[2]) == [events[0]]
    assert held.stats["held_calls_overflow"] == 1
    assert len(held) == 2


def test_calls_expire_after_the_timeout_in_capture_time_oldest_first():
    held = HeldCalls(timeout=30.0)
    early, late = call(1, 100.0), call(2, 110.0)
    held.hold(NETDFS, 1, 100.0, early)
    held.hold(NETDFS, 2, 110.0, late)
    assert held.expire(129.9) == []
    assert held.expire(130.0) == [early]
    assert held.expire(140.0) == [late]


def test_an_ended_association_releases_its_calls_and_no_other():
    held = HeldCalls()
    a, b, c = call(1), call(2), call(3)
    held.hold(NETDFS, 1, 100.0, a)
    held.hold(SRVSVC, 2, 100.0, b)
    held.hold(NETDFS, 3, 100.0, c)
    assert held.release(NETDFS) == [a, c]
    assert held.close(100.0) == [b]


def test_an_answer_without_its_pipe_takes_the_oldest_call_of_that_connection():
    held = HeldCalls()
    elsewhere, a, b = call(4, 99.0), call(4, 100.0), call(4, 101.0)
    held.hold((OTHER_FLOW, None), 4, 99.0, elsewhere)
    held.hold(NETDFS, 4, 100.0, a)
    held.hold(SRVSVC, 4, 101.0, b)
    assert held.answer_on_connection(FLOW, 4, 0) == a.with_exception_code(0)
    assert held.answer_on_connection(FLOW, 9, 0) is None
