"""The on-disk spool (sensor/sinks/spool.py) fed records directly: records of several items
(a PostgreSQL store's batches) are dropped whole, oldest first, and counted in items; a spool
file written before records had a count still opens and counts each line as one."""
from __future__ import annotations

import sqlite3

from sensor.sinks.spool import Spool


def test_a_full_spool_drops_the_oldest_records_whole_and_counts_their_items(tmp_path):
    records = [f"batch {n:02d} " + "x" * 91 for n in range(10)]       # 100 bytes each
    spool = Spool(str(tmp_path / "s.db"), max_bytes=350)
    assert spool.push(records[:3], [5, 6, 7]) == 0
    assert spool.push(records[3:5], [1, 2]) == 11                      # 500 bytes: batches 0 and 1 go
    assert [line for _, line in spool.peek(10)] == records[2:5]
    assert (spool.dropped, spool.depth(), spool.bytes()) == (11, 3, 300)
    assert spool.push(records[5:6]) == 7                               # default: one item per record
    assert spool.dropped == 18
    spool.close()


def test_records_leave_only_when_acknowledged_and_survive_reopening(tmp_path):
    path = str(tmp_path / "s.db")
    spool = Spool(path)
    spool.push(["a", "b", "c"], [2, 2, 2])
    seq_a = spool.peek(1)[0][0]
    spool.ack(seq_a)
    spool.close()
    again = Spool(path)
    assert [line for _, line in again.peek(10)] == ["b", "c"]
    again.close()


def test_a_spool_written_before_items_were_counted_opens_and_counts_one_per_line(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, bytes INTEGER NOT NULL, "
               "line TEXT NOT NULL)")
    db.executemany("INSERT INTO spool (bytes, line) VALUES (?, ?)", [(10, "0123456789")] * 3)
    db.commit()
    db.close()
    spool = Spool(str(path), max_bytes=15)
    assert spool.push(["new"]) == 2                                     # two old lines dropped
    assert [line for _, line in spool.peek(10)] == ["0123456789", "new"]
    spool.close()
