"""The coercion correlator's inputs, sent from ``live --workers`` decoders to the one
correlator in the parent process.

The AF_PACKET fanout hash keeps each flow whole in one worker, but a coercion spans two
flows: the client's call to V and V's back-authentication to L, which the hash may give to
different workers. So each worker forwards what ``Correlator.feed`` reads, and the parent
correlates everything in capture order of arrival.

Transport: one AF_UNIX SOCK_SEQPACKET pair per worker (message boundaries kept, a send is
all or nothing, so no framing and no torn record), sent with MSG_DONTWAIT: a slow parent
costs drops, counted as "anomaly.coercion_forward_dropped", never a stalled capture loop.
Records are pickled: both ends are the same program (a fork), and the records are frozen
dataclasses of plain values.
"""
from __future__ import annotations

import heapq
import itertools
import pickle
import socket
from collections import OrderedDict

from sensor.anomaly import Stats
from sensor.events import RpcCallEvent
from sensor.net.stream import ServiceSeen
from sensor.smb.events import EncryptedMessage, KerberosAuthentication, NtlmAuthentication, SmbSession

# Record kinds Correlator.feed reads; everything else stays in the worker.
FORWARDED_KINDS = frozenset((SmbSession, NtlmAuthentication, KerberosAuthentication, RpcCallEvent, ServiceSeen))
# The correlator needs "this inbound flow is encrypted" and its last activity (the window
# runs from the last message), not every message: the first transform header of each
# (flow, session), then one per this many capture seconds keeps last_ts within a second of
# the truth against a 30 s window, at a message rate bounded per flow.
ENCRYPTED_REFRESH_SECONDS = 1.0
# (flow, session) pairs remembered for that refresh; the least recently refreshed is
# forgotten first (it is then forwarded again at its next message, which is harmless).
MAX_ENCRYPTED_SESSIONS = 65_536
# Largest record sent. A pickled RpcCallEvent is ~2 KiB; its strings come off the wire but
# the pipeline bounds stubs. A larger one is dropped and counted, not truncated.
MAX_MESSAGE_BYTES = 65_536
# Workers deliver out of step: a worker hands over a ring block when full or after
# sensor.capture.live.RING_BLOCK_TIMEOUT_MS (100 ms), while a coerced server authenticates
# within milliseconds of the call. The parent holds records this long (wall clock against
# their kernel timestamps) and releases them in timestamp order, as replay sees them.
REORDER_SECONDS = 0.3
# Records held for reordering; when full the oldest is released early.
MAX_REORDER_RECORDS = 65_536
# Kernel queue per worker socket (SO_SNDBUF; Linux caps it at net.core.wmem_max): a few
# hundred records, seconds of a coercion storm, while the parent is busy storing an alert.
SEND_BUFFER_BYTES = 1 << 20


def channel() -> tuple[socket.socket, socket.socket]:
    """(worker end, parent end) of one worker's channel."""
    worker_end, parent_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    return worker_end, parent_end


class CorrelatorForwarder:
    """A coercion stage for a worker: ``feed(record)`` sends the correlator's inputs to the
    parent and returns no alert (the parent raises them); ``close()`` ends the channel, which
    the parent sees as end of file."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.stats = Stats()
        self._encrypted: OrderedDict[tuple, float] = OrderedDict()   # (flow, session) -> ts sent

    def feed(self, record) -> list:
        kind = type(record)
        if kind is EncryptedMessage:
            key = (record.flow, record.session_id)
            sent = self._encrypted.get(key)
            if sent is not None and record.ts - sent < ENCRYPTED_REFRESH_SECONDS:
                return []
            if sent is None and len(self._encrypted) >= MAX_ENCRYPTED_SESSIONS:
                self._encrypted.popitem(last=False)
            self._encrypted[key] = record.ts
            self._encrypted.move_to_end(key)
        elif kind not in FORWARDED_KINDS:
            return []
        message = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        if len(message) > MAX_MESSAGE_BYTES:
            self.stats["anomaly.coercion_forward_too_large"] += 1
            return []
        try:
            self._sock.send(message, socket.MSG_DONTWAIT)
            self.stats["coercion_forwarded"] += 1
        except OSError:       # queue full (BlockingIOError), or the parent is gone (stopping)
            self.stats["anomaly.coercion_forward_dropped"] += 1
        return []

    def close(self) -> list:
        self._sock.close()
        self._encrypted.clear()
        return []


def receive(sock: socket.socket) -> tuple[list, bool]:
    """The records waiting on a parent end, without blocking; and whether the worker closed it."""
    records = []
    while True:
        try:
            message = sock.recv(MAX_MESSAGE_BYTES, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return records, False
        except ConnectionResetError:
            return records, True
        if not message:
            return records, True
        records.append(pickle.loads(message))


def record_ts(record) -> float:
    """Capture time of a forwarded record, seconds."""
    if type(record) is RpcCallEvent:
        return record.event_timestamp / 1000
    return record.ts


class Reorder:
    """Records from several workers back into timestamp order: ``feed(records, now)``
    returns those older than ``now - REORDER_SECONDS``, oldest first; ``close()`` the rest."""

    def __init__(self, delay: float = REORDER_SECONDS) -> None:
        self.delay = delay
        self._heap: list[tuple[float, int, object]] = []
        self._arrival = itertools.count()   # ties keep arrival order

    def feed(self, records, now: float) -> list:
        heap = self._heap
        released = []
        for record in records:
            heapq.heappush(heap, (record_ts(record), next(self._arrival), record))
            if len(heap) > MAX_REORDER_RECORDS:
                released.append(heapq.heappop(heap)[2])
        while heap and heap[0][0] <= now - self.delay:
            released.append(heapq.heappop(heap)[2])
        return released

    @property
    def pending(self) -> bool:
        return bool(self._heap)

    def close(self) -> list:
        return [heapq.heappop(self._heap)[2] for _ in range(len(self._heap))]
