"""Damaged captures found by the capture_file fuzz target. Gzip: zlib.error escaped
open_capture; a corrupt stream at the start is now a CaptureError, one corrupt or cut later
keeps the packets before it and counts the damage. pcapng: a too-short packet block."""
from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest

from sensor.capture.pcapfile import READ_CHUNK, CaptureError, open_capture
from tests.conftest import PCAPS

SEEDS = Path(__file__).resolve().parents[2] / "fuzz" / "seeds" / "capture_file"
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


def test_pcapng_packet_block_shorter_than_its_fixed_fields_is_skipped_and_counted(tmp_path):
    """The capture_file fuzz target's second finding: an EPB of 20 bytes (its fields need 32)
    read past the file. Every block type shorter than its fixed fields is now a corrupt record."""
    path = tmp_path / "x.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(PCAPS / "dfscoerce-smb21.pcap"), str(path)], check=True)
    raw = path.read_bytes()
    shb_len = struct.unpack_from("<I", raw, 4)[0]
    idb_len = struct.unpack_from("<I", raw, shb_len + 4)[0]
    short_epb = struct.pack("<III", 6, 20, 0) + struct.pack("<II", 0, 20)
    cut = shb_len + idb_len
    path.write_bytes(raw[:cut] + short_epb + raw[cut:])
    with open_capture(str(path)) as reader:
        packets = list(reader)
        assert reader.stats["anomaly.capture_corrupt_record"] == 1
    with open_capture(str(PCAPS / "dfscoerce-smb21.pcap")) as reader:
        assert len(packets) == len(list(reader))
    fuzz_input = tmp_path / "finding.pcapng"
    fuzz_input.write_bytes((SEEDS / "short-enhanced-packet-block.pcapng").read_bytes())
    with open_capture(str(fuzz_input)) as reader:
        assert list(reader) == [] and reader.stats["anomaly.capture_corrupt_record"] == 1
