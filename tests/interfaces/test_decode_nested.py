"""Calls with nested structures (unions, arrays of structures, pointers inside pointees) in
both byte orders and both transfer syntaxes, and the interface inference that rests on them.

Oracles, none of them the sensor's own encoder:
- Samba's NDR engine (pidl-generated librpc, through python3-samba's ``ndr_pack_in``) marshals
  the same MS-RPRN and MS-PAR requests little and big endian (LIBNDR_FLAG_BIGENDIAN), NDR20 and
  NDR64 (tests/interfaces/samba_ndr_stubs.py, run by the system interpreter that has it);
- the lab captures (impacket clients) with their binds, and pipe opens, cut out by editcap.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from impacket.dcerpc.v5.dtypes import DWORD
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER, NDRSTRUCT

from sensor.events import RpcCallEvent
from sensor.interfaces.catalog import default_catalog
from sensor.interfaces.decode import (
    MAX_NESTING,
    NdrDecodeError,
    decode_request,
    little_endian_stub,
    looks_like,
)
from tests.conftest import PCAPS, decode_capture, requires_tshark

CATALOG = default_catalog()
SYSTEM_PYTHON = "/usr/bin/python3"      # Debian's, where python3-samba installs its modules
SAMBA_SCRIPT = Path(__file__).with_name("samba_ndr_stubs.py")
FORMS = ("le", "be", "le64", "be64")
# A context handle (MS-RPCE 2.2.4.8... an opaque 20 octets to the sensor, never read) is the one
# part of a request the rewrite leaves in the sender's byte order.
CONTEXT_HANDLE = {("12345678-1234-abcd-ef00-0123456789ab", 65): 20}


@lru_cache(maxsize=1)
def samba_calls() -> list[dict]:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import samba.ndr, samba.dcerpc.spoolss"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-samba is not installed for /usr/bin/python3 (scripts/setup --test installs it)")
    run = subprocess.run([SYSTEM_PYTHON, str(SAMBA_SCRIPT)], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(run.stdout)


CALL_NAMES = ["open_printer", "open_printer_ex", "find_first_ex", "enum_printers", "async_open_printer",
              "async_enum_printers"]


def samba_call(name: str) -> dict:
    [call] = [c for c in samba_calls() if c["function"] == name]
    return call


def operation(call: dict):
    return CATALOG.interface(call["uuid"]).operation(call["opnum"])


def stub(call: dict, form: str) -> tuple[bytes, bool, bool]:
    """(stub, little endian, ndr64)."""
    return bytes.fromhex(call["stubs"][form]), form.startswith("le"), form.endswith("64")


def test_samba_script_marshals_every_catalogued_call_it_names():
    assert [c["function"] for c in samba_calls()] == CALL_NAMES
    for call in samba_calls():
        assert operation(call).request is not None
        le, be = bytes.fromhex(call["stubs"]["le"]), bytes.fromhex(call["stubs"]["be"])
        assert len(le) == len(be) and le != be     # the same layout, another byte order


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CALL_NAMES)
def test_samba_marshalled_calls_decode_to_what_samba_was_given(name, form):
    call = samba_call(name)
    data, little, ndr64 = stub(call, form)
    decoded = decode_request(operation(call), data, little, ndr64)
    assert (decoded.strings, decoded.ints) == (call["strings"], call["ints"])
    # The whole stub is one clean request: the interface is named when the bind was missed.
    assert looks_like(operation(call), data, little, ndr64)
    assert not looks_like(operation(call), data, not little, ndr64)


@pytest.mark.parametrize("ndr64", [False, True])
@pytest.mark.parametrize("name", CALL_NAMES)
def test_big_endian_rewrite_is_samba_little_endian_octet_for_octet(name, ndr64):
    """Every nested integer, count, referent id and UTF-16 unit lands where Samba's own
    little-endian marshalling puts it, not only the arguments the event shows."""
    call = samba_call(name)
    suffix = "64" if ndr64 else ""
    le, be = bytes.fromhex(call["stubs"]["le" + suffix]), bytes.fromhex(call["stubs"]["be" + suffix])
    rewritten = little_endian_stub(operation(call).request, be, ndr64)
    skip = CONTEXT_HANDLE.get((call["uuid"], call["opnum"]), 0)
    assert rewritten[skip:] == le[skip:]


def test_notify_options_array_follows_the_idl_not_impackets_single_pointer():
    """MS-RPRN 2.2.1.13.1: pTypes is [size_is(Count), unique], an array; impacket's type reads
    one structure. A print client's registration (two option types) walks only as the IDL."""
    from impacket.dcerpc.v5 import rprn as impacket_rprn

    data, little, ndr64 = stub(samba_call("find_first_ex"), "be")
    with pytest.raises(NdrDecodeError):
        little_endian_stub(impacket_rprn.RpcRemoteFindFirstPrinterChangeNotificationEx, data)
    assert little_endian_stub(operation(samba_call("find_first_ex")).request, data)


@pytest.mark.parametrize("name", CALL_NAMES)
def test_every_truncation_of_a_big_endian_stub_is_a_decode_error(name):
    """Samba's stubs end with their last argument: any shorter stub is damaged, never a call."""
    call = samba_call(name)
    data, _, _ = stub(call, "be")
    op = operation(call)
    for cut in range(len(data)):
        with pytest.raises(NdrDecodeError):
            decode_request(op, data[:cut], False)
        assert not looks_like(op, data[:cut], False)


def test_hostile_count_is_refused_before_any_loop():
    """The notify-options type array's count set to 2**32-1: one bounds check, no loop."""
    call = samba_call("find_first_ex")
    data = bytearray(stub(call, "be")[0])
    le = bytes.fromhex(call["stubs"]["le"])
    at = le.index(bytes.fromhex("02000000" + "00000000" + "02000000" + "08000200" + "02000000")) + 16
    assert data[at:at + 4] == b"\x00\x00\x00\x02"
    data[at:at + 4] = b"\xff\xff\xff\xff"
    with pytest.raises(NdrDecodeError, match="run past the stub"):
        decode_request(operation(call), bytes(data), False)


def _chain(depth: int) -> type[NDRCALL]:
    """A request whose one argument is a pointer to a structure holding a pointer to a
    structure... ``depth`` deep (distinct classes: impacket cannot even instantiate a type that
    refers to itself)."""
    inner: type = DWORD
    for level in range(depth):
        node = type(f"Node{level}", (NDRSTRUCT,), {"structure": (("Value", DWORD), ("Next", inner))})
        inner = type(f"PNode{level}", (NDRPOINTER,), {"referent": (("Data", node),)})
    return type("Chain", (NDRCALL,), {"opnum": 0, "structure": (("Head", inner),)})


def test_nesting_is_bounded():
    deep = _chain(MAX_NESTING)
    one_link = b"\x00\x02\x00\x00" + b"\x00\x00\x00\x07"       # referent id, Value
    with pytest.raises(NdrDecodeError, match=f"nested deeper than {MAX_NESTING}"):
        little_endian_stub(deep, one_link * MAX_NESTING + b"\x00\x00\x00\x00")
    # NULL early: shallow data, however deep the type.
    assert little_endian_stub(deep, one_link * 2 + b"\x00\x00\x00\x00") == \
        b"\x00\x00\x02\x00" + b"\x07\x00\x00\x00" + b"\x00\x00\x02\x00" + b"\x07\x00\x00\x00" + b"\x00" * 4


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(CALL_NAMES), data=st.data())
def test_damaged_big_endian_stubs_never_raise_anything_else(name, data):
    call = samba_call(name)
    raw = bytearray(stub(call, "be")[0])
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode_request(operation(call), bytes(raw), False)
    except NdrDecodeError:
        pass
    looks_like(operation(call), bytes(raw), False)


# -- interface inference when the bind (and the pipe open) were missed: real captures ---------

FAMILY = PCAPS / "family"
MANIFEST = json.loads((FAMILY / "manifest.json").read_text())["captures"]


def without_frames(name: str, frames: list[int], tmp_path: Path) -> Path:
    out = tmp_path / name
    subprocess.run(["editcap", str(FAMILY / name), str(out), *map(str, frames)], check=True, capture_output=True)
    return out


def cut_events(name: str, frames: list[int], tmp_path: Path) -> list[RpcCallEvent]:
    records, _ = decode_capture(without_frames(name, frames, tmp_path))
    return [r for r in records if isinstance(r, RpcCallEvent)]


def sent(name: str) -> list[tuple[str, dict]]:
    return [(c["function"], {k: v for k, v in c["args"].items() if isinstance(v, str)})
            for c in MANIFEST[name]["calls"]]


# (capture, frames cut: CREATE request/response of the pipe and BIND/BIND_ACK, as tshark numbers
# them, checked below), how the interface must be inferred.
MIDSTREAM = [
    ("efsr-lsarpc-smb21.pcap", [16, 19], "pipe+stub"),         # bind cut: lsarpc is shared with LSA
    ("efsr-lsarpc-smb21.pcap", [14, 15, 16, 19], "stub"),      # pipe open cut too
    ("rprn-smb21.pcap", [14, 16, 17, 23], "stub"),
    ("even-smb21.pcap", [14, 16, 17, 23], "stub"),
    ("par-tcp.pcap", [4, 6], "stub"),                          # ncacn_ip_tcp: no pipe at all
]


@pytest.mark.parametrize("name,frames,inferred", MIDSTREAM)
def test_missed_bind_calls_with_nested_structures_are_named_by_their_stub(name, frames, inferred, tmp_path):
    """Every call of the capture, the nested ones included (EFSR 8/9/15/19, RPRN 1/62/65, EVEN 9,
    PAR 0), is named and decoded as with its bind."""
    found = cut_events(name, frames, tmp_path)
    assert [(e.action_rpc_func_name, e.str_fields()) for e in found] == sent(name)
    assert {e.net_interface_inferred for e in found} == {inferred}


@pytest.mark.parametrize("name,frames", sorted({(n, tuple(f)) for n, f, _ in MIDSTREAM}))
def test_cut_frames_are_the_pipe_open_and_bind(name, frames):
    """The frame numbers above are the CREATE and BIND exchanges (a guard against a rebuilt capture)."""
    run = subprocess.run(["tshark", "-r", str(FAMILY / name), "-T", "fields", "-e", "frame.number",
                          "-Y", "smb2.cmd == 5 or dcerpc.pkt_type == 11 or dcerpc.pkt_type == 12"],
                         capture_output=True, text=True, check=True)
    assert set(frames) <= {int(x) for x in run.stdout.split()}


def test_damaged_big_endian_request_is_an_event_and_a_named_anomaly():
    """The event still reports the call (interface, opnum: a rule keys on them), arguments
    empty with the reason, and the damage is counted as ``anomaly.ndr_malformed``."""
    from sensor.anomaly import Stats
    from sensor.dcerpc.events import RpcCall
    from sensor.event_builder import CallContext, build_event, count_ndr_damage
    from sensor.net.stream import FlowKey

    call_data = samba_call("find_first_ex")
    data = stub(call_data, "be")[0][:90]            # cut inside pszLocalMachine's units
    call = RpcCall(ts=1.5, frame=7, call_id=3, ctx_id=0, opnum=65, interface_uuid=call_data["uuid"],
                   interface_version=(1, 0), stub=data, little_endian=False, auth_type=None, auth_level=None,
                   sealed=False)
    flow = FlowKey("10.0.0.66", 40000, "10.0.0.10", 445)
    event = build_event(operation_iface(call_data), "", call, CallContext(flow, "spoolss", over_smb=True))
    assert event.action_rpc_func_opnum == 65 and not json.loads(event.action_rpc_func_str_call_fields or "{}")
    assert event.net_decode_error.startswith("ndr: RpcRemoteFindFirstPrinterChangeNotificationEx")
    stats = Stats()
    anomaly = count_ndr_damage(event, flow, stats)
    assert (anomaly.layer, anomaly.name, anomaly.flow) == ("ndr", "ndr_malformed", flow)
    assert stats["anomaly.ndr_malformed"] == 1
    clean = build_event(operation_iface(call_data), "", replace(call, stub=stub(call_data, "be")[0]),
                        CallContext(flow, "spoolss", over_smb=True))
    assert count_ndr_damage(clean, flow, stats) is None and stats["anomaly.ndr_malformed"] == 1


def operation_iface(call: dict):
    return CATALOG.interface(call["uuid"])


# -- a big-endian client on the wire: Samba's, in the lab ---------------------------------------

BIG_ENDIAN_CAPTURE = "rprn-bigendian-samba-client.pcap"
# tshark 4.0's spoolss fields for the string argument of each call (its dissector reads drep).
TSHARK_SPOOLSS = {69: ("spoolss.printername", "pPrinterName"), 65: ("spoolss.servername", "pszLocalMachine"),
                  0: ("spoolss.servername", "Name")}


@requires_tshark
def test_big_endian_capture_decodes_as_tshark_dissects_it():
    """Samba's client sent every request big endian (tshark reads drep); each call's string
    argument equals tshark's dissection and the client's record, with the nested structures
    (client-info union, notify-option arrays) walked to the end of the stub."""
    rows = subprocess.run(["tshark", "-r", str(FAMILY / BIG_ENDIAN_CAPTURE), "-Y", "dcerpc.pkt_type == 0",
                           "-T", "fields", "-E", "occurrence=f", "-e", "frame.number", "-e", "dcerpc.drep.byteorder",
                           "-e", "dcerpc.opnum", "-e", "spoolss.printername", "-e", "spoolss.servername"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    dissected = {}
    for row in rows:
        frame, byteorder, opnum, printer, server = row.split("\t")
        assert byteorder == "0"                       # big-endian integer representation
        field = TSHARK_SPOOLSS[int(opnum)][0]
        dissected[int(frame)] = (int(opnum), printer if field == "spoolss.printername" else server)
    found = {e.net_capture_frame: e for e in decode_capture(FAMILY / BIG_ENDIAN_CAPTURE)[0]
             if isinstance(e, RpcCallEvent)}
    assert sorted(found) == sorted(dissected) and len(found) == 3
    for frame, (opnum, value) in dissected.items():
        event = found[frame]
        assert event.net_decode_error == "" and event.action_rpc_func_opnum == opnum
        assert event.str_fields()[TSHARK_SPOOLSS[opnum][1]] == value
    sent = {c["frame"]: c["args"] for c in MANIFEST[BIG_ENDIAN_CAPTURE]["calls"]}
    assert {f: e.str_fields() for f, e in found.items()} == \
        {f: {k: v for k, v in a.items() if isinstance(v, str)} for f, a in sent.items()}


# -- big endian where no independent big-endian encoder exists: tshark-guided swap ------------

# (capture, the stub dissector tshark names); the calls compared are those tshark dissects
# (TSHARK_FIELDS of test_family_captures: EFSR 0-9 on c681d488, EVEN 9, FSRVP 8/9, RPRN 65).
SWAPPED = [("efsr-lsarpc-smb21.pcap", "efs"), ("even-smb21.pcap", "eventlog"), ("fsrvp-smb21.pcap", "fsrvp"),
           ("rprn-smb21.pcap", "spoolss")]


@requires_tshark
@pytest.mark.parametrize("name,protocol", SWAPPED)
def test_tshark_swapped_big_endian_capture_decodes_as_the_client_sent(name, protocol, tmp_path):
    """Samba has no EFSR, EVEN or FSRVP bindings and impacket marshals little endian only, so
    the lab capture is rewritten big endian by what tshark dissects (tshark_byteswap.py); tshark
    re-reads the argument from it, and the sensor decodes every call tshark dissects, nested
    certificate lists (EFSR 8/9) and RPC_UNICODE_STRING (EVEN 9) included, as the client sent it."""
    from tests.interfaces.test_family_captures import TSHARK_FIELDS
    from tests.interfaces.tshark_byteswap import big_endian_copy

    out = tmp_path / name
    big_endian_copy(FAMILY / name, out, {protocol})
    table = TSHARK_FIELDS[protocol]
    fields = sorted({f for f, _ in table.values()})
    run = subprocess.run(["tshark", "-r", str(out), "-Y", "dcerpc.pkt_type == 0", "-T", "fields", "-E", "occurrence=f",
                          "-e", "frame.number", "-e", "dcerpc.drep.byteorder", "-e", "dcerpc.opnum",
                          *[x for f in fields for x in ("-e", f)]], capture_output=True, text=True, check=True)
    rows = {int(cols[0]): cols for cols in (line.split("\t") for line in run.stdout.splitlines())}
    sent = {c["frame"]: c for c in MANIFEST[name]["calls"]}
    found = {e.net_capture_frame: e for e in decode_capture(out)[0] if isinstance(e, RpcCallEvent)}
    compared = 0
    for frame, call in sent.items():
        assert rows[frame][1] == "0"                        # every request now says big endian
        if call["opnum"] not in table:
            continue                                        # tshark does not dissect it: not swapped
        field, argument = table[call["opnum"]]
        assert rows[frame][3 + fields.index(field)] == call["args"][argument]      # tshark re-reads it
        event = found[frame]
        assert event.net_decode_error == ""
        assert event.str_fields() == {k: v for k, v in call["args"].items() if isinstance(v, str)}
        assert json.loads(event.action_rpc_func_int_call_fields) == \
            {k: str(v) for k, v in call["args"].items() if not isinstance(v, str)}
        compared += 1
    assert compared == {"efs": 7, "eventlog": 1, "fsrvp": 2, "spoolss": 1}[protocol]
