"""PostgreSQL down when a sensor starts, or hung (SIGSTOP) under a batch, against a real server
(tests/store/postgres_server.py): a writer starts spooling and checks the schema once the
server answers, a batch waits for a hung server at most BATCH_DEADLINE_SECONDS (or the
[store] batch_deadline_seconds it is given), and a database found unusable once it answers
(the password refused) ends the run with one line naming the spool the next run delivers.
Readers cannot spool: they fail at once, and a read on a server that hangs ends with one line
once the deadline passed and no new connection opens (a slow read goes on)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest

from sensor.store import open_store
from sensor.store.migrations import SCHEMA_VERSION
from sensor.store.postgres import BATCH_DEADLINE_SECONDS, RECONNECT_WAIT_SECONDS, StoreUnavailable
from sensor.store.spooled import Batch, StoreSpool, StoreSpoolSettings
from sensor.store.sqlite import StoreError
from tests.conftest import PCAPS, ROOT
from tests.store.postgres_server import PASSWORD
from test_postgres import contents, wait_until_stored
from test_spooled import alert_ids, config, empty_capture, finished, replay, spooled
from workload import repeated


def retried(step, seconds: float = 30.0):
    """``step()`` until it stops raising StoreUnavailable (the background connection opens)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return step()
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store never connected"
            time.sleep(0.2)


def schema_version(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        if not conn.execute("SELECT 1 FROM pg_tables WHERE tablename = 'schema_version'").fetchone():
            return None
        return conn.execute("SELECT version FROM schema_version").fetchone()[0]


# -- the store ------------------------------------------------------------------------------

def test_a_writer_opened_while_the_server_is_down_connects_and_migrates_with_its_first_batch(postgres, pg_url):
    postgres.pause()
    try:
        store = open_store(pg_url, later=True)
        assert "Connection refused" in str(store.unreachable)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.run_batch(lambda: store.newest_event_ms())
        assert time.monotonic() - started < RECONNECT_WAIT_SECONDS + 1     # the capture's wait, not the connect's
    finally:
        postgres.resume()
    assert schema_version(pg_url) is None                  # nothing was made while it was down
    assert retried(lambda: store.run_batch(lambda: store.newest_event_ms())) is None
    assert store.unreachable is None and schema_version(pg_url) == SCHEMA_VERSION
    store.close()


def test_readers_and_a_writer_without_later_fail_at_once_with_one_line(postgres, pg_url):
    postgres.pause()
    try:
        over_the_socket = f"postgresql://postgres@/{pg_url.rsplit('/', 1)[1]}?host={postgres.base}&port={postgres.port}"
        later = open_store(over_the_socket, later=True)          # its socket file is gone: unreachable too
        assert "No such file or directory" in str(later.unreachable)
        later.close()
        for readonly in (True, False):
            with pytest.raises(StoreUnavailable, match="cannot connect: .*Connection refused") as raised:
                open_store(pg_url, readonly=readonly)
            assert PASSWORD not in str(raised.value)
    finally:
        postgres.resume()


def test_credentials_refused_once_the_server_answers_are_a_store_error_not_an_outage(postgres, pg_url):
    """Wrong credentials while the server is up are one line at start, even for a writer that
    would spool; found by the first batch after an outage at start, they end the run."""
    wrong = pg_url.replace(PASSWORD, "not-the-password")
    with pytest.raises(StoreError, match="password authentication failed") as raised:
        open_store(wrong, later=True)
    assert not isinstance(raised.value, StoreUnavailable) and "not-the-password" not in str(raised.value)
    postgres.pause()
    try:
        store = open_store(wrong, later=True)
    finally:
        postgres.resume()
    deadline = time.monotonic() + 30
    while True:
        try:
            store.run_batch(lambda: None)
        except StoreUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.2)
            continue
        except StoreError as e:
            assert "password authentication failed" in str(e) and "not-the-password" not in str(e)
            break
        pytest.fail("a batch was written with the wrong password")
    store.close()


# A deadline shorter than the default, as [store] batch_deadline_seconds sets it; a read given
# up on waits that long, then for a new connection (libpq's connect_timeout, 2 s at least).
SHORT_DEADLINE = 1.5
PROBE_SECONDS = 2


@pytest.mark.parametrize("deadline", [None, SHORT_DEADLINE], ids=["default", "configured"])
def test_a_batch_waits_for_a_stopped_server_process_at_most_the_deadline(postgres, pg_url, deadline):
    """SIGSTOP'd postmaster and backends: the connection stays up (their kernel answers TCP),
    so only the client's own deadline (the default, or [store] batch_deadline_seconds) ends the
    batch: StoreUnavailable, the transaction never committed; after SIGCONT the next batch writes."""
    store = open_store(pg_url) if deadline is None else open_store(pg_url, deadline=deadline)
    expected = BATCH_DEADLINE_SECONDS if deadline is None else deadline
    store.run_batch(lambda: store.db.execute("CREATE TABLE probe (n BIGINT)"))
    postgres.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"no answer from the server within {expected:g} s "):
            store.run_batch(lambda: store.db.execute("INSERT INTO probe VALUES (1)"))
        waited = time.monotonic() - started
        assert expected <= waited < expected + RECONNECT_WAIT_SECONDS + 2
    finally:
        postgres.thaw()
    retried(lambda: store.run_batch(lambda: store.db.execute("INSERT INTO probe VALUES (2)")))
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT n FROM probe").fetchall() == [(2,)]
    store.close()


@pytest.mark.parametrize("readonly", [True, False], ids=["reader", "writer-outside-a-batch"])
def test_a_statement_outside_a_batch_ends_on_a_stopped_server_with_one_line(postgres, pg_url, readonly):
    """A reader's statements (and a writer's outside a batch: the newest event at start) had
    no deadline: on a SIGSTOP'd server they waited forever."""
    open_store(pg_url).close()
    store = open_store(pg_url, readonly=readonly, deadline=SHORT_DEADLINE)
    postgres.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            store.newest_event_ms()
        waited = time.monotonic() - started
    finally:
        postgres.thaw()
    assert str(raised.value) == (f"{postgres.url(pg_url.rsplit('/', 1)[1]).replace(':' + PASSWORD, '')}: no answer "
                                 f"from the server within {SHORT_DEADLINE:g} s, nor a new connection (a stopped "
                                 "or hung server process?)")
    assert SHORT_DEADLINE + PROBE_SECONDS <= waited < SHORT_DEADLINE + PROBE_SECONDS + 3
    store.close()


def test_a_slow_read_goes_on_past_the_deadline_while_the_server_answers(postgres, pg_url):
    open_store(pg_url).close()
    store = open_store(pg_url, readonly=True, deadline=SHORT_DEADLINE)
    started = time.monotonic()
    assert store.query("SELECT 7 FROM pg_sleep(%(s)s)", {"s": 3 * SHORT_DEADLINE}) == [(7,)]
    assert time.monotonic() - started >= 3 * SHORT_DEADLINE
    store.close()


def test_a_read_command_waits_on_a_blocked_query_and_ends_when_the_server_hangs(postgres, pg_url, tmp_path):
    """`dfs-sensor alerts` with [store] batch_deadline_seconds: its query blocked behind another
    session's lock (the server alive) waits past several deadlines; once the server is
    SIGSTOP'd, one line and exit 1 within the deadline and a connection attempt (on main it
    hung until killed)."""
    open_store(pg_url).close()
    conf = tmp_path / "sensor.toml"
    conf.write_text(f"[store]\nbatch_deadline_seconds = {SHORT_DEADLINE}\n")
    locker = psycopg.connect(pg_url)
    locker.execute("LOCK TABLE alert_records IN ACCESS EXCLUSIVE MODE")
    proc = subprocess.Popen([sys.executable, "-m", "sensor.cli", "alerts", "--config", str(conf), "--db", pg_url],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    frozen = False
    try:
        deadline = time.monotonic() + 60
        with postgres.admin() as admin:
            while not admin.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                    "AND query LIKE '%alert_records%'").fetchone()[0]:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.1)
        time.sleep(3 * SHORT_DEADLINE)
        assert proc.poll() is None, "a read blocked on a live server was given up"
        postgres.freeze()
        frozen = True
        started = time.monotonic()
        _, err = proc.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        if frozen:
            postgres.thaw()
        proc.kill()
        locker.close()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err and PASSWORD not in err
    assert f"no answer from the server within {SHORT_DEADLINE:g} s, nor a new connection" in err
    assert waited < 2 * SHORT_DEADLINE + PROBE_SECONDS + 3


@pytest.mark.parametrize("value", ["0", "0.5", "601", "nan", "inf", '"5"'])
def test_a_batch_deadline_out_of_range_is_one_line_and_exit_2(tmp_path, value):
    conf = tmp_path / "sensor.toml"
    conf.write_text(f"[store]\nbatch_deadline_seconds = {value}\n")
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "alerts", "--config", str(conf),
                           "--db", str(tmp_path / "s.db")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "store.batch_deadline_seconds must be" in done.stderr


def test_a_fatal_store_error_while_delivering_keeps_the_spool_and_says_so(tmp_path):
    """Fed to the spool: a batch that the database refuses for good (not an outage) stops the
    delivery with one error naming the spool; nothing leaves it, and the next process of the
    same database finds every batch."""
    settings = StoreSpoolSettings(str(tmp_path / "spool"), retry_max_seconds=0.1)
    database = "postgresql://sensor@db.example/dfs"
    first = StoreSpool(settings, database)

    def down(batch):
        raise StoreUnavailable(f"{database}: cannot connect: Connection refused")

    def refused(batch):
        raise StoreError(f'{database}: cannot connect: FATAL:  password authentication failed for user "sensor"')

    for n in range(3):
        first.write(Batch([], [], n), down)
    time.sleep(0.2)
    with pytest.raises(StoreError, match=r"password authentication failed.*; 3 batch\(es\) stay in the spool "
                                         r".*store-[0-9a-f]+-0\.db: the next run against this database delivers"):
        first.deliver(refused)
    assert first.waiting == 3
    first._spool.close()                    # the process ends: its slot and file stay
    first._lock.close()
    second = StoreSpool(settings, database)
    delivered = []
    second.deliver(lambda batch: delivered.append(batch.ahead_ms))
    assert delivered == [0, 1, 2]


# -- replays against a server that is down at start, or hangs -------------------------------

@pytest.mark.slow
def test_a_replay_started_while_postgres_is_down_delivers_everything_once_in_order(postgres, tmp_path):
    """One warning line, the capture read to the end into the spool; the server starts while
    the replay waits at the end (flush_seconds): the store equals a clean run's, each alert
    written once, in capture order."""
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 3000, days=4)
    conf = config(tmp_path, flush_seconds=120.0)
    clean = postgres.create_database("start_down_clean")
    finished(replay(clean, conf, tmp_path / "clean.jsonl", capture))
    url = postgres.create_database("start_down")
    postgres.pause()
    try:
        proc = replay(url, conf, tmp_path / "alerts.jsonl", capture)
        deadline = time.monotonic() + 120
        while spooled(tmp_path)[0] < 6:     # every batch of the capture (1000 events each)
            assert time.monotonic() < deadline and proc.poll() is None, "the replay spooled nothing"
            time.sleep(0.1)
    finally:
        postgres.resume()
    summary = finished(proc)
    warnings = [line for line in summary.splitlines() if "at start (the schema is checked when it answers)" in line]
    assert len(warnings) == 1 and "capture goes on, batches wait in a spool" in warnings[0]
    assert PASSWORD not in summary
    assert "batch(es) waited in the spool while the database was unreachable and were delivered in order" in summary
    assert contents(url) == contents(clean)
    lines = alert_ids(tmp_path / "alerts.jsonl")
    assert sorted(lines) == sorted(alert_ids(tmp_path / "clean.jsonl")) and len(lines) == len(set(lines))
    days = [json.loads(line)["day"] for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert days == sorted(days)
    assert spooled(tmp_path) == (0, set())


@pytest.mark.slow
def test_wrong_credentials_found_when_the_server_comes_up_end_the_run_and_keep_the_spool(postgres, tmp_path):
    """Down at start with a wrong password: spooled; once the server answers and refuses the
    password, one error line and exit 1, the spool kept; the next run with the right password
    delivers it: the store equals a clean run's."""
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 2000, days=2)
    conf = config(tmp_path, flush_seconds=120.0)
    clean = postgres.create_database("start_wrong_clean")
    finished(replay(clean, conf, tmp_path / "clean.jsonl", capture))
    url = postgres.create_database("start_wrong")
    wrong = url.replace(PASSWORD, "not-the-password")
    postgres.pause()
    try:
        proc = replay(wrong, conf, tmp_path / "first.jsonl", capture)
        deadline = time.monotonic() + 120
        while spooled(tmp_path)[0] < 4:
            assert time.monotonic() < deadline and proc.poll() is None, "the replay spooled nothing"
            time.sleep(0.1)
        time.sleep(2)                        # it reads on to the end, then waits for the database
    finally:
        postgres.resume()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    waiting, ids = spooled(tmp_path)
    errors = [line for line in err.splitlines() if line.startswith("dfs-sensor: error:")]
    assert len(errors) == 1 and "Traceback" not in err and "not-the-password" not in err
    assert "password authentication failed" in errors[0]
    assert f"; {waiting:,} batch(es) stay in the spool" in errors[0] and "the next run" in errors[0]
    assert waiting >= 4 and len(ids) == 4000 and schema_version(url) is None
    finished(replay(url, conf, tmp_path / "second.jsonl", empty_capture(capture, tmp_path / "empty.pcap")))
    assert contents(url) == contents(clean)
    assert sorted(alert_ids(tmp_path / "second.jsonl")) == sorted(alert_ids(tmp_path / "clean.jsonl"))
    assert spooled(tmp_path) == (0, set())


@pytest.mark.slow
def test_a_hung_server_mid_replay_does_not_stall_it_and_everything_arrives_after(postgres, tmp_path):
    """SIGSTOP'd server mid-replay: the batch in flight gives up after the deadline, the replay
    reads on to the end (its batches spooled); after SIGCONT the store equals a clean run's."""
    capture = repeated(PCAPS / "dfscoerce-smb21.pcap", tmp_path / "days.pcap", 3000, days=4)
    conf = config(tmp_path, flush_seconds=300.0)
    clean = postgres.create_database("hung_clean")
    finished(replay(clean, conf, tmp_path / "clean.jsonl", capture))
    url = postgres.create_database("hung")
    proc = replay(url, conf, tmp_path / "alerts.jsonl", capture)
    wait_until_stored(url, proc)
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    postgres.freeze()
    try:
        deadline = time.monotonic() + 120
        while True:       # reads on to the end: all but what was stored (a batch more, committed just now)
            if len(spooled(tmp_path)[1]) + stored >= 6000 - 1000:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "the replay stalled"
            time.sleep(0.2)
    finally:
        postgres.thaw()
    assert stored < 6000 - 2000, "the server hung too late in the replay"
    summary = finished(proc)
    assert f"no answer from the server within {BATCH_DEADLINE_SECONDS:g} s" in summary
    assert "batch(es) waited in the spool while the database was unreachable and were delivered in order" in summary
    assert contents(url) == contents(clean)
    lines = alert_ids(tmp_path / "alerts.jsonl")
    assert sorted(lines) == sorted(alert_ids(tmp_path / "clean.jsonl")) and len(lines) == len(set(lines))


def test_read_commands_fail_fast_while_the_server_is_down(postgres, pg_url):
    open_store(pg_url).close()
    postgres.pause()
    try:
        for command in (["alerts"], ["events"], ["hunt"]):
            done = subprocess.run([sys.executable, "-m", "sensor.cli", *command, "--db", pg_url], cwd=ROOT,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 1, done.stderr
            assert done.stderr.count("\n") == 1 and "Connection refused" in done.stderr
    finally:
        postgres.resume()
