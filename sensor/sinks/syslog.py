"""Remote syslog: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587 octet counting) or
TLS (RFC 5425, octet counting).

    <PRI>1 TIMESTAMP HOSTNAME dfs-sensor PROCID MSGID [dfs-sensor@32473 ...] JSON

PRI is facility daemon (3) with severity warning (4) for alerts and informational (6) for
events. HOSTNAME is the sensor name, MSGID "alert" or "event". The structured data element
names what a syslog filter wants without parsing the JSON: alert_id, rule, severity for an
alert; event_id and opnum for an event. 32473 is the private enterprise number RFC 5612
reserves for examples; a site with its own PEN can filter on the SD-ID's name alone.
The message is the record's JSON with every non-ASCII character escaped, so no BOM and no
character off the wire can confuse a syslog viewer.

TCP and TLS have no application acknowledgement: a batch counts as delivered once the kernel
took it. Before each batch the connection is checked for the collector having closed it, so
a restarted collector costs a reconnect, not the batch.
"""
from __future__ import annotations

import json
import os
import socket
import ssl
from datetime import datetime, timezone

from sensor.sinks.sender import SinkUnavailable
from sensor.text import json_line

APP_NAME = "dfs-sensor"
SD_ID = "dfs-sensor@32473"
FACILITY_DAEMON = 3
SEVERITY_WARNING = 4
SEVERITY_INFO = 6
# Seconds to connect or to hand a batch to the kernel before the collector counts as down.
IO_TIMEOUT_SECONDS = 5.0
# Largest UDP datagram sent; a longer message is cut (RFC 5426 3.2 lets a receiver do so
# anyway; over UDP on loopback 65,507 would do, but routers and rsyslog's default
# maxMessageSize of 8 KiB make a record beyond 8 KiB a TCP/TLS record).
MAX_UDP_BYTES = 8192


def _sd_value(value) -> str:
    """PARAM-VALUE escaping, RFC 5424 6.3.3: '"', '\\' and ']' take a backslash."""
    text = "-" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(text: str | None, limit: int) -> str:
    """A header field is printable US-ASCII without spaces, or "-" (RFC 5424 6.2)."""
    cleaned = "".join(c for c in (text or "") if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def format_message(line: str, stream: str, hostname: str) -> bytes:
    """One record (a JSON line) as an RFC 5424 message."""
    record = json.loads(line)
    if stream == "alerts":
        severity, msgid = SEVERITY_WARNING, "alert"
        rule = record.get("rule") or {}
        params = {"alert_id": record.get("alert_id"), "rule": rule.get("id"), "severity": rule.get("severity")}
        ts = record.get("timestamp")
    else:
        severity, msgid = SEVERITY_INFO, "event"
        params = {"event_id": record.get("event_id"), "opnum": record.get("action_rpc_func_opnum")}
        ts = record.get("_time")
    timestamp = ts or datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    body = json_line(record, ascii_only=True)
    header = (f"<{FACILITY_DAEMON * 8 + severity}>1 {timestamp} {_header_field(hostname, 255)} "
              f"{APP_NAME} {os.getpid()} {msgid} ")
    return (header + sd + " " + body).encode("ascii")


class SyslogTransport:
    def __init__(self, scheme: str, host: str, port: int, stream: str, hostname: str,
                 tls_context: ssl.SSLContext | None = None):
        self.scheme = scheme             # "udp", "tcp" or "tls"
        self.address = (host, port)
        self.stream = stream
        self.hostname = hostname
        self.tls_context = tls_context
        self._sock: socket.socket | None = None

    def send(self, lines: list[str]) -> None:
        messages = [format_message(line, self.stream, self.hostname) for line in lines]
        try:
            sock = self._connected()
            if self.scheme == "udp":
                for message in messages:
                    sock.send(message[:MAX_UDP_BYTES])
            else:       # RFC 6587 3.4.1 octet counting: "LEN SP MSG"
                sock.sendall(b"".join(b"%d %s" % (len(m), m) for m in messages))
        except (OSError, ssl.SSLError) as e:
            self.close()
            raise SinkUnavailable(str(getattr(e, "strerror", None) or e)) from None

    def _connected(self) -> socket.socket:
        if self._sock is not None and self.scheme != "udp" and self._peer_closed():
            self.close()
        if self._sock is None:
            family = socket.getaddrinfo(*self.address, type=socket.SOCK_STREAM)[0][0]
            kind = socket.SOCK_DGRAM if self.scheme == "udp" else socket.SOCK_STREAM
            sock = socket.socket(family, kind)
            sock.settimeout(IO_TIMEOUT_SECONDS)
            try:
                sock.connect(self.address)
                if self.scheme == "tls":
                    sock = self.tls_context.wrap_socket(sock, server_hostname=self.address[0])
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _peer_closed(self) -> bool:
        """The collector hung up (it never sends anything, so readable means EOF or reset)."""
        raw = self._sock
        try:
            raw.setblocking(False)
            try:
                raw.recv(1, socket.MSG_PEEK) if not isinstance(raw, ssl.SSLSocket) else raw.recv(1)
            finally:
                raw.settimeout(IO_TIMEOUT_SECONDS)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except (OSError, ssl.SSLError):
            return True
        return True      # b"": EOF; anything else from a syslog collector is not ours to read

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
