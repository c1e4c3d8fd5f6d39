"""The lab's RPC server for interfaces Samba does not serve: MS-EFSR and MS-PAR.

Samba 4.17 serves spoolss, eventlog and FssagentRpc (the family captures use it for those),
but rejects the EFSR bind on \\PIPE\\lsarpc, has no \\PIPE\\efsrpc, and no MS-PAR. A coercion
request only crosses the wire after a bind the server accepts, so this serves them, in
namespace "dc", with a small connection-oriented DCE/RPC server (C706 chapter 12) that accepts
the bind of the catalogued uuids, with or without NTLM authentication (MS-RPCE 2.2.2.11/3.3.1.5:
NTLMSSP NEGOTIATE in the bind's auth verifier, CHALLENGE in the bind_ack, AUTHENTICATE in AUTH3;
at PKT_INTEGRITY the stubs are signed, at PKT_PRIVACY sealed: the server derives the session
keys from the lab password, unseals each request and seals its answer). Every request is
answered with ERROR_ACCESS_DENIED after [out] parameters of the IDL's sizes, all NULL (so the
answers, and inside SMB3 encryption their sizes, are those of a Windows server refusing the
call): the request is on the wire whole. Each request received is logged as one JSON line (opnum, stub length, whether
it was sealed and its signature valid). It reaches the server three ways:

- TCP ``--tcp-port`` for ncacn_ip_tcp (EFSR and PAR; the client connects to the port directly,
  as after an endpoint-mapper lookup);
- with ``--smb``: impacket's SMB server on 445 (SMB 2.1 at most: it has no SMB 3 encryption),
  relaying the pipes lsarpc, samr, netlogon, lsass and efsrpc to this server;
- with ``--npa-dir DIR``: Samba's smbd, which forwards a pipe it does not serve itself to the
  Unix socket DIR/np/<pipe> (its ncalrpc dir; source3/rpc_client/local_np.c) with the "named pipe
  auth" handshake (librpc/idl/named_pipe_auth.idl, level 7): so \\PIPE\\efsrpc is reached through
  Samba's SMB 3.1.1 with encryption. Runs until killed.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid as uuidlib
from pathlib import Path

from impacket.smbserver import SimpleSMBServer

import ntlm_server
from scenarios import DOMAIN, PASSWORD

EFSR_LSARPC = "c681d488-d850-11d0-8c52-00c04fd90f7e"
EFSR_EFSRPC = "df1941c5-fe89-4e79-bf10-463657acf44d"
PAR = "76f03f96-cdfd-44fc-a22c-64950a001209"
NDR20 = uuidlib.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860").bytes_le + struct.pack("<HH", 2, 0)
NETBIOS_NAME = "DC01"
ERROR_ACCESS_DENIED = struct.pack("<L", 5)
NULL_CONTEXT_HANDLE = b"\x00" * 20         # MS-RPCE 2.2.4.9 / C706 ndr_context_handle
NULL_POINTER = b"\x00" * 4
# [out] parameters before the status, by (interface, opnum); any other call answers the status only.
OUT_PARAMETERS = {
    # MS-EFSR 3.1.4.2.1 EfsRpcOpenFileRaw: [out] PEXIMPORT_CONTEXT_HANDLE*
    **{(efsr, 0): NULL_CONTEXT_HANDLE for efsr in (EFSR_LSARPC, EFSR_EFSRPC)},
    # MS-EFSR 3.1.4.2.6/7/12/16/18: ENCRYPTION_CERTIFICATE_HASH_LIST** / EFS_RPC_BLOB** out, NULL
    **{(efsr, opnum): NULL_POINTER for efsr in (EFSR_LSARPC, EFSR_EFSRPC) for opnum in (6, 7, 12, 16, 18)},
    (PAR, 0): NULL_CONTEXT_HANDLE,           # MS-PAR 3.1.4.1.1 RpcAsyncOpenPrinter: [out] PRINTER_HANDLE*
}
ASSOC_GROUP = 0x1234                       # any non-zero association group id (C706 12.6.4.4)

# C706 12.6.3.1 / 12.6.4: packet types, flags and header sizes
PTYPE_REQUEST, PTYPE_RESPONSE, PTYPE_BIND, PTYPE_BIND_ACK = 0, 2, 11, 12
PTYPE_ALTER_CONTEXT, PTYPE_ALTER_CONTEXT_RESP, PTYPE_AUTH3 = 14, 15, 16
PFC_FIRST_LAST = 0x03
PFC_OBJECT_UUID = 0x80
COMMON_HEADER = 16
REQUEST_HEADER = 24
SEC_TRAILER = 8
DREP_LITTLE_ENDIAN_ASCII_IEEE = b"\x10\x00\x00\x00"
# C706 12.6.3.4 (p_cont_def_result_t): accepted, or rejected with a reason
RESULT_ACCEPT, RESULT_PROVIDER_REJECTION = 0, 2
REASON_NONE, REASON_ABSTRACT_SYNTAX, REASON_TRANSFER_SYNTAXES = 0, 1, 2
RPC_C_AUTHN_WINNT = 10                     # MS-RPCE 2.2.1.1.7: NTLM
AUTHN_LEVEL_INTEGRITY, AUTHN_LEVEL_PRIVACY = 5, 6

# named_pipe_auth.idl: "NPAM", level 7; the reply Samba's own RPC servers give (rpc_host.c):
# a message-mode pipe, device state 0x05ff, allocation size 4096, NT_STATUS_OK.
NPA_MAGIC = b"NPAM"
NPA_LEVEL = 7
FILE_TYPE_MESSAGE_MODE_PIPE = 2
NPA_DEVICE_STATE = 0xFF | 0x0400 | 0x0100
NPA_ALLOCATION_SIZE = 4096
MESSAGE_HEADER = 2          # npa_tstream.c: a message-mode pipe's message is prefixed by its uint16 length

LOG_LOCK = threading.Lock()


def log(record: dict) -> None:
    with LOG_LOCK:
        print(json.dumps(record), flush=True)


class Stream:
    """A byte stream: a socket (ncacn_ip_tcp, impacket's pipe relay) read exactly."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


class MessageStream(Stream):
    """Samba's message-mode pipe stream: each message carries a 2-byte little-endian length."""

    def __init__(self, sock: socket.socket):
        super().__init__(sock)
        self.pending = b""

    def read(self, n: int) -> bytes:
        while len(self.pending) < n:
            size = struct.unpack("<H", super().read(MESSAGE_HEADER))[0]
            self.pending += super().read(size)
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def write(self, data: bytes) -> None:
        super().write(struct.pack("<H", len(data)) + data)


def pdu(ptype: int, call_id: int, body: bytes, auth: bytes = b"", flags: int = PFC_FIRST_LAST) -> bytes:
    """A connection-oriented PDU; ``auth`` is the sec_trailer and auth value (body padded before it)."""
    length = COMMON_HEADER + len(body) + len(auth)
    auth_len = len(auth) - SEC_TRAILER if auth else 0
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, flags, DREP_LITTLE_ENDIAN_ASCII_IEEE, length, auth_len,
                       call_id) + body + auth


def sec_trailer(level: int, pad: int, context_id: int) -> bytes:
    return struct.pack("<BBBBI", RPC_C_AUTHN_WINNT, level, pad, 0, context_id)


class Connection:
    """One client's association: binds, NTLM authentication, requests (each in one fragment, as
    the lab's clients send them)."""

    def __init__(self, stream: Stream, interfaces: set[str], secondary_address: str, peer: str):
        self.stream, self.interfaces, self.secondary_address, self.peer = stream, interfaces, secondary_address, peer
        self.contexts: dict[int, str] = {}
        self.challenge_flags = 0
        self.server_challenge = b""
        self.auth_level = 0
        self.auth_context_id = 0
        self.session: ntlm_server.ServerSession | None = None

    def serve(self) -> None:
        try:
            while True:
                header = self.stream.read(COMMON_HEADER)
                ptype, flags = header[2], header[3]
                length, auth_len, call_id = struct.unpack_from("<HHI", header, 8)
                packet = header + self.stream.read(length - COMMON_HEADER)
                if ptype in (PTYPE_BIND, PTYPE_ALTER_CONTEXT):
                    self.stream.write(self.bind(packet, ptype, auth_len, call_id))
                elif ptype == PTYPE_AUTH3:
                    self.authenticate(packet[length - auth_len:])
                elif ptype == PTYPE_REQUEST:
                    self.stream.write(self.request(packet, flags, auth_len, call_id))
        except (EOFError, ConnectionError):
            pass

    def bind(self, packet: bytes, ptype: int, auth_len: int, call_id: int) -> bytes:
        max_xmit, max_recv = struct.unpack_from("<HH", packet, COMMON_HEADER)
        count = packet[COMMON_HEADER + 8]
        offset = COMMON_HEADER + 12
        results = b""
        for _ in range(count):
            context_id, n_transfer = struct.unpack_from("<HB", packet, offset)
            abstract = str(uuidlib.UUID(bytes_le=packet[offset + 4:offset + 20]))
            transfers = [packet[offset + 24 + 20 * i:offset + 44 + 20 * i] for i in range(n_transfer)]
            offset += 24 + 20 * n_transfer
            if abstract not in self.interfaces:
                result, reason = RESULT_PROVIDER_REJECTION, REASON_ABSTRACT_SYNTAX
            elif NDR20 not in transfers:
                result, reason = RESULT_PROVIDER_REJECTION, REASON_TRANSFER_SYNTAXES
            else:
                result, reason = RESULT_ACCEPT, REASON_NONE
                self.contexts[context_id] = abstract
            results += struct.pack("<HH", result, reason) + (NDR20 if result == RESULT_ACCEPT else b"\x00" * 20)
        # bind_ack names the secondary address (the port or pipe); alter_context_resp an empty one
        secondary = (self.secondary_address + "\x00").encode() if ptype == PTYPE_BIND else b""
        body = struct.pack("<HHIH", max_xmit, max_recv, ASSOC_GROUP, len(secondary)) + secondary
        body += b"\x00" * (-(COMMON_HEADER + len(body)) % 4)       # the result list is 4-aligned
        body += struct.pack("<BBH", count, 0, 0) + results
        auth = b""
        if auth_len:
            trailer = packet[len(packet) - auth_len - SEC_TRAILER:]
            auth_type, self.auth_level, _, _, self.auth_context_id = struct.unpack_from("<BBBBI", trailer)
            negotiate = trailer[SEC_TRAILER:]
            self.server_challenge = os.urandom(8)
            answer = ntlm_server.challenge(ntlm_server.negotiate_flags(negotiate), NETBIOS_NAME, DOMAIN,
                                           self.server_challenge)
            self.challenge_flags = struct.unpack_from("<I", answer, 20)[0]
            auth = sec_trailer(self.auth_level, 0, self.auth_context_id) + answer
        reply = PTYPE_BIND_ACK if ptype == PTYPE_BIND else PTYPE_ALTER_CONTEXT_RESP
        return pdu(reply, call_id, body, auth)

    def authenticate(self, message: bytes) -> None:
        try:
            self.session = ntlm_server.ServerSession(message, self.server_challenge, self.challenge_flags, PASSWORD)
            log({"peer": self.peer, "auth3": self.session.user, "level": self.auth_level})
        except ntlm_server.AuthenticationFailed as exc:
            log({"peer": self.peer, "auth3": str(exc)})

    def request(self, packet: bytes, flags: int, auth_len: int, call_id: int) -> bytes:
        context_id, opnum = struct.unpack_from("<HH", packet, 20)
        stub_start = REQUEST_HEADER + (16 if flags & PFC_OBJECT_UUID else 0)
        record = {"peer": self.peer, "interface": self.contexts.get(context_id), "opnum": opnum}
        if auth_len and self.session is not None:
            trailer_at = len(packet) - auth_len - SEC_TRAILER
            pad = packet[trailer_at + 2]
            signature = packet[trailer_at + SEC_TRAILER:]
            if self.auth_level == AUTHN_LEVEL_PRIVACY:
                stub, valid = self.session.unseal(packet[stub_start:trailer_at], lambda plain: packet[:stub_start]
                                                  + plain + packet[trailer_at:trailer_at + SEC_TRAILER], signature)
            else:
                stub = packet[stub_start:trailer_at]
                valid = self.session.verify(packet[:trailer_at + SEC_TRAILER], signature)
            record.update(sealed=self.auth_level == AUTHN_LEVEL_PRIVACY, signature_valid=valid,
                          stub=stub[:len(stub) - pad].hex())
        else:
            record["stub"] = packet[stub_start:].hex()
        log(record)
        return self.response(call_id, context_id, OUT_PARAMETERS.get((record["interface"], opnum), b""))

    def response(self, call_id: int, context_id: int, out_parameters: bytes) -> bytes:
        stub = out_parameters + ERROR_ACCESS_DENIED
        head = struct.pack("<IHBB", len(stub), context_id, 0, 0)
        if self.session is None or self.auth_level < AUTHN_LEVEL_INTEGRITY:
            return pdu(PTYPE_RESPONSE, call_id, head + stub)
        pad = -(REQUEST_HEADER + len(stub)) % 4
        plain = stub + b"\x00" * pad
        trailer = sec_trailer(self.auth_level, pad, self.auth_context_id)
        signed = pdu(PTYPE_RESPONSE, call_id, head + plain, trailer + b"\x00" * ntlm_server.SIGNATURE_LEN)
        to_sign = signed[:-ntlm_server.SIGNATURE_LEN]
        body = self.session.seal(plain) if self.auth_level == AUTHN_LEVEL_PRIVACY else plain
        return pdu(PTYPE_RESPONSE, call_id, head + body, trailer + self.session.sign(to_sign))


def tcp_server(address: tuple[str, int], interfaces: set[str], secondary: str) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            Connection(Stream(self.request), interfaces, secondary, "%s:%d" % self.client_address[:2]).serve()

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(address, Handler)
    server.daemon_threads = True
    return server


def npa_server(path: Path, interfaces: set[str], pipe: str) -> socketserver.ThreadingUnixStreamServer:
    """smbd's forwarded pipe: answer the named-pipe-auth request, then DCE/RPC in messages."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            raw = Stream(self.request)
            try:
                length = struct.unpack(">I", raw.read(4))[0]      # [flag(NDR_BIG_ENDIAN)] length
                request = raw.read(length)
            except EOFError:
                return
            if request[:4] != NPA_MAGIC or struct.unpack_from("<I", request, 4)[0] != NPA_LEVEL:
                log({"npa": "unexpected request", "head": request[:8].hex()})
                return
            # named_pipe_auth_rep after its length: magic, level, then the union: its own uint32
            # discriminant ([switch_type(uint32)], pidl's NDR), info7 {file_type, device_state,
            # pad to 8, hyper allocation_size}, and status NT_STATUS_OK
            reply = NPA_MAGIC + struct.pack("<IIHH4xQI", NPA_LEVEL, NPA_LEVEL, FILE_TYPE_MESSAGE_MODE_PIPE,
                                            NPA_DEVICE_STATE, NPA_ALLOCATION_SIZE, 0)
            raw.write(struct.pack(">I", len(reply)) + reply)
            Connection(MessageStream(self.request), interfaces, f"\\PIPE\\{pipe}", f"npa:{pipe}").serve()

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    server.daemon_threads = True
    return server


def serve(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


# Windows serves c681d488 on lsarpc and, the same lsass endpoint, on samr, netlogon, lsass.
SMB_PIPES = {"lsarpc": EFSR_LSARPC, "samr": EFSR_LSARPC, "netlogon": EFSR_LSARPC, "lsass": EFSR_LSARPC,
             "efsrpc": EFSR_EFSRPC}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tcp-port", type=int, default=49670)
    p.add_argument("--smb", action="store_true", help="impacket's SMB server on 445 relaying the EFSR pipes")
    p.add_argument("--share", default="/tmp", help="the impacket SMB server's share")
    p.add_argument("--npa-dir", type=Path, help="serve \\PIPE\\efsrpc to Samba's smbd at DIR/np/efsrpc")
    opts = p.parse_args()
    serve(tcp_server(("0.0.0.0", opts.tcp_port), {EFSR_LSARPC, EFSR_EFSRPC, PAR}, str(opts.tcp_port)))
    if opts.npa_dir:
        serve(npa_server(opts.npa_dir / "np" / "efsrpc", {EFSR_EFSRPC}, "efsrpc"))
    if opts.smb:
        smb = SimpleSMBServer(listenAddress="0.0.0.0", listenPort=445)
        smb.setSMB2Support(True)
        smb.addShare("SHARE", opts.share)
        for pipe, iface in SMB_PIPES.items():
            server = tcp_server(("127.0.0.1", 0), {iface}, f"\\PIPE\\{pipe}")
            serve(server)
            smb.registerNamedPipe(pipe, server.server_address)
    log({"ready": True})
    if opts.smb:
        smb.start()             # serves until killed
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
