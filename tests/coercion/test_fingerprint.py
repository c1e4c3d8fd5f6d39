"""Size fingerprint on the real encrypted captures, on crafted transform sizes, and on the
clear-text captures' SMB2 message sizes (OriginalMessageSize of the same traffic encrypted)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sensor.coercion.events import ENCRYPTED_NETDFS
from sensor.coercion.fingerprint import EncryptedNetdfsMatcher
from sensor.net.stream import FlowKey
from tests.coercion.test_correlate import alerts

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
FLOW = FlowKey("10.0.0.66", 50000, "10.0.0.10", 445)
# impacket DFSCoerce after session setup: tree, CREATE netdfs, bind, bind_ack, opnum 13, fault
ATTACK = [(True, 104), (False, 80), (True, 132), (False, 152), (True, 184), (False, 80),
          (True, 113), (False, 73), (False, 148), (True, 196), (False, 80), (True, 113),
          (False, 112)]


def run(sizes) -> list:
    matcher = EncryptedNetdfsMatcher()
    return [a for i, (c, s) in enumerate(sizes) for a in matcher.observe(FLOW, 1, float(i), c, s)]


def test_attack_shape_hits_once():
    [alert] = run(ATTACK + ATTACK)
    assert (alert.rule, alert.victim_ip, alert.client_ip) == (ENCRYPTED_NETDFS, "10.0.0.10", "10.0.0.66")


@pytest.mark.parametrize("index, size", [(2, 128),     # CREATE of "samr": 4 characters
                                         (4, 196),     # bind with two contexts
                                         (8, 144),     # bind_ack of a shorter secondary address
                                         (9, 170),     # request stub too small for two strings
                                         (12, 128)])   # answer with a policy handle (lsarpc)
def test_one_size_off_is_no_hit(index, size):
    sizes = list(ATTACK)
    sizes[index] = (sizes[index][0], size)
    assert run(sizes) == []


@pytest.mark.parametrize("name", ["dfscoerce-smb3-encrypted.pcap", "coerced-auth-encrypted.pcap"])
def test_encrypted_captures_hit(name):
    hits = [a for a in alerts(name) if a.rule == ENCRYPTED_NETDFS]
    assert [(a.victim_ip, a.client_ip) for a in hits] == [("10.0.0.10", "10.0.0.66")]


def clear_sizes(path: Path) -> dict:
    """Per TCP stream, (from client, SMB2 message size) of every clear-text SMB2 message."""
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "smb2 && !smb2.header.transform.msg_size",
                          "-T", "fields", "-E", "occurrence=f", "-e", "tcp.stream",
                          "-e", "tcp.dstport", "-e", "nbss.length"],
                         capture_output=True, text=True, check=True).stdout
    streams: dict = {}
    for line in out.splitlines():
        stream, dport, length = line.split("\t")
        if length:
            streams.setdefault(stream, []).append((dport in ("445", "139"), int(length)))
    return streams


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
@pytest.mark.parametrize("name, expected", [
    ("dfscoerce-smb311-clear.pcap", 1), ("dfscoerce-smb21.pcap", 1), ("coerced-auth-clear.pcap", 1),
    ("benign-rpcclient-dfs.pcap", 0), ("benign-smb-filecopy.pcap", 0),
    # impacket calling netdfs opnums 14, 15, 20, 23, 24: the coercion family, same shape
    ("dfsnm-other-coercion.pcap", 1)])
def test_clear_captures_as_if_encrypted(name, expected):
    hits = sum(len(run(sizes)) for sizes in clear_sizes(PCAPS / name).values())
    assert hits == expected
