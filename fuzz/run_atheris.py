"""Long coverage-guided run of one target with atheris (libFuzzer), seeded from fuzz/seeds.

    .venv/bin/python -m fuzz.run_atheris pipeline -max_total_time=600 -timeout=2 -rss_limit_mb=1024

libFuzzer flags pass through: -timeout is the per-input bound, -rss_limit_mb the memory bound.
New inputs go to fuzz/corpus/<target> (not committed); crashes to ./crash-*.
"""
from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parent


def main() -> None:
    target = sys.argv[1]
    corpus = ROOT / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    fn = TARGETS[target]
    atheris.Setup([sys.argv[0], *sys.argv[2:], str(corpus), str(ROOT / "seeds" / target)], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
