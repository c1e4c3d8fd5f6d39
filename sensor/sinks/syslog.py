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

Delivery over TCP and TLS: syslog has no application acknowledgement (RELP has one:
sensor/sinks/relp.py, the same messages), so the best signal within the protocol is
TCP's own: a batch leaves the spool only once the collector's kernel has acknowledged every
byte of it (SIOCOUTQ, the bytes of the socket's send queue not yet acknowledged by the peer,
tcp(7), is 0). A connection that fails or ends before that sends the whole batch again on the
next one. Acknowledged bytes may still sit unread in the collector's socket buffer, and a
collector that dies (or restarts) discards them; so the last RESEND_TAIL_BYTES of messages
acknowledged on a connection are sent again, before anything new, when that connection ends
in a reset or an error (a collector that closes cleanly had read everything). The receiver may see a record twice (it dedupes on alert_id / event_id), and loses one
only if it had read it and not yet written it when it died (its own queue: rsyslog's disk
queue, or RELP, covers that). UDP gives no guarantee at all.
"""
from __future__ import annotations

import fcntl
import os
import socket
import ssl
import struct
import termios
import time
from collections import deque
from datetime import datetime, timezone

from sensor.sinks.sender import SinkUnavailable, formatted, record_of
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
# Messages kept after their acknowledgement, sent again when the connection ends: at most
# this many bytes can be acknowledged and still unread in a Linux collector's socket (the
# default net.ipv4.tcp_rmem maximum, 6 MiB).
RESEND_TAIL_BYTES = 6 * 1024 * 1024
# How often the send queue is looked at while waiting for the acknowledgement (loopback
# acknowledges within microseconds, a WAN link within a round trip).
ACK_POLL_SECONDS = 0.002
# How a collector ended a connection (see SyslogTransport._peer_closed).
RESET, EOF = "reset", "eof"
TCP_CLOSE_WAIT = 8      # linux/include/net/tcp_states.h: the peer sent FIN, we have not closed


def _sd_value(value) -> str:
    """PARAM-VALUE escaping, RFC 5424 6.3.3: '"', '\\' and ']' take a backslash."""
    text = "-" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(text: str | None, limit: int) -> str:
    """A header field is printable US-ASCII without spaces, or "-" (RFC 5424 6.2)."""
    cleaned = "".join(c for c in (text or "") if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def format_message(line: str, stream: str, hostname: str) -> bytes:
    """One record (a JSON line) as an RFC 5424 message; ValueError (or the TypeError or
    AttributeError of a field of the wrong type) for a line that is not one."""
    record = record_of(line)
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


def connect(address: tuple[str, int], tls_context: ssl.SSLContext | None = None,
            kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket connected to ``address`` (wrapped in TLS when ``tls_context`` is given), with
    IO_TIMEOUT_SECONDS on every operation."""
    family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, kind)
    sock.settimeout(IO_TIMEOUT_SECONDS)
    try:
        sock.connect(address)
        if tls_context is not None:
            sock = tls_context.wrap_socket(sock, server_hostname=address[0])
    except BaseException:
        sock.close()
        raise
    return sock


class SyslogTransport:
    rejected = 0           # syslog has no answer: a collector never refuses a record here
    rejection = ""

    def __init__(self, scheme: str, host: str, port: int, stream: str, hostname: str,
                 tls_context: ssl.SSLContext | None = None):
        self.scheme = scheme             # "udp", "tcp" or "tls"
        self.address = (host, port)
        self.stream = stream
        self.hostname = hostname
        self.tls_context = tls_context
        self._sock: socket.socket | None = None
        self._acknowledged: deque[bytes] = deque()   # the tail of this connection's frames
        self._acknowledged_bytes = 0
        self._resend: list[bytes] = []               # a lost connection's tail, for the next one

    def send(self, lines: list[str]) -> None:
        messages = formatted(lines, lambda line: format_message(line, self.stream, self.hostname))
        try:
            sock = self._connected()
            if self.scheme == "udp":
                for message in messages:
                    sock.send(message[:MAX_UDP_BYTES])
                return
            # RFC 6587 3.4.1 octet counting: "LEN SP MSG"
            frames = self._resend + [b"%d %s" % (len(m), m) for m in messages]
            sock.sendall(b"".join(frames))
            self._wait_acknowledged()
        except (OSError, ssl.SSLError) as e:
            self.close()
            raise SinkUnavailable(str(getattr(e, "strerror", None) or e)) from None
        self._resend = []
        for frame in frames:
            self._acknowledged.append(frame)
            self._acknowledged_bytes += len(frame)
        while self._acknowledged_bytes > RESEND_TAIL_BYTES:
            self._acknowledged_bytes -= len(self._acknowledged.popleft())

    def idle(self) -> None:
        """A connection the collector ended while nothing was queued: send its tail again now,
        not at the next record (alerts may be hours apart)."""
        if self.scheme == "udp":
            return
        if self._sock is not None:
            self._hung_up()
        if self._resend:
            self.send([])

    def forked(self) -> None:
        """A forked worker (``live --workers``) inherits the parent's connection: two
        processes writing one TCP stream could interleave their frames. The worker closes
        its copy of the descriptor (the parent's connection goes on) and leaves that
        connection's tail to the parent, which resends it if the connection is lost."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._acknowledged.clear()
        self._acknowledged_bytes = 0
        self._resend = []

    def _wait_acknowledged(self) -> None:
        """Until the collector's kernel has acknowledged every byte sent; OSError when the
        connection ends first or it takes longer than IO_TIMEOUT_SECONDS."""
        deadline = time.monotonic() + IO_TIMEOUT_SECONDS
        while unacknowledged_bytes(self._sock):
            if self._hung_up():
                raise OSError("the collector closed the connection before acknowledging the batch")
            if time.monotonic() > deadline:
                raise OSError(f"the collector did not acknowledge the batch within {IO_TIMEOUT_SECONDS:g} s")
            time.sleep(ACK_POLL_SECONDS)

    def _connected(self) -> socket.socket:
        if self._sock is not None and self.scheme != "udp":
            self._hung_up()
        if self._sock is None:
            self._sock = connect(self.address, self.tls_context if self.scheme == "tls" else None,
                                 socket.SOCK_DGRAM if self.scheme == "udp" else socket.SOCK_STREAM)
        return self._sock

    def _peer_closed(self) -> str | None:
        """How the collector hung up: RESET (an error: Linux resets a connection closed with
        unread data, RFC 1122 4.2.2.13, so it may not have read all that it acknowledged),
        EOF (a clean close: it had read everything), or None while it is connected. It never
        sends anything, so readable means one of the two."""
        raw = self._sock
        try:
            raw.setblocking(False)
            try:
                data = raw.recv(1, socket.MSG_PEEK) if not isinstance(raw, ssl.SSLSocket) else raw.recv(1)
            finally:
                raw.settimeout(IO_TIMEOUT_SECONDS)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None
        except (OSError, ssl.SSLError):
            return RESET
        if data:        # a syslog collector sends nothing: not ours to read, and no clean close
            return RESET
        # TLS reads a reset as an end of file too (ragged EOFs are suppressed): TCP's state
        # tells them apart, CLOSE_WAIT after the peer's FIN, CLOSE after its RST (tcp_states.h).
        info = raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
        return EOF if info[0] == TCP_CLOSE_WAIT else RESET

    def _hung_up(self) -> bool:
        """Close a connection the collector ended (keeping its tail for a reset one)."""
        how = self._peer_closed()
        if how is not None:
            self.close(lost=how == RESET)
        return how is not None

    def close(self, lost: bool = True) -> None:
        """End the connection; unless the collector closed it cleanly (``lost`` False), what
        it acknowledged last is sent again on the next one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if lost:
            self._resend += self._acknowledged
        self._acknowledged.clear()
        self._acknowledged_bytes = 0


def unacknowledged_bytes(sock: socket.socket) -> int:
    """Bytes of a TCP socket's send queue the peer has not acknowledged (SIOCOUTQ, tcp(7);
    the same request number as TIOCOUTQ). For TLS, of the encrypted records."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
