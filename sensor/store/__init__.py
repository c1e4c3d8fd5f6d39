"""Where events, detector state and alerts are kept: a SQLite file (one machine) or a
PostgreSQL database (a fleet of sensors), behind one interface (``Store``)."""
from __future__ import annotations

from sensor.store.sqlite import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(target: str, readonly: bool = False, later: bool = False) -> Store:
    """The store ``--db`` names: a postgresql:// URL, else a SQLite file path. ``later``
    (a sensor, which spools): a PostgreSQL server that does not answer now is connected to
    by the first batch (sensor/store/postgres.py)."""
    if target.startswith(POSTGRES_SCHEMES):
        from sensor.store.postgres import PostgresStore   # psycopg only when a fleet store is used

        return PostgresStore(target, readonly, later)
    return Store(target, readonly)
