"""sensor/capture/live.py on a real veth: exact frames, VLAN tags, the kernel filter,
several interfaces, idle ticks, drop counters of a full ring."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from scapy.all import IP, TCP, UDP, Dot1Q, Ether, Raw, rdpcap, wrpcap

from sensor.capture.live import (DEFAULT_BPF, LINKTYPE_ETHERNET, RING_BLOCK_BYTES, TICK_SECONDS,
                                 CaptureError, LiveCapture, compile_bpf)

# In the corpus: spoolss over SMB2, with a 2998-byte frame (segmentation offload on the recording host).
SMB_CAPTURE = "suricata-verify/tests/smb-dce_iface/input.pcap"
# A DCE/RPC bind header (C706 12.6.3.1: version 5.0, ptype 11, flags first|last, NDR LE)
RPC_BIND_HEADER = bytes([5, 0, 11, 3, 0x10, 0, 0, 0, 0x48, 0, 0, 0, 1, 0, 0, 0])


def capture(interfaces, send, want: int, bpf=None, timeout=5.0):
    """Open a LiveCapture, run ``send`` in a thread, and collect until ``want`` frames or
    ``timeout`` seconds. Returns (frames, ticks, capture) with the capture already closed."""
    cap = LiveCapture(interfaces, bpf)
    frames, ticks = [], 0
    sender = threading.Thread(target=send)
    deadline = time.monotonic() + timeout
    sender.start()
    try:
        for block in cap.blocks(lambda: len(frames) >= want or time.monotonic() > deadline):
            if block is None:
                ticks += 1
            else:
                frames += block
        sender.join(timeout)
        counters = cap.kernel_counters()
    finally:
        cap.close()
    return frames, ticks, counters


def write_pcap(tmp_path: Path, frames) -> Path:
    path = tmp_path / "frames.pcap"
    wrpcap(str(path), frames)
    return path


def smb_frame(payload: bytes = b"\x00\x00\x00\x04\xfeSMB", dport=445, **ip):
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.66", dst="10.0.0.10", **ip) \
        / TCP(sport=50000, dport=dport, flags="PA") / Raw(payload)


def test_compile_bpf_gives_sock_filter_array():
    program = compile_bpf(DEFAULT_BPF)
    assert program and len(program) % 8 == 0
    # the last instruction of a libpcap program is a return (BPF_RET = 0x06)
    assert program[-8] & 0x07 == 0x06


def test_bad_filter_is_a_capture_error_naming_the_problem():
    with pytest.raises(CaptureError, match="bad capture filter 'tcp port nosuchport'.*nosuchport"):
        compile_bpf("tcp port nosuchport")


@pytest.mark.root
def test_unknown_interface_is_a_capture_error():
    with pytest.raises(CaptureError, match="no such network interface: nosuch0"):
        LiveCapture(["nosuch0"])


@pytest.mark.root
def test_frames_arrive_byte_exact_in_order_with_counter_and_time(veth, corpus):
    want = [bytes(p) for p in rdpcap(str(corpus / SMB_CAPTURE))]
    started = time.time()
    frames, _, counters = capture([veth.host], lambda: veth.replay(corpus / SMB_CAPTURE), len(want))
    assert [data for _, _, data, _ in frames] == want     # includes a 2998-byte offload frame
    assert [n for _, _, _, n in frames] == list(range(1, len(want) + 1))
    assert all(lt == LINKTYPE_ETHERNET for _, lt, _, _ in frames)
    assert all(started - 1 <= ts <= time.time() for ts, _, _, _ in frames)
    assert counters[veth.host].packets == len(want) and counters[veth.host].drops == 0


@pytest.mark.root
def test_vlan_tags_are_put_back(veth, tmp_path):
    tagged = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=42, prio=5) \
        / IP(src="10.0.0.66", dst="10.0.0.10") / TCP(sport=50000, dport=445) / Raw(b"x" * 20)
    qinq = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x88A8) / Dot1Q(vlan=100) \
        / Dot1Q(vlan=42) / IP(src="10.0.0.66", dst="10.0.0.10") / TCP(sport=50000, dport=139) / Raw(b"y" * 20)
    pcap = write_pcap(tmp_path, [tagged, qinq])
    frames, _, _ = capture([veth.host], lambda: veth.replay(pcap), 2)
    assert [data for _, _, data, _ in frames] == [bytes(tagged), bytes(qinq)]


@pytest.mark.root
def test_default_filter_keeps_smb_rpc_http_requests_and_fragments_and_drops_the_rest(veth, tmp_path):
    keep = [
        smb_frame(),                                               # SMB direct
        smb_frame(dport=139),                                      # NetBIOS session service
        smb_frame(RPC_BIND_HEADER, dport=49667),                   # DCE/RPC on a dynamic port
        Ether() / IP(src="10.0.0.66", dst="10.0.0.10", proto=6, frag=185) / Raw(b"z" * 40),  # later fragment
        # HTTP requests that can carry NTLM back-authentication (WebDAV), on any port
        *(smb_frame(method + b" /x HTTP/1.1\r\n", dport=port) for method, port in
          [(b"GET", 80), (b"HEAD", 8080), (b"POST", 8000), (b"PUT", 81), (b"OPTIONS", 8081),
           (b"PROPFIND", 8080)]),
        Ether() / Dot1Q(vlan=7) / IP(src="10.0.0.66", dst="10.0.0.10")
        / TCP(sport=50001, dport=8080, flags="PA") / Raw(b"PROPFIND /x HTTP/1.1\r\n"),
    ]
    drop = [smb_frame(b"HTTP/1.1 401 Unauthorized\r\n", dport=8080),   # the server's answer
            smb_frame(b"SSH-2.0-OpenSSH_9.2\r\n", dport=22),
            smb_frame(b"GETX / HTTP/1.1\r\n", dport=80),
            Ether() / IP(src="10.0.0.66", dst="10.0.0.53") / UDP(dport=53) / Raw(b"q" * 20)]
    pcap = write_pcap(tmp_path, drop[:1] + keep[:2] + drop[1:] + keep[2:])
    frames, _, counters = capture([veth.host], lambda: veth.replay(pcap), len(keep), timeout=2.0)
    assert [data for _, _, data, _ in frames] == [bytes(f) for f in keep]
    assert counters[veth.host].packets == len(keep)     # the kernel never passed the others


@pytest.mark.root
def test_bpf_replaces_the_default(veth, tmp_path):
    pcap = write_pcap(tmp_path, [smb_frame(), smb_frame(b"GET /", dport=80)])
    frames, _, _ = capture([veth.host], lambda: veth.replay(pcap), 1, bpf="tcp port 80", timeout=2.0)
    assert [data for _, _, data, _ in frames] == [bytes(smb_frame(b"GET /", dport=80))]


@pytest.mark.root
def test_several_interfaces_in_one_capture(veth, second_veth, tmp_path):
    first = write_pcap(tmp_path, [smb_frame(b"first")])
    second = tmp_path / "second.pcap"
    wrpcap(str(second), [smb_frame(b"second")])
    frames, _, counters = capture([veth.host, second_veth.host],
                                  lambda: (veth.replay(first), second_veth.replay(second)), 2)
    assert sorted(data for _, _, data, _ in frames) == sorted([bytes(smb_frame(b"first")),
                                                               bytes(smb_frame(b"second"))])
    assert {name: c.packets for name, c in counters.items()} == {veth.host: 1, second_veth.host: 1}


@pytest.mark.root
def test_idle_ticks_while_no_traffic(veth):
    frames, ticks, _ = capture([veth.host], lambda: None, 1, timeout=4 * TICK_SECONDS + 0.2)
    assert frames == [] and 3 <= ticks <= 5


@pytest.mark.root
def test_a_full_ring_drops_the_rest_and_counts_every_drop(veth, tmp_path):
    """Nothing reads while more frames arrive than a 2 MiB ring holds: the kernel keeps the
    first ones whole and in order, drops the rest, and PACKET_STATISTICS says how many; the
    capture's frames and stats agree with it to the frame."""
    sent = [smb_frame(n.to_bytes(4, "big") + bytes(1400)) for n in range((2 << 20) // 1400 + 500)]
    pcap = write_pcap(tmp_path, sent)
    cap = LiveCapture([veth.host], ring_mb=2)
    try:
        veth.replay(pcap)
        time.sleep(0.3)          # the kernel retires a partly filled block after its timeout
        frames, blocks = [], 0
        for block in cap.blocks():
            if block is None:    # the first idle tick (TICK_SECONDS): all that was kept is read
                break
            blocks += 1
            frames += block
        counters = cap.kernel_counters()[veth.host]
        stats = dict(cap.stats)
    finally:
        cap.close()
    assert 0 < len(frames) < len(sent) and blocks <= (2 << 20) // RING_BLOCK_BYTES
    assert [data for _, _, data, _ in frames] == [bytes(f) for f in sent[:len(frames)]]
    assert [n for _, _, _, n in frames] == list(range(1, len(frames) + 1))
    assert counters.packets == len(sent) and counters.drops == len(sent) - len(frames)
    assert stats["capture.frames"] == len(frames)
    assert stats["capture.bytes"] == sum(len(data) for _, _, data, _ in frames)
