"""pcap/pcapng files built by the spec with struct, and the real corpus against tshark."""
import gzip
import os
import shutil
import struct
import subprocess

import pytest

from sensor.capture.pcapfile import CaptureError, open_capture
from tests.conftest import PCAPS, corpus_captures, requires_tshark

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz")

FRAMES = [b"\x01" * 60, b"\x02" * 61, b"\x03" * 1514]


def pcap(endian: str, magic: int, frames, linktype: int = 1, frac: int = 500) -> bytes:
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, data in enumerate(frames):
        out += struct.pack(endian + "IIII", 1_700_000_000 + i, frac, len(data), len(data)) + data
    return out


def block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack(endian + "II", btype, size) + body + struct.pack(endian + "I", size)


def shb(endian: str) -> bytes:
    return block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(endian: str, linktype: int, tsresol: int | None = None, snaplen: int = 0) -> bytes:
    options = b""
    if tsresol is not None:
        options = struct.pack(endian + "HHB3x", 9, 1, tsresol) + struct.pack(endian + "HH", 0, 0)
    return block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + options)


def epb(endian: str, ifid: int, ticks: int, data: bytes) -> bytes:
    return block(endian, 6, struct.pack(endian + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF,
                                        len(data), len(data)) + data)


def write(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("magic,scale", [(0xA1B2C3D4, 1e-6), (0xA1B23C4D, 1e-9)])
def test_pcap_byte_orders_and_resolutions(tmp_path, endian, magic, scale):
    path = write(tmp_path, "x.pcap", pcap(endian, magic, FRAMES, linktype=113))
    with open_capture(path) as reader:
        packets = list(reader)
        assert reader.position == reader.size == os.path.getsize(path)
    assert [p[2] for p in packets] == FRAMES
    assert [p[3] for p in packets] == [1, 2, 3]
    assert {p[1] for p in packets} == {113}
    assert packets[1][0] == pytest.approx(1_700_000_001 + 500 * scale, abs=1e-7)
    assert reader.stats["packets"] == 3 and reader.stats["bytes"] == sum(map(len, FRAMES))


def test_pcap_truncated_tail_keeps_what_was_read(tmp_path):
    whole = pcap("<", 0xA1B2C3D4, FRAMES)
    reader = open_capture(write(tmp_path, "t.pcap", whole[:-100]))
    assert [p[2] for p in reader] == FRAMES[:2]
    assert reader.stats["anomaly.capture_truncated"] == 1


def test_pcap_corrupt_record_length_stops_cleanly(tmp_path):
    content = bytearray(pcap("<", 0xA1B2C3D4, FRAMES))
    second = 24 + 16 + len(FRAMES[0])
    struct.pack_into("<I", content, second + 8, 0x7FFFFFFF)
    reader = open_capture(write(tmp_path, "c.pcap", bytes(content)))
    assert len(list(reader)) == 1
    assert reader.stats["anomaly.capture_corrupt_record"] == 1


def test_gzipped_pcap(tmp_path):
    path = write(tmp_path, "g.pcap.gz", gzip.compress(pcap("<", 0xA1B2C3D4, FRAMES)))
    assert [p[2] for p in open_capture(path)] == FRAMES


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_block_kinds(tmp_path, endian):
    unknown = block(endian, 0x00000BAD, b"whatever")
    statistics = block(endian, 5, struct.pack(endian + "IIII", 0, 0, 0, 0))
    spb = block(endian, 3, struct.pack(endian + "I", len(FRAMES[1])) + FRAMES[1])
    opb = block(endian, 2, struct.pack(endian + "HHIIII", 1, 0, 0, 7, 3, 3) + b"abc")
    content = (shb(endian) + idb(endian, 1) + idb(endian, 276, tsresol=9) + unknown
               + epb(endian, 0, 1_700_000_000_250_000, FRAMES[0])
               + epb(endian, 1, 1_700_000_000_000_000_123, FRAMES[2])
               + spb + statistics + opb)
    reader = open_capture(write(tmp_path, "x.pcapng", content))
    packets = list(reader)
    assert [(p[1], p[2], p[3]) for p in packets] == [
        (1, FRAMES[0], 1), (276, FRAMES[2], 2), (1, FRAMES[1], 3), (276, b"abc", 4)]
    assert packets[0][0] == pytest.approx(1_700_000_000.25)
    assert packets[1][0] == pytest.approx(1_700_000_000.000000123)
    assert packets[3][0] == pytest.approx(7 * 1e-9)
    assert reader.stats["pcapng_blocks_skipped"] == 2
    assert not [k for k in reader.stats if k.startswith("anomaly")]


def test_pcapng_binary_tsresol_and_second_section_other_byte_order(tmp_path):
    content = (shb("<") + idb("<", 1, tsresol=0x80 | 10) + epb("<", 0, 3 * 1024, FRAMES[0])
               + shb(">") + idb(">", 101) + epb(">", 0, 2_000_000, FRAMES[1]))
    packets = list(open_capture(write(tmp_path, "s.pcapng", content)))
    assert [(p[0], p[1], p[2]) for p in packets] == [(3.0, 1, FRAMES[0]), (2.0, 101, FRAMES[1])]


def test_pcapng_truncated_and_bad_interface(tmp_path):
    content = shb("<") + idb("<", 1) + epb("<", 3, 0, FRAMES[0]) + epb("<", 0, 0, FRAMES[1])
    reader = open_capture(write(tmp_path, "t.pcapng", content + epb("<", 0, 0, FRAMES[2])[:-9]))
    assert [p[2] for p in reader] == [FRAMES[1]]
    assert reader.stats["anomaly.capture_corrupt_record"] == 1   # interface 3 was never described
    assert reader.stats["anomaly.capture_truncated"] == 1


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    (b"", "empty file"),
    (b"GIF89a" + b"\0" * 40, "not a pcap or pcapng file"),
    (struct.pack("<I", 0xA1B2C3D4) + b"\0" * 4, "cut short"),
])
def test_unreadable_input_raises_one_line_capture_error(tmp_path, content, message):
    path = str(tmp_path / "f.pcap")
    if content is not None:
        write(tmp_path, "f.pcap", content)
    with pytest.raises(CaptureError, match=message) as info:
        open_capture(path)
    assert "\n" not in str(info.value)


def test_directory_and_permission_errors(tmp_path):
    with pytest.raises(CaptureError, match="directory"):
        open_capture(str(tmp_path))
    path = write(tmp_path, "locked.pcap", pcap("<", 0xA1B2C3D4, FRAMES))
    os.chmod(path, 0)
    if os.geteuid() == 0:
        pytest.skip("root reads files without permission bits")
    with pytest.raises(CaptureError, match="permission"):
        open_capture(path)


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("capinfos") is None, reason="capinfos is not installed (scripts/setup --test installs it)")
def test_corpus_frame_counts_match_capinfos(corpus):
    for path in corpus_captures(*CAPTURE_SUFFIXES):
        count = subprocess.run(["capinfos", "-T", "-r", "-M", "-c", str(path)],
                               capture_output=True, text=True, check=True).stdout.split("\t")[1]
        reader = open_capture(str(path))
        frames = [p[3] for p in reader]
        assert frames == list(range(1, int(count) + 1)), path
        assert not [k for k in reader.stats if k.startswith("anomaly")], path


@pytest.mark.tshark
@requires_tshark
def test_corpus_pcapng_frames_match_tshark(corpus):
    pcapngs = corpus_captures(".pcapng")
    assert pcapngs
    for path in pcapngs:
        rows = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                               "-e", "frame.cap_len", "-e", "frame.protocols"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
        expected = [(float(t), int(n), protos.split(":")[0]) for t, n, protos in (r.split("\t") for r in rows)]
        got = [(ts, len(data), {1: "eth", 113: "sll", 101: "raw"}.get(lt, str(lt))) for ts, lt, data, _ in open_capture(str(path))]
        assert [(round(t, 6), n, p) for t, n, p in got] == [(round(t, 6), n, p) for t, n, p in expected], path


@pytest.mark.parametrize("name", ["benign-encrypted-rpc.pcap", "benign-encrypted-smbclient.pcap"])
def test_mapped_window_moves_across_records_as_chunked_reads_do(tmp_path, monkeypatch, name):
    """A regular file is read through a moving mmap window: with a window of two pages,
    nearly every record straddles a move, and the records equal those read from a pipe
    (chunked reads), position included."""
    import sensor.capture.pcapfile as pcapfile
    monkeypatch.setattr(pcapfile, "MAP_WINDOW", 2 * pcapfile.mmap.ALLOCATIONGRANULARITY)
    path = PCAPS / name
    with open_capture(str(path)) as reader:
        assert isinstance(reader._in, pcapfile._Mapped)
        mapped = list(reader)
        assert reader.position == path.stat().st_size
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["cp", str(path), str(fifo)])
    with open_capture(str(fifo)) as reader:
        assert isinstance(reader._in, pcapfile._Chunked)
        piped = list(reader)
    writer.wait()
    assert path.stat().st_size > 3 * pcapfile.MAP_WINDOW and mapped == piped
    assert all(type(data) is bytes for _, _, data, _ in mapped)


def test_mapped_file_truncated_tail_and_growing_file(tmp_path):
    path = tmp_path / "t.pcap"
    whole = pcap("<", 0xA1B2C3D4, FRAMES)
    path.write_bytes(whole[:-100])
    with open_capture(str(path)) as reader:
        assert [d for _, _, d, _ in reader] == FRAMES[:2]
        assert reader.stats["anomaly.capture_truncated"] == 1
    path.write_bytes(whole[:-len(FRAMES[2]) - 16])
    with open_capture(str(path)) as reader:
        frames = iter(reader)
        assert next(frames)[2] == FRAMES[0]
        with open(path, "ab") as f:     # a capture still being written: read to its end
            f.write(whole[-len(FRAMES[2]) - 16:])
        assert [d for _, _, d, _ in frames] == FRAMES[1:]
