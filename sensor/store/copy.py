"""`dfs-sensor store copy`: every row of one store into another (SQLite to PostgreSQL and
back), idempotent: rows the destination already has (same event id, key day, or rule + key
+ day) are kept as they are, so a copy can be rerun or resumed after an interruption."""
from __future__ import annotations

from dataclasses import dataclass, field

from sensor.store import open_store

# In dependency order.
TABLES = ("events", "key_days", "alerts", "coercion_alerts", "alert_records")
# Columns the destination numbers itself (an identity/rowid column); alert_records' alert_id
# is the envelope's own (rule + key + day), copied as it is.
SURROGATE_KEYS = {"alerts": "alert_id", "coercion_alerts": "alert_id"}
# Rows per destination transaction: short write locks, bounded memory.
ROWS_PER_BATCH = 1000


@dataclass
class CopyReport:
    read: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)

    def human(self) -> str:
        return "; ".join(f"{table}: {self.added[table]:,} of {self.read[table]:,} added" for table in TABLES)


def copy_store(source: str, destination: str) -> CopyReport:
    """Copy ``source`` (read-only) into ``destination`` (created or migrated)."""
    src = open_store(source, readonly=True)
    try:
        dst = open_store(destination)
    except BaseException:
        src.close()
        raise
    report = CopyReport()
    try:
        for table in TABLES:
            cursor = src.db.execute(f"SELECT * FROM {table} LIMIT 0")
            names = [d[0] for d in cursor.description]
            columns = [n for n in names if n != SURROGATE_KEYS.get(table)]
            order = "alert_id" if "alert_id" in names else ", ".join(columns)
            insert = dst.insert_ignore_sql(table, f"({', '.join(columns)}) ", len(columns))
            rows = src.db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
            report.read[table] = report.added[table] = 0
            while batch := rows.fetchmany(ROWS_PER_BATCH):
                with dst.transaction():
                    for row in batch:
                        report.added[table] += dst.db.execute(insert, tuple(row)).rowcount
                report.read[table] += len(batch)
    finally:
        src.close()
        dst.close()
    return report
