"""``replay --jobs N``: files decoded in parallel processes give the store and alerts of a serial
replay. Real lab captures moved over nine days with editcap (so the rarity detector alerts on
the first six and then stops), with coercion and encrypted-session captures between them."""
from __future__ import annotations

import json
import pickle
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sensor.parallel import FileDone, RecordRows, decoded_chunks

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
DAY = 86400
# Per day: an attack, a coerced back-authentication in clear and one inside SMB3 encryption,
# benign traffic.
DAILY = ["dfscoerce-smb21.pcap", "coerced-auth-clear.pcap", "dfscoerce-smb3-encrypted.pcap",
         "benign-smb-filecopy.pcap", "benign-encrypted-rpc.pcap"]

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) missing")


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> list[Path]:
    out_dir = tmp_path_factory.mktemp("days")
    copies = []
    for d in range(9):
        for name in DAILY:
            out = out_dir / f"day{d}-{name}"
            subprocess.run(["editcap", "-t", str(d * DAY), str(PCAPS / name), str(out)], check=True)
            copies.append(out)
    return copies


def replay(db: Path, captures: list[Path], *extra: str) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(db), *extra,
                           *map(str, captures)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines(), done.stderr


def store_rows(db: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(db) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}


def counts(summary: str) -> str:
    """The summary's counts (files, packets, bytes, flows, events, alerts), not its timing."""
    return re.sub(r" in [\d.]+ s \([\d.]+ MB/s\)", "", summary)


@pytest.mark.parametrize("jobs", [2, 3])
def test_jobs_store_and_alerts_equal_a_serial_replay(days, tmp_path, jobs):
    serial_alerts, serial_summary = replay(tmp_path / "serial.db", days, "--events", str(tmp_path / "serial.jsonl"))
    parallel_alerts, parallel_summary = replay(tmp_path / "parallel.db", days, "--jobs", str(jobs),
                                               "--events", str(tmp_path / "parallel.jsonl"))
    assert parallel_alerts == serial_alerts
    events = (tmp_path / "serial.jsonl").read_text()
    assert events and (tmp_path / "parallel.jsonl").read_text() == events      # the event log, in order
    rare = [a for a in serial_alerts if '"dfscoerce-rare-dfsnm-root-call"' in a]
    assert len(rare) == 2 * 6          # two keys, alerting on their first six days only
    assert {"coercion-confirmed", "probable-coercion"} & {json.loads(a)["rule"]["id"] for a in serial_alerts}
    rows = store_rows(tmp_path / "serial.db")
    assert rows["events"] and rows == store_rows(tmp_path / "parallel.db")
    assert counts(parallel_summary) == counts(serial_summary)


def test_jobs_is_for_the_native_engine(days, tmp_path):
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(tmp_path / "s.db"),
                           "--engine", "tshark", "--jobs", "2", str(days[0])], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dfs-sensor: error: --jobs is for the native engine; tshark decodes each file in its own process already"]


def test_jobs_refuses_a_pipe_among_several_captures_and_reads_one_alone(days, tmp_path):
    """A pipe or - is read once, in order, by the process that checked it: workers cannot share
    it, so with several captures --jobs refuses it (usage, exit 2, nothing stored); alone it is
    replayed as without --jobs."""
    command = [sys.executable, "-m", "sensor.cli", "replay", "--jobs", "2"]
    with open(days[0], "rb") as stdin:
        done = subprocess.run([*command, "--db", str(tmp_path / "refused.db"), "-", str(days[1])], cwd=ROOT,
                              stdin=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dfs-sensor: error: --jobs decodes files in worker processes: a pipe or - is read once, in order; "
        "replay it without --jobs"]
    assert not (tmp_path / "refused.db").exists()
    with open(days[0], "rb") as stdin:
        done = subprocess.run([*command, "--db", str(tmp_path / "piped.db"), "-"], cwd=ROOT, stdin=stdin,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    alerts, summary = replay(tmp_path / "file.db", [days[0]])
    assert alerts and calls(done.stdout.splitlines()) == calls(alerts)    # (the capture's name differs)
    assert counts(done.stderr) == counts(summary)


def calls(alerts: list[str]) -> list[tuple]:
    """What each alert says was called, by whom (not which file it was read from)."""
    return [(a["rule"], a["action_rpc_func_opnum"], a["actor_remote_ip"]) for a in map(json.loads, alerts)]


def test_jobs_damaged_file_among_good_ones_warns_as_a_serial_replay(days, tmp_path):
    """A capture cut short in the middle of a record among whole ones: the same warning line,
    anomaly counter, store and alerts as a serial replay; the files after it are replayed."""
    cut = tmp_path / "day1-cut.pcap"
    whole = days[5].read_bytes()
    cut.write_bytes(whole[:len(whole) * 2 // 3])
    captures = [*days[:5], cut, *days[6:12]]
    serial_alerts, serial_summary = replay(tmp_path / "serial.db", captures)
    parallel_alerts, parallel_summary = replay(tmp_path / "parallel.db", captures, "--jobs", "2")
    warnings = [line for line in serial_summary.splitlines() if line.startswith("dfs-sensor: warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"dfs-sensor: warning: {cut}: block cut short")
    assert "capture_truncated 1" in serial_summary
    assert counts(parallel_summary) == counts(serial_summary)        # the warning line included
    assert parallel_alerts == serial_alerts
    assert store_rows(tmp_path / "parallel.db") == store_rows(tmp_path / "serial.db")


def test_jobs_refuses_a_file_that_is_no_capture_before_starting(days, tmp_path):
    """Every capture is checked before any worker starts: one line, exit 1, nothing stored."""
    junk = tmp_path / "notes.pcap"
    junk.write_text("not a capture\n")
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--jobs", "2", "--db",
                           str(tmp_path / "s.db"), *map(str, days[:3]), str(junk), str(days[3])], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"dfs-sensor: error: {junk}: not a pcap or pcapng file (magic 6e6f7420)"]
    assert not done.stdout and not (tmp_path / "s.db").exists()


def replay_with_workers(db: Path, captures: list[Path], worker_step: str = "", *extra: str,
                        parent_step: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """``replay --jobs 2`` whose workers run ``worker_step`` (Python, with ``path``) before
    decoding each file (a worker killed as the kernel's OOM killer would, a file removed after
    the CLI checked it, a worker that takes long), and whose parent runs ``parent_step`` (with
    ``workers``, the worker processes) once it has stored every file. The rest is the real CLI
    and worker processes."""
    program = (
        "import os, signal, sys, time\n"
        "import sensor.parallel as parallel\n"
        "from sensor.cli import main\n"
        "decoded_chunks, stored_all = parallel.decoded_chunks, parallel.DecodedInParallel.__exit__\n"
        "def sabotaged(path):\n"
        f"    {worker_step or 'pass'}\n"
        "    yield from decoded_chunks(path)\n"
        "def exit_after(self, *error):\n"
        "    workers = [worker.process for worker in self._workers]\n"
        f"    {parent_step or 'pass'}\n"
        "    stored_all(self, *error)\n"
        "parallel.decoded_chunks, parallel.DecodedInParallel.__exit__ = sabotaged, exit_after\n"
        "main()\n")
    return subprocess.run([sys.executable, "-c", program, "replay", "--jobs", "2", "--db", str(db), *extra,
                           *map(str, captures)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_jobs_worker_killed_is_one_line_and_a_rerun_completes_the_store(days, tmp_path):
    """A worker killed (SIGKILL, as by the OOM killer) as it starts a file: one line naming
    that file, exit 1, no hang or traceback; the files before it are stored with their alerts
    written, and a rerun stores the rest: the store and the alerts of the two runs equal a
    serial replay's."""
    killed = days[10]
    db = tmp_path / "parallel.db"
    done = replay_with_workers(db, days, f"if path == {str(killed)!r}: os.kill(os.getpid(), signal.SIGKILL)")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"dfs-sensor: error: a --jobs worker process was killed by signal 9 (out of memory?) before {killed} "
        "was decoded; the files before it are stored"]
    before_alerts, _ = replay(tmp_path / "before.db", days[:10])
    assert before_alerts and done.stdout.splitlines() == before_alerts
    assert store_rows(db)["events"] == store_rows(tmp_path / "before.db")["events"]
    rest_alerts, _ = replay(db, days, "--jobs", "2")
    serial_alerts, _ = replay(tmp_path / "serial.db", days)
    assert before_alerts + rest_alerts == serial_alerts
    assert store_rows(db) == store_rows(tmp_path / "serial.db")


def test_jobs_workers_killed_once_done_change_nothing(days, tmp_path):
    """Workers that die after their last file (killed while idle) are no error: every file
    was stored, exit 0, the store and alerts of a serial replay."""
    db = tmp_path / "parallel.db"
    done = replay_with_workers(db, days, parent_step="[os.kill(w.pid, signal.SIGKILL) for w in workers]; "
                                                   "[w.join() for w in workers]")
    assert done.returncode == 0, done.stderr
    serial_alerts, serial_summary = replay(tmp_path / "serial.db", days)
    assert done.stdout.splitlines() == serial_alerts
    assert counts(done.stderr) == counts(serial_summary)
    assert store_rows(db) == store_rows(tmp_path / "serial.db")


def test_jobs_worker_that_fails_ends_the_run(days, tmp_path):
    """An exception in a worker's decoding that is no CaptureError (a bug): the worker prints
    its traceback and exits, and the run ends with the line naming the file, exit 1, rather
    than waiting for it (its sending thread kept it alive)."""
    failing = days[6]
    done = replay_with_workers(tmp_path / "s.db", days, f"if path == {str(failing)!r}: raise ValueError('a bug')",
                               timeout=60)
    assert done.returncode == 1
    assert "ValueError: a bug" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"dfs-sensor: error: a --jobs worker process exited with status 1 before {failing} was decoded; "
        "the files before it are stored")


def test_jobs_worker_that_cannot_send_a_record_ends_the_run(days, tmp_path):
    """A record that cannot be pickled (a bug) kills its worker's sending thread: the worker
    ends with its traceback, the run with the line naming the file, exit 1, not a wait."""
    failing = days[6]
    done = replay_with_workers(tmp_path / "s.db", days,
                               f"if path == {str(failing)!r}: yield parallel.RecordRows([lambda: 0])", timeout=60)
    assert done.returncode == 1
    assert "Can't pickle local object 'sabotaged.<locals>.<lambda>'" in done.stderr      # the worker's traceback
    assert done.stderr.strip().splitlines()[-1] == (
        f"dfs-sensor: error: a --jobs worker process exited with status 1 before {failing} was decoded; "
        "the files before it are stored")


def test_jobs_file_removed_after_the_check_is_one_line(days, tmp_path):
    """A file gone by the time its worker opens it: the reader's one line, exit 1."""
    gone = tmp_path / days[7].name
    shutil.copy(days[7], gone)
    captures = [*days[:7], gone, *days[8:]]
    done = replay_with_workers(tmp_path / "s.db", captures, f"if path == {str(gone)!r}: os.unlink(path)")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"dfs-sensor: error: {gone}: no such file"]


def test_jobs_store_that_cannot_open_ends_the_workers(days, tmp_path):
    """The workers start before the store opens; when it cannot, the CLI says so in one line
    (exit 1) and ends them at once: they hold its stdout, so a worker left decoding (here for
    10 minutes) would keep this run from returning."""
    db = tmp_path / "a-directory.db"
    db.mkdir()
    done = replay_with_workers(db, days[:4], "time.sleep(600)", timeout=60)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"dfs-sensor: error: {db}")


def test_jobs_writes_the_evidence_of_a_serial_replay(days, tmp_path):
    """--evidence: each alert's frames, read again from its capture file once the file is done,
    give the same pcaps (names and bytes) with --jobs as serially (the parent passed no path,
    so --jobs wrote none)."""
    def evidence(name: str, *extra: str) -> dict[str, bytes]:
        replay(tmp_path / f"{name}.db", days[:15], "--evidence", str(tmp_path / name), *extra)
        return {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}

    serial = evidence("serial")
    assert len(serial) >= 5 and all(pcap for pcap in serial.values())
    assert evidence("parallel", "--jobs", "2") == serial


def test_records_reach_the_parent_equal(days):
    """What a worker sends (records as field values, rebuilt in the parent) equals what its
    pipeline made: every record class the lab captures give (RPC calls, SMB sessions, NTLM
    authentications, SMB3 transform headers), chunk by chunk, and the counters at the end."""
    kinds = set()
    for path in days[:5]:
        messages = list(decoded_chunks(str(path)))
        assert isinstance(messages[-1], FileDone) and messages[-1].stats["packets"]
        assert [pickle.loads(pickle.dumps(m, pickle.HIGHEST_PROTOCOL)) for m in messages] == messages
        kinds |= {type(r).__name__ for m in messages[:-1] for r in m.records}
    assert {"RpcCallEvent", "SmbSession", "NtlmAuthentication", "EncryptedMessage"} <= kinds


@dataclass(frozen=True)
class KeywordOnly:
    number: int
    text: str = field(kw_only=True)


def test_records_that_cannot_be_rebuilt_from_field_values_are_sent_whole():
    records = [KeywordOnly(1, text="a"), ("a", "tuple"), KeywordOnly(2, text="b")]
    assert pickle.loads(pickle.dumps(RecordRows(records))) == RecordRows(records)
