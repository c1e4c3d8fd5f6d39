"""Where events, detector state and alerts are kept: a SQLite file (one machine) or a
PostgreSQL database (a fleet of sensors), behind one interface (``Store``)."""
from __future__ import annotations

from sensor.store.sqlite import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# PostgreSQL ([store] batch_deadline_seconds): longest a writer's batch waits for the server by
# the client's own clock, and how long a read waits before it checks that the server still
# answers (sensor/store/postgres.py). A batch of 1000 events took 0.5-2.3 s on 2 loaded cores
# (README, Many sensors: write rate), so 5 s cuts off only a server that does not answer.
BATCH_DEADLINE_SECONDS = 5.0


def open_store(target: str, readonly: bool = False, later: bool = False,
               deadline: float = BATCH_DEADLINE_SECONDS) -> Store:
    """The store ``--db`` names: a postgresql:// URL, else a SQLite file path. ``later``
    (a sensor, which spools): a PostgreSQL server that does not answer now is connected to
    by the first batch; ``deadline``: how long PostgreSQL's answers are waited for
    (sensor/store/postgres.py)."""
    if target.startswith(POSTGRES_SCHEMES):
        from sensor.store.postgres import PostgresStore   # psycopg only when a fleet store is used

        return PostgresStore(target, readonly, later, deadline)
    return Store(target, readonly)
