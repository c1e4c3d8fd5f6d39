"""tshark's netdfs fields -> the IDL argument names the event record uses.

Wireshark 4.0's netdfs dissector (generated from Samba's dfs.idl) decodes opnums 12-15;
its field names follow Samba's IDL ("servername", "store"), ours follow MS-DFSNM appendix A.
Opnums it lacks (20, 23, 24) are decoded from the stub by sensor/interfaces/decode.py.
"""
from __future__ import annotations

from sensor.tshark.tree import first

# opnum -> (tshark field, IDL name, is an integer), in IDL order.
NETDFS_FIELDS: dict[int, tuple[tuple[str, str, bool], ...]] = {
    12: (("netdfs.dfs_AddStdRoot.servername", "ServerName", False),
         ("netdfs.dfs_AddStdRoot.rootshare", "RootShare", False),
         ("netdfs.dfs_AddStdRoot.comment", "Comment", False),
         ("netdfs.dfs_AddStdRoot.flags", "ApiFlags", True)),
    13: (("netdfs.dfs_RemoveStdRoot.servername", "ServerName", False),
         ("netdfs.dfs_RemoveStdRoot.rootshare", "RootShare", False),
         ("netdfs.dfs_RemoveStdRoot.flags", "ApiFlags", True)),
    14: (("netdfs.dfs_ManagerInitialize.servername", "ServerName", False),
         ("netdfs.dfs_ManagerInitialize.flags", "Flags", True)),
    15: (("netdfs.dfs_AddStdRootForced.servername", "ServerName", False),
         ("netdfs.dfs_AddStdRootForced.rootshare", "RootShare", False),
         ("netdfs.dfs_AddStdRootForced.comment", "Comment", False),
         ("netdfs.dfs_AddStdRootForced.store", "Share", False)),
}


def netdfs_arguments(opnum: int, layer: dict) -> tuple[dict[str, str], dict[str, str]] | None:
    """(string args, integer args as text) from one netdfs layer, or None when tshark has
    no fields for this opnum or did not decode all of them (malformed or truncated stub)."""
    fields = NETDFS_FIELDS.get(opnum)
    if fields is None:
        return None
    strings: dict[str, str] = {}
    ints: dict[str, str] = {}
    for field, name, is_int in fields:
        value = first(layer, field)
        if not isinstance(value, str):
            return None
        if is_int:
            ints[name] = str(int(value, 0))
        else:
            strings[name] = value
    return strings, ints
