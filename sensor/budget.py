"""A byte budget shared by every holder of one kind of buffer in a process.

Per-holder bounds (a call's stub, a flow's out-of-order queue) multiply by the number of
holders; a budget caps their sum. Holders charge what they keep and release it when they
let go. When a charge goes over the limit, the oldest holders are evicted (their owner's
callback drops them) until the total fits again, as Suricata's memcaps and Zeek's
reassembly limits do. The holder being charged is evicted last: new state wins over old.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

Evict = Callable[[Hashable], None]


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.evictions = 0
        # holder -> [bytes held, its owner's eviction callback]; oldest first
        self._holders: OrderedDict[Hashable, list] = OrderedDict()

    def charge(self, holder: Hashable, n: int, evict: Evict) -> int:
        """``holder`` keeps ``n`` more bytes. Returns how many other holders were evicted."""
        entry = self._holders.get(holder)
        if entry is None:
            self._holders[holder] = [n, evict]
        else:
            entry[0] += n
        self.used += n
        evicted = 0
        while self.used > self.limit and len(self._holders) > 1:
            oldest = next(iter(self._holders))
            if oldest == holder:
                self._holders.move_to_end(holder)
                continue
            held, callback = self._holders.pop(oldest)
            self.used -= held
            self.evictions += 1
            evicted += 1
            callback(oldest)
        self.peak = max(self.peak, self.used)
        return evicted

    def release(self, holder: Hashable) -> None:
        entry = self._holders.pop(holder, None)
        if entry is not None:
            self.used -= entry[0]
