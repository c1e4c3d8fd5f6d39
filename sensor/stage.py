r"""One contract for every sans-IO decode stage, and the list of the stages that keep it.

A stage is a plain object: it takes the previous stage's unit, returns what it completed,
and does no I/O. From outside every stage looks the same:

- It is constructed with its settings and, when it serves one flow, that flow: every
  ``Anomaly`` it records carries the flow and the capture time of the unit that caused it.
- ``feed`` takes one unit. Its arguments are always in this order: the direction
  (``from_client``, stream stages only), the capture time ``ts``, the unit itself, and the
  capture's ``frame`` number last (for stages whose events name a frame). It returns what
  the unit completed, in order: a list (the frame decoder returns its one TCP segment or
  None; a frame never carries more, and a list per packet would cost on every packet).
- ``gap(from_client, ts, length)`` (stream stages): ``length`` bytes of one direction were
  never captured; the stage resynchronises (or skips them, inside a payload it skips anyway)
  and returns what that completed or abandoned.
- ``close(ts)``: the flow or the input ended at capture time ``ts``; returns whatever was
  still pending (a held call, a pipe still open) and releases the state. A stage that knows
  a better time for what it emits stamps that instead (the flow table ends every flow at its
  own last packet).
- ``expire(now)`` (stages that hold things for a while): lets go of what waited too long by
  capture time ``now``, for idle ticks in live capture.
- ``stats``: a plain counter set (``sensor.anomaly.Stats``), anomalies included, which the
  pipeline sums for the end-of-run summary.

The stages, in pipeline order (sensor/pipeline.py is the one place that wires them)::

    frame -> FrameDecoder -> FlowTable -+-> SmbConnection (per SMB flow) -> RpcAssociation (per pipe)
                                        +-> RpcAssociation (per ncacn_ip_tcp flow)
                                        +-> HttpNtlmFlow (per HTTP flow)
    RpcCall -> event_builder -> HeldCalls (a call waits for its answer's exception code)

tests/test_stage_contract.py checks every stage listed here against the protocols below.

One seam is not a stage's: replaying a classic pcap file, the reader feeds the pipeline itself
(``CaptureReader.replay_into``, sensor/capture/batch.py): the plain records of its mapped window
go to the pipeline's per-frame body in place, in one compiled walk, with the frame numbers, times
and counts that ``feed`` would have had; the records it completes come back a list at a time.
``Pipeline.feed(ts, linktype, data, frame)`` stays the contract everything else uses (live
capture, evidence, pcapng, the tests; replay and its ``--jobs`` workers read a pcap through the seam).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from sensor.anomaly import Stats
from sensor.dcerpc.association import RpcAssociation
from sensor.held_calls import HeldCalls
from sensor.http.ntlm import HttpNtlmFlow
from sensor.net.flows import FlowTable
from sensor.net.frames import FrameDecoder
from sensor.smb.connection import SmbConnection


@runtime_checkable
class PacketStage(Protocol):
    """A stage fed whole packets, for all flows at once."""

    stats: Stats

    def feed(self, ts: float, *unit): ...

    def close(self, ts: float) -> list: ...


@runtime_checkable
class StreamStage(Protocol):
    """A stage of one flow (or one named pipe): the two byte streams of a connection."""

    stats: Stats

    def feed(self, from_client: bool, ts: float, data: bytes | memoryview, frame: int) -> list: ...

    def gap(self, from_client: bool, ts: float, length: int) -> list: ...

    def close(self, ts: float) -> list: ...


@runtime_checkable
class HoldingStage(Protocol):
    """A stage that holds records until something answers them or time runs out."""

    stats: Stats

    def expire(self, now: float) -> list: ...

    def close(self, ts: float) -> list: ...


PACKET_STAGES: tuple[type, ...] = (FrameDecoder, FlowTable)
STREAM_STAGES: tuple[type, ...] = (SmbConnection, RpcAssociation, HttpNtlmFlow)
HOLDING_STAGES: tuple[type, ...] = (FlowTable, HeldCalls)
