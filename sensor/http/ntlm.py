"""NTLMSSP AUTHENTICATE in HTTP request headers (RFC 4559 "Negotiate", MS-NTHT "NTLM"): the
back-authentication of a server coerced to a WebDAV listener, on any TCP port.

Client direction only. Request heads are buffered up to a bound; bodies are skipped by
Content-Length; a chunked body ends parsing of the flow (WebDAV auth is on bodiless or
small requests, and the AUTHENTICATE leg comes before any upload).
"""
from __future__ import annotations

import base64
import binascii

from sensor.anomaly import Stats
from sensor.net.stream import FlowKey
from sensor.smb.events import NtlmAuthentication
from sensor.smb.kerberos import authentication_events
from sensor.smb.ntlmssp import NtlmAuthenticate, NtlmsspError, find_ntlmssp

# Apache's LimitRequestFieldSize x a few headers; IIS caps a request head at 16 KiB by default.
MAX_HEAD = 16_384
AUTH_SCHEMES = (b"ntlm", b"negotiate")


class HttpNtlmFlow:
    """The stage contract (sensor/stage.py): ``feed``/``gap`` per direction, ``close`` at the
    end of the flow."""

    def __init__(self, flow: FlowKey) -> None:
        self.flow = flow
        self.stats = Stats()
        self._head = bytearray()
        self._skip = 0
        self._done = False

    def feed(self, from_client: bool, ts: float, data: bytes | memoryview, frame: int) -> list:
        if not from_client or self._done:
            return []
        data = memoryview(data)
        out: list = []
        while data and not self._done:
            if self._skip:
                n = min(self._skip, len(data))
                self._skip -= n
                data = data[n:]
                continue
            self._head += data
            data = memoryview(b"")
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    out.append(self.stats.anomaly(ts, "http", "http_head_too_long", self.flow))
                    self._done = True
                return out
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4:])
            self._head.clear()
            out += self._request(ts, frame, head)
            data = memoryview(rest)
        return out

    def gap(self, from_client: bool, ts: float, length: int) -> list:
        if from_client:
            self._done = True     # lost bytes: no way back to a request boundary
        return []

    def close(self, ts: float) -> list:
        self._head.clear()
        return []

    def _request(self, ts: float, frame: int, head: bytes) -> list:
        self.stats["http_requests"] += 1
        out: list = []
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length" and value.isdigit():
                self._skip = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._done = True
            elif name in (b"authorization", b"proxy-authorization"):
                scheme, _, token = value.partition(b" ")
                if scheme.lower() in AUTH_SCHEMES:
                    out += self._token(ts, frame, token.strip())
        return out

    def _token(self, ts: float, frame: int, token: bytes) -> list:
        try:
            blob = base64.b64decode(token, validate=True)
            message = find_ntlmssp(blob)
        except (binascii.Error, ValueError) as e:     # NtlmsspError is a ValueError
            name = "ntlmssp_malformed" if isinstance(e, NtlmsspError) else "http_bad_base64"
            return [self.stats.anomaly(ts, "http", name, self.flow, str(e))]
        if message is None:         # Negotiate with Kerberos: an AP-REQ for HTTP/<this server>
            return authentication_events(self.flow, ts, frame, "http", blob, self.stats)
        if not isinstance(message, NtlmAuthenticate):
            return []
        return [NtlmAuthentication(self.flow, ts, frame, "http", message.user, message.domain,
                                   message.workstation, message.ntlm_version)]
