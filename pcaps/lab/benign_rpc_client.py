"""Benign impacket calls on six-letter pipes over encrypted SMB3: what the encrypted-netdfs size
fingerprint could confuse with DFSCoerce (same pipe-name length, same one-context bind).

  benign_rpc_client.py --target 10.0.0.10

One SMB connection per pipe, as impacket's example tools make them (lookupsid, netview, samrdump),
with impacket's default negotiation: against `server smb encrypt = desired` it encrypts by itself.
"""
from __future__ import annotations

import argparse
import sys

from impacket.dcerpc.v5 import lsad, samr, srvs
from impacket.dcerpc.v5 import transport as rpc_transport
from impacket.dcerpc.v5.rpcrt import DCERPCException


def open_pipe(opts, pipe: str, interface: bytes):
    trans = rpc_transport.DCERPCTransportFactory(rf"ncacn_np:{opts.target}[\pipe\{pipe}]")
    trans.set_credentials(opts.user, opts.password, opts.domain)
    dce = trans.get_dce_rpc()
    dce.connect()
    dce.bind(interface)
    return dce


def lsarpc(opts) -> None:
    dce = open_pipe(opts, "lsarpc", lsad.MSRPC_UUID_LSAD)
    policy = lsad.hLsarOpenPolicy2(dce, lsad.POLICY_VIEW_LOCAL_INFORMATION)["PolicyHandle"]
    lsad.hLsarQueryInformationPolicy2(dce, policy, lsad.POLICY_INFORMATION_CLASS.PolicyAccountDomainInformation)
    dce.disconnect()


def srvsvc(opts) -> None:
    dce = open_pipe(opts, "srvsvc", srvs.MSRPC_UUID_SRVS)
    srvs.hNetrShareEnum(dce, 1)
    dce.disconnect()


def samr_connect(opts) -> None:
    dce = open_pipe(opts, "samr", samr.MSRPC_UUID_SAMR)
    samr.hSamrConnect(dce)
    dce.disconnect()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True)
    p.add_argument("--user", default="labuser")
    p.add_argument("--password", default="Passw0rd!")
    p.add_argument("--domain", default="LAB")
    opts = p.parse_args(argv)
    for call in (lsarpc, srvsvc, samr_connect):
        try:
            call(opts)
        except DCERPCException as exc:        # a refusal is still the traffic we want
            print(f"{call.__name__}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
