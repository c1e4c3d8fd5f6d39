"""The family's catalog rows, interface inference on shared pipes, and listener hosts."""
from __future__ import annotations

import struct

import pytest

from sensor.dcerpc.events import RpcCall
from sensor.event_builder import CallContext, build_event, resolve
from sensor.interfaces.catalog import default_catalog
from sensor.interfaces.listener import host_of
from sensor.net.stream import FlowKey

CATALOG = default_catalog()
FLOW = FlowKey("10.0.0.66", 40000, "10.0.0.10", 445)
EFSR_LSARPC = "c681d488-d850-11d0-8c52-00c04fd90f7e"


def wstr(text: str) -> bytes:
    """C706 14.3.4.2 conformant varying string, by hand."""
    units = (text + "\x00").encode("utf-16-le")
    data = struct.pack("<III", len(units) // 2, 0, len(units) // 2) + units
    return data + b"\x00" * (-len(data) % 4)


def call(opnum: int, stub: bytes, uuid: str | None = None, sealed: bool = False) -> RpcCall:
    return RpcCall(ts=1.0, frame=1, call_id=1, ctx_id=0, opnum=opnum, interface_uuid=uuid,
                   interface_version=None, stub=b"" if sealed else stub, little_endian=True, auth_type=10 if sealed else None,
                   auth_level=6 if sealed else None, sealed=sealed)


def test_every_coercion_operation_decodes_its_listener_arguments():
    rows = list(CATALOG.by_uuid.values())
    assert {i.protocol for i in rows} == {"MS-DFSNM", "MS-EFSR", "MS-RPRN", "MS-PAR", "MS-FSRVP", "MS-EVEN"}
    for iface in rows:
        assert iface.technique and iface.coercion_opnums
        for opnum in iface.coercion_opnums:
            op = iface.operation(opnum)
            fields = {name for name, _ in op.request.structure}
            assert set(op.listener_args) <= fields, (iface.name, op.name)
    assert CATALOG.interface(EFSR_LSARPC).coercion_opnums == {0, 4, 5, 6, 7, 8, 9, 12, 13, 15, 16, 18, 19, 21}
    assert CATALOG.interface("4fc742e0-4a10-11cf-8273-00aa004ae673").coercion_opnums == {12, 13, 14, 15, 20, 23, 24}


def test_a_dedicated_pipe_names_its_interface_a_shared_one_does_not():
    assert CATALOG.for_pipe("spoolss").name == "spoolss"
    assert CATALOG.for_pipe("efsrpc").uuid == "df1941c5-fe89-4e79-bf10-463657acf44d"
    for shared in ("lsarpc", "samr", "netlogon", "lsass"):
        assert CATALOG.for_pipe(shared) is None
        assert [i.uuid for i in CATALOG.candidates_for_pipe(shared)] == [EFSR_LSARPC]


def test_missed_bind_on_lsarpc_is_efsr_only_when_the_stub_is_an_efsr_call():
    ctx = CallContext(FLOW, "lsarpc", over_smb=True)
    iface, how = resolve(CATALOG, call(4, wstr("\\\\10.0.0.66\\s\\f")), ctx)
    assert (iface.uuid, how) == (EFSR_LSARPC, "pipe+stub")
    # LsarClose (LSA opnum 0): a 20-byte policy handle, not an EFSR call: not named EFSR
    assert resolve(CATALOG, call(0, b"\x00" * 4 + bytes(range(16))), ctx) is None
    # LsarQueryInformationPolicy (7): handle + a 2-byte class
    assert resolve(CATALOG, call(7, bytes(20) + b"\x0c\x00"), ctx) is None
    # sealed: the stub cannot decide, and the pipe name alone would misname LSA traffic
    assert resolve(CATALOG, call(4, b"", sealed=True), ctx) is None


def test_sealed_coercion_call_with_its_bind_is_an_event_by_interface_and_opnum():
    rpc = call(65, b"", uuid="12345678-1234-abcd-ef00-0123456789ab", sealed=True)
    iface, how = resolve(CATALOG, rpc, CallContext(FLOW, "spoolss", over_smb=True))
    event = build_event(iface, how, rpc, CallContext(FLOW, "spoolss", over_smb=True))
    assert (event.action_rpc_func_name, event.action_rpc_func_opnum, event.net_stub_sealed) == \
        ("RpcRemoteFindFirstPrinterChangeNotificationEx", 65, True)
    assert event.action_rpc_func_str_call_fields == "{}" and event.net_decode_error.startswith("sealed")


@pytest.mark.parametrize("value, host", [
    ("10.0.0.66", "10.0.0.66"), ("\\\\EVIL\\share\\f", "evil"), ("\\\\evil.lab.example", "evil.lab.example"),
    ("evil@8080/x", "evil"), ("\\\\evil@SSL@443\\dav\\x", "evil"), ("\\\\10.0.0.66@80\\x\\y", "10.0.0.66"),
    ("\\\\?\\UNC\\evil\\share", "evil"), ("\\??\\UNC\\10.0.0.66\\share\\x.evt", "10.0.0.66"),
    ("http://evil:8080/x", "evil"), ("[fd00::66]:445", "fd00::66"), ("C:\\share\\file.txt", ""), ("", ""), ("a b", ""),
])
def test_listener_host_forms(value, host):
    assert host_of(value) == host


def test_every_request_type_a_row_names_imports_as_its_operations_call():
    """Rows name their NDR request types by dotted path, imported at the first decode: every
    path (alternates too) is an impacket NDRCALL class for the operation's own opnum."""
    from impacket.dcerpc.v5.ndr import NDRCALL

    types = CATALOG.request_types()
    named = [(i.uuid, op) for i in CATALOG.by_uuid.values() for op in i.operations.values() if op.request_path]
    assert len(types) == len(named) > 30
    for (uuid, opnum), kinds in types.items():
        for kind in kinds:
            assert isinstance(kind, type) and issubclass(kind, NDRCALL) and kind.opnum == opnum, (uuid, opnum, kind)
    assert [k.__module__ for k in types[("82273fdc-e32a-18c3-3f78-827929dc23ea", 9)]] == \
        ["sensor.interfaces.even", "impacket.dcerpc.v5.even"]      # ElfrOpenBELW: the IDL's, then impacket's
