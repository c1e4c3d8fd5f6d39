"""The tshark decoder names pipes with the native stage's function (sensor/smb/pipes.py).

Its own copy used to differ: it kept a trailing NUL and left one backslash of a doubled
separator ("\\PIPE\\\\netdfs" -> "\\netdfs"), so a call on such a pipe whose bind was missed was
not attributed to netdfs by the tshark engine while the native engine attributed it. The
packets below are tshark's JSON layer shapes (field names as `tshark -T json` prints them),
fed to the decoder without tshark."""
from __future__ import annotations

import pytest

from sensor.anomaly import Stats
from sensor.net.stream import FlowKey
from sensor.smb.pipes import PipeTable
from sensor.tshark.decoder import TsharkDecoder

CLIENT, SERVER = ("10.0.0.66", "40000"), ("10.0.0.10", "445")
UID, TID, FID = "0x0800", "0x0801", "0x4000"
NT_CREATE_ANDX, TRANSACTION = "0xa2", "0x25"


def packet(number: int, from_client: bool, smb: dict, dcerpc: dict | None = None) -> dict:
    src, dst = (CLIENT, SERVER) if from_client else (SERVER, CLIENT)
    layers = {
        "frame": [{"frame.time_epoch": f"1764470000.{number}", "frame.number": str(number)}],
        "ip": [{"ip.src": src[0], "ip.dst": dst[0]}],
        "tcp": [{"tcp.stream": "0", "tcp.srcport": src[1], "tcp.dstport": dst[1]}],
        "smb": [{"smb.cmd": smb.pop("cmd"), "smb.flags.response": "0" if from_client else "1",
                 "smb.uid": UID, "smb.tid": TID, "smb.mid": str(number), **smb}],
    }
    if dcerpc is not None:
        layers["dcerpc"] = [dcerpc]
    return layers


def tshark_pipe_name(opened_as: str) -> str:
    """The pipe name in the event the tshark decoder builds for a NetrDfsRemoveStdRoot whose bind
    was not captured, on a pipe opened by ``opened_as``."""
    decoder = TsharkDecoder()
    out = decoder.feed(packet(1, True, {"cmd": NT_CREATE_ANDX, "smb.file": opened_as}))
    out += decoder.feed(packet(2, False, {"cmd": NT_CREATE_ANDX, "smb.fid": FID, "smb.file": opened_as}))
    request = {"dcerpc.pkt_type": "0", "dcerpc.cn_call_id": "1", "dcerpc.cn_flags": "0x03",
               "dcerpc.cn_ctx_id": "0", "dcerpc.opnum": "13"}
    out += decoder.feed(packet(3, True, {"cmd": TRANSACTION, "smb.fid": FID}, request))
    out += decoder.close()
    assert len(out) == 1, "the pipe's name must attribute the call to netdfs"
    return out[0].actor_remote_pipe_name


def native_pipe_name(opened_as: str) -> str:
    flow = FlowKey(CLIENT[0], int(CLIENT[1]), SERVER[0], int(SERVER[1]))
    opened = PipeTable(flow, Stats()).open(0.0, 1, 0x4000, (1, 0x800, 0x801, 0x4000), opened_as, "")
    return "\\Device\\NamedPipe\\" + opened[-1].name


@pytest.mark.parametrize("opened_as", ["\\PIPE\\\\netdfs", "\\PIPE\\netdfs\x00", "\\netdfs"])
def test_both_engines_name_a_pipe_alike(opened_as):
    assert tshark_pipe_name(opened_as) == native_pipe_name(opened_as) == "\\Device\\NamedPipe\\netdfs"
