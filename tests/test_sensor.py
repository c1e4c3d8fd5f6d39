"""The Sensor: a real capture through pipeline, store, detector and sinks; restart; idle ticks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sensor.capture.pcapfile import open_capture
from sensor.config import Config
from sensor.outputs import open_outputs
from sensor.sensor import Sensor
from sensor.store.sqlite import Store

CAPTURE = Path(__file__).resolve().parents[1] / "pcaps" / "dfscoerce-smb21.pcap"
pytestmark = pytest.mark.skipif(not CAPTURE.exists(), reason="lab capture not built")


def run(tmp_path, source_of=lambda reader: reader):
    outputs = open_outputs(str(tmp_path / "events.jsonl"), str(tmp_path / "alerts.jsonl"))
    sensor = Sensor(Config(db=str(tmp_path / "s.db")), outputs)
    sensor.start_file(CAPTURE.name)
    with open_capture(str(CAPTURE)) as reader:
        sensor.process(source_of(reader))
    summary = sensor.finish()
    outputs.close()
    return summary


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_capture_becomes_stored_events_and_alerts(tmp_path):
    summary = run(tmp_path)
    events, alerts = lines(tmp_path / "events.jsonl"), lines(tmp_path / "alerts.jsonl")
    assert (summary.files, summary.events, summary.new_events, summary.alerts) == (1, 2, 2, 2)
    assert summary.packets == sum(1 for _ in open_capture(str(CAPTURE)))
    assert sorted(e["action_rpc_func_opnum"] for e in events) == [12, 13]
    assert all(e["net_capture_file"] == CAPTURE.name for e in events)
    store = Store(str(tmp_path / "s.db"))
    assert sorted(e["event_id"] for e in store.events()) == sorted(e["event_id"] for e in events)
    assert sorted(a["event_ids"][0] for a in store.alerts()) == sorted(a["event_ids"][0] for a in alerts)
    store.close()


def test_a_second_run_on_the_same_store_adds_nothing(tmp_path):
    run(tmp_path)
    again = run(tmp_path)
    assert (again.events, again.new_events, again.alerts) == (2, 0, 0)
    assert len(lines(tmp_path / "alerts.jsonl")) == 2       # the file holds the first run's only
    assert len(lines(tmp_path / "events.jsonl")) == 2       # only new events: a SIEM indexes each once


def test_idle_ticks_between_frames_change_nothing(tmp_path):
    def with_ticks(reader):
        for frame in reader:
            yield None
            yield frame
    summary = run(tmp_path, with_ticks)
    assert (summary.events, summary.alerts) == (2, 2)


def test_summary_explains_a_silent_rerun(tmp_path):
    assert "already stored" not in run(tmp_path).human()
    assert "already stored" in run(tmp_path).human()
