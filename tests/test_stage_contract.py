"""Every stage listed in sensor/stage.py keeps the contract written there: the same method
names, the same argument order, ``gap(from_client, ts, length)``, ``close(ts)`` and ``stats``.
A stage that drifts (a renamed method, a swapped argument) fails here, not in a reviewer's eye."""
from __future__ import annotations

import inspect

import pytest

from sensor import stage
from sensor.anomaly import Stats
from sensor.net.stream import FlowKey

FLOW = FlowKey("10.0.0.66", 40000, "10.0.0.10", 445)


def params(cls: type, method: str) -> list[str]:
    """A method's parameter names after self."""
    return list(inspect.signature(getattr(cls, method)).parameters)[1:]


def instance(cls: type):
    """The stage as the pipeline builds it: with its flow when it serves one."""
    first = params(cls, "__init__")[:1]
    return cls(FLOW) if first == ["flow"] else cls()


ALL_STAGES = sorted(set(stage.PACKET_STAGES + stage.STREAM_STAGES + stage.HOLDING_STAGES), key=lambda c: c.__name__)


def test_the_lists_name_the_stages_the_pipeline_wires():
    names = {cls.__name__ for cls in ALL_STAGES}
    assert names == {"FrameDecoder", "FlowTable", "SmbConnection", "RpcAssociation", "HttpNtlmFlow", "HeldCalls"}


@pytest.mark.parametrize("cls", ALL_STAGES, ids=lambda c: c.__name__)
def test_close_takes_the_end_time_and_stats_is_a_counter_set(cls):
    assert params(cls, "close") == params(stage.StreamStage, "close") == ["ts"]
    assert isinstance(instance(cls).stats, Stats)


@pytest.mark.parametrize("cls", stage.STREAM_STAGES, ids=lambda c: c.__name__)
def test_stream_stages_feed_and_gap_alike_and_know_their_flow(cls):
    assert params(cls, "feed") == params(stage.StreamStage, "feed") == ["from_client", "ts", "data", "frame"]
    assert params(cls, "gap") == params(stage.StreamStage, "gap") == ["from_client", "ts", "length"]
    assert params(cls, "__init__")[0] == "flow"
    assert instance(cls).flow == FLOW
    assert isinstance(instance(cls), stage.StreamStage)


@pytest.mark.parametrize("cls", stage.PACKET_STAGES, ids=lambda c: c.__name__)
def test_packet_stages_take_the_time_first_and_the_frame_number_last(cls):
    names = params(cls, "feed")
    assert names[0] == "ts"
    assert "frame" not in names or names[-1] == "frame"
    assert not hasattr(cls, "gap")        # gaps are found by the flow table, not fed to it
    assert isinstance(instance(cls), stage.PacketStage)


@pytest.mark.parametrize("cls", stage.HOLDING_STAGES, ids=lambda c: c.__name__)
def test_holding_stages_let_go_by_capture_time(cls):
    assert params(cls, "expire") == params(stage.HoldingStage, "expire") == ["now"]
    assert isinstance(instance(cls), stage.HoldingStage)


def test_no_stage_keeps_the_old_method_names():
    old = {"decode", "feed_data", "feed_gap"}
    for cls in ALL_STAGES:
        assert not old & set(vars(cls)), cls.__name__
