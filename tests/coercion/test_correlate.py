"""Correlator on the lab captures and on crafted records."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sensor.capture.pcapfile import open_capture
from sensor.coercion.correlate import Correlator, CorrelatorSettings
from sensor.interfaces.listener import host_of
from sensor.coercion.events import CONFIRMED, PROBABLE
from sensor.coercion.fingerprint import EncryptedNetdfsMatcher
from sensor.coercion.pair_days import PairDays
from sensor.events import RpcCallEvent
from sensor.net.stream import FlowKey
from sensor.pipeline import Pipeline
from sensor.smb.events import EncryptedMessage, NtlmAuthentication
from sensor.store.sqlite import Store

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
DAY = 86_400.0


def records(name: str) -> list:
    pipeline = Pipeline()
    out: list = []
    for packet in open_capture(str(PCAPS / name)):
        out += pipeline.feed(*packet)
    return out + pipeline.close()


def alerts(name: str, correlator: Correlator | None = None) -> list:
    correlator = correlator or Correlator()
    matcher = EncryptedNetdfsMatcher()
    return [a for r in records(name) for a in correlator.feed(r) + matcher.feed(r)]


def test_smb_stage_reports_the_back_authentication_at_its_request():
    auths = [r for r in records("coerced-auth-clear.pcap") if isinstance(r, NtlmAuthentication)]
    machine = [a for a in auths if a.is_machine_account]
    assert [(a.user, a.domain, a.flow.client_ip, a.flow.server_ip, a.frame, a.protocol)
            for a in machine] == [("DC01$", "LAB", "10.0.0.10", "10.0.0.66", 47, "smb2")]
    assert [a.user for a in auths if not a.is_machine_account] == ["labuser"]


def test_clear_attack_with_back_auth_is_confirmed_and_linked_to_the_call():
    recs = records("coerced-auth-clear.pcap")
    [call] = [r for r in recs if isinstance(r, RpcCallEvent)]
    correlator = Correlator()
    [alert] = [a for r in recs for a in correlator.feed(r)]
    assert alert.rule == CONFIRMED
    assert (alert.victim_ip, alert.listener_ip, alert.client_ip, alert.user) == \
        ("10.0.0.10", "10.0.0.66", "10.0.0.66", "DC01$")
    assert alert.call_event_ids == (call.event_id,)
    assert 0 < alert.delay < 30


def test_encrypted_attack_is_probable_coercion_naming_v_l_and_the_client():
    found = {a.rule: a for a in alerts("coerced-auth-encrypted.pcap")}
    probable = found[PROBABLE]
    assert (probable.victim_ip, probable.listener_ip, probable.client_ip, probable.user) == \
        ("10.0.0.10", "10.0.0.66", "10.0.0.66", "DC01$")
    assert CONFIRMED not in found


@pytest.mark.parametrize("name", ["benign-rpcclient-dfs.pcap", "benign-smb-filecopy.pcap",
                                  "dfscoerce-smb311-clear.pcap", "dfsnm-other-coercion.pcap"])
def test_captures_without_back_authentication_raise_nothing(name):
    assert [a for a in alerts(name) if a.rule in (CONFIRMED, PROBABLE)] == []


def test_window_bounds_the_correlation():
    # The lab's back-authentication delay varies between recordings: take it from the capture.
    [confirmed] = [a for a in alerts("coerced-auth-clear.pcap") if a.rule == CONFIRMED]
    assert 0 < confirmed.delay < CorrelatorSettings().window
    narrow = Correlator(CorrelatorSettings(window=confirmed.delay / 2))
    assert alerts("coerced-auth-clear.pcap", narrow) == []


FLOW_IN = FlowKey("10.0.0.66", 50000, "10.0.0.10", 445)
FLOW_OUT = FlowKey("10.0.0.10", 50001, "10.0.0.20", 445)


def machine_auth(ts: float) -> NtlmAuthentication:
    return NtlmAuthentication(FLOW_OUT, ts, 1, "smb2", "DC01$", "LAB", "DC01", "NTLMv2")


def test_regular_pair_learns_itself_out_over_distinct_days(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    correlator = Correlator(pair_days=PairDays(store))
    raised = []
    for day in range(9):
        t = 1_800_000_000.0 + day * DAY
        correlator.feed(EncryptedMessage(FLOW_IN, t, 1, True, 7, 200, 252))
        raised.append(len(correlator.feed(machine_auth(t + 1))))
    assert raised == [1] * 6 + [0] * 3     # the 7th distinct day is common


def test_user_account_and_unrelated_timing_do_not_correlate():
    correlator = Correlator()
    correlator.feed(EncryptedMessage(FLOW_IN, 100.0, 1, True, 7, 200, 252))
    user = NtlmAuthentication(FLOW_OUT, 101.0, 2, "smb2", "alice", "LAB", "WS1", "NTLMv2")
    assert correlator.feed(user) == []
    assert correlator.feed(machine_auth(131.0)) == []       # 31 s after the last message
    assert [a.rule for a in correlator.feed(machine_auth(129.0))] == [PROBABLE]


def test_listener_named_by_its_challenge_name_confirms():
    correlator = Correlator()
    auth = NtlmAuthentication(FLOW_OUT, 10.0, 2, "http", "DC01$", "LAB", "DC01", "NTLMv2",
                              server_netbios_name="EVIL", server_dns_name="evil.lab.example")
    correlator.feed(NtlmAuthentication(FLOW_OUT, 1.0, 1, "smb2", "x", "", "", "",
                                       server_dns_name="evil.lab.example"))
    call = _call(5.0, "\\\\EVIL@80\\share")
    correlator.feed(call)
    [alert] = correlator.feed(auth)
    assert alert.rule == CONFIRMED and alert.call_event_ids == (call.event_id,)


def _call(ts: float, server_name: str) -> RpcCallEvent:
    import json
    return RpcCallEvent(
        "", int(ts * 1000), f"id{ts}", 22, 2, "{4FC742E0-4A10-11CF-8273-00AA004AE673}", 3, 0,
        "netdfs", 13, "NetrDfsRemoveStdRoot",
        json.dumps({"ServerName": server_name, "RootShare": "s"}), "{}", None, 2,
        FLOW_IN.client_ip, FLOW_IN.client_port, "netdfs", "DC01", "a", FLOW_IN.server_ip,
        FLOW_IN.server_port, "")


@pytest.mark.parametrize("value, host", [("10.0.0.66", "10.0.0.66"), ("\\\\EVIL\\share", "evil"),
                                         ("evil@8080/x", "evil"), ("", ""), ("a b", "")])
def test_host_of(value, host):
    assert host_of(value) == host


def test_call_answered_after_the_back_authentication_confirms():
    # A real server authenticates to L while serving the call; the pipeline emits the call at
    # its answer, so the correlator sees the authentication first.
    correlator = Correlator()
    early = machine_auth(4.0)                          # before the request: not caused by it
    caused = machine_auth(5.5)
    assert correlator.feed(early) == [] and correlator.feed(caused) == []
    call = _call(5.0, "\\\\10.0.0.20\\share")
    [alert] = correlator.feed(call)
    assert (alert.rule, alert.victim_ip, alert.listener_ip, alert.client_ip, alert.ts) == \
        (CONFIRMED, "10.0.0.10", "10.0.0.20", FLOW_IN.client_ip, 5.5)
    assert alert.call_event_ids == (call.event_id,) and alert.delay == 0.5
    assert correlator.feed(machine_auth(6.0)) != []      # a later one goes the usual way


def test_back_authentication_within_the_calls_millisecond_confirms():
    # The request at 5.00060 s is stored as 5001 ms (xdr_time rounds); V's logon 80 us later,
    # at 5.00068 s, is after the request although before the rounded time (a fast LAN, or
    # frames replayed with tcpreplay --topspeed into a live sensor).
    correlator = Correlator()
    assert correlator.feed(machine_auth(5.00068)) == []
    call = dataclasses.replace(_call(5.0, "\\\\10.0.0.20\\share"), event_timestamp=round(5.00060 * 1000))
    assert [a.rule for a in correlator.feed(call)] == [CONFIRMED]


def test_call_naming_another_host_confirms_nothing_in_either_order():
    correlator = Correlator()
    correlator.feed(machine_auth(5.5))
    assert correlator.feed(_call(5.0, "\\\\10.0.0.99\\share")) == []
    assert correlator.feed(machine_auth(6.0)) == []


def test_daily_file_server_logon_without_inbound_session_is_not_coercion():
    """benign-machine-auth: member server SRV01 logs on twice as SRV01$ to its file server
    10.0.0.66; nothing reached it before. The same logons just after an encrypted inbound
    session would be PROBABLE; after one that began later they are not."""
    recorded = records("benign-machine-auth.pcap")
    logons = [r for r in recorded if isinstance(r, NtlmAuthentication) and r.is_machine_account]
    assert [(a.user, a.flow.client_ip, a.flow.server_ip) for a in logons] == [("SRV01$", "10.0.0.5", "10.0.0.66")] * 2
    assert alerts("benign-machine-auth.pcap") == []
    inbound = FlowKey("10.0.0.77", 50000, "10.0.0.5", 445)
    for start, expected in ((logons[0].ts - 5, 2), (logons[-1].ts + 1, 0)):
        correlator = Correlator()
        correlator.feed(EncryptedMessage(inbound, start, 1, True, 7, 200, 252))
        raised = [a for r in recorded for a in correlator.feed(r)]
        assert [(a.rule, a.victim_ip, a.listener_ip) for a in raised] == [(PROBABLE, "10.0.0.5", "10.0.0.66")] * expected


def test_call_and_back_authentication_within_a_millisecond_are_confirmed():
    """A capture replayed at top speed (live tests: tcpreplay --topspeed, a microsecond between
    frames) puts V's back-authentication less than a millisecond after the request, while the
    event's time is rounded to the millisecond; the --workers parent sorts records by that
    time (forward.Reorder), so the call may come after the authentication it caused."""
    from sensor.coercion.forward import Reorder

    pipeline = Pipeline()
    recs: list = []
    for n, (_, linktype, data, frame) in enumerate(open_capture(str(PCAPS / "coerced-auth-clear.pcap"))):
        recs += pipeline.feed(1796010810.8587 + n * 1e-6, linktype, data, frame)
    recs += pipeline.close()
    reorder = Reorder(delay=0.0)
    reorder.feed(recs, now=0.0)
    in_time_order = reorder.close()
    correlator = Correlator()
    found = [a for r in in_time_order for a in correlator.feed(r)]
    assert [(a.rule, a.victim_ip, a.listener_ip, a.client_ip) for a in found] == \
        [(CONFIRMED, "10.0.0.10", "10.0.0.66", "10.0.0.66")]
    assert found[0].delay >= 0
