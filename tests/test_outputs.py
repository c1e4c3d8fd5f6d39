"""JSON-lines sinks: one flushed line per record, reopen after logrotate, clear open errors."""
from __future__ import annotations

import pytest

from sensor.outputs import JsonLinesSink, OutputError, open_outputs


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
