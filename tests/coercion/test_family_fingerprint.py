"""The netdfs transform-size fingerprint on the coercion family's SMB3-encrypted captures:
PrinterBug, CheeseOunce and ShadowCoerce inside encryption open other pipes (CREATE 134, 136,
142 bytes: spoolss, eventlog, FssagentRpc), so the DFSCoerce shape must not match them. PetitPotam
on \\PIPE\\efsrpc, a six-letter pipe like netdfs, matches it when its first call has a root-call-sized
stub answered with a status only (efsr-efsrpc-smb3-encrypted-fingerprint: EfsRpcEncryptFileSrv);
EfsRpcOpenFileRaw first (answered with a context handle) does not. The fingerprint is not
extended to the other pipes (README: no benign encrypted traffic on them was measured)."""
from __future__ import annotations

import json
import shutil

import pytest

from sensor.capture.pcapfile import open_capture
from sensor.coercion.fingerprint import EncryptedNetdfsMatcher
from sensor.pipeline import Pipeline
from tests.coercion.test_fingerprint import clear_sizes, run
from tests.conftest import PCAPS

FAMILY = PCAPS / "family"
MANIFEST = json.loads((FAMILY / "manifest.json").read_text())["captures"]
ENCRYPTED = sorted(n for n, e in MANIFEST.items() if e["encrypted"])


@pytest.mark.parametrize("name", ENCRYPTED)
def test_netdfs_fingerprint_on_encrypted_coercion_matches_only_where_the_manifest_says(name):
    pipeline, matcher = Pipeline(), EncryptedNetdfsMatcher()
    hits = []
    for packet in open_capture(str(FAMILY / name)):
        for record in pipeline.feed(*packet):
            hits += matcher.feed(record)
    assert pipeline.stats["smb_encrypted_messages"] > 0
    assert len(hits) == ("probable-dfscoerce-encrypted" in MANIFEST[name]["expected_alerts"])


CLEAR = sorted(n for n, e in MANIFEST.items() if not e["encrypted"] and all(c["transport"] == "np" for c in e["calls"]))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
@pytest.mark.parametrize("name", CLEAR)
def test_clear_family_captures_as_if_encrypted(name):
    """The same traffic encrypted would have these SMB2 sizes: only netdfs matches the shape."""
    hits = sum(len(run(sizes)) for sizes in clear_sizes(FAMILY / name).values())
    assert hits == (1 if name.startswith("dfsnm-") else 0)
