"""Distinct-day state of (victim, listener) pairs in the store's key_days table, so that a
machine account's regular outbound logons (a DC to its replication partner) learn themselves
out of "probable coercion" across restarts."""
from __future__ import annotations

from datetime import date, timedelta

from sensor.xql.functions import utc_date
from sensor.store.sqlite import Store

RULE = "probable-coercion-pair"
# The same 30-day lookback as the DFSCoerce hunting query.
LOOKBACK_DAYS = 30


class PairDays:
    """Callable for Correlator(pair_days=...): record today for the pair, return its day count."""

    def __init__(self, store: Store, lookback_days: int = LOOKBACK_DAYS) -> None:
        self.store = store
        self.lookback_days = lookback_days

    def __call__(self, victim: str, listener: str, ts: float) -> int:
        day = utc_date(int(ts * 1000))
        key = f"{victim}|{listener}"
        self.store.add_key_day(RULE, key, day)
        first = (date.fromisoformat(day) - timedelta(days=self.lookback_days - 1)).isoformat()
        return self.store.key_day_count(RULE, key, first, day, False)
