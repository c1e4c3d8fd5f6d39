"""Where events, detector state and alerts are kept: a SQLite file (one machine) or a
PostgreSQL database (a fleet of sensors), behind one interface (``Store``)."""
from __future__ import annotations

from sensor.store.sqlite import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(target: str, readonly: bool = False) -> Store:
    """The store ``--db`` names: a postgresql:// URL, else a SQLite file path."""
    if target.startswith(POSTGRES_SCHEMES):
        from sensor.store.postgres import PostgresStore   # psycopg only when a fleet store is used

        return PostgresStore(target, readonly)
    return Store(target, readonly)
