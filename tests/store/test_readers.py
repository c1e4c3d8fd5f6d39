"""Issue 18 item 7: the read commands open the store read-only. They never create a store
(a typo in --db is one line, exit 1), never take the write lock (a writer mid-transaction
does not slow them, and they do not slow it), and work where they cannot write: a store
owned by another user, with or without a writer running, and a read-only mount."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rarity_events import rpc_event, ts_of
from sensor.store.sqlite import Store
from tests.conftest import ROOT

NOBODY = 65534


# The interpreter lives under /root, which another user cannot reach: start as root, import
# the CLI and what it imports on first use (click's help texts go through gettext, which
# imports locale when it first translates), then become that user before it runs (as
# `dfs-sensor` would run for an analyst with an interpreter of their own).
AS_USER = ("import os, sys, locale; from sensor.cli import main; os.setgroups([]); os.setgid({uid}); "
           "os.setuid({uid}); sys.argv[0] = 'dfs-sensor'; main()")


def dfs_sensor(*args: str, user: int | None = None) -> subprocess.CompletedProcess:
    start = ["-m", "sensor.cli"] if user is None else ["-c", AS_USER.format(uid=user)]
    return subprocess.run([sys.executable, *start, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def listed_ids(done: subprocess.CompletedProcess) -> set[str]:
    assert done.returncode == 0, done.stderr
    return {json.loads(line)["event_id"] for line in done.stdout.splitlines()}


def stored(path: Path, count: int = 3) -> set[str]:
    store = Store(str(path))
    events = [rpc_event(ts_of("2026-11-01") + n, call_id=n) for n in range(count)]
    with store.transaction():
        for event in events:
            store.add_event(event)
    store.close()
    return {e.event_id for e in events}


def test_a_missing_store_is_one_line_and_nothing_is_created(tmp_path):
    for command in ("alerts", "events", "hunt"):
        done = dfs_sensor(command, "--db", str(tmp_path / "typo" / "x.db"))
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"dfs-sensor: error: {tmp_path}/typo/x.db: no such store (nothing was replayed or captured "
            f"into it; check --db)"]
        assert not (tmp_path / "typo").exists()


def test_readers_neither_wait_for_nor_block_a_writer(tmp_path):
    path = tmp_path / "s.db"
    ids = stored(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")              # a writer holding the write lock
    writer.execute("DELETE FROM events")           # uncommitted: readers must not see it
    started = time.monotonic()
    for command in ("events", "alerts", "hunt"):
        done = dfs_sensor(command, "--db", str(path), "--format", "json")
        assert done.returncode == 0, done.stderr
        if command == "events":
            assert listed_ids(done) == ids
    # Each command is one interpreter start-up; a reader waiting on the lock would take the
    # old 3.5-10 s busy wait per command.
    assert time.monotonic() - started < 15
    writer.execute("COMMIT")                       # and the writer was never refused
    writer.close()


@pytest.fixture
def foreign_dir():
    """A directory and store owned by root, 0755/0644: another user can read, not write.
    (pytest's tmp_path sits under a root-only directory nobody cannot reach.)"""
    path = Path(tempfile.mkdtemp(prefix="dfs-sensor-readers-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a reader as another user")


@needs_root
def test_another_user_lists_a_store_after_the_writer_closed_it(foreign_dir):
    path = foreign_dir / "s.db"
    ids = stored(path)
    assert not Path(f"{path}-wal").exists()        # closed cleanly: no -wal, no -shm to share
    assert listed_ids(dfs_sensor("events", "--db", str(path), "--format", "json", user=NOBODY)) == ids
    assert dfs_sensor("hunt", "--db", str(path), user=NOBODY).returncode == 0
    assert sorted(p.name for p in foreign_dir.iterdir()) == ["s.db"]


@needs_root
def test_another_user_lists_a_store_while_its_writer_has_it_open(foreign_dir):
    path = foreign_dir / "s.db"
    ids = stored(path)
    writer = Store(str(path))                      # a running sensor: -wal and -shm exist
    later = rpc_event(ts_of("2026-11-02"))
    with writer.transaction():
        writer.add_event(later)
    assert Path(f"{path}-shm").exists()
    os.chmod(f"{path}-shm", 0o644)
    os.chmod(f"{path}-wal", 0o644)
    listed = listed_ids(dfs_sensor("events", "--db", str(path), "--format", "json", user=NOBODY))
    assert listed == ids | {later.event_id}        # the committed rows still in the WAL too
    writer.close()


@needs_root
def test_a_store_on_a_read_only_mount_is_listed(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed for a private read-only mount")
    source = tmp_path / "data"
    source.mkdir()
    ids = stored(source / "s.db")
    mount = tmp_path / "ro"
    mount.mkdir()
    script = (f"mount --bind {source} {mount} && mount -o remount,bind,ro {mount} && "
              f"exec {sys.executable} -m sensor.cli events --db {mount}/s.db --format json")
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert listed_ids(done) == ids
