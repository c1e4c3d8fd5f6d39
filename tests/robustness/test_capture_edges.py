"""Capture files at the edges (issue 18 items 4, 5 and 10), through the real `dfs-sensor replay`:
the lab's DFSCoerce capture with a bad timestamp, an oversized record, a wrong byte-order
magic, an unknown link type, a cut gzip stream or a run of empty records in it, and read
through a pipe, a FIFO or standard input. Each failed before (a traceback, exit 1 with nothing
stored, a silent end of file, a hang, a raw ESC in an error message)."""
from __future__ import annotations

import gzip
import os
import struct
import subprocess
import threading

import pytest

from sensor.capture.pcapfile import MAX_EMPTY_RECORDS_IN_A_ROW, MAX_RECORD, open_capture
from tests.conftest import requires_tshark
from tests.robustness.test_cli_malformed import ATTACK, SENSOR, _PCAP_RECORD, assert_clean_error, records, replay

_U64_MAX = (1 << 64) - 1
_OPT_IF_TSOFFSET = 14     # pcapng 4.2: seconds added to every timestamp of the interface


def calls(proc) -> list[tuple]:
    """What each alert says about the attack, without its event ids (they hash the time)."""
    import json
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return sorted((a["rule"], a["action_rpc_func_opnum"], a["actor_remote_ip"], a["dfs_relay_server"]) for a in rows)


def warnings(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("dfs-sensor: warning: ")]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The attack replayed as recorded: its alerts, and the frames of its two calls."""
    tmp = tmp_path_factory.mktemp("clean")
    proc = replay(tmp, "--events", "ev.jsonl", str(ATTACK))
    assert proc.returncode == 0 and len(calls(proc)) == 2
    import json
    frames = [json.loads(line)["net_capture_frame"] for line in (tmp / "ev.jsonl").read_text().splitlines()]
    return calls(proc), frames


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _epb(ifid: int, ticks: int, data: bytes, origlen: int | None = None) -> bytes:
    return _block(6, struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                                 len(data) if origlen is None else origlen) + data)


def pcapng(packets: list[bytes], second_idb_options: bytes = b"") -> bytes:
    """SHB, IDB 0 (Ethernet, microseconds), IDB 1 (Ethernet, with options), then the blocks."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb0 = _block(1, struct.pack("<HHI", 1, 0, 0))
    idb1 = _block(1, struct.pack("<HHI", 1, 0, 0) + second_idb_options + struct.pack("<HH", 0, 0))
    return shb + idb0 + idb1 + b"".join(packets)


def attack_epbs() -> list[bytes]:
    _header, recs = records(ATTACK)
    return [_epb(0, ts * 1_000_000 + us, data) for ts, us, _orig, data in recs]


# Item 4: out-of-range timestamps -------------------------------------------------------------

def test_packet_time_of_2_to_64_minus_1_is_clamped_and_counted(tmp_path, clean):
    """Before: `ValueError: year ... is out of range` in sensor/events.py, exit 1, nothing stored."""
    alerts, frames = clean
    _header, recs = records(ATTACK)
    blocks = attack_epbs()
    blocks[frames[0] - 1] = _epb(0, _U64_MAX, recs[frames[0] - 1][3])      # the first call's frame
    (tmp_path / "t.pcapng").write_bytes(pcapng(blocks))
    proc = replay(tmp_path, "t.pcapng")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert calls(proc) == alerts                        # the call is still seen, at its neighbour's time
    assert "capture_bad_timestamp 1" in proc.stderr
    assert warnings(proc) == [f"dfs-sensor: warning: t.pcapng: frame {frames[0]} is dated 1.84467e+13 s from "
                              "1970, not a date: given the time of the frame before it"]


@requires_tshark
def test_the_tshark_engine_clamps_the_same_time(tmp_path, clean):
    """tshark dissects the frame with its year-586524 time; the engine's events broke the same way."""
    alerts, frames = clean
    _header, recs = records(ATTACK)
    blocks = attack_epbs()
    blocks[frames[0] - 1] = _epb(0, _U64_MAX, recs[frames[0] - 1][3])
    (tmp_path / "t.pcapng").write_bytes(pcapng(blocks))
    proc = replay(tmp_path, "--engine", "tshark", "t.pcapng")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert calls(proc) == alerts
    assert "capture_bad_timestamp 1" in proc.stderr


def test_if_tsoffset_of_minus_2_to_62_is_clamped_and_counted(tmp_path, clean):
    alerts, frames = clean
    _header, recs = records(ATTACK)
    blocks = attack_epbs()
    ts, us, _orig, data = recs[frames[1] - 1]
    blocks[frames[1] - 1] = _epb(1, ts * 1_000_000 + us, data)             # the second call, on interface 1
    tsoffset = struct.pack("<HHq", _OPT_IF_TSOFFSET, 8, -(1 << 62))
    (tmp_path / "o.pcapng").write_bytes(pcapng(blocks, tsoffset))
    proc = replay(tmp_path, "o.pcapng")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert calls(proc) == alerts
    assert "capture_bad_timestamp 1" in proc.stderr


def test_bad_time_before_any_good_one_skips_the_frame(tmp_path, clean):
    alerts, _frames = clean
    blocks = attack_epbs()
    (tmp_path / "f.pcapng").write_bytes(pcapng([_epb(0, _U64_MAX, b"\0" * 60)] + blocks))
    proc = replay(tmp_path, "f.pcapng")
    assert proc.returncode == 0 and calls(proc) == alerts
    assert "frame 1 is dated" in warnings(proc)[0] and "frame skipped" in warnings(proc)[0]


# Item 5: pipes, FIFOs, standard input ---------------------------------------------------------

def test_process_substitution_and_dev_stdin(tmp_path, clean):
    alerts, _frames = clean
    substituted = subprocess.run(["bash", "-c", f'"{SENSOR}" replay --db s1.db <(cat "{ATTACK}")'],
                                 capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert substituted.returncode == 0, substituted.stderr
    assert calls(substituted) == alerts
    piped = subprocess.run([str(SENSOR), "replay", "--db", "s2.db", "/dev/stdin"], input=ATTACK.read_bytes(),
                           capture_output=True, timeout=60, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert calls(subprocess.CompletedProcess([], 0, piped.stdout.decode(), "")) == alerts


def test_gzip_on_stdin_as_dash(tmp_path, clean):
    alerts, _frames = clean
    proc = subprocess.run([str(SENSOR), "replay", "--db", "s.db", "--events", "ev.jsonl", "-"],
                          input=gzip.compress(ATTACK.read_bytes()), capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls(subprocess.CompletedProcess([], 0, proc.stdout.decode(), "")) == alerts
    assert '"net_capture_file":"stdin"' in (tmp_path / "ev.jsonl").read_text()


def test_fifo_with_a_file_after_it(tmp_path, clean):
    """Before: the check opened the FIFO, read its head and closed it; the second open waited
    for a writer that had gone (a hang). The regular file after it is checked as before."""
    alerts, _frames = clean
    fifo = tmp_path / "live.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as sink:
            sink.write(ATTACK.read_bytes())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    proc = replay(tmp_path, str(fifo), str(ATTACK))
    writer.join(timeout=5)
    assert proc.returncode == 0, proc.stderr
    assert calls(proc) == alerts                                       # the same calls: stored once
    assert "2 file(s)" in proc.stderr


def test_tshark_engine_refuses_a_stream(tmp_path):
    proc = subprocess.run([str(SENSOR), "replay", "--db", "s.db", "--engine", "tshark", "-"],
                          input=ATTACK.read_bytes(), capture_output=True, text=False, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and b"tshark engine reads files" in proc.stderr


# Item 10: oversized records, byte-order magic, link type, cut gzip, names, empty runs -----------

def test_oversized_pcapng_block_is_skipped_and_the_attack_after_it_found(tmp_path, clean):
    """Before: the file ended at the block (exit 0, one anomaly, no alert)."""
    alerts, _frames = clean
    jumbo = _epb(0, 1, b"\0" * (MAX_RECORD + 4), origlen=MAX_RECORD + 4)
    (tmp_path / "j.pcapng").write_bytes(pcapng([jumbo] + attack_epbs()))
    proc = replay(tmp_path, "j.pcapng")
    assert proc.returncode == 0 and calls(proc) == alerts
    assert "capture_oversized_record 1" in proc.stderr and len(warnings(proc)) == 1


def test_pcapng_block_whose_length_copy_disagrees_ends_the_file(tmp_path):
    jumbo = bytearray(_epb(0, 1, b"\0" * (MAX_RECORD + 4)))
    jumbo[-4:] = struct.pack("<I", 64)                  # the trailing length (pcapng 3.1) is not the length
    (tmp_path / "c.pcapng").write_bytes(pcapng([bytes(jumbo)] + attack_epbs()))
    proc = replay(tmp_path, "c.pcapng")
    assert proc.returncode == 0 and calls(proc) == []
    assert "capture_corrupt_record 1" in proc.stderr and "ends with length 64" in proc.stderr


def test_oversized_pcap_record_is_skipped_and_a_garbage_length_stops(tmp_path, clean):
    alerts, _frames = clean
    header, recs = records(ATTACK)
    body = b"".join(_PCAP_RECORD.pack(ts, us, len(d), orig) + d for ts, us, orig, d in recs)
    ts0, us0 = recs[0][:2]
    size = MAX_RECORD + 100
    jumbo = _PCAP_RECORD.pack(ts0, us0, size, size) + b"\0" * size
    (tmp_path / "j.pcap").write_bytes(header + jumbo + body)
    proc = replay(tmp_path, "j.pcap")
    assert proc.returncode == 0 and calls(proc) == alerts
    assert "capture_oversized_record 1" in proc.stderr
    # A length bigger than the packet it claims to be part of is a broken header: nothing
    # after it can be trusted to be a record, so the file ends there (no guessed resync).
    garbage = _PCAP_RECORD.pack(ts0, us0, 0x7FFFFFFF, 60)
    (tmp_path / "g.pcap").write_bytes(header + garbage + body)
    proc = replay(tmp_path, "g.pcap")
    assert proc.returncode == 0 and calls(proc) == []
    assert "capture_corrupt_record 1" in proc.stderr and "claims 2147483647 bytes of a 60-byte packet" in proc.stderr


def test_wrong_byte_order_magic_in_the_first_section_is_unusable_input(tmp_path):
    """Before: exit 0 with nothing read."""
    raw = bytearray(pcapng(attack_epbs()))
    raw[8:12] = b"\xde\xad\xbe\xef"
    (tmp_path / "b.pcapng").write_bytes(bytes(raw))
    assert_clean_error(replay(tmp_path, "b.pcapng"), "b.pcapng", "byte-order magic", "deadbeef")


def test_unknown_link_type_is_an_anomaly_and_a_warning(tmp_path):
    header, recs = records(ATTACK)
    user0 = header[:20] + struct.pack("<I", 147)       # LINKTYPE_USER0
    (tmp_path / "u.pcap").write_bytes(user0 + ATTACK.read_bytes()[24:])
    proc = replay(tmp_path, "u.pcap")
    assert proc.returncode == 0 and calls(proc) == []
    assert "capture_unknown_linktype 1" in proc.stderr
    assert warnings(proc) == ["dfs-sensor: warning: u.pcap: link type 147 is not one the sensor decodes: "
                              "its packets are ignored"]


def test_gzip_cut_at_300_bytes_is_an_anomaly_and_a_warning(tmp_path):
    (tmp_path / "cut.pcap.gz").write_bytes(gzip.compress(ATTACK.read_bytes())[:300])
    proc = replay(tmp_path, "cut.pcap.gz")
    assert proc.returncode == 0
    assert "capture_truncated 1" in proc.stderr
    [warning] = warnings(proc)
    assert warning.startswith("dfs-sensor: warning: cut.pcap.gz: compressed stream damaged after frame 0")


def test_file_names_with_esc_and_lf_are_escaped_in_messages(tmp_path):
    name = "x\x1b[2J\ny.pcap"
    (tmp_path / name).write_bytes(b"GARBAGE!" * 8)
    assert_clean_error(replay(tmp_path, name), "x\\x1b[2J\\ny.pcap", "not a pcap")
    assert_clean_error(replay(tmp_path, "missing\x1b.pcap"), "missing\\x1b.pcap", "no such file")


def test_gzip_of_zeros_after_a_header_is_refused_after_a_short_run(tmp_path):
    """A 256 MiB run of zeros behind a pcap header (a 0.26 MB gzip) took 47 s to read as 16M
    empty records. Now the reader stops after MAX_EMPTY_RECORDS_IN_A_ROW of them: it has
    consumed a few chunks, not the stream."""
    header, _recs = records(ATTACK)
    path = tmp_path / "zeros.pcap.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(header)
        zeros = b"\0" * (1 << 20)
        for _ in range(256):
            out.write(zeros)
    with open_capture(str(path)) as reader:
        assert list(reader) == []
        assert reader.stats["anomaly.capture_corrupt_record"] == 1
        assert reader.position <= 24 + 16 * MAX_EMPTY_RECORDS_IN_A_ROW
    proc = replay(tmp_path, "zeros.pcap.gz")
    assert proc.returncode == 0 and "empty records in a row" in proc.stderr
