"""A DFSCoerce call in clear, then the DC's machine account over HTTP NTLM (WebDAV) to the
listener: the whole pipeline sniffs the HTTP flow on a non-standard port, and the sensor
confirms the coercion. The capture is made here: the lab's clear call frames, then scapy-built
TCP packets carrying a PROPFIND whose Authorization is impacket's own AUTHENTICATE token."""
from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from impacket import ntlm
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapReader, wrpcap

from sensor.coercion.correlate import Correlator
from sensor.coercion.events import CONFIRMED
from sensor.capture.pcapfile import open_capture
from sensor.pipeline import Pipeline
from sensor.smb.events import NtlmAuthentication

ROOT = Path(__file__).resolve().parents[2]
CALL_CAPTURE = ROOT / "pcaps" / "dfscoerce-smb21.pcap"    # 10.0.0.66 -> DC 10.0.0.10, ServerName 10.0.0.66
VICTIM, LISTENER, PORT = "10.0.0.10", "10.0.0.66", 8080


def machine_token() -> bytes:
    """impacket's AUTHENTICATE for LAB\\DC01$, answering a CHALLENGE built by impacket."""
    negotiate = ntlm.getNTLMSSPType1("DC01", "LAB")
    target_info = ntlm.AV_PAIRS()
    target_info[ntlm.NTLMSSP_AV_HOSTNAME] = "EVIL".encode("utf-16-le")
    target_info[ntlm.NTLMSSP_AV_DNS_HOSTNAME] = "evil.lab".encode("utf-16-le")
    challenge = ntlm.NTLMAuthChallenge()
    challenge["flags"] = negotiate["flags"] & ~ntlm.NTLMSSP_NEGOTIATE_VERSION
    challenge["challenge"] = b"\x11" * 8
    challenge["Version"] = challenge["domain_name"] = b""
    challenge["TargetInfoFields"] = target_info.getData()
    challenge["TargetInfoFields_offset"] = 48
    authenticate, _ = ntlm.getNTLMSSPType3(negotiate, challenge.getData(), "DC01$", "x", "LAB")
    return base64.b64encode(authenticate.getData())


def http_packets(start: float, port: int = PORT, method: bytes = b"PROPFIND") -> list:
    client = dict(src=VICTIM, dst=LISTENER)
    server = dict(src=LISTENER, dst=VICTIM)
    request = (method + b" /share HTTP/1.1\r\nHost: evil\r\nContent-Length: 0\r\n"
               b"Authorization: NTLM " + machine_token() + b"\r\n\r\n")
    c, s = 1000, 5000
    packets = [Ether() / IP(**client) / TCP(sport=50123, dport=port, flags="S", seq=c),
               Ether() / IP(**server) / TCP(sport=port, dport=50123, flags="SA", seq=s, ack=c + 1),
               Ether() / IP(**client) / TCP(sport=50123, dport=port, flags="A", seq=c + 1, ack=s + 1),
               Ether() / IP(**client) / TCP(sport=50123, dport=port, flags="PA", seq=c + 1, ack=s + 1)
               / request]
    for i, p in enumerate(packets):
        p.time = start + i * 0.001
    return packets


@pytest.fixture
def capture(tmp_path) -> Path:
    call = list(PcapReader(str(CALL_CAPTURE)))
    path = tmp_path / "coerced-http.pcap"
    wrpcap(str(path), call + http_packets(float(call[-1].time) + 0.5))
    return path


def pipeline_records(path: Path) -> list:
    pipeline = Pipeline()
    out: list = []
    for packet in open_capture(str(path)):
        out += pipeline.feed(*packet)
    return out + pipeline.close()


def test_http_on_any_port_reaches_the_ntlm_stage(capture):
    auths = [r for r in pipeline_records(capture) if isinstance(r, NtlmAuthentication)]
    assert [(a.protocol, a.user, a.domain, a.flow.client_ip, a.flow.server_ip, a.flow.server_port)
            for a in auths if a.protocol == "http"] == [("http", "DC01$", "LAB", VICTIM, LISTENER, PORT)]


def test_pipeline_records_confirm_the_coercion(capture):
    correlator = Correlator()
    [alert] = [a for r in pipeline_records(capture) for a in correlator.feed(r)]
    assert (alert.rule, alert.victim_ip, alert.listener_ip, alert.protocol, alert.user) == \
        (CONFIRMED, VICTIM, LISTENER, "http", "DC01$")


def test_server_first_and_non_http_payloads_are_ignored(tmp_path):
    banner = http_packets(1.0, port=2525)
    banner[3] = Ether() / IP(src=LISTENER, dst=VICTIM) / TCP(sport=2525, dport=50123, flags="PA",
                                                            seq=5001, ack=1001) / b"GET ready\r\n"
    banner[3].time = 1.003
    other = http_packets(2.0, port=9000, method=b"BREW")
    path = tmp_path / "other.pcap"
    wrpcap(str(path), banner + other)
    pipeline = Pipeline()
    assert [r for p in open_capture(str(path)) for r in pipeline.feed(*p)] + pipeline.close() == []
    assert pipeline.stats["flows_started"] == 0


def test_replay_cli_prints_confirmed_once(capture, tmp_path):
    db = tmp_path / "s.db"
    cmd = [str(ROOT / ".venv" / "bin" / "dfs-sensor"), "replay", "--db", str(db), str(capture)]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    alerts = [json.loads(line) for line in first.stdout.splitlines()]
    confirmed = [a for a in alerts if a["rule"]["id"] == CONFIRMED]
    assert [(a["victim_ip"], a["listener_ip"], a["protocol"]) for a in confirmed] == \
        [(VICTIM, LISTENER, "http")]
    assert "coercion-confirmed 1" in first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert again.stdout == ""
