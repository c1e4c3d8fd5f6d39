"""The server's own name from a Kerberos-authenticated bind (RpcAssociation.server_name; the NTLM
CHALLENGE case is in test_association.py), on a Windows MS-PAR client's real bind (corpus: suricata-verify truncate-applayer-test-01, SPNEGO/Kerberos,
service host/DEERLM99PS1SRV.ww005.siemens.net), answered by the real server's bind_ack, or by
a refusal: the name counts only when the server accepted the authentication."""
from __future__ import annotations

import struct
import subprocess

import pytest

from sensor.dcerpc.association import RpcAssociation
from sensor.dcerpc.events import RpcBind, RpcCall
from sensor.net.stream import FlowKey
from sensor.smb.kerberos import AP_REQ_HEAD
from tests.conftest import requires_tshark

PRINTNIGHTMARE = "suricata-verify/tests/truncate-applayer-test-01/input.pcap"
FLOW = FlowKey("146.254.115.10", 57833, "146.254.168.47", 60348)
SERVER = "DEERLM99PS1SRV.ww005.siemens.net"
# tshark's frame numbers in that capture: the bind's five segments, its ack, the first request.
BIND_FRAMES, ACK_FRAME, REQUEST_FRAME = (4, 5, 7, 8, 9), 11, 16


def payloads(corpus, frames) -> bytes:
    run = subprocess.run(["tshark", "-r", str(corpus / PRINTNIGHTMARE), "-T", "fields", "-e", "frame.number",
                          "-e", "tcp.payload"], capture_output=True, text=True, check=True)
    by_frame = dict(line.split("\t") for line in run.stdout.splitlines())
    return b"".join(bytes.fromhex(by_frame[str(f)].replace(":", "")) for f in frames)


def bind_nak(call_id: int) -> bytes:
    """C706 12.6.4.8 bind_nak: reject reason 0, one protocol version (5.0)."""
    body = struct.pack("<H", 0) + bytes([1, 5, 0])
    return struct.pack("<BBBB4sHHI", 5, 0, 13, 3, b"\x10\x00\x00\x00", 16 + len(body), 0, call_id) + body


def bind_ack_without_auth(bind: bytes) -> bytes:
    """The real ack's body with its authentication cut off: the server accepted the contexts
    but answered no authentication (no AP-REP)."""
    call_id = struct.unpack_from("<I", bind, 12)[0]
    body = bytes.fromhex("b816b816" "00000000" "0000" "0000" "01000000" "0000" "0000") + \
        bytes.fromhex("045d888aeb1cc9119fe808002b104860") + struct.pack("<I", 2)
    return struct.pack("<BBBB4sHHI", 5, 0, 12, 3, b"\x10\x00\x00\x00", 16 + len(body), 0, call_id) + body


def fed(association: RpcAssociation, *steps: tuple[bool, bytes]) -> list:
    out = []
    for i, (from_client, data) in enumerate(steps):
        out += association.feed(from_client, float(i), data, i + 1)
    return out


def named(*steps: tuple[bool, bytes]) -> tuple[str, list]:
    """The server name an association learns from these PDUs, and what it emitted."""
    association = RpcAssociation(FLOW)
    out = fed(association, *steps)
    assert len([e for e in out if isinstance(e, RpcCall)]) == 1
    return association.server_name, out


@requires_tshark
def test_accepted_kerberos_bind_names_the_server(corpus):
    bind, ack, request = (payloads(corpus, BIND_FRAMES), payloads(corpus, [ACK_FRAME]),
                          payloads(corpus, [REQUEST_FRAME]))
    assert named((True, bind), (False, ack), (True, request))[0] == SERVER


@requires_tshark
@pytest.mark.parametrize("answer", ["nak", "ack without auth", "none"])
def test_a_bind_the_server_did_not_authenticate_names_nothing(corpus, answer):
    """Anyone can put any service name in an AP-REQ: a refused bind, an ack without an
    authentication answer, or no answer at all teach no name."""
    bind, request = payloads(corpus, BIND_FRAMES), payloads(corpus, [REQUEST_FRAME])
    call_id = struct.unpack_from("<I", bind, 12)[0]
    steps = [(True, bind)]
    if answer == "nak":
        steps.append((False, bind_nak(call_id)))
    elif answer == "ack without auth":
        steps.append((False, bind_ack_without_auth(bind)))
    name, out = named(*steps, (True, request))
    assert name == ""
    if answer == "ack without auth":     # the contexts were accepted: only the authentication is missing
        assert any(isinstance(e, RpcBind) and e.acknowledged for e in out)


@requires_tshark
def test_damaged_ticket_is_a_named_anomaly_and_names_nothing(corpus):
    bind = bytearray(payloads(corpus, BIND_FRAMES))
    head = bind.index(AP_REQ_HEAD)
    bind[head - 1] = 0xff          # the AP-REQ SEQUENCE's length byte: past its container
    name, out = named((True, bytes(bind)), (False, payloads(corpus, [ACK_FRAME])),
                      (True, payloads(corpus, [REQUEST_FRAME])))
    assert "kerberos_malformed" in {getattr(e, "name", "") for e in out} and name == ""


@requires_tshark
def test_both_engines_name_the_server_alike(corpus):
    """The tshark engine reads the same token from dcerpc.auth_credentials: the same name."""
    from sensor.events import RpcCallEvent
    from tests.conftest import decode_capture
    from tests.tshark.test_engine import tshark_events

    native = [r for r in decode_capture(corpus / PRINTNIGHTMARE)[0] if isinstance(r, RpcCallEvent)]
    theirs, _ = tshark_events(corpus / PRINTNIGHTMARE)
    assert [e.agent_hostname for e in native] == [e.agent_hostname for e in theirs] == [SERVER] * len(native)
    assert len(native) == 22


@requires_tshark
def test_a_refused_tickets_name_does_not_carry_over_to_the_next_bind(corpus):
    """A bind whose ticket the server refused (bind_nak), then the same bind without any
    authentication, answered by the real ack: the refused ticket's service names nothing."""
    bind, ack, request = (payloads(corpus, BIND_FRAMES), payloads(corpus, [ACK_FRAME]),
                          payloads(corpus, [REQUEST_FRAME]))
    call_id = struct.unpack_from("<I", bind, 12)[0]
    frag_length, auth_length = struct.unpack_from("<HH", bind, 8)
    plain = bytearray(bind[:frag_length - auth_length - 8])          # sec_trailer and token cut
    struct.pack_into("<HH", plain, 8, len(plain), 0)
    name, _ = named((True, bind), (False, bind_nak(call_id)), (True, bytes(plain)), (False, ack), (True, request))
    assert name == ""
