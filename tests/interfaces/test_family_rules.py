"""The family's rule files (sensor/rules/family/*.xql) on the family captures: each capture
raises exactly the rarity rules its manifest's ``expected_alerts`` lists.

Runs the per-event stages of each rule through the XQL engine (issue 12); skipped where the
engine is not on the branch yet (it lands from the "xql" branch)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sensor.events import RpcCallEvent
from sensor.xql.groups import DEFAULT_GROUPS, address_groups
from tests.conftest import PCAPS, decode_capture

xql_rules = pytest.importorskip("sensor.xql.rules", reason="the XQL engine (issue 12) is not on this branch yet")

RULES = sorted((Path(__file__).resolve().parents[2] / "sensor" / "rules" / "family").glob("*.xql"))
MANIFEST = json.loads((PCAPS / "family" / "manifest.json").read_text())["captures"]
# raised by the correlator and the transform-size fingerprint, not by the rule files
CORRELATOR_RULES = {"coercion-confirmed", "probable-coercion", "probable-dfscoerce-encrypted"}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_capture_raises_the_rules_its_manifest_lists(name):
    """With the address groups the manifest's ``config`` declares for the capture."""
    groups = address_groups(MANIFEST[name].get("config", {}).get("address_groups", {}))
    plans = [xql_rules.rarity_plan(xql_rules.load_rule(p, groups)) for p in RULES]
    records, _ = decode_capture(PCAPS / "family" / name)
    raised = set()
    for event in (r for r in records if isinstance(r, RpcCallEvent)):
        row = event.to_dict() | {"_time": event.event_timestamp}
        raised |= {plan.rule.meta.id for plan in plans if plan.event_row(row) is not None}
    assert raised == set(MANIFEST[name]["expected_alerts"]) - CORRELATOR_RULES


def test_every_dfsnm_coercion_opnum_beyond_the_root_calls_alerts():
    """pcaps/dfsnm-other-coercion.pcap (impacket: 14, 15, 20, 23, 24), which raised nothing
    before: each of its calls passes dfscoerce-rare-dfsnm-other-call."""
    [plan] = [xql_rules.rarity_plan(xql_rules.load_rule(p)) for p in RULES if p.stem == "dfsnm-other"]
    records, _ = decode_capture(PCAPS / "dfsnm-other-coercion.pcap")
    events = [r for r in records if isinstance(r, RpcCallEvent)]
    passed = [e.action_rpc_func_opnum for e in events
              if plan.event_row(e.to_dict() | {"_time": e.event_timestamp}) is not None]
    assert passed == [14, 15, 20, 23, 24]


def par_plan(groups=DEFAULT_GROUPS):
    [plan] = [xql_rules.rarity_plan(xql_rules.load_rule(p, groups)) for p in RULES if p.stem == "par"]
    return plan


def test_windows_ms_par_client_naming_its_print_server_by_dns_name_is_not_counted(corpus):
    """The corpus's Windows client (SPNEGO/Kerberos bind accepted by the server) opens printers
    as \\\\DEERLM99PS1SRV.ww005.siemens.net\\...: the bind named the server, so the rule sees
    the server itself, where it used to count every open (the documented false positive)."""
    records, _ = decode_capture(corpus / "suricata-verify/tests/truncate-applayer-test-01/input.pcap")
    opens = [r for r in records if isinstance(r, RpcCallEvent) and r.action_rpc_func_opnum == 0]
    assert len(opens) == 8 and {e.agent_hostname for e in opens} == {"DEERLM99PS1SRV.ww005.siemens.net"}
    assert [e for e in opens if par_plan().event_row(e.to_dict() | {"_time": e.event_timestamp})] == []


@pytest.mark.parametrize("server,printer,counted", [
    ("ps1.corp.example", "\\\\ps1.corp.example\\p", False),     # the server's DNS name
    ("ps1.corp.example", "\\\\PS1\\p", False),                  # its first label alone
    ("ps1.corp.example", "\\\\ps1.evil.example\\p", True),      # same first label, another domain
    ("ps1.corp.example", "\\\\ps1.corp.example.evil.example\\p", True),
    ("ps1.corp.example", "\\\\10.0.0.66\\p", True),             # another host by address
    ("10.0.0.10", "\\\\10\\p", True),                           # no name learned: an address has no label
    ("10.0.0.10", "\\\\ps1.corp.example\\p", True),             # unauthenticated: the name is unknown
])
def test_par_listener_is_the_server_only_by_its_own_name(server, printer, counted):
    """On the lab's MS-PAR attack event, with the server name and printer replaced: only the
    server's own DNS name, or its first label as a dotless name, is the server itself."""
    records, _ = decode_capture(PCAPS / "family" / "par-tcp.pcap")
    [event] = [r for r in records if isinstance(r, RpcCallEvent) and r.action_rpc_func_opnum == 0]
    row = event.to_dict() | {"_time": event.event_timestamp, "agent_hostname": server,
                             "action_rpc_func_str_call_fields": json.dumps({"pPrinterName": printer})}
    assert (par_plan().event_row(row) is not None) == counted


@pytest.mark.parametrize("name", ["rprn-smb21.pcap", "rprn-bigendian-samba-client.pcap"])
def test_printerbug_naming_the_attackers_own_host_still_alerts(name):
    """The commonest PrinterBug (ntlmrelayx on the attacker, which names itself) is the same call
    as a print client registering its own notifications: the rule must keep counting it. A
    self-listener is never taken as benign (see README, "The coercion family": no sound wire
    discriminator exists), so this guards against trading detection for quiet."""
    [plan] = [xql_rules.rarity_plan(xql_rules.load_rule(p)) for p in RULES if p.stem == "rprn"]
    records, _ = decode_capture(PCAPS / "family" / name)
    registrations = [r for r in records if isinstance(r, RpcCallEvent) and r.action_rpc_func_opnum in (62, 65)]
    assert registrations
    for event in registrations:
        listener = event.str_fields()["pszLocalMachine"].lstrip("\\")
        assert listener == event.actor_remote_ip            # the caller names itself
        assert plan.event_row(event.to_dict() | {"_time": event.event_timestamp}) is not None


def rprn_plan(print_servers=None):
    groups = DEFAULT_GROUPS if print_servers is None else address_groups({"print_servers": print_servers})
    [plan] = [xql_rules.rarity_plan(xql_rules.load_rule(p, groups)) for p in RULES if p.stem == "rprn"]
    return plan


def registration(name: str) -> RpcCallEvent:
    records, _ = decode_capture(PCAPS / "family" / name)
    return next(r for r in records if isinstance(r, RpcCallEvent) and r.action_rpc_func_opnum == 65)


def counted(plan, event: RpcCallEvent, **changes) -> bool:
    return plan.event_row(event.to_dict() | {"_time": event.event_timestamp} | changes) is not None


@pytest.mark.parametrize("print_servers", [None, [], ["10.0.0.20", "ps1.corp.example", "10.1.0.0/24"]])
def test_a_self_naming_printerbug_to_a_server_not_declared_a_print_server_counts(print_servers):
    """rprn-smb21: the attacker (10.0.0.66) names itself to DC01 (10.0.0.10), which is not in
    print_servers: PrinterBug against a DC alerts, with or without other print servers declared."""
    event = registration("rprn-smb21.pcap")
    assert event.str_fields()["pszLocalMachine"] == "\\\\" + event.actor_remote_ip == "\\\\10.0.0.66"
    assert counted(rprn_plan(print_servers), event)


@pytest.mark.parametrize("print_servers", [["10.0.0.10"], ["DC01"], ["dc01.lab.example"], ["10.0.0.0/24"],
                                           ["::ffff:10.0.0.10"]])
def test_a_print_client_registering_itself_with_a_declared_print_server_does_not_count(print_servers):
    """benign-printing: 10.0.0.5 names itself to the lab's print server, declared by address,
    name (NetBIOS or DNS, by its first label), range or an IPv4-mapped address."""
    event = registration("benign-printing.pcap")
    assert event.str_fields()["pszLocalMachine"] == "\\\\" + event.actor_remote_ip
    assert counted(rprn_plan(), event)
    assert not counted(rprn_plan(print_servers), event)


@pytest.mark.parametrize("listener", ["\\\\10.0.0.66", "\\\\attacker.lab.example", "\\\\10.0.0.66@80/x"])
def test_a_third_host_listener_counts_even_to_a_declared_print_server(listener):
    """The benign registration's event naming another host: a print server coerced to a third
    host is PrinterBug, whatever the server's role."""
    event = registration("benign-printing.pcap")
    fields = json.dumps({"pszLocalMachine": listener})
    assert counted(rprn_plan(["10.0.0.10"]), event, action_rpc_func_str_call_fields=fields)


@pytest.mark.parametrize("workstation,listener,is_counted", [
    ("CLIENT01", "\\\\client01.lab.example", False),     # the name its NTLM logon gave, as a DNS name
    ("CLIENT01", "\\\\CLIENT01", False),                  # ... as a NetBIOS name
    ("CLIENT01", "\\\\client02", True),                   # another host's name
    ("", "\\\\client01", True),                           # no NTLM workstation (Kerberos): only the address
])
def test_the_callers_own_name_is_the_caller_to_a_declared_print_server(workstation, listener, is_counted):
    event = registration("benign-printing.pcap")
    fields = json.dumps({"pszLocalMachine": listener})
    assert counted(rprn_plan(["10.0.0.10"]), event, action_rpc_func_str_call_fields=fields,
                   net_smb_workstation=workstation) is is_counted


def test_a_sealed_registration_to_a_declared_print_server_still_counts():
    """rprn-rpc-privacy-backauth: PKT_PRIVACY hides the listener; unknown is never "itself"."""
    records, _ = decode_capture(PCAPS / "family" / "rprn-rpc-privacy-backauth.pcap")
    sealed = [r for r in records if isinstance(r, RpcCallEvent) and r.action_rpc_func_opnum == 65]
    assert sealed and all(e.net_stub_sealed for e in sealed)
    assert all(counted(rprn_plan(["10.0.0.10"]), e) for e in sealed)


@pytest.mark.parametrize("print_servers,printer,is_counted", [
    ([], "\\\\ps1.corp.example\\p", True),                        # no name learned, nothing declared
    (["ps1.corp.example"], "\\\\PS1.corp.example\\p", False),     # the server by its DNS name, declared
    (["PS1"], "\\\\ps1.corp.example\\p", False),                  # ... declared by its NetBIOS name
    (["10.0.0.20"], "\\\\10.0.0.20\\p", False),                  # another declared print server
    (["ps1.corp.example"], "\\\\ps1.evil.example\\p", True),      # same first label, another domain
    (["ps1.corp.example", "10.0.0.0/24"], "\\\\10.0.1.66\\p", True),   # a listener that is no print server
])
def test_par_printer_on_a_declared_print_server_is_not_counted(print_servers, printer, is_counted):
    """par-tcp's unauthenticated MS-PAR open (no server name learned), its printer replaced:
    the documented false positive of a client naming its print server by DNS name is gone
    once the print servers are declared; other listeners count as before."""
    records, _ = decode_capture(PCAPS / "family" / "par-tcp.pcap")
    [event] = [r for r in records if isinstance(r, RpcCallEvent) and r.action_rpc_func_opnum == 0]
    assert event.agent_hostname == event.agent_ip == "10.0.0.10"      # no name learned: the address stands in
    row = event.to_dict() | {"_time": event.event_timestamp,
                             "action_rpc_func_str_call_fields": json.dumps({"pPrinterName": printer})}
    plan = par_plan(address_groups({"print_servers": print_servers}))
    assert (plan.event_row(row) is not None) == is_counted


def test_a_sealed_par_open_still_counts_with_print_servers_declared():
    records, _ = decode_capture(PCAPS / "family" / "par-tcp-rpc-privacy.pcap")
    sealed = [r for r in records if isinstance(r, RpcCallEvent) and r.action_rpc_func_opnum == 0]
    assert sealed and all(e.net_stub_sealed for e in sealed)
    plan = par_plan(address_groups({"print_servers": ["10.0.0.0/8", "ps1.corp.example"]}))
    assert all(plan.event_row(e.to_dict() | {"_time": e.event_timestamp}) is not None for e in sealed)
