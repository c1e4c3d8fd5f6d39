"""JSON-lines sinks for events and alerts: a file (appended, reopenable for logrotate) or stdout."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

STDOUT = "-"


class OutputError(Exception):
    """A sink cannot be opened; the message is one line for the user."""


class JsonLinesSink:
    """One JSON document per line, flushed per line so a tail or a shipper sees it at once."""

    def __init__(self, path: str):
        self.path = path
        self._file: TextIO | None = None
        self.lines = 0
        self._open()

    def _open(self) -> None:
        if self.path == STDOUT:
            self._file = sys.stdout
            return
        try:
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"{self.path}: cannot open for writing: {e.strerror or e}") from None

    def write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()
        self.lines += 1

    def reopen(self) -> None:
        """After logrotate moved the file (SIGHUP): continue in a new file at the same path."""
        if self.path != STDOUT:
            self.close()
            self._open()

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None


@dataclass
class Outputs:
    events: JsonLinesSink | None = None
    alerts: JsonLinesSink | None = None

    def reopen(self) -> None:
        for sink in (self.events, self.alerts):
            if sink is not None:
                sink.reopen()

    def close(self) -> None:
        for sink in (self.events, self.alerts):
            if sink is not None:
                sink.close()


def open_outputs(events: str | None, alerts: str | None) -> Outputs:
    """Sinks for the configured paths (None: that stream is not written)."""
    return Outputs(events=JsonLinesSink(events) if events else None,
                   alerts=JsonLinesSink(alerts) if alerts else None)
