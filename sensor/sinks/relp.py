"""RELP, the Reliable Event Logging Protocol of rsyslog's librelp (imrelp receives it): the
syslog sink's RFC 5424 messages (sensor/sinks/syslog.py format_message), each acknowledged
by the collector itself.

A frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF`` (librelp doc/relp.md, "RELP FRAME";
no SP and no DATA when DATALEN is 0). The client opens a session with ``1 open`` and its
offers (``relp_version``, ``relp_software``, ``commands=syslog``, one per line); the
server's ``rsp`` says "200 OK" and the offers it accepts, and ``syslog`` may be sent only if
it lists that command. Then every message is a ``syslog`` command with the next
transaction number, and the server answers each with ``rsp`` "200 OK" or "500 reason", in
the order the commands came. ``close`` ends the session; the server may say ``0 serverclose
0`` (a hint, transaction number 0, never answered) before it closes the connection.

Delivery: a record leaves the spool only once its ``rsp 200`` came back, which imrelp sends
after handing the message to its ruleset's queue (with a Direct queue, after the action
wrote it). A connection that breaks (reset, timeout, serverclose, a frame that makes no
sense) is dropped: the records answered before it leave the spool, everything unanswered is
sent again on the next session, so the collector may see a record twice (the same bytes,
deduped on alert_id / event_id) and never misses one. That is why this transport keeps no
resend tail as the TCP syslog sender must (sensor/sinks/syslog.py: a TCP ACK only says the
collector's kernel has the bytes, so acknowledged bytes are sent again after a reset): here
nothing counts as delivered before the collector's application said so. A ``500`` is a
refusal of that record for good (imrelp answers 500 only to a command the session did not
enable or a broken session): it is counted as rejected and not sent again, or one record
would block the spool forever.
"""
from __future__ import annotations

import re
import socket
import ssl
from collections import deque

from sensor.sinks.sender import SinkUnavailable, formatted
from sensor.sinks.syslog import IO_TIMEOUT_SECONDS, connect, format_message

# Offers of our open: relp_version 0 is what librelp speaks (RELP_CURR_PROTOCOL_VERSION; the
# server answers the lower of its version and ours); "syslog" is the one command we send.
OFFERS = b"relp_version=0\nrelp_software=dfs-sensor\ncommands=syslog"
# Commands sent before their answers are read: librelp's own default window
# (RELP_DFLT_WINDOW_SIZE), so a collector sees no more in flight than from rsyslog's omrelp.
WINDOW_FRAMES = 128
# Transaction numbers have at most 9 digits. doc/relp.md says 999,999,999 is followed by 1,
# but librelp's server expects 1,000,000,000 (relp.h relpEngineNextTXNR), which its own frame
# parser then refuses; so a session never gets there: a batch that would pass this number
# starts a new session, where both sides count from 1 again.
MAX_TXNR = 999_999_999
# Longest answer we read: relp_version 1 fixes 128 KiB as the largest DATALEN, and an answer
# is a status line (plus offers for open); a bigger DATALEN is a broken peer, not a buffer.
MAX_ANSWER_BYTES = 128 * 1024
# A frame's header: TXNR (1-9 digits) SP COMMAND (1-32 letters) SP DATALEN (1-9 digits), then
# SP before the data or LF when there is none.
HEADER = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,32}) (\d{1,9})([ \n])")
# What the start of a header may look like while more bytes are on their way.
HEADER_SO_FAR = re.compile(rb"\d{0,9}(?: [A-Za-z]{0,32}(?: \d{0,9})?)?")
# At the end of a run, how long the close command waits for its answer before the
# connection is just closed (everything was acknowledged already; this is only courtesy).
CLOSE_SECONDS = 1.0


class RelpProtocolError(Exception):
    """The collector sent something RELP does not allow here."""


def frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    """One RELP frame."""
    return b"%d %s %d%s\n" % (txnr, command, len(data), b" " + data if data else b"")


def parse_frame(buffer: bytearray) -> tuple[int, bytes, bytes] | None:
    """The first whole frame in ``buffer`` as (txnr, command, data), taken out of it; None
    while it is incomplete; RelpProtocolError when it cannot be a frame."""
    match = HEADER.match(buffer)
    if match is None:
        if HEADER_SO_FAR.fullmatch(buffer) is None:
            raise RelpProtocolError(f"not a RELP frame: {bytes(buffer[:40])!r}")
        return None
    txnr, command, length = int(match[1]), match[2], int(match[3])
    start = match.end()
    if match[4] == b"\n":            # no data part: only a DATALEN of 0 may end here
        if length:
            raise RelpProtocolError(f"frame {txnr} {command.decode()} announces {length} bytes and has none")
        del buffer[:start]
        return txnr, command, b""
    if length > MAX_ANSWER_BYTES:
        raise RelpProtocolError(f"frame {txnr} {command.decode()} announces {length:,} bytes")
    if len(buffer) < start + length + 1:
        return None
    if buffer[start + length] != ord("\n"):
        raise RelpProtocolError(f"frame {txnr} {command.decode()} does not end in LF")
    data = bytes(buffer[start:start + length])
    del buffer[:start + length + 1]
    return txnr, command, data


def parse_offers(data: bytes) -> dict[str, list[str]]:
    """The offers after an open answer's status line: ``name=value,value`` one per line."""
    offers = {}
    for line in data.decode("utf-8", "replace").splitlines():
        name, _, values = line.partition("=")
        offers[name] = [v for v in values.split(",") if v]
    return offers


class RelpTransport:
    def __init__(self, host: str, port: int, stream: str, hostname: str, tls_context: ssl.SSLContext | None = None):
        self.address = (host, port)
        self.stream = stream
        self.hostname = hostname
        self.tls_context = tls_context
        self.rejected = 0                # records answered 500: refused, not sent again
        self.rejection = ""
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._txnr = 0                   # the last transaction number used in this session

    def send(self, lines: list[str]) -> None:
        messages = formatted(lines, lambda line: format_message(line, self.stream, self.hostname))
        answered = 0
        try:
            if self._sock is not None and self._txnr + len(messages) >= MAX_TXNR:
                self.close()
            if self._sock is None or self._peer_closed():
                self._open()
            in_flight: deque[int] = deque()
            sent = 0
            while answered < len(messages):
                if sent < len(messages) and len(in_flight) <= WINDOW_FRAMES // 2:   # refill in bursts
                    burst = []
                    for message in messages[sent:sent + WINDOW_FRAMES - len(in_flight)]:
                        in_flight.append(self._next_txnr())
                        burst.append(frame(in_flight[-1], b"syslog", message))
                    self._sock.sendall(b"".join(burst))
                    sent += len(burst)
                status, text, _ = self._answer(in_flight.popleft())
                if status != "200":
                    self.rejected += 1
                    self.rejection = f"RELP {status} {text}".rstrip()
                answered += 1
        except (OSError, ssl.SSLError, RelpProtocolError) as e:
            self._drop()
            raise SinkUnavailable(str(getattr(e, "strerror", None) or e), delivered=answered) from None

    def idle(self) -> None:
        """Every record sent was answered: nothing to redeliver. A session the collector
        ended meanwhile (serverclose, a restart) is closed here, so the next batch opens a
        new one rather than failing once on the dead one."""
        if self._sock is not None:
            self._peer_closed()

    def close(self) -> None:
        """End the session politely (``close``, its answer awaited briefly), then the connection."""
        if self._sock is None:
            return
        try:
            self._sock.settimeout(CLOSE_SECONDS)
            txnr = self._next_txnr()
            self._sock.sendall(frame(txnr, b"close"))
            self._answer(txnr)
        except (OSError, ssl.SSLError, RelpProtocolError):
            pass                        # the collector had gone already: nothing was waiting
        self._drop()

    def _open(self) -> None:
        """A new connection and session: ``open`` with our offers, and the server must offer
        the syslog command back (doc/relp.md, "Command open")."""
        self._drop()
        self._sock = connect(self.address, self.tls_context)
        self._txnr = 0
        txnr = self._next_txnr()
        self._sock.sendall(frame(txnr, b"open", OFFERS))
        status, text, data = self._answer(txnr)
        if status != "200":
            raise RelpProtocolError(f"the collector refused the session: {status} {text}")
        offers = parse_offers(data)
        if "relp_version" not in offers:
            raise RelpProtocolError("the collector's open answer has no relp_version")
        if "syslog" not in offers.get("commands", []):
            raise RelpProtocolError("the collector does not accept the syslog command")

    def _answer(self, txnr: int) -> tuple[str, str, bytes]:
        """The ``rsp`` to transaction ``txnr`` as (status, text, data after the status line);
        hints on the way are read past, serverclose ends the session."""
        while True:
            parsed = parse_frame(self._buffer)
            if parsed is None:
                try:
                    # librelp writes each answer as its own small segment with Nagle's
                    # algorithm on (RFC 896): the second waits for our ACK of the first, which
                    # Linux delays up to 40 ms while we send nothing (RFC 1122 4.2.3.2), so a
                    # window of answers would trickle in at ~2,700 a second. Quick ACKs (tcp(7):
                    # not permanent, so set before every read) take that to ~33,000.
                    self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                    data = self._sock.recv(65536)
                except TimeoutError:
                    raise OSError(f"the collector did not answer within {self._sock.gettimeout():g} s") from None
                if not data:
                    raise OSError("the collector closed the connection")
                self._buffer += data
                continue
            number, command, data = parsed
            if number == 0:                              # a hint (never answered)
                if command == b"serverclose":
                    raise OSError("the collector closed the session (serverclose)")
                continue
            if command != b"rsp" or number != txnr:
                raise RelpProtocolError(f"expected the answer to {txnr}, got {number} {command.decode()}")
            line, _, rest = data.partition(b"\n")
            status, _, text = line.decode("utf-8", "replace").partition(" ")
            return status, text, rest

    def _next_txnr(self) -> int:
        self._txnr += 1
        return self._txnr

    def _peer_closed(self) -> bool:
        """Whether the collector ended the connection while nothing was in flight (anything
        readable now is a serverclose hint, an end of file or a reset); if so it is dropped."""
        sock = self._sock
        try:
            sock.setblocking(False)
            try:
                sock.recv(1)
            finally:
                sock.settimeout(IO_TIMEOUT_SECONDS)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except (OSError, ssl.SSLError):
            pass
        self._drop()
        return True

    def forked(self) -> None:
        """A forked worker (``live --workers``) inherits the parent's session with the sink:
        its transaction numbers and answers are the parent's, so the worker closes only its
        copy of the descriptor (no close command: the parent's session goes on) and opens a
        session of its own at its first send."""
        self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()
