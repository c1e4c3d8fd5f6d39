"""JSON-lines sinks: one flushed line per record, reopen after logrotate, clear open errors."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sensor import outputs
from sensor.outputs import JsonLinesSink, OutputError, open_outputs

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "pcaps" / "dfscoerce-smb21.pcap"


def test_lines_are_flushed_and_reopen_follows_logrotate(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = JsonLinesSink(str(path))
    sink.write('{"n":1}')
    assert path.read_text() == '{"n":1}\n'          # visible before close: flushed per line
    path.rename(tmp_path / "alerts.jsonl.1")        # logrotate moves it, then sends SIGHUP
    sink.reopen()
    sink.write('{"n":2}')
    sink.close()
    assert (tmp_path / "alerts.jsonl.1").read_text() == '{"n":1}\n'
    assert path.read_text() == '{"n":2}\n'


def test_stdout_sink(capsys):
    outputs = open_outputs(None, "-")
    assert outputs.events is None
    outputs.alerts.write("{}")
    outputs.reopen()                                # no-op on stdout
    outputs.alerts.write("[]")
    outputs.close()
    assert capsys.readouterr().out == "{}\n[]\n"


def test_unwritable_path_is_one_line_error(tmp_path):
    with pytest.raises(OutputError, match="cannot open for writing"):
        JsonLinesSink(str(tmp_path / "no" / "such" / "dir" / "a.jsonl"))


def test_a_full_disk_in_live_mode_keeps_lines_retries_and_says_so_once(full_disk):
    mount, filler = full_disk
    filler.write_bytes(b"x" * 60 * 1024)             # room for a little, not for everything
    messages = []
    sink = JsonLinesSink(str(mount / "alerts.jsonl"), on_error=messages.append)
    line = '{"alert":"%s"}' % ("y" * 1000)
    for _ in range(20):
        sink.write(line)                             # never raises
    assert len(messages) == 1 and "No space left on device" in messages[0]
    written = (mount / "alerts.jsonl").read_text().splitlines()
    assert written and all(w == line for w in written)   # whole lines only, none torn
    assert sink.lines == len(written) < 20 and sink.lost == 0
    filler.unlink()                                  # the operator frees space
    sink.write(line)
    assert len(messages) == 2 and "writing again" in messages[1]
    assert (mount / "alerts.jsonl").read_text().splitlines() == [line] * 21
    sink.close()


def test_lines_beyond_the_backlog_are_counted_as_lost(monkeypatch, full_disk):
    mount, _ = full_disk
    monkeypatch.setattr(outputs, "MAX_BACKLOG_LINES", 5)
    messages = []
    sink = JsonLinesSink(str(mount / "alerts.jsonl"), on_error=messages.append)
    for n in range(12):
        sink.write('{"n":%d}' % n)
    sink.close()
    assert (sink.lines, sink.lost) == (0, 12)        # 7 pushed out, 5 still unwritten at close
    assert len(messages) == 1


def test_replay_into_a_full_output_is_one_line_and_exit_1(tmp_path):
    db = tmp_path / "s.db"
    cmd = [str(ROOT / ".venv" / "bin" / "dfs-sensor"), "replay", "--db", str(db), str(CAPTURE)]
    with open("/dev/full", "w") as full:
        done = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1
    assert done.stderr == "dfs-sensor: error: stdout: cannot write: No space left on device\n"
    # nothing of the failed batch was committed: a rerun raises and writes the alerts
    rerun = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert len(rerun.stdout.splitlines()) == 2
