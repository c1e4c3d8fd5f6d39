"""Held-call pairing: a call waits for its response or fault to get its exception code.

Both engines build an RpcCallEvent at a request and hold it here until the answer with the
same call_id on the same association (C706 12.6.4.10: a response or fault echoes the
request's call_id) fills ``action_rpc_func_exception_code``. A held call is never dropped:
it is emitted without a code when its association ends, when it waits too long, when its
call_id is reused before an answer, or when the table is full (the oldest first).

An association is named by the caller: (flow, pipe id or None for ncacn_ip_tcp). Sans-IO:
every method returns the events it lets go, in the order they were held.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

from sensor.anomaly import Stats
from sensor.events import RpcCallEvent

# Calls waiting for their response. A server answers within milliseconds; 4096 in flight
# covers a busy DC, and overflow emits the oldest (without its code) rather than losing it.
MAX_HELD_CALLS = 4096
# A call whose response has not come after this long (capture time) is emitted without a code.
HELD_CALL_TIMEOUT = 30.0

# (flow, pipe id or None): the first member names the connection the association runs on.
AssocKey = tuple[Hashable, Hashable]


class HeldCalls:
    def __init__(self, limit: int = MAX_HELD_CALLS, timeout: float = HELD_CALL_TIMEOUT,
                 stats: Stats | None = None) -> None:
        self.limit = limit
        self.timeout = timeout
        self.stats = Stats() if stats is None else stats     # or the owning stage's counters
        # (association, call_id) -> (capture time, event), oldest first
        self._held: OrderedDict[tuple[AssocKey, int], tuple[float, RpcCallEvent]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, assoc: AssocKey, call_id: int, ts: float, event: RpcCallEvent) -> list[RpcCallEvent]:
        """Hold ``event`` until its answer; returns what it pushed out."""
        out: list[RpcCallEvent] = []
        key = (assoc, call_id)
        held = self._held.pop(key, None)
        if held is not None:            # call_id reused before its answer: emit the first
            out.append(held[1])
        self._held[key] = (ts, event)
        if len(self._held) > self.limit:
            self.stats["held_calls_overflow"] += 1
            out.append(self._held.popitem(last=False)[1][1])
        return out

    def answer(self, assoc: AssocKey, call_id: int, status: int) -> RpcCallEvent | None:
        """A response (status 0) or fault: the call it answers, with its exception code, or
        None (not held: uncatalogued, or already let go). One event at most, so no list: every
        response on the wire comes here."""
        held = self._held.pop((assoc, call_id), None)
        return None if held is None else held[1].with_exception_code(status)

    def answer_on_connection(self, connection: Hashable, call_id: int, status: int) -> RpcCallEvent | None:
        """An answer whose pipe is unknown (tshark: an SMB1 read whose request was not seen):
        the oldest held call of that connection with this call_id."""
        for key in self._held:
            if key[0][0] == connection and key[1] == call_id:
                return self._held.pop(key)[1].with_exception_code(status)
        return None

    def release(self, assoc: AssocKey) -> list[RpcCallEvent]:
        """The association ended (pipe closed, flow over): its calls, without a code."""
        return [self._held.pop(key)[1] for key in [k for k in self._held if k[0] == assoc]]

    def expire(self, now: float) -> list[RpcCallEvent]:
        """Calls held ``timeout`` seconds or longer (capture time), without a code."""
        out: list[RpcCallEvent] = []
        held = self._held
        while held:
            key, (held_since, event) = next(iter(held.items()))
            if now - held_since < self.timeout:
                break
            del held[key]
            out.append(event)
        return out

    def close(self, ts: float) -> list[RpcCallEvent]:
        """End of input: every call still held, without a code."""
        out = [event for _, event in self._held.values()]
        self._held.clear()
        return out
