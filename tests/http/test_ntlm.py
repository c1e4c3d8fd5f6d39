"""HTTP NTLM on spec-built AUTHENTICATE tokens, in any segmentation."""
from __future__ import annotations

import base64

import struct

import pytest

from sensor.http.ntlm import HttpNtlmFlow
from sensor.net.stream import FlowKey
from sensor.smb.events import NtlmAuthentication

FLOW = FlowKey("10.0.0.10", 40000, "10.0.0.66", 8080)


def authenticate_token() -> bytes:
    """MS-NLMP 2.2.1.3 AUTHENTICATE_MESSAGE built by the spec: six (Len, MaxLen, Offset) fields
    (LM, NT, Domain, User, Workstation, session key), then NegotiateFlags (UNICODE)."""
    payload = [b"\0" * 24, b"\1" * 48, "LAB".encode("utf-16-le"), "DC01$".encode("utf-16-le"),
               "DC01".encode("utf-16-le"), b""]
    offset, fields = 64, b""
    for item in payload:
        fields += struct.pack("<HHI", len(item), len(item), offset)
        offset += len(item)
    message = b"NTLMSSP\0" + struct.pack("<I", 3) + fields + struct.pack("<I", 1) + b"".join(payload)
    return base64.b64encode(message)


def request(scheme: bytes = b"NTLM", body: bytes = b"") -> bytes:
    return (b"PROPFIND /share HTTP/1.1\r\nHost: evil\r\nContent-Length: %d\r\n"
            b"Authorization: %s %s\r\n\r\n" % (len(body), scheme, authenticate_token())) + body


@pytest.mark.parametrize("step", [1, 7, 10_000])
@pytest.mark.parametrize("scheme", [b"NTLM", b"Negotiate"])
def test_authenticate_in_any_segmentation(step, scheme):
    stream = request(scheme, b"x" * 50) + request(scheme)
    flow = HttpNtlmFlow(FLOW)
    events = [e for i in range(0, len(stream), step)
              for e in flow.feed(True, 1.0, stream[i:i + step], 3)]
    assert [(e.user, e.domain, e.protocol, e.is_machine_account) for e in events] == \
        [("DC01$", "LAB", "http", True)] * 2
    assert all(isinstance(e, NtlmAuthentication) for e in events)


def test_server_bytes_bad_base64_and_long_heads():
    flow = HttpNtlmFlow(FLOW)
    assert flow.feed(False, 1.0, request(), 1) == []
    [bad] = flow.feed(True, 1.0, b"GET / HTTP/1.1\r\nAuthorization: NTLM !!!\r\n\r\n", 2)
    assert bad.name == "http_bad_base64"
    [long] = flow.feed(True, 1.0, b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000, 3)
    assert long.name == "http_head_too_long"
    assert flow.feed(True, 1.0, request(), 4) == []     # abandoned
