"""The installed ``dfs-sensor`` command (pyproject.toml's script): the command line's imports,
made without the cyclic garbage collector, then sensor.cli."""
from __future__ import annotations

import gc


def run() -> None:
    # The imports make ~19k objects the collector tracks (modules, classes, functions), all of
    # them living as long as the process: no collection looks for garbage among them while they
    # are made (~20 did), and they leave the collector's generations once made (gc.freeze), so
    # the collections a run makes, and Python's at exit, do not walk them either: -36 M
    # instructions of a one-frame replay (issue 14). No file or connection is open yet.
    gc.disable()
    try:
        from sensor.cli import main
        gc.freeze()
    finally:
        gc.enable()
    main()
