"""A DCE/RPC anomaly names its flow and the capture time of the frame that revealed it.

Before the stage contract (sensor/stage.py) the association knew no flow and stamped a gap
0.0. Here an ncacn_ip_tcp connection loses the middle segment of a request: the server's
next segment acknowledges past the hole, TCP reports the gap, and the association resyncs."""
from __future__ import annotations

from sensor.anomaly import Anomaly
from sensor.events import RpcCallEvent
from sensor.interfaces import dfsnm
from sensor.net.stream import FlowKey
from tests.dcerpc import dcerpc_wire as wire
from tests.robustness.recut import Segment, flow_frames, run_frames

FLOW = FlowKey("10.0.0.66", 40000, "10.0.0.10", 135)     # ncacn_ip_tcp: no SMB in between
T0 = 1_700_000_000.0
STUB = dfsnm.NetrDfsRemoveStdRoot().getData()


def test_a_gap_anomaly_carries_the_flow_and_the_time_of_the_frame_that_showed_the_hole():
    bind = wire.bind(1, [(0, wire.NETDFS, (3, 0), wire.NDR20)])
    ack = wire.bind_ack(1, [(0, wire.NDR20)])
    lost_call = wire.request(2, 13, STUB * 4)
    later_call = wire.request(3, 12, STUB)
    at = len(bind)                                    # client offsets
    third = len(lost_call) // 3
    turns = [
        [Segment(True, 0, bind)],
        [Segment(False, 0, ack)],
        # the middle third of call 2 never reaches the sensor
        [Segment(True, at, lost_call[:third]), Segment(True, at + 2 * third, lost_call[2 * third:])],
        [Segment(False, len(ack), wire.fault(2, 5))],     # acknowledges past the hole
        [Segment(True, at + len(lost_call), later_call)],
    ]
    frames = flow_frames(FLOW, turns, (1000, 5000))
    records, stats = run_frames(frames, T0)
    [gap] = [r for r in records if isinstance(r, Anomaly) and r.name == "dcerpc_gap_resync"]
    # frames: SYN, SYN-ACK, ACK, bind, bind_ack, two request thirds, the fault: frame 8
    assert gap.flow == FLOW
    assert gap.ts == T0 + 8 / 1000
    assert gap.detail == f"{third} bytes, client side"
    assert stats["anomaly.dcerpc_gap_resync"] == 1
    # call 2 was abandoned with its hole; call 3, after the resync, is whole
    assert [e.action_rpc_func_opnum for e in records if isinstance(e, RpcCallEvent)] == [12]
