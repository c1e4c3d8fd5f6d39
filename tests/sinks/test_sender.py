"""The sinks' sender thread (sensor/sinks/sender.py) never dies: a spooled line that is not a
record (written by hand, by an older version, damaged) leaves the spool counted as rejected
and said once, and the alerts around it are delivered; a spool that fails under the sender
(its lock held past the bound, a full disk) is an outage it backs off from and recovers,
delivering everything; closing with lines a full spool cannot take ends at the flush bound.
Real spool files, a real rsyslogd and the HTTP collector subprocess; the syslog
case through a real ``dfs-sensor replay``, whose stderr shows what a user would see."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time

import pytest

import sensor.sinks.spool as spool_module
from sensor.sinks.http import HttpTransport
from sensor.sinks.sender import RETRY_FIRST_SECONDS, SpooledSink
from sensor.sinks.spool import Spool
from sensor.sinks.targets import SinkSettings, _spool_path
from tests.schema_check import check
from tests.sinks.test_http import CollectorProcess, alert_line, free_port, wait_for
from tests.sinks.test_spool import holding_the_write_lock
from tests.sinks.test_syslog import (CAPTURES, DFS_SENSOR, assert_rfc5424_alerts, received,
                                     rsyslog)   # noqa: F401 (rsyslog: the fixture)

# Spooled lines that are no record a transport can send, as a previous run might have left them.
NOT_RECORDS = ["not json {", "[1, 2]", '{"rule": "a string, not an object"}']
SAID_ONCE = "is not a record it can send"
# The spool's lock bound in the outage test, instead of its minute, and how long the test's
# own connection holds the lock: several bounds, so the sender meets the failure repeatedly.
SHORT_LIMIT_SECONDS = 0.3
HELD_SECONDS = 3.0
# Alerts a previous run left in a spool on the full_disk fixture's 64 KiB (its -shm takes 32).
FULL_DISK_ALERTS = 5
# The flush bound of the sink closed on a full disk.
CLOSE_FLUSH_SECONDS = 1.0


def seed(path: str, lines: list[str]) -> None:
    spool = Spool(path)
    spool.push(lines)
    spool.close()


def test_replay_delivers_the_alerts_around_spooled_lines_that_are_not_records(rsyslog, tmp_path):
    """On main the syslog sender thread died on the first such line (json.loads in
    format_message) with a traceback on stderr, and no alert after it was delivered."""
    directory, ports = rsyslog
    log = directory / "tcp.log"
    before = len(received(log, 0))
    target = f"syslog+tcp://127.0.0.1:{ports['tcp']}"
    config = tmp_path / "c.toml"
    config.write_text(f'[outputs]\nspool_dir = "{tmp_path / "spool"}"\n')
    spool_path = _spool_path(target, "alerts", SinkSettings(spool_dir=str(tmp_path / "spool")))
    left = [alert_line(1), NOT_RECORDS[0], alert_line(2), NOT_RECORDS[1], NOT_RECORDS[2], alert_line(3)]
    seed(spool_path, left)
    done = subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "s.db"), "--sensor-name", "s1",
                           "--config", str(config), "--alerts", target, str(CAPTURES[0])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if SAID_ONCE in line]
    assert len(said) == 1 and f"{target}: a line in the spool {spool_path} " in said[0], done.stderr
    assert "output_rejected_lines_total" in said[0]
    got = received(log, before + 5)[before:]
    assert_rfc5424_alerts(got, "s1")
    alerts = [check("alert", record["msg"]) for record in got]
    assert sorted(alert.get("n", -1) for alert in alerts) == [-1, -1, 1, 2, 3]    # two from the capture
    spool = Spool(spool_path)
    assert spool.depth() == 0                 # delivered, and the three others left it too
    spool.close()


@pytest.mark.parametrize("preset", ["lines", "array", "splunk", "elastic"])
def test_http_sinks_deliver_the_alerts_around_spooled_lines_that_are_not_records(tmp_path, preset):
    """On main the splunk and elastic shapes killed the thread (json.loads); lines and array
    sent the line on, an array no collector can parse, again at every retry. (An object that
    is not an alert is a record here: these shapes send the line as it is.)"""
    collector = CollectorProcess(tmp_path, "elastic" if preset == "elastic" else "plain")
    collector.start()
    try:
        url = f"http://127.0.0.1:{collector.port}/idx"
        path = str(tmp_path / "spool.db")
        seed(path, [NOT_RECORDS[0], alert_line(1), alert_line(2), NOT_RECORDS[1], alert_line(3)])
        messages: list[str] = []
        sink = SpooledSink(url, HttpTransport(url, preset, "alerts", "s1", None, None), path, 1 << 20,
                           messages.append)
        wait_for(lambda: sink.depth == 0, "the spool to empty")
        sink.write(alert_line(4))
        wait_for(lambda: sink.sent == 4, "the alert written after them")
        sink.close()
    finally:
        collector.kill()
    bodies = [request["body"] for request in collector.requests()]
    if preset == "array":
        records = [record for body in bodies for record in json.loads(body)]
    elif preset == "splunk":
        records = [event["event"] for body in bodies for event in _objects(body)]
    else:
        records = [json.loads(line) for body in bodies for line in body.splitlines()]
        if preset == "elastic":
            records = records[1::2]           # each record follows its "create" action
    assert sorted(record["n"] for record in records) == [1, 2, 3, 4]
    assert (sink.sent, sink.rejected, sink.depth) == (4, 2, 0)
    assert [m for m in messages if SAID_ONCE in m] == messages and len(messages) == 1, messages


def _objects(body: str) -> list[dict]:
    """The concatenated JSON objects of a Splunk HEC request."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while at < len(body):
        value, at = decoder.raw_decode(body, at)
        out.append(value)
    return out


def test_a_spool_whose_lock_is_held_past_the_bound_delays_the_alerts_and_loses_none(tmp_path, monkeypatch):
    """Another process holds the spool's lock past the bound, so the sender can claim no
    lines to send (SpoolError): an outage, said once, backed off from, nothing sent while it
    lasts (a line is sent once claimed); once the lock is freed every alert is delivered and
    acknowledged, and later ones follow. Before claims the collector took each try's batch
    again (the ack failing); before that the sender thread died with a traceback."""
    monkeypatch.setattr(spool_module, "LOCK_WAIT_LIMIT_SECONDS", SHORT_LIMIT_SECONDS)
    collector = CollectorProcess(tmp_path)
    collector.start()
    path = str(tmp_path / "spool.db")
    seed(path, [alert_line(n) for n in range(20)])
    holder = holding_the_write_lock(path)
    threading.Timer(HELD_SECONDS, lambda: holder.execute("COMMIT")).start()
    messages: list[str] = []
    url = f"http://127.0.0.1:{collector.port}/"
    sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None), path, 1 << 20,
                       messages.append)
    try:
        wait_for(lambda: messages, "the outage to be said")
        wait_for(lambda: sink.depth == 0 and sink.sent == 20, "the spool to empty once the lock is freed")
        tries_while_held = len(collector.requests())
        sink.write(alert_line(20))
        wait_for(lambda: sink.sent == 21, "an alert written after the outage")
        sink.close()
    finally:
        collector.kill()
        holder.close()
    assert_every_alert_once_or_more(collector, 21)
    assert tries_while_held == 1, tries_while_held      # the one batch, once claimed
    assert messages[0].startswith(f"{url}: cannot send from the spool {path}: {path}: another process has held "
                                  "the spool's lock for "), messages
    assert messages[1:] == [f"{url}: sending from the spool again"], messages
    spool = Spool(path)
    assert spool.depth() == 0
    spool.close()


def test_a_spool_on_a_full_disk_delays_the_alerts_and_loses_none(full_disk, tmp_path):
    """The spool cannot record the sender's claim on its lines (SQLite: "database or disk is
    full" appending the change to its WAL): said once, retried with backoff, nothing sent
    meanwhile (a line is sent once claimed), and delivered and acknowledged once space is
    freed. Before claims the collector took the batch at every try (its deletion failing);
    before that the sender thread died. (The fixture's 64 KiB are too few for new lines
    after it: the lock test shows those.) Space freed is the filler's and RESERVE_BYTES more:
    a claim is a write (WAL frames), so the filler's last block alone is used up by the first
    claim, and the ack finds the disk full again."""
    mount, filler = full_disk
    filler.unlink()
    path = str(mount / "spool.db")
    left = Spool(path)                        # a previous run's lines; its WAL stays while open
    collector = CollectorProcess(tmp_path)
    sink = None
    try:
        left.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")    # the new file's pages: room for the reserve
        left.push([alert_line(n) for n in range(FULL_DISK_ALERTS)])
        reserve = mount / "reserve"
        reserve.write_bytes(b"x" * RESERVE_BYTES)
        fill(filler)
        collector.start()
        messages: list[str] = []
        url = f"http://127.0.0.1:{collector.port}/"
        sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None), path, 1 << 20,
                           messages.append)
        wait_for(lambda: messages, "the outage to be said")
        time.sleep(2 * RETRY_FIRST_SECONDS)           # tried again meanwhile
        assert (sink.depth, sink.sent, collector.requests()) == (FULL_DISK_ALERTS, 0, [])
        filler.unlink()
        reserve.unlink()
        wait_for(lambda: sink.depth == 0 and sink.sent == FULL_DISK_ALERTS, "the spool to empty once space is freed")
    finally:
        if sink is not None:
            sink.close()                      # its connections, before the fixture unmounts
        if collector.proc:
            collector.kill()
        left.close()
    assert_every_alert_once_or_more(collector, FULL_DISK_ALERTS)
    assert messages == [f"{url}: cannot send from the spool {path}: database or disk is full; retrying "
                        "(lines sent and not yet taken out of it are sent again)",
                        f"{url}: sending from the spool again"], messages


# Freed with the filler: room for a claim's and an ack's WAL frames.
RESERVE_BYTES = 8192


def fill(filler) -> None:
    """Write ``filler`` until the file system is full (unbuffered: nothing left to flush)."""
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 512)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def assert_every_alert_once_or_more(collector: CollectorProcess, count: int) -> None:
    """alert_line 0 .. count-1 each arrived, a duplicate being the same record."""
    by_id: dict[str, dict] = {}
    for record in (json.loads(line) for line in collector.lines()):
        assert by_id.setdefault(record["alert_id"], record) == record
    assert sorted(record["n"] for record in by_id.values()) == list(range(count))


def test_closing_with_lines_the_full_spool_cannot_take_ends_within_the_flush_bound(full_disk, tmp_path):
    """A replay (or a stopping service) whose spool disk is full: the lines held in memory are
    tried until the flush bound, then counted as dropped and said; close() returns. On main the
    spooler thread retried them forever and close() never returned."""
    mount, filler = full_disk
    filler.unlink()
    path = str(mount / "spool.db")
    left = Spool(path)                        # its WAL and shared memory stay while open
    try:
        left.push([alert_line(0)])
        fill(filler)
        messages: list[str] = []
        url = f"http://127.0.0.1:{free_port()}/"                         # nothing listens
        sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None), path, 1 << 20,
                           messages.append, flush_seconds=CLOSE_FLUSH_SECONDS)
        for n in range(1, 4):
            sink.write(alert_line(n))
        wait_for(lambda: any("cannot spool to" in m for m in messages), "the spool to fail")
        closing = threading.Thread(target=sink.close, daemon=True)
        closing.start()
        closing.join(CLOSE_FLUSH_SECONDS + 10)
        assert not closing.is_alive(), "close() did not return"
    finally:
        left.close()
    assert (sink.dropped, sink.sent) == (3, 0)
    assert f"{url}: 3 line(s) could not be spooled to {path} within {CLOSE_FLUSH_SECONDS:g} s of closing and " \
           "are lost (metrics: spool_dropped_total)" in messages, messages


def test_a_spool_that_cannot_be_opened_again_after_a_fork_is_retried_until_it_can(tmp_path):
    """live --workers forks while the sender runs: it closes its spool for the fork and opens
    it again after. That open failing (here the file was replaced by one that is not a
    database meanwhile) is an outage like any: said once, retried; once the spool is back its
    lines are delivered. On main the reopen's error ended the sender thread."""
    collector = CollectorProcess(tmp_path)                  # its port, not yet listening
    path = str(tmp_path / "spool.db")
    seed(path, [alert_line(n) for n in range(3)])
    messages: list[str] = []
    url = f"http://127.0.0.1:{collector.port}/"
    sink = SpooledSink(url, HttpTransport(url, "lines", "alerts", "s1", None, None), path, 1 << 20,
                       messages.append)
    try:
        wait_for(lambda: messages, "the collector outage to be said")       # the sender runs, backing off
        original = tmp_path / "spool.db.original"
        os.link(path, original)              # the spool's file, kept (its connections still use it)
        damaged = tmp_path / "damaged"
        damaged.write_bytes(b"not a database " * 512)
        os.replace(damaged, path)
        child = os.fork()
        if child == 0:
            os._exit(0)                      # a worker that ends at once: the fork is what counts
        assert os.waitpid(child, 0)[1] == 0
        wait_for(lambda: any("cannot send from the spool" in m for m in messages), "the failed reopen to be said")
        os.replace(original, path)
        collector.start()
        wait_for(lambda: sink.depth == 0 and sink.sent == 3, "the spool's lines once it is back")
        sink.close()
    finally:
        if collector.proc:
            collector.kill()
    assert_every_alert_once_or_more(collector, 3)
    said = [m for m in messages if "cannot send from the spool" in m]
    assert said == [f"{url}: cannot send from the spool {path}: file is not a database; retrying "
                    "(lines sent and not yet taken out of it are sent again)"], messages
    assert f"{url}: sending from the spool again" in messages
