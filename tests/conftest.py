"""Shared test helpers: where the recorded captures live, and running the pipeline over one."""
from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"


def stored_alert_lines(db) -> list[str]:
    """The alerts the store at ``db`` holds, as `dfs-sensor alerts --format json` lists them
    (one JSON line each): what a sink's collector must have received."""
    return subprocess.run([str(ROOT / ".venv" / "bin" / "dfs-sensor"), "alerts", "--db", str(db), "--format", "json"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
MANIFEST = PCAPS / "manifest.json"
# The public corpus (Zeek's and Suricata's test captures, with tshark's summaries) sits beside
# the checkout as ../shared/corpus, read-only and never copied into the repo; DFS_SENSOR_CORPUS
# points elsewhere. A test that reads it takes the `corpus` fixture: one skip reason when it is absent.
CORPUS = Path(os.environ.get("DFS_SENSOR_CORPUS") or ROOT.parent / "shared" / "corpus")
CORPUS_ABSENT = (f"public corpus absent: no {CORPUS / 'manifest.json'} (put the corpus beside the checkout "
                 "as ../shared/corpus or set DFS_SENSOR_CORPUS)")
# CI has the corpus beside its checkout and must run every test on it: there, absent is a failure.
CORPUS_REQUIRED = os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/store/postgres_server.py); when it
    cannot start, the tests that take it fail with the reason."""
    from tests.store.postgres_server import PostgresServer

    server = PostgresServer.start()
    yield server
    server.stop()


_pg_names = itertools.count()


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh empty database on that server; its URL."""
    return postgres.create_database(f"dfs_{next(_pg_names)}")


def corpus_present() -> bool:
    return (CORPUS / "manifest.json").is_file()


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus directory; skips the test when it is absent (fails it under CI=true)."""
    if not corpus_present():
        if CORPUS_REQUIRED:
            pytest.fail(CORPUS_ABSENT + "; CI=true requires it")
        pytest.skip(CORPUS_ABSENT)
    return CORPUS


def corpus_manifest() -> list[dict]:
    """The corpus manifest's captures, for parametrizing at collection; empty when absent."""
    return json.loads((CORPUS / "manifest.json").read_text())["captures"] if corpus_present() else []


def corpus_captures(*suffixes: str) -> list:
    """Every capture file in the corpus, for parametrizing a test that also takes `corpus`. When
    the corpus is absent, one placeholder, so that the test reports CORPUS_ABSENT once."""
    if not corpus_present():
        return [pytest.param(None, id="corpus-absent")]
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def load_manifest() -> dict:
    """pcaps/manifest.json's captures: name -> ground truth."""
    return json.loads(MANIFEST.read_text())["captures"]


def decode_capture(path: Path, settings=None):
    """Run the whole native pipeline over one capture: (records, stats)."""
    from sensor.capture.pcapfile import open_capture
    from sensor.pipeline import Pipeline

    pipe = Pipeline(settings)
    pipe.capture_file = path.name
    records = []
    for ts, linktype, data, frame in open_capture(path):
        records.extend(pipe.feed(ts, linktype, data, frame))
    records.extend(pipe.close())
    return records, pipe.stats


requires_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (scripts/setup --test installs it)")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled to the last block but for a file the test can delete to free
    space: (mount point, that file)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; CI runs as root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        filler = mount / "filler"
        with open(filler, "wb") as f:
            try:
                f.write(b"x" * 128 * 1024)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        yield mount, filler
    finally:
        subprocess.run(["umount", str(mount)], check=True)
