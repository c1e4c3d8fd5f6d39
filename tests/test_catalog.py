"""The MS-DFSNM catalog row and its NDR request types, fed real bytes."""
from impacket.dcerpc.v5.ndr import NULL

from sensor.interfaces import dfsnm
from sensor.interfaces.catalog import default_catalog

# NetrDfsRemoveStdRoot("10.0.0.66", "test", 1) as impacket marshals it (NDR20, little endian).
REMOVE_STD_ROOT_STUB = bytes.fromhex(
    "0a000000000000000a000000310030002e0030002e0030002e0036003600000005000000000000000500000074006500730074000000bfbf01000000"
)


def test_catalog_knows_netdfs_by_uuid_and_pipe():
    cat = default_catalog()
    iface = cat.interface("4FC742E0-4A10-11CF-8273-00AA004AE673")
    assert iface is cat.for_pipe("netdfs")
    assert iface.xdr_uuid == "{4FC742E0-4A10-11CF-8273-00AA004AE673}"
    assert sorted(iface.operations) == list(range(26))
    assert iface.operation(12).name == "NetrDfsAddStdRoot"
    assert iface.operation(13).name == "NetrDfsRemoveStdRoot"


def test_remove_std_root_decodes_wire_bytes():
    call = dfsnm.NetrDfsRemoveStdRoot(REMOVE_STD_ROOT_STUB)
    assert call["ServerName"] == "10.0.0.66\x00"
    assert call["RootShare"] == "test\x00"
    assert call["ApiFlags"] == 1


def test_remove2_roundtrip_with_null_root_list():
    req = dfsnm.NetrDfsRemove2()
    req["DfsEntryPath"] = "\\\\dc\\root\x00"
    req["DcName"] = "dc\x00"
    req["ServerName"] = "10.0.0.66\x00"
    req["ShareName"] = "share\x00"
    req["ppRootList"] = NULL
    back = dfsnm.NetrDfsRemove2(req.getData())
    assert back["ServerName"] == "10.0.0.66\x00"
    assert back["ShareName"] == "share\x00"
