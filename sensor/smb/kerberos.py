"""The clear part of a Kerberos AP-REQ inside a GSS-API / SPNEGO token: the ticket's realm and
service name (RFC 4120 5.3, 5.5.1). Everything that says *who* authenticates (the client
principal, in the ticket's enc-part and the authenticator) is encrypted.

As for NTLMSSP (ntlmssp.py), the token arrives raw (GSS-API InitialContextToken, RFC 2743 3.1)
or wrapped in SPNEGO (RFC 4178): rather than decoding SPNEGO we look for the AP-REQ's own first
bytes, pvno 5 and msg-type 14 (``[0] INTEGER 5, [1] INTEGER 14``), and read the DER from the
SEQUENCE that holds them. Every length is checked against the enclosing element; depth and
sizes are bounded.
"""
from __future__ import annotations

from dataclasses import dataclass

from sensor.anomaly import Stats
from sensor.net.stream import FlowKey
from sensor.smb.events import KerberosAuthentication

# RFC 4120 5.5.1: AP-REQ ::= [APPLICATION 14] SEQUENCE { pvno [0] INTEGER (5),
# msg-type [1] INTEGER (14), ap-options [2], ticket [3] Ticket, authenticator [4] }
AP_REQ_HEAD = bytes.fromhex("a003020105a10302010e")
TAG_SEQUENCE = 0x30
TAG_TICKET = 0x61            # [APPLICATION 1] Ticket
# A token is at most the SESSION_SETUP security buffer (64 KiB); searching the first 16 KiB
# covers every AP-REQ (a ticket with a PAC is a few KB) and bounds the scan.
MAX_SCAN = 16 * 1024
# Realm and service names: DNS names and SPN parts, far below this.
MAX_NAME = 255
MAX_NAME_PARTS = 4


class KerberosError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ApRequest:
    """A Kerberos AP-REQ (RFC 4120 5.5.1): the service ticket's realm and service name."""
    realm: str
    sname: tuple[str, ...]       # e.g. ("cifs", "listener.lab.example")

    @property
    def service_host(self) -> str:
        """The host of a host-based service principal (RFC 4120 6.2.1, "service/host[:port]";
        MS-ADTS 2.2.21 SPN syntax), "" for another name type."""
        return self.sname[1].split(":", 1)[0] if len(self.sname) >= 2 else ""


def _tlv(buf: bytes, at: int, end: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the DER element at ``at``, within ``end``."""
    if at + 2 > end:
        raise KerberosError("element header past its container")
    tag, first = buf[at], buf[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 3 or at + count > end:
            raise KerberosError("bad length")
        length = int.from_bytes(buf[at:at + count], "big")
        at += count
    if at + length > end:
        raise KerberosError("element runs past its container")
    return tag, at, at + length


def _children(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Context-tagged children [n] of a SEQUENCE's value -> (value start, value end)."""
    found = {}
    at = start
    while at < end:
        tag, vstart, vend = _tlv(buf, at, end)
        if tag & 0xE0 == 0xA0:
            found[tag & 0x1F] = (vstart, vend)
        at = vend
    return found


def _string(buf: bytes, start: int, end: int) -> str:
    tag, vstart, vend = _tlv(buf, start, end)
    if tag != 0x1B or vend - vstart > MAX_NAME:          # GeneralString (KerberosString)
        raise KerberosError("not a KerberosString")
    return bytes(buf[vstart:vend]).decode("utf-8", "replace")


def find_ap_request(blob: bytes | memoryview) -> ApRequest | None:
    """The realm and service of the first AP-REQ in ``blob``; None when there is none;
    KerberosError when one starts but does not parse."""
    buf = bytes(blob[:MAX_SCAN])
    head = buf.find(AP_REQ_HEAD)
    if head < 2:
        return None
    # The SEQUENCE header is 2-4 bytes before pvno; find the one whose value starts at ``head``.
    for size in (2, 3, 4):
        at = head - size
        if at >= 0 and buf[at] == TAG_SEQUENCE:
            try:
                _, start, end = _tlv(buf, at, len(buf))
            except KerberosError:
                continue
            if start == head:
                return _ap_request(buf, start, end)
    raise KerberosError("AP-REQ header without its SEQUENCE")


def _ap_request(buf: bytes, start: int, end: int) -> ApRequest:
    fields = _children(buf, start, end)
    if 3 not in fields:
        raise KerberosError("AP-REQ without a ticket")
    tag, tstart, tend = _tlv(buf, *fields[3])
    if tag != TAG_TICKET:
        raise KerberosError("ticket is not [APPLICATION 1]")
    tag, sstart, send = _tlv(buf, tstart, tend)
    if tag != TAG_SEQUENCE:
        raise KerberosError("ticket is not a SEQUENCE")
    ticket = _children(buf, sstart, send)
    if 1 not in ticket or 2 not in ticket:
        raise KerberosError("ticket without realm or sname")
    realm = _string(buf, *ticket[1])
    tag, pstart, pend = _tlv(buf, *ticket[2])
    principal = _children(buf, pstart, pend) if tag == TAG_SEQUENCE else {}
    if 1 not in principal:
        raise KerberosError("sname without name-string")
    tag, nstart, nend = _tlv(buf, *principal[1])
    if tag != TAG_SEQUENCE:
        raise KerberosError("name-string is not a SEQUENCE")
    parts = []
    at = nstart
    while at < nend and len(parts) < MAX_NAME_PARTS:
        _, _, vend = _tlv(buf, at, nend)
        parts.append(_string(buf, at, vend))
        at = vend
    return ApRequest(realm, tuple(parts))


def authentication_events(flow: FlowKey, ts: float, frame: int, protocol: str, blob, stats: Stats) -> list:
    """[KerberosAuthentication] when ``blob`` (a security buffer) holds an AP-REQ; an anomaly
    when one starts but does not parse; [] otherwise."""
    try:
        request = find_ap_request(blob)
    except KerberosError as e:
        return [stats.anomaly(ts, "kerberos", "kerberos_malformed", flow, str(e))]
    if request is None:
        return []
    stats["kerberos_ap_requests"] += 1
    return [KerberosAuthentication(flow, ts, frame, protocol, request.realm, request.sname)]
