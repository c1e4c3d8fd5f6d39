"""JSON-lines sinks for events and alerts: a file (appended, reopenable for logrotate), stdout,
or a remote collector (sensor/sinks/: syslog, HTTP) behind an on-disk spool.

A write error (a full disk, a closed pipe) is handled by policy:
- replay (``on_error=None``): ``OutputError``, one line for the user, exit 1 - the store's
  open transaction is not committed, so a rerun writes the lost alerts again;
- live (``on_error=callback``): capture and storage go on; unwritten lines wait in a bounded
  backlog and are retried at the next write; lines pushed out of the backlog are counted
  (``lost``); the callback hears once when writing fails and once when it works again.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

STDOUT = "-"
# Lines held while the output cannot be written (live); beyond this the oldest are lost and
# counted. Sized for minutes of alerts, not for a full event stream.
MAX_BACKLOG_LINES = 10_000


class OutputError(Exception):
    """A sink cannot be opened or written; the message is one line for the user."""


class Sink(Protocol):
    path: str
    lines: int
    lost: int

    def write(self, line: str) -> None: ...
    def files(self) -> list[str]: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON document per line, written straight to the file descriptor (no buffer that
    could hold half a line after an error), so a tail or a shipper sees it at once."""

    def __init__(self, path: str, on_error: Callable[[str], None] | None = None):
        self.path = path
        self.on_error = on_error
        self._fd: int | None = None
        self._text = None            # stdout without a file descriptor (a test's capture)
        self._backlog: deque[bytes] = deque()
        self._failing = False
        self.lines = 0
        self.lost = 0
        self._open()

    def _open(self) -> None:
        if self.path == STDOUT:
            try:
                sys.stdout.flush()
                self._fd = sys.stdout.fileno()
            except (AttributeError, OSError, ValueError):
                self._text = sys.stdout
            return
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise OutputError(f"{self.path}: cannot open for writing: {e.strerror or e}") from None

    def files(self) -> list[str]:
        """What a dropped-to user must own to reopen it (SIGHUP)."""
        return [] if self.path == STDOUT else [self.path]

    def write(self, line: str) -> None:
        self._backlog.append((line + "\n").encode("utf-8"))
        if len(self._backlog) > MAX_BACKLOG_LINES:
            self._backlog.popleft()
            self.lost += 1
        self._drain()

    def _drain(self) -> None:
        while self._backlog:
            try:
                self._put(self._backlog[0])
            except OSError as e:
                self._failed(e)
                return
            self._backlog.popleft()
            self.lines += 1
        if self._failing:
            self._failing = False
            self.on_error(f"{self._name}: writing again ({self.lost:,} line(s) lost meanwhile)")

    def _put(self, data: bytes) -> None:
        if self._text is not None:
            self._text.write(data.decode("utf-8"))
            self._text.flush()
            return
        if self._fd is None:
            raise OSError(9, "not open")
        start = os.lseek(self._fd, 0, os.SEEK_END) if self.path != STDOUT else None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            if start is not None:        # no half line left behind for a reader to choke on
                try:
                    os.ftruncate(self._fd, start)
                except OSError:
                    pass
            raise

    def _failed(self, error: OSError) -> None:
        message = f"{self._name}: cannot write: {error.strerror or error}"
        if self.on_error is None:
            raise OutputError(message) from None
        if not self._failing:
            self._failing = True
            self.on_error(message + "; capture and storage go on, lines are kept "
                                    f"(up to {MAX_BACKLOG_LINES:,}) and retried, the rest counted as lost")

    @property
    def _name(self) -> str:
        return "stdout" if self.path == STDOUT else self.path

    def reopen(self) -> None:
        """After logrotate moved the file (SIGHUP): continue in a new file at the same path."""
        if self.path != STDOUT:
            self._close_fd()
            self._open()
            self._drain()

    def close(self) -> None:
        if self._backlog:
            try:
                self._drain()
            except OutputError:
                pass
        self.lost += len(self._backlog)
        self._backlog.clear()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None and self.path != STDOUT:
            os.close(self._fd)
        self._fd = None


@dataclass
class Outputs:
    """Where events and alerts are logged (None: not logged)."""
    events: Sink | None = None
    alerts: Sink | None = None

    def reopen(self) -> None:
        for sink in (self.events, self.alerts):
            if sink is not None:
                sink.reopen()

    def close(self) -> None:
        for sink in (self.events, self.alerts):
            if sink is not None:
                sink.close()

    def lost_lines(self) -> dict[str, int]:
        """Lines each output could not deliver: {"events": n, "alerts": n}."""
        return {name: getattr(sink, "lost", 0) for name, sink in (("events", self.events), ("alerts", self.alerts))
                if sink is not None}


def open_outputs(events: str | None, alerts: str | None,
                 on_error: Callable[[str], None] | None = None, settings=None,
                 notify: Callable[[str], None] | None = None) -> Outputs:
    """Sinks for the configured targets (None: that stream is not written): a path, "-", or
    a collector URL (sensor/sinks/targets.py, which imports this module: hence here).
    ``on_error`` is the local write-error policy above; ``notify`` hears remote sinks' outages."""
    from sensor.sinks.targets import SinkSettings, open_sink

    settings = settings or SinkSettings()
    opened = Outputs()
    try:
        opened.events = open_sink(events, "events", settings, on_error, notify) if events else None
        opened.alerts = open_sink(alerts, "alerts", settings, on_error, notify) if alerts else None
    except OutputError:
        opened.close()
        raise
    return opened
