"""The command line: exit codes, messages, summary, and the stored-data commands."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rarity_events import rpc_event, ts_of
from sensor.cli import main, parse_time
from sensor.config import Config
from sensor.detect.rarity import RaritySettings, hunt
from sensor.outputs import Outputs
from sensor.sensor import Sensor
from sensor.store.sqlite import Store

ROOT = Path(__file__).resolve().parents[1]
# A lab capture with SMB traffic and no call to alert on (pcaps/manifest.json: should_alert false).
BENIGN_CAPTURE = ROOT / "pcaps" / "benign-smb-filecopy.pcap"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def stored(tmp_path):
    """A database with alerts for two clients over three days, as the sensor leaves it."""
    path = tmp_path / "s.db"
    events = [rpc_event(ts_of(day), client=client, call_id=n)
              for n, (day, client) in enumerate([("2026-11-01", "10.0.0.5"), ("2026-11-02", "10.0.0.5"),
                                                 ("2026-11-02", "10.0.0.6"), ("2026-11-03", "10.0.0.5")])]
    sensor = Sensor(Config(db=str(path), sensor_name="s1"), Outputs())
    sensor.process_records(events)
    sensor.finish()
    return path, [replace(e, sensor="s1") for e in events]


def test_replay_of_a_missing_file_exits_1_naming_it(tmp_path):
    db = tmp_path / "s.db"
    result = invoke("replay", "--db", db, tmp_path / "nope.pcap")
    assert result.exit_code == 1
    assert result.stderr == f"dfs-sensor: error: {tmp_path / 'nope.pcap'}: no such file\n"
    assert not db.exists()          # refused before anything was touched


def test_replay_refuses_the_whole_list_when_one_file_is_not_a_capture(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a capture at all")
    result = invoke("replay", "--db", tmp_path / "s.db", BENIGN_CAPTURE, junk)
    assert result.exit_code == 1
    assert str(junk) in result.stderr and "not a pcap" in result.stderr
    assert "packets" not in result.stderr


@pytest.mark.parametrize("args", [["replay"], ["replay", "--day-mode", "weekday", "x.pcap"],
                                  ["replay", "--threshold", "0", "x.pcap"], ["hunt", "--until", "yesterday"],
                                  ["bogus-command"], ["live"]])
def test_usage_errors_exit_2(args):
    assert invoke(*args).exit_code == 2


def test_unknown_config_key_exits_2(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[detector]\nthreshhold = 3\n")
    result = invoke("replay", "--config", config, "--db", tmp_path / "s.db", tmp_path / "x.pcap")
    assert result.exit_code == 2
    assert "unknown setting 'detector.threshhold'" in result.stderr


def test_corrupt_database_exits_1(tmp_path):
    db = tmp_path / "s.db"
    db.write_bytes(b"garbage, not sqlite " * 100)
    result = invoke("replay", "--db", db, BENIGN_CAPTURE)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"dfs-sensor: error: {db}: ") and result.stderr.count("\n") == 1


def test_replay_summary_on_stderr_and_no_alert_on_stdout(tmp_path):
    from sensor.capture.pcapfile import open_capture

    with open_capture(str(BENIGN_CAPTURE)) as reader:
        frames = sum(1 for _ in reader)
    result = invoke("replay", "--db", tmp_path / "s.db", BENIGN_CAPTURE)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert f"1 file(s), {frames:,} packets" in result.stderr
    assert "MB/s" in result.stderr


def test_hunt_json_is_the_hunt_rows(stored):
    path, _ = stored
    result = invoke("hunt", "--db", path, "--format", "json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    store = Store(str(path))
    expected = hunt(store, None, RaritySettings())
    store.close()
    assert [(r["actor_remote_ip"], r["day_count"]) for r in rows] == \
        [(r["actor_remote_ip"], r["day_count"]) for r in expected] == [("10.0.0.5", 3), ("10.0.0.6", 1)]


def test_hunt_until_and_threshold(stored):
    path, _ = stored
    table = invoke("hunt", "--db", path, "--until", "2026-11-01").stdout.splitlines()
    assert table[0].split()[:2] == ["day_count", "actor_remote_ip"]
    assert [line.split()[:2] for line in table[1:]] == [["1", "10.0.0.5"]]
    only_rare = invoke("hunt", "--db", path, "--threshold", "2", "--format", "json").stdout
    assert [json.loads(line)["actor_remote_ip"] for line in only_rare.splitlines()] == ["10.0.0.6"]


def test_alerts_and_events_listings_with_filters(stored):
    path, events = stored
    alerts = [json.loads(line) for line in invoke("alerts", "--db", path, "--format", "json").stdout.splitlines()]
    assert [a["day"] for a in alerts] == ["2026-11-03", "2026-11-02", "2026-11-02", "2026-11-01"]  # newest first
    assert sorted((a["day"], a["actor_remote_ip"], a["day_count"]) for a in alerts) == [
        ("2026-11-01", "10.0.0.5", 1), ("2026-11-02", "10.0.0.5", 2),
        ("2026-11-02", "10.0.0.6", 1), ("2026-11-03", "10.0.0.5", 3)]
    client = invoke("alerts", "--db", path, "--client", "10.0.0.6", "--format", "json").stdout
    assert [json.loads(line)["day"] for line in client.splitlines()] == ["2026-11-02"]
    listed = invoke("events", "--db", path, "--since", "2026-11-02", "--until", "2026-11-02", "--format", "json")
    assert sorted(json.loads(line)["event_id"] for line in listed.stdout.splitlines()) == \
        sorted(e.event_id for e in events[1:3])
    table = invoke("events", "--db", path, "--limit", "1").stdout.splitlines()
    assert len(table) == 2 and events[3].event_id in table[1]


def test_parse_time():
    assert parse_time("2026-11-02") == int(ts_of("2026-11-02", 0) * 1000)
    assert parse_time("2026-11-02", end_of_day=True) == int(ts_of("2026-11-03", 0) * 1000) - 1
    assert parse_time("2026-11-02T12:00:00Z") == parse_time("2026-11-02T13:00:00+01:00") \
        == parse_time(str(ts_of("2026-11-02"))) == int(ts_of("2026-11-02") * 1000)


@pytest.mark.parametrize("command", ["replay", "live", "hunt", "alerts", "events"])
def test_every_command_explains_itself_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example" in result.stdout


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensor.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_subprocess_exit_codes_and_messages(tmp_path):
    missing = run_cli("replay", "--db", tmp_path / "s.db", tmp_path / "nope.pcap")
    assert missing.returncode == 1
    assert missing.stderr == f"dfs-sensor: error: {tmp_path / 'nope.pcap'}: no such file\n"
    usage = run_cli("replay")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr and "Missing argument" in usage.stderr


def test_subprocess_replay_succeeds_with_a_summary(tmp_path):
    done = run_cli("replay", "--db", tmp_path / "s.db", BENIGN_CAPTURE)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "packets" in done.stderr and "Traceback" not in done.stderr


LAB_CAPTURE = ROOT / "pcaps" / "dfscoerce-smb21.pcap"


@pytest.mark.tshark
@pytest.mark.skipif(not LAB_CAPTURE.exists() or shutil.which("tshark") is None, reason="needs the lab capture and tshark")
def test_tshark_engine_alerts_like_native_and_shares_event_ids(tmp_path):
    db = tmp_path / "s.db"
    by_tshark = invoke("replay", "--engine", "tshark", "--db", db, LAB_CAPTURE)
    assert by_tshark.exit_code == 0, by_tshark.stderr
    alerts = [json.loads(line) for line in by_tshark.stdout.splitlines()]
    assert sorted(a["action_rpc_func_opnum"] for a in alerts) == [12, 13]
    native = invoke("replay", "--db", db, LAB_CAPTURE)
    assert native.stdout == "" and "2 events (0 new)" in native.stderr   # same ids: nothing new


def test_syslog_help_says_alerts_are_teed_not_logs_moved():
    text = " ".join(invoke("live", "--help").stdout.split())
    assert "Also send every alert to the local syslog" in text and "instead of stderr" not in text


def replay_on_a_terminal(*args) -> str:
    """`dfs-sensor replay` with stderr on a pseudo-terminal: what the terminal showed."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:     # the child: stdin/stdout/stderr are the terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "sensor.cli", "replay", *map(str, args)])
    shown = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:          # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return shown.decode(errors="replace")


def test_progress_bar_only_on_a_terminal(tmp_path):
    on_tty = replay_on_a_terminal("--db", tmp_path / "tty.db", BENIGN_CAPTURE)
    assert "replay  [" in on_tty and "100%" in on_tty and "packets" in on_tty
    piped = run_cli("replay", "--db", tmp_path / "pipe.db", BENIGN_CAPTURE)
    assert piped.returncode == 0 and "replay  [" not in piped.stderr and "%" not in piped.stderr


@pytest.mark.tshark
@pytest.mark.skipif(not LAB_CAPTURE.exists() or shutil.which("tshark") is None, reason="needs the lab capture and tshark")
def test_tshark_replay_summary_states_file_bytes_and_no_packet_count(tmp_path):
    big = ROOT / "pcaps" / "benign-smb-filecopy.pcap"
    result = invoke("replay", "--engine", "tshark", "--db", tmp_path / "s.db", LAB_CAPTURE, big)
    size = LAB_CAPTURE.stat().st_size + big.stat().st_size
    first = result.stderr.splitlines()[0]
    assert first.startswith("2 file(s), packets n/a (") and " decoded by tshark), " in first
    assert f", {size / 1e6:,.1f} MB, " in first and " 0 packets" not in first


TINY_TMPFS_BYTES = 160 * 1024   # the empty store (~48 KiB) fits; the lab captures' events do not


@pytest.fixture
def tiny_tmpfs(tmp_path):
    import os

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TINY_TMPFS_BYTES}", "tmpfs", str(mountpoint)],
                   check=True, timeout=30)
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True, timeout=30)


def test_disk_full_during_a_replay_is_one_line_and_exit_1(tiny_tmpfs):
    captures = sorted((ROOT / "pcaps").glob("*.pcap"))
    if not captures:
        pytest.skip("no lab captures")
    db = tiny_tmpfs / "s.db"
    done = run_cli("replay", "--db", db, *captures)
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"dfs-sensor: error: {db}: database or disk is full\n"
