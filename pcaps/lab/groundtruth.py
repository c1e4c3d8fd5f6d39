"""Ground truth read back from a capture: where each request the client sent appeared.

The client knows what it sent; tshark tells in which frame and when it appeared. A request
is located by its last fragment (the frame that completes it). Where tshark cannot see the
call (SMB3 encryption), the frame is the first client-to-server data segment of that TCP
connection sent at or after the client's own send time.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

PFC_LAST_FRAG = 0x02        # C706 12.6.3.1: the fragment that completes a request
PKT_REQUEST = 0             # C706 12.6.4.9
CLOCK_SLACK = 0.005         # the client's clock reading precedes its frame; same host clock

# tshark protocol names of the DCE/RPC interfaces the lab's benign traffic uses -> uuid
INTERFACE_UUIDS = {
    "netdfs": "4fc742e0-4a10-11cf-8273-00aa004ae673",
    "srvsvc": "4b324fc8-1670-01d3-1278-5a47bf6ee188",
    "lsarpc": "12345778-1234-abcd-ef00-0123456789ab",
    "wkssvc": "6bffd098-a112-3610-9833-46c3f87e345a",
}


@dataclass
class WireRequest:
    frame: int
    ts: float
    src: str
    sport: int
    dport: int
    opnum: int
    interface: str | None   # tshark's protocol name for the stub, None when the bind was not seen
    used: bool = False


def tshark_fields(pcap: str, display_filter: str, fields: list[str]) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", pcap, "-Y", display_filter, "-T", "fields", "-E", "separator=\t",
           "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def wire_requests(pcap: str) -> list[WireRequest]:
    """Every DCE/RPC request PDU that completes in a frame, in capture order."""
    rows = tshark_fields(pcap, f"dcerpc.pkt_type == {PKT_REQUEST}", [
        "frame.number", "frame.time_epoch", "ip.src", "ipv6.src", "tcp.srcport", "tcp.dstport",
        "dcerpc.pkt_type", "dcerpc.cn_flags", "dcerpc.opnum", "_ws.col.Protocol"])
    found = []
    for frame, ts, src4, src6, sport, dport, types, flags, opnums, protocol in rows:
        stub_protocol = protocol.lower()  # the column names the stub dissector, e.g. NETDFS
        interface = stub_protocol if stub_protocol in INTERFACE_UUIDS else None
        requests = [(int(f, 16), int(o)) for t, f, o in
                    zip(types.split("|"), flags.split("|"), opnums.split("|")) if int(t) == PKT_REQUEST]
        for flag, opnum in requests:
            if flag & PFC_LAST_FRAG:
                found.append(WireRequest(int(frame), float(ts), src4 or src6, int(sport), int(dport),
                                         opnum, interface))
    return found


def data_segments(pcap: str, client_port: int, server_port: int) -> list[tuple[int, float]]:
    rows = tshark_fields(pcap, f"tcp.srcport == {client_port} && tcp.dstport == {server_port} && tcp.len > 0",
                         ["frame.number", "frame.time_epoch"])
    return [(int(f), float(t)) for f, t in rows]


def locate(pcap: str, calls: list[dict]) -> list[dict]:
    """Add frame and ts to each client record (in the order sent)."""
    wire = wire_requests(pcap)
    located = []
    for call in calls:
        match = next((w for w in wire if not w.used and w.sport == call["client_port"]
                      and w.opnum == call["opnum"] and w.ts >= call["sent"] - CLOCK_SLACK), None)
        if match is not None:
            match.used = True
            frame, ts = match.frame, match.ts
        else:
            segments = [s for s in data_segments(pcap, call["client_port"], call["server_port"])
                        if s[1] >= call["sent"] - CLOCK_SLACK]
            if not segments:
                raise RuntimeError(f"{pcap}: no frame for {call['function']} sent at {call['sent']}")
            frame, ts = segments[0]
        located.append({**call, "frame": frame, "ts": ts})
    return located


def observed_calls(pcap: str) -> list[dict]:
    """Every request tshark sees, for captures made by tools that do not report what they sent."""
    return [{"interface": w.interface, "interface_uuid": INTERFACE_UUIDS.get(w.interface or ""),
             "opnum": w.opnum, "client_ip": w.src, "client_port": w.sport, "server_port": w.dport,
             "frame": w.frame, "ts": w.ts} for w in wire_requests(pcap)]


def ntlm_authentications(pcap: str) -> list[dict]:
    """NTLMSSP AUTHENTICATE messages: who authenticated where (the coerced back-authentication)."""
    rows = tshark_fields(pcap, "ntlmssp.messagetype == 3", [
        "frame.number", "frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
        "ntlmssp.auth.username", "ntlmssp.auth.domain", "ntlmssp.auth.hostname"])
    return [{"frame": int(f), "ts": float(t), "client_ip": s, "server_ip": d, "client_port": int(sp),
             "server_port": int(dp), "user": u, "domain": dom, "host": h}
            for f, t, s, d, sp, dp, u, dom, h in rows]


def kerberos_ap_requests(pcap: str) -> list[dict]:
    """Kerberos AP-REQs (in SMB SESSION_SETUP or HTTP Negotiate): the ticket's realm and sname."""
    rows = tshark_fields(pcap, "kerberos.msg_type == 14", [
        "frame.number", "frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
        "kerberos.realm", "kerberos.SNameString"])
    return [{"frame": int(f), "ts": float(t), "client_ip": s, "server_ip": d, "client_port": int(sp),
             "server_port": int(dp), "realm": r, "sname": n.split("|")}
            for f, t, s, d, sp, dp, r, n in rows]


def challenge_target_names(pcap: str) -> set[str]:
    """NetBIOS computer names the server put in its NTLMSSP CHALLENGE (the agent hostname)."""
    rows = tshark_fields(pcap, "ntlmssp.messagetype == 2", ["ntlmssp.challenge.target_info.nb_computer_name"])
    return {v for row in rows for cell in row for v in cell.split("|") if v}
