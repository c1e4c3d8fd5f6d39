"""Kerberos AP-REQ reading (sensor/smb/kerberos.py) on tokens made by impacket's Kerberos
client from a service ticket made by impacket's ticketer (another codebase), raw and in SPNEGO,
through SMB2 and HTTP, and on damaged tokens."""
from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from sensor.anomaly import Stats
from sensor.http.ntlm import HttpNtlmFlow
from sensor.net.stream import FlowKey
from sensor.smb.events import KerberosAuthentication
from sensor.smb.kerberos import AP_REQ_HEAD, KerberosError, authentication_events, find_ap_request

FLOW = FlowKey("10.0.0.10", 50000, "10.0.0.66", 8080)
SPN_HOST = "listener.lab.example"


@pytest.fixture(scope="module")
def spnego_token(tmp_path_factory) -> bytes:
    """impacket's SPNEGO NegTokenInit with a Kerberos AP-REQ for cifs/listener.lab.example."""
    from impacket.krb5.ccache import CCache
    from impacket.krb5.kerberosv5 import getKerberosType1

    work = tmp_path_factory.mktemp("krb")
    ticketer = Path(sys.executable).parent / "ticketer.py"
    subprocess.run([sys.executable, str(ticketer), "-nthash", "31d6cfe0d16ae931b73c59d7e0c089c0", "-domain-sid",
                    "S-1-5-21-1-2-3", "-domain", "LAB.EXAMPLE", "-spn", f"cifs/{SPN_HOST}", "DC01$"],
                   cwd=work, check=True, capture_output=True)
    tgs = CCache.loadFile(str(work / "DC01$.ccache")).credentials[0].toTGS(f"cifs/{SPN_HOST}")
    return getKerberosType1("DC01$", "", "LAB.EXAMPLE", "", "", "", None, TGS=tgs, targetName=SPN_HOST)[2]


def test_service_principal_of_impackets_token(spnego_token):
    request = find_ap_request(spnego_token)
    assert request.sname == ("cifs", SPN_HOST)


def test_http_negotiate_carries_it(spnego_token):
    flow = HttpNtlmFlow(FLOW)
    head = (b"PROPFIND /x HTTP/1.1\r\nHost: " + SPN_HOST.encode() + b"\r\nAuthorization: Negotiate " +
            base64.b64encode(spnego_token) + b"\r\n\r\n")
    [event] = flow.feed(True, 1.0, head, 7)
    assert isinstance(event, KerberosAuthentication)
    assert (event.protocol, event.sname, event.service_host, event.frame) == ("http", ("cifs", SPN_HOST), SPN_HOST, 7)


def test_no_ap_request_is_nothing():
    assert find_ap_request(b"NTLMSSP\x00\x01\x00\x00\x00") is None
    assert authentication_events(FLOW, 1.0, 1, "smb2", b"", Stats()) == []


def test_every_truncation_is_a_named_anomaly_or_nothing(spnego_token):
    for cut in range(0, len(spnego_token), 7):
        stats = Stats()
        events = authentication_events(FLOW, 1.0, 1, "smb2", spnego_token[:cut], stats)
        assert len(events) <= 1
        if events and not isinstance(events[0], KerberosAuthentication):
            assert stats["anomaly.kerberos_malformed"] == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_damaged_tokens_never_raise_anything_else(tail):
    """Anything after the AP-REQ's first bytes, under any SEQUENCE header: KerberosError or a result."""
    token = AP_REQ_HEAD + tail
    prefix = tail[:8]
    for blob in (token, b"\x30\x82" + token, prefix + b"\x30\x10" + token):
        try:
            find_ap_request(blob)
        except KerberosError:
            pass
