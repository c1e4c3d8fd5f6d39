"""Size fingerprint on the real encrypted captures, on crafted transform sizes, and on the
clear-text captures' SMB2 message sizes (OriginalMessageSize of the same traffic encrypted)."""
from __future__ import annotations

import json
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


# impacket's srvsvc NetrShareEnum on an encrypted pipe (benign-encrypted-rpc): a root-call-sized
# first request (stub 52), a 316-byte answer; then a second call sized like opnum 13 and a fault.
SRVSVC_THEN_ROOT_SIZED = ATTACK[:9] + [(True, 188), (False, 80), (True, 113), (False, 316),
                                       (True, 196), (False, 80), (True, 113), (False, 112)]
# impacket's LsarOpenPolicy2 (stub 32, too small for two strings) first, then a root-sized call
LSARPC_THEN_ROOT_SIZED = ATTACK[:9] + [(True, 168), (False, 80), (True, 113), (False, 128)] + ATTACK[9:]


@pytest.mark.parametrize("sizes", [SRVSVC_THEN_ROOT_SIZED, LSARPC_THEN_ROOT_SIZED])
def test_only_the_pipes_first_request_and_answer_count(sizes):
    assert run(sizes) == []


def test_a_new_pipe_after_a_benign_one_is_matched_afresh():
    assert len(run(SRVSVC_THEN_ROOT_SIZED + ATTACK[2:])) == 1


MANIFEST = json.loads((PCAPS / "manifest.json").read_text())["captures"]


def encrypted_root_call_sessions(entry: dict) -> int:
    """Truth: encrypted SMB connections in which the client sent an MS-DFSNM root call (12/13)."""
    return len({c["client_port"] for c in entry["calls"] if c["opnum"] in (12, 13)}) if entry["encrypted"] else 0


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_fingerprint_hits_exactly_the_encrypted_attacks(name):
    """Precision and recall over every capture: hits per capture equal the encrypted attack
    sessions, 0 on benign encrypted traffic (Samba smbclient/rpcclient, impacket lsarpc/srvsvc/samr)."""
    hits = [a for a in alerts(name) if a.rule == ENCRYPTED_NETDFS]
    assert len(hits) == encrypted_root_call_sessions(MANIFEST[name])
    assert {(a.victim_ip, a.client_ip) for a in hits} <= {("10.0.0.10", "10.0.0.66")}


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
    ("benign-rpcclient-dfs.pcap", 0), ("benign-smb-filecopy.pcap", 0), ("coerced-auth-http.pcap", 1),
    # SRV01$ reading impacket smbserver: srvsvc NetShareEnumAll on a 6-character pipe, large answer
    ("benign-machine-auth.pcap", 0), ("benign-encrypted-rpc.pcap", 0), ("benign-encrypted-smbclient.pcap", 0),
    # impacket calling netdfs opnums 14, 15, 20, 23, 24: the coercion family, same shape
    ("dfsnm-other-coercion.pcap", 1)])
def test_clear_captures_as_if_encrypted(name, expected):
    hits = sum(len(run(sizes)) for sizes in clear_sizes(PCAPS / name).values())
    assert hits == expected
