"""Bounded fuzz run for CI: every target on its committed seeds, random bytes and structure-aware
mutations of the seeds. No exception, no input slower than PER_INPUT_SECONDS, memory bounded.
DFS_SENSOR_LONG=1 runs 50x more examples; fuzz/run_atheris.py is the long coverage-guided run."""
from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS

SEEDS = Path(__file__).resolve().parents[2] / "fuzz" / "seeds"
EXAMPLES = 3000 if os.environ.get("DFS_SENSOR_LONG") else 60
# A seed is at most 16 KiB (or one lab capture): a second per input means something quadratic.
PER_INPUT_SECONDS = 1.0
# Heap any one input may grow while it runs: the stages buffer at most a few of their bounded
# tables for inputs this small.
PEAK_BYTES = 32 << 20
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
               b"\xfeSMB", b"\xffSMB", b"\x05\x00\x00\x03"]


def seeds(target: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((SEEDS / target).iterdir())]


def bounded(target: str, data: bytes) -> None:
    start = time.perf_counter()
    TARGETS[target](data)
    elapsed = time.perf_counter() - start
    assert elapsed < PER_INPUT_SECONDS, f"{target}: {elapsed:.2f}s on a {len(data)}-byte input"


@st.composite
def mutated(draw, target: str) -> bytes:
    """A seed with a few byte-level edits: overwrite, insert, delete, duplicate, truncate."""
    data = bytearray(draw(st.sampled_from(seeds(target))))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(("set", "insert", "delete", "dup", "truncate")))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            value = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=4))
            data[at:at + len(value)] = value
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(INTERESTING) | st.binary(max_size=64))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "dup":
            n = draw(st.integers(1, 256))
            data[at:at] = data[at:at + n]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_run_within_time_and_memory(target):
    assert seeds(target), f"no committed seeds for {target} (python -m fuzz.make_seeds)"
    for data in seeds(target):
        tracemalloc.start()
        try:
            bounded(target, data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < PEAK_BYTES, f"{target}: {peak} bytes peak"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_random_bytes(target):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.binary(max_size=4096))
    def run(data):
        bounded(target, data)
    run()


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_mutated_seeds(target):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mutated(target))
    def run(data):
        bounded(target, data)
    run()
