"""Which package may import which: the seams issue 17 cut, kept cut.

Read from the source with ast (no import side effects), so a new import across a seam fails
here with the file and the module it named."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SENSOR = Path(__file__).resolve().parent.parent / "sensor"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


# (files, module prefix they must not import, why)
FORBIDDEN = [
    ("store/*.py", "sensor.detect", "the store serves the detector; XQL functions are in sensor.xql"),
    ("xql/*.py", "sensor.detect", "XQL functions are neutral ground for detect and store"),
    ("xql/*.py", "sensor.store", "XQL functions are neutral ground for detect and store"),
    ("tshark/*.py", "sensor.service", "daemon helpers are in sensor.daemon, shared by both engines"),
    ("tshark/*.py", "sensor.pipeline", "the engines share stages, not each other's wiring"),
]


@pytest.mark.parametrize("pattern, prefix, why", FORBIDDEN, ids=[f"{p}!{m}" for p, m, _ in FORBIDDEN])
def test_no_import_across_a_seam(pattern, prefix, why):
    files = sorted(SENSOR.glob(pattern))
    assert files, pattern
    crossing = {f"{f.relative_to(SENSOR)}: {m}" for f in files for m in imported_modules(f)
                if m == prefix or m.startswith(prefix + ".")}
    assert not crossing, why


def test_both_engines_pair_calls_with_the_one_held_call_stage():
    for engine in ("pipeline.py", "tshark/decoder.py"):
        assert "sensor.held_calls.HeldCalls" in imported_modules(SENSOR / engine), engine
