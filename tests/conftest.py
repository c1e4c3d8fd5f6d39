"""Shared test helpers: where the recorded captures live, and running the pipeline over one."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
MANIFEST = PCAPS / "manifest.json"
# The public corpus sits beside the checkout (read-only, never copied into the repo).
CORPUS = Path(os.environ.get("DFS_SENSOR_CORPUS", ROOT.parent / "shared" / "corpus"))


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text())["captures"] if MANIFEST.exists() else {}


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
