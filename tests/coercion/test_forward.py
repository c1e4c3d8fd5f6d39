"""--workers: the correlator's inputs sent from two workers to one correlator, received out
of order and put back in timestamp order, raise what one process raises."""
from __future__ import annotations

import socket

import pytest

from sensor.coercion.correlate import Correlator
from sensor.coercion.events import CONFIRMED, PROBABLE
from sensor.coercion.forward import CorrelatorForwarder, Reorder, channel, receive
from sensor.events import RpcCallEvent
from sensor.net.stream import FlowKey
from sensor.smb.events import EncryptedMessage
from tests.coercion.test_correlate import records


def _flow_of(record) -> FlowKey | None:
    if isinstance(record, RpcCallEvent):
        return FlowKey(record.actor_remote_ip, record.actor_remote_port, record.agent_ip, record.agent_port)
    return getattr(record, "flow", None)


@pytest.mark.parametrize("name, rule", [("coerced-auth-encrypted.pcap", PROBABLE),
                                        ("coerced-auth-clear.pcap", CONFIRMED),
                                        ("coerced-auth-http.pcap", CONFIRMED)])
def test_two_workers_split_by_flow_correlate_as_one(name, rule):
    recs = records(name)
    single = Correlator()
    expected = [a for r in recs for a in single.feed(r)]
    assert rule in {a.rule for a in expected}
    # The call's flow to worker 1, the back-authentication's to worker 2.
    inbound = next(_flow_of(r) for r in recs if _flow_of(r) and _flow_of(r).server_ip == "10.0.0.10")
    ends = [channel(), channel()]
    workers = [CorrelatorForwarder(ends[0][0]), CorrelatorForwarder(ends[1][0])]
    for record in recs:
        assert workers[0 if _flow_of(record) == inbound else 1].feed(record) == []
    for worker in workers:
        worker.close()
    received = []
    for _, parent_end in reversed(ends):         # the back-authentication's worker first
        got, closed = receive(parent_end)
        assert closed
        received += got
    reorder = Reorder()
    ordered = reorder.feed(received, now=0.0) + reorder.close()
    parent = Correlator()
    assert [a for r in ordered for a in parent.feed(r)] == expected
    # Without the reordering the encrypted attack is missed: the logon came before the session.
    if rule == PROBABLE:
        assert [a for r in received for a in Correlator().feed(r)] == []


def test_only_the_first_encrypted_message_per_session_and_second_goes():
    recs = records("coerced-auth-encrypted.pcap")
    encrypted = [r for r in recs if isinstance(r, EncryptedMessage)]
    worker_end, parent_end = channel()
    forwarder = CorrelatorForwarder(worker_end)
    for record in recs:
        forwarder.feed(record)
    got, _ = receive(parent_end)
    sent = [r for r in got if isinstance(r, EncryptedMessage)]
    assert 1 <= len(sent) < len(encrypted)
    sessions = {(r.flow, r.session_id) for r in encrypted}
    assert {(r.flow, r.session_id) for r in sent} == sessions
    assert all(b.ts - a.ts >= 1.0 for a, b in zip(sent, sent[1:]) if (a.flow, a.session_id) == (b.flow, b.session_id))
    assert not any(type(r).__name__ in ("PipeOpened", "Anomaly") for r in got)


def test_a_full_channel_drops_and_counts_instead_of_blocking():
    worker_end, parent_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    forwarder = CorrelatorForwarder(worker_end)
    calls = [r for r in records("coerced-auth-clear.pcap") if isinstance(r, RpcCallEvent)]
    for _ in range(500):
        forwarder.feed(calls[0])
    assert forwarder.stats["anomaly.coercion_forward_dropped"] > 0
    assert forwarder.stats["coercion_forwarded"] + forwarder.stats["anomaly.coercion_forward_dropped"] == 500
    got, closed = receive(parent_end)
    assert len(got) == forwarder.stats["coercion_forwarded"] and not closed


def test_reorder_holds_records_for_the_delay():
    recs = [r for r in records("coerced-auth-clear.pcap") if isinstance(r, EncryptedMessage) or hasattr(r, "ts")]
    newest = max(r.ts for r in recs)
    reorder = Reorder(delay=0.3)
    assert reorder.feed(list(reversed(recs)), now=newest) == [r for r in sorted(recs, key=lambda r: r.ts)
                                                             if r.ts <= newest - 0.3]
    assert reorder.pending
