"""Damaged gzip captures (the capture_file fuzz target's finding: zlib.error escaped
open_capture): a corrupt stream at the start is a CaptureError; one corrupt or cut later keeps
the packets before it and counts the damage."""
from __future__ import annotations

import gzip

import pytest

from sensor.capture.pcapfile import READ_CHUNK, CaptureError, open_capture
from tests.conftest import PCAPS

FUZZ_FINDING = bytes.fromhex("1f8b0832538b085332000d000600")   # gzip header, invalid deflate block


def test_corrupt_deflate_stream_at_the_start_is_a_capture_error(tmp_path):
    path = tmp_path / "x.pcap.gz"
    path.write_bytes(FUZZ_FINDING)
    with pytest.raises(CaptureError, match="unreadable"):
        open_capture(str(path))


@pytest.mark.parametrize("damage", ["corrupt", "cut"])
def test_damage_later_in_the_stream_keeps_the_packets_before_it(tmp_path, damage):
    # Several read chunks long: what is lost is at most the chunk the damage falls in.
    one = (PCAPS / "dfscoerce-smb21.pcap").read_bytes()
    copies = 3 * READ_CHUNK // len(one)
    raw = one + one[24:] * (copies - 1)
    with open_capture(str(PCAPS / "dfscoerce-smb21.pcap")) as reader:
        whole = len(list(reader)) * copies
    packed = bytearray(gzip.compress(raw, compresslevel=1))
    half = len(packed) * 3 // 4
    if damage == "corrupt":
        packed[half:half + 64] = b"\xff" * 64
    else:
        del packed[half:]
    path = tmp_path / "x.pcap.gz"
    path.write_bytes(bytes(packed))
    with open_capture(str(path)) as reader:
        packets = list(reader)
        assert whole // 2 < len(packets) < whole
        assert reader.stats["anomaly.capture_truncated"] == 1
