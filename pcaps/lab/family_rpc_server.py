"""The lab's RPC server for interfaces Samba does not serve: MS-EFSR and MS-PAR.

Samba 4.17 serves spoolss, eventlog and FssagentRpc (the family captures use it for those),
but rejects the EFSR bind on \\PIPE\\lsarpc, has no \\PIPE\\efsrpc, and no MS-PAR. A coercion
request only crosses the wire after a bind the server accepts, so this serves them with
impacket's own server pieces, in namespace "dc":

- impacket's SMB server (SMB 2.1 at most: impacket's server has no SMB 3 encryption) on 445,
  whose named pipes lsarpc, samr, netlogon, lsass and efsrpc are relayed to an impacket DCERPCServer;
- the same kind of DCERPCServer on TCP ``--tcp-port`` for ncacn_ip_tcp (EFSR and PAR; the
  client connects to the port directly, as after an endpoint-mapper lookup).

Each server accepts the bind of the catalogued uuids and answers every request with a
4-byte status, ERROR_ACCESS_DENIED: the request is on the wire whole, the answer does not
matter. Runs until killed.
"""
from __future__ import annotations

import argparse
import struct
import sys
import time

from impacket.dcerpc.v5.rpcrt import DCERPCServer
from impacket.smbserver import SimpleSMBServer

EFSR_LSARPC = ("c681d488-d850-11d0-8c52-00c04fd90f7e", "1.0")
EFSR_EFSRPC = ("df1941c5-fe89-4e79-bf10-463657acf44d", "1.0")
PAR = ("76f03f96-cdfd-44fc-a22c-64950a001209", "1.0")
ERROR_ACCESS_DENIED = struct.pack("<L", 5)
MAX_OPNUM = 128


def answer_all() -> dict:
    return {opnum: (lambda data: ERROR_ACCESS_DENIED) for opnum in range(MAX_OPNUM)}


class FamilyServer(DCERPCServer):
    def __init__(self, interfaces: list[tuple[tuple[str, str], str]], address: str = "127.0.0.1", port: int = 0):
        DCERPCServer.__init__(self)
        if (address, port) != ("127.0.0.1", 0):
            self.setListenAddress(address)
            self.setListenPort(port)
        for iface, secondary in interfaces:
            self.addCallbacks(iface, secondary, answer_all())
        self.daemon = True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tcp-port", type=int, default=49670)
    p.add_argument("--share", default="/tmp")
    opts = p.parse_args()
    servers = {}
    # Windows serves c681d488 on lsarpc and, the same lsass endpoint, on samr, netlogon, lsass.
    for pipe, iface in (("lsarpc", EFSR_LSARPC), ("samr", EFSR_LSARPC), ("netlogon", EFSR_LSARPC),
                        ("lsass", EFSR_LSARPC), ("efsrpc", EFSR_EFSRPC)):
        servers[pipe] = FamilyServer([(iface, f"\\PIPE\\{pipe}")])
    tcp = FamilyServer([(EFSR_LSARPC, str(opts.tcp_port)), (EFSR_EFSRPC, str(opts.tcp_port)),
                        (PAR, str(opts.tcp_port))], "0.0.0.0", opts.tcp_port)
    for server in [*servers.values(), tcp]:
        server.start()
    smb = SimpleSMBServer(listenAddress="0.0.0.0", listenPort=445)
    smb.setSMB2Support(True)
    smb.addShare("SHARE", opts.share)
    for pipe, server in servers.items():
        smb.registerNamedPipe(pipe, ("127.0.0.1", server.getListenPort()))
    print("ready", flush=True)
    smb.start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
