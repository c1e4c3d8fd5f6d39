"""Issue 18 item 8: every command-line and configuration value is range-checked before use.
Out-of-range values (SQLite integer overflow, dates beyond year 9999, inf/NaN, malformed lists,
a non-UTF-8 file, an empty --db) exit 2 with one error line naming the option, never a
traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PCAPS, ROOT

CAPTURE = PCAPS / "dfscoerce-smb21.pcap"


def dfs_sensor(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensor.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def assert_usage_error(done: subprocess.CompletedProcess, names: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "rror:" in line]
    assert len(errors) == 1 and names in errors[0], done.stderr


@pytest.mark.parametrize("args, names", [
    (["replay", "--lookback-days", "1000000"], "--lookback-days"),
    (["replay", "--lookback-days", "3000000"], "--lookback-days"),
    (["replay", "--lookback-days", str(2**63 - 1)], "--lookback-days"),
    (["replay", "--threshold", str(2**63)], "--threshold"),
    (["hunt", "--lookback-days", str(10**12)], "--lookback-days"),
    (["hunt", "--until", "inf"], "--until"),
    (["events", "--until", "inf"], "--until"),
    (["events", "--since", "-inf"], "--since"),
    (["alerts", "--since", "nan"], "--since"),
    (["alerts", "--until", "1e30"], "--until"),
    (["events", "--until", "9999-12-31T23:59:59-01:00"], "--until"),
    (["events", "--limit", str(10**20)], "--limit"),
    (["events", "--opnum", str(10**20)], "--opnum"),
    (["alerts", "--opnum", "65536"], "--opnum"),
    (["live", "-i", "lo", "--stats-interval", "nan"], "--stats-interval"),
])
def test_out_of_range_options_exit_2_naming_the_option(tmp_path, args, names):
    command, *flags = args
    extra = [str(CAPTURE)] if command == "replay" else []
    assert_usage_error(dfs_sensor(command, "--db", str(tmp_path / "s.db"), *flags, *extra), names)
    assert not (tmp_path / "s.db").exists()     # refused before anything was opened


@pytest.mark.parametrize("text, names", [
    ("[coercion]\nknown_servers = [[1]]\n", "coercion.known_servers"),
    ("[coercion]\nknown_servers = [{a=1}]\n", "coercion.known_servers"),
    ("[coercion]\nwindow = nan\n", "coercion.window"),
    ("[coercion]\nwindow = inf\n", "coercion.window"),
    ("[detector]\nlookback_days = 9223372036854775807\n", "lookback_days"),
    ("[detector]\nthreshold = 100000\n", "threshold"),
    ("[store]\nmax_clock_skew = -1\n", "store.max_clock_skew"),
    ("[store]\nmax_clock_skew = nan\n", "store.max_clock_skew"),
    ("[outputs]\nspool_max_bytes = 0\n", "outputs.spool_max_bytes"),
    ("[outputs]\nspool_max_bytes = 9223372036854775807\n", "outputs.spool_max_bytes"),
    ("[outputs]\nevidence_max_bytes = -1\n", "outputs.evidence_max_bytes"),
    ("[outputs]\nevidence_max_bytes = 9223372036854775807\n", "outputs.evidence_max_bytes"),
    ("[outputs]\nspool_flush_seconds = -1\n", "outputs.spool_flush_seconds"),
    ("[outputs]\nspool_flush_seconds = nan\n", "outputs.spool_flush_seconds"),
    ('db = ""\n', "db"),
])
def test_out_of_range_settings_in_the_file_exit_2(tmp_path, text, names):
    config = tmp_path / "c.toml"
    config.write_text(text)
    assert_usage_error(dfs_sensor("replay", "--config", str(config), "--db", str(tmp_path / "s.db"), str(CAPTURE))
                       if not text.startswith("db") else
                       dfs_sensor("replay", "--config", str(config), str(CAPTURE)), names)


def test_a_configuration_file_that_is_not_utf8_exits_2(tmp_path):
    config = tmp_path / "c.toml"
    config.write_bytes(b'db = "/tmp/\xff\xfe.db"\n')
    assert_usage_error(dfs_sensor("alerts", "--config", str(config)), "UTF-8")


def test_an_empty_db_is_refused_not_a_temporary_store(tmp_path):
    for command in (["replay", str(CAPTURE)], ["alerts"], ["events"], ["hunt"]):
        assert_usage_error(dfs_sensor(command[0], "--db", "", *command[1:]), "db")
