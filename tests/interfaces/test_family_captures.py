"""The coercion family's lab captures (pcaps/family/) through the native pipeline, against
what the clients sent (the manifest) and against Wireshark's dissectors (tshark).

The client bytes come from impacket's rprn/even/par types or from IDL marshalling by hand in
pcaps/lab/family_client.py, never from the sensor's types; for the calls tshark dissects, its
dissection is a second, independent oracle."""
from __future__ import annotations

import json
import subprocess

import pytest

from sensor.coercion.correlate import Correlator
from sensor.coercion.events import CONFIRMED, PROBABLE
from sensor.events import RpcCallEvent
from sensor.interfaces.catalog import default_catalog
from sensor.interfaces.listener import host_of
from tests.conftest import PCAPS, decode_capture, requires_tshark

FAMILY = PCAPS / "family"
MANIFEST = json.loads((FAMILY / "manifest.json").read_text())["captures"]
CATALOG = default_catalog()

# tshark 4.0 fields per (stub protocol, opnum) -> IDL argument name (Wireshark's EFS, EVENTLOG,
# FSRVP and SPOOLSS dissectors; they have no fields for EFSR 12-21, RPRN 62 or MS-PAR).
TSHARK_FIELDS = {
    "efs": {0: ("efs.EfsRpcOpenFileRaw.FileName", "FileName"), 4: ("efs.EfsRpcEncryptFileSrv.Filename", "FileName"),
            5: ("efs.EfsRpcDecryptFileSrv.FileName", "FileName"), 6: ("efs.EfsRpcQueryUsersOnFile.FileName", "FileName"),
            7: ("efs.EfsRpcQueryRecoveryAgents.FileName", "FileName"),
            8: ("efs.EfsRpcRemoveUsersFromFile.FileName", "FileName"), 9: ("efs.EfsRpcAddUsersToFile.FileName", "FileName")},
    "eventlog": {9: ("eventlog.eventlog_OpenBackupEventLogW.logname", "BackupFileName")},
    "fsrvp": {8: ("fsrvp.fsrvp_IsPathSupported.ShareName", "ShareName"),
              9: ("fsrvp.fsrvp_IsPathShadowCopied.ShareName", "ShareName")},
    "spoolss": {65: ("spoolss.servername", "pszLocalMachine")},
}


def events(name: str) -> tuple[list[RpcCallEvent], list, dict]:
    records, stats = decode_capture(FAMILY / name)
    return [r for r in records if isinstance(r, RpcCallEvent)], records, stats


def test_manifest_lists_every_family_capture():
    assert {p.name for p in FAMILY.glob("*.pcap")} == set(MANIFEST)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_decoded_arguments_equal_what_the_client_sent(name):
    entry = MANIFEST[name]
    found, _, stats = events(name)
    if entry["encrypted"]:
        assert found == [] and stats["smb_encrypted_messages"] > 0
        return
    sent = [(c["interface_uuid"], c["opnum"], c["function"], c["frame"], c["client_port"],
             {k: v for k, v in c["args"].items() if isinstance(v, str) and c["decodable"]},
             {k: str(v) for k, v in c["args"].items() if not isinstance(v, str) and c["decodable"]})
            for c in entry["calls"]]
    seen = [(e.action_rpc_interface_uuid.strip("{}").lower(), e.action_rpc_func_opnum, e.action_rpc_func_name,
             e.net_capture_frame, e.actor_remote_port, e.str_fields(), json.loads(e.action_rpc_func_int_call_fields))
            for e in found if e.actor_remote_port in {c["client_port"] for c in entry["calls"]}]
    assert seen == sent
    sealed = {c["frame"] for c in entry["calls"] if c["sealed"]}
    for event in found:
        assert event.net_stub_sealed == (event.net_capture_frame in sealed)
        assert event.net_decode_error == ("sealed: PKT_PRIVACY stub" if event.net_stub_sealed else "")
        assert event.net_interface_inferred == ""
        if entry["agent_hostname"]:
            assert event.agent_hostname == entry["agent_hostname"]


@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if e["observed_requests"]))
def test_benign_tool_requests_are_all_events(name):
    """rpcclient's own requests (no ground truth but tshark's): each one an event, in order."""
    found, _, _ = events(name)
    observed = [(o["opnum"], o["frame"]) for o in MANIFEST[name]["observed_requests"]]
    assert [(e.action_rpc_func_opnum, e.net_capture_frame) for e in found][:len(observed)] == observed


@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if not e["should_alert"]))
def test_benign_calls_name_no_foreign_listener(name):
    """Benign look-alikes: a coercion call names no host, the server itself, or (print
    notifications) the calling client's own address."""
    found, _, _ = events(name)
    for event in found:
        op = CATALOG.interface(event.action_rpc_interface_uuid.strip("{}")).operation(event.action_rpc_func_opnum)
        if op is None or not op.coerces:
            continue
        hosts = {host_of(event.str_fields().get(a, "")) for a in op.listener_args} - {""}
        assert hosts <= {event.agent_ip, event.agent_hostname.lower(), event.actor_remote_ip}, (event.action_rpc_func_name, hosts)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_back_authentication_confirms_and_names_the_technique(name):
    entry = MANIFEST[name]
    found, records, _ = events(name)
    correlator = Correlator()
    alerts = [a for r in records for a in correlator.feed(r)]
    expected = [rule for rule in entry["expected_alerts"] if rule in (CONFIRMED, PROBABLE)]
    assert [a.rule for a in alerts] == expected
    if not expected:
        return
    assert entry["back_auth"], "the manifest lists the back-authentication"
    [alert] = alerts
    # inside SMB3 encryption no call is seen: the technique is unknown
    technique = "" if entry["encrypted"] else CATALOG.interface(entry["calls"][0]["interface_uuid"]).technique
    kerberos = alert.protocol.endswith("-kerberos")     # the client principal is encrypted
    assert (alert.technique, alert.victim_ip, alert.listener_ip, alert.client_ip, alert.user) == \
        (technique, "10.0.0.10", "10.0.0.66", "10.0.0.66", "" if kerberos else "DC01$")
    if kerberos:
        [ticket] = entry["back_auth"]          # what tshark's kerberos dissector read
        assert alert.domain == ticket["realm"] and "/".join(ticket["sname"]) in alert.detail
    if alert.rule == CONFIRMED:
        assert set(alert.call_event_ids) <= {e.event_id for e in found} and alert.call_event_ids
    elif entry["encrypted"]:    # only an encrypted inbound session to V before the logon
        assert found == [] and "inbound encrypted session" in alert.detail
    else:   # a sealed coercion call: the listener comes from the back-authentication only
        assert all(e.net_stub_sealed for e in found) and "sealed coercion call" in alert.detail


def tshark_arguments(name: str) -> dict[int, tuple[int, str, str]]:
    """frame -> (opnum, IDL argument name, value) for every call tshark decodes an argument of."""
    fields = [f for table in TSHARK_FIELDS.values() for f, _ in table.values()]
    cmd = ["tshark", "-n", "-r", str(FAMILY / name), "-Y", "dcerpc.pkt_type == 0", "-T", "fields",
           "-E", "separator=\t", "-e", "frame.number", "-e", "dcerpc.opnum", "-e", "_ws.col.Protocol"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        frame, opnum, protocol, *values = line.split("\t")
        table = TSHARK_FIELDS.get(protocol.lower(), {})
        if int(opnum) in table:
            field, arg = table[int(opnum)]
            value = values[fields.index(field)]
            if value:
                found[int(frame)] = (int(opnum), arg, value)
    return found


@requires_tshark
@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if not e["encrypted"]))
def test_decoded_arguments_equal_wiresharks(name):
    found, _, _ = events(name)
    oracle = tshark_arguments(name)
    ours = {}
    for event in found:
        if event.net_capture_frame in oracle:
            arg = oracle[event.net_capture_frame][1]
            ours[event.net_capture_frame] = (event.action_rpc_func_opnum, arg, event.str_fields().get(arg))
    assert ours == oracle


@requires_tshark
def test_wireshark_oracle_covers_each_dissected_technique():
    """The differential test above is not vacuous: tshark decodes the listener argument of
    EFSR 0 and 4-9, EVEN 9, FSRVP 8/9 and RPRN 65 in these captures."""
    covered = {(name.split("-")[0], opnum) for name in ("efsr-lsarpc-smb21.pcap", "even-smb21.pcap",
                                                        "fsrvp-smb21.pcap", "rprn-smb21.pcap", "efsr-tcp.pcap")
               for opnum, _, _ in tshark_arguments(name).values()}
    assert covered >= {("efsr", o) for o in (0, 4, 5, 6, 7, 8, 9)} | {("even", 9), ("fsrvp", 8), ("fsrvp", 9), ("rprn", 65)}
