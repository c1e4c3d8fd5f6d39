"""Kerberos/LDAP servers learned from traffic (issue 6): the flow table notes the server of
an ignored flow on 88/389/636/3268 once per host, the pipeline hands it on, and the
correlator counts that host as a server (a PROBABLE to it has the lower confidence)."""
from __future__ import annotations

from scapy.all import IP, TCP, Ether, Raw

from sensor.coercion.correlate import Correlator
from sensor.coercion.events import PROBABLE
from sensor.net.stream import FlowKey, ServiceSeen
from sensor.pipeline import Pipeline
from sensor.smb.events import EncryptedMessage, NtlmAuthentication

LINKTYPE_ETHERNET = 1
CLIENT, DC, ATTACKER = "10.0.0.66", "10.0.0.10", "10.0.0.99"
# Kerberos over TCP: a 4-byte record mark then an AS-REQ ([APPLICATION 10], RFC 4120 7.2.2, 5.4.1)
AS_REQ = b"\x00\x00\x00\x10" + b"\x6a\x0e" + bytes(14)
# LDAP searchResDone (RFC 4511 4.1.1 LDAPMessage SEQUENCE, messageID 1, [APPLICATION 5])
LDAP_RESULT = bytes.fromhex("300c02010165070a010004000400")


def handshake(client: str, server: str, cport: int, sport: int, client_payload: bytes) -> list:
    c, s = IP(src=client, dst=server), IP(src=server, dst=client)
    return [Ether() / c / TCP(sport=cport, dport=sport, flags="S", seq=100),
            Ether() / s / TCP(sport=sport, dport=cport, flags="SA", seq=500, ack=101),
            Ether() / c / TCP(sport=cport, dport=sport, flags="A", seq=101, ack=501),
            Ether() / c / TCP(sport=cport, dport=sport, flags="PA", seq=101, ack=501) / Raw(client_payload)]


def run(frames: list, pipeline: Pipeline | None = None) -> list:
    pipeline = pipeline or Pipeline()
    out: list = []
    for number, frame in enumerate(frames, 1):
        out += pipeline.feed(float(number), LINKTYPE_ETHERNET, bytes(frame), number)
    return out


def test_kerberos_server_is_seen_once_per_host_at_its_ignored_flow():
    pipeline = Pipeline()
    first = run(handshake(CLIENT, DC, 50000, 88, AS_REQ), pipeline)
    assert first == [ServiceSeen(DC, "kerberos", 4.0)]          # at the first payload, once
    again = run(handshake("10.0.0.67", DC, 50001, 389, b"\x30\x05\x02\x01\x01\x42\x00"), pipeline)
    assert again == []                                          # the host is already known
    assert pipeline.stats["flows_ignored"] == 2


def test_midstream_ldap_answer_names_the_port_side():
    answer = Ether() / IP(src=DC, dst=CLIENT) / TCP(sport=389, dport=50000, flags="PA") / Raw(LDAP_RESULT)
    assert run([answer]) == [ServiceSeen(DC, "ldap", 1.0)]
    query = Ether() / IP(src=CLIENT, dst="10.0.0.11") / TCP(sport=50000, dport=3268, flags="PA") / Raw(LDAP_RESULT)
    assert run([query]) == [ServiceSeen("10.0.0.11", "gc", 1.0)]


def test_other_ignored_ports_and_http_on_a_service_port_are_not_servers():
    tls = run(handshake(CLIENT, DC, 50000, 443, b"\x16\x03\x01\x00\x05hello"))
    assert tls == []
    # A WebDAV listener on 389 (an attacker choosing the port) is followed as HTTP, not a server.
    pipeline = Pipeline()
    assert run(handshake(DC, ATTACKER, 50000, 389, b"PROPFIND /x HTTP/1.1\r\n\r\n"), pipeline) == []
    assert pipeline.stats["flows_started"] == 1 and pipeline.stats["flows_ignored"] == 0


def _probable_confidence(correlator: Correlator) -> float:
    inbound = FlowKey(CLIENT, 50000, DC, 445)
    out = FlowKey(DC, 50001, ATTACKER, 445)
    correlator.feed(EncryptedMessage(inbound, 100.0, 1, True, 7, 200, 252))
    [alert] = correlator.feed(NtlmAuthentication(out, 101.0, 2, "smb2", "DC01$", "LAB", "DC01", "NTLMv2"))
    assert alert.rule == PROBABLE
    return alert.confidence


def test_a_listener_seen_serving_ldap_is_a_server_to_the_correlator():
    assert _probable_confidence(Correlator()) == 0.8
    correlator = Correlator()
    [seen] = run([Ether() / IP(src=ATTACKER, dst=CLIENT) / TCP(sport=389, dport=50000, flags="PA")
                  / Raw(LDAP_RESULT)])
    assert correlator.feed(seen) == []
    assert ATTACKER in correlator.servers
    assert _probable_confidence(correlator) == 0.5
