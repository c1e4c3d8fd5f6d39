"""Coercion alerts in `dfs-sensor live` equal `dfs-sensor replay`'s on the lab captures: HTTP
back-authentication through the default capture filter, and the victim's back-authentication
paired with the call's flow across --workers (the fanout hash may split the two flows)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from sensor.coercion.events import CONFIRMED, ENCRYPTED_NETDFS, PROBABLE
from tests.conftest import PCAPS
from tests.live.test_service import LiveSensor, comparable, replay_cli, store_is_clean

pytestmark = pytest.mark.root

COERCION_RULES = (CONFIRMED, PROBABLE, ENCRYPTED_NETDFS)


def _coercion(alerts: list[dict]) -> list[dict]:
    return sorted((comparable(a) for a in alerts if a["rule"]["id"] in COERCION_RULES), key=str)


def _live_and_replay(veth, tmp: Path, pcap: Path, *flags: str) -> tuple[list[dict], list[dict]]:
    (tmp / "replay").mkdir()
    replayed = replay_cli(tmp / "replay", [pcap])
    sensor = LiveSensor(tmp, veth.host, *flags)
    workers = int(flags[flags.index("--workers") + 1]) if "--workers" in flags else 1
    sensor.wait_for(lambda: sum("capturing on" in line for line in sensor.stderr) == workers,
                    "every worker")
    veth.replay(pcap)
    # Every coercion alert the replay raised is in before the stop (workers hand records to the
    # parent's correlator in ring blocks, so a loaded machine may take a while), then a little
    # longer so that an extra alert live would show too.
    expected = {a["rule"]["id"] for a in replayed if a["rule"]["id"] in COERCION_RULES}
    sensor.wait_for(lambda: expected <= {a["rule"]["id"] for a in sensor.lines(sensor.alerts)}, "the coercion alerts")
    time.sleep(0.5)
    assert sensor.stop() == 0
    store_is_clean(sensor.db)
    return sensor.lines(sensor.alerts), replayed


def test_http_back_authentication_passes_the_default_filter(veth, tmp_path):
    """The DC's PROPFIND with Authorization: NTLM to :8080 is admitted by the kernel filter
    (the 401 is not) and confirmed against the call, as in replay."""
    live, replayed = _live_and_replay(veth, tmp_path, PCAPS / "coerced-auth-http.pcap")
    assert [a["rule"]["id"] for a in _coercion(replayed)] == [CONFIRMED]
    assert _coercion(live) == _coercion(replayed)
    [confirmed] = [a for a in live if a["rule"]["id"] == CONFIRMED]
    assert (confirmed["protocol"], confirmed["user"]) == ("http", "DC01$")


@pytest.mark.parametrize("name, rule", [("coerced-auth-clear.pcap", CONFIRMED),
                                        ("coerced-auth-encrypted.pcap", PROBABLE)])
def test_two_workers_pair_the_call_with_the_back_authentication(veth, tmp_path, name, rule):
    live, replayed = _live_and_replay(veth, tmp_path, PCAPS / name, "--workers", "2")
    assert rule in {a["rule"]["id"] for a in _coercion(replayed)}
    assert _coercion(live) == _coercion(replayed)
