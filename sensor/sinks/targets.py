"""Where --events/--alerts go: a path or "-" (sensor/outputs.py), or a collector URL.

    syslog+udp://HOST:PORT  syslog+tcp://HOST:PORT  syslog+tls://HOST:PORT
    relp://HOST:PORT  relp+tls://HOST:PORT
    http(s)://HOST[:PORT]/PATH   splunk+http(s)://HOST[:PORT][/PATH]   elastic+http(s)://HOST[:PORT]/INDEX
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from sensor.outputs import JsonLinesSink, OutputError
from sensor.sinks.sender import FLUSH_SECONDS, SpooledSink
from sensor.sinks.spool import DEFAULT_MAX_BYTES

if TYPE_CHECKING:     # at run time imported only where a TLS sink is opened (tests/test_startup.py)
    import ssl

TOKEN_ENV = "DFS_SENSOR_HTTP_TOKEN"
SYSLOG_SCHEMES = {"syslog+udp": "udp", "syslog+tcp": "tcp", "syslog+tls": "tls"}
RELP_SCHEMES = {"relp": False, "relp+tls": True}      # scheme: over TLS
HTTP_PRESETS = {"splunk": "splunk", "elastic": "elastic"}


class SinkConfigError(OutputError):
    """The target or its settings are wrong: a usage error (exit 2)."""


@dataclass(frozen=True)
class SinkSettings:
    """The remote targets' settings ([outputs] of the configuration)."""
    spool_dir: str | None = None        # default: "spool" beside the database
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    http_format: str = "lines"          # plain http(s):// targets: "lines" or "array"
    token_file: str | None = None
    ca_file: str | None = None          # a private CA for syslog+tls://, relp+tls:// and https://
    tls_verify: bool = True
    sensor_name: str = ""
    db: str = ""
    flush_seconds: float = FLUSH_SECONDS    # at close, the longest to wait for the collector


def is_remote(target: str) -> bool:
    return "://" in target


def open_sink(target: str, stream: str, settings: SinkSettings,
              on_error: Callable[[str], None] | None = None, notify: Callable[[str], None] | None = None):
    """The sink for ``target`` (``stream`` is "events" or "alerts"): a local one takes the
    write-error policy ``on_error``; a remote one reports outages to ``notify``."""
    if not is_remote(target):
        return JsonLinesSink(target, on_error)
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if parts.username or parts.password:
        raise SinkConfigError(f"{stream}: no credentials in the URL (they would show in ps); "
                              f"use outputs.token_file or ${TOKEN_ENV}")
    try:
        port = parts.port
    except ValueError:
        raise SinkConfigError(f"{target}: bad port") from None
    if not parts.hostname:
        raise SinkConfigError(f"{target}: no host")
    # Each transport is imported where it is chosen: http's (urllib, http.client, email) and
    # the stream transports' (ssl) imports would cost every run ~10 ms, most with no collector.
    if scheme in SYSLOG_SCHEMES:
        from sensor.sinks.syslog import SyslogTransport
        if port is None:
            raise SinkConfigError(f"{target}: give the port (514 for UDP/TCP, 6514 for TLS)")
        kind = SYSLOG_SCHEMES[scheme]
        transport = SyslogTransport(kind, parts.hostname, port, stream, settings.sensor_name,
                                    _tls_context(settings) if kind == "tls" else None)
    elif scheme in RELP_SCHEMES:
        from sensor.sinks.relp import RelpTransport
        if port is None:
            raise SinkConfigError(f"{target}: give the port (RELP has no standard one; imrelp listens where "
                                  "its input() says)")
        transport = RelpTransport(parts.hostname, port, stream, settings.sensor_name,
                                  _tls_context(settings) if RELP_SCHEMES[scheme] else None)
    else:
        preset, _, base = scheme.rpartition("+")
        if base not in ("http", "https") or (preset and preset not in HTTP_PRESETS):
            raise SinkConfigError(f"{target}: unknown output scheme {scheme!r} (a path, -, syslog+udp://, "
                                  "syslog+tcp://, syslog+tls://, relp://, relp+tls://, http(s)://, splunk+https://, "
                                  "elastic+https://)")
        if settings.http_format not in ("lines", "array"):
            raise SinkConfigError(f"outputs.http_format must be lines or array, not {settings.http_format!r}")
        from sensor.sinks.http import HttpTransport
        url = target.split("+", 1)[1] if preset else target
        transport = HttpTransport(url, preset or settings.http_format, stream, settings.sensor_name,
                                  _token(settings), _tls_context(settings) if base == "https" else None)
    try:
        return SpooledSink(target, transport, _spool_path(target, stream, settings),
                           settings.spool_max_bytes, notify, settings.flush_seconds)
    except Exception as e:
        raise OutputError(f"{target}: cannot use the spool: {e}") from None


def _spool_path(target: str, stream: str, settings: SinkSettings) -> str:
    directory = Path(settings.spool_dir) if settings.spool_dir else Path(settings.db).parent / "spool"
    digest = hashlib.sha256(target.encode()).hexdigest()[:12]
    return str(directory / f"{stream}-{digest}.db")


def _token(settings: SinkSettings) -> str | None:
    if settings.token_file:
        try:
            return Path(settings.token_file).read_text(encoding="utf-8").strip() or None
        except OSError as e:
            raise SinkConfigError(f"{settings.token_file}: {e.strerror or e}") from None
    return os.environ.get(TOKEN_ENV) or None


def _tls_context(settings: SinkSettings) -> ssl.SSLContext:
    import ssl
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as e:
        raise SinkConfigError(f"{settings.ca_file}: cannot load the CA: {getattr(e, 'strerror', None) or e}") from None
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
