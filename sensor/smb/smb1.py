"""SMB1 (MS-CIFS, MS-SMB) message state for one connection: what it takes to follow named pipes.

State: trees (TID -> path, IPC share or not), requests waiting for their response (keyed by
MID and PID: TID and UID are assigned by the very responses of TREE_CONNECT and
SESSION_SETUP, so they cannot be part of the key), and pipe handles per FID in the shared
PipeTable. Unlike Zeek, each FID is its own pipe: PipeId = (1, UID, TID, FID).
"""
from __future__ import annotations

import struct

from sensor.anomaly import Stats
from sensor.net.stream import FlowKey
from sensor.smb.events import PipeData
from sensor.smb.kerberos import authentication_events
from sensor.smb.ntlmssp import NTLMV1_RESPONSE_LENGTH, NtlmAuthenticate, NtlmChallenge
from sensor.smb.pipes import is_ipc_path, looks_like_pipe
from sensor.smb.protocol import SmbProtocolState
from sensor.smb.sessions import SessionBook

PROTOCOL_ID = b"\xffSMB"
HEADER_SIZE = 32

CLOSE = 0x04
TRANSACTION = 0x25
TRANSACTION_SECONDARY = 0x26   # more of a TRANSACTION's data; never answered (MS-CIFS 2.2.4.34)
READ_ANDX = 0x2E
WRITE_ANDX = 0x2F
NEGOTIATE = 0x72
SESSION_SETUP_ANDX = 0x73
TREE_CONNECT_ANDX = 0x75
NT_CREATE_ANDX = 0xA2
TRANSACTIONS = frozenset({TRANSACTION, 0x32, 0xA0})   # TRANS, TRANS2, NT_TRANSACT
# Commands whose parameter words start with AndXCommand, AndXReserved, AndXOffset.
ANDX_COMMANDS = frozenset({0x24, READ_ANDX, WRITE_ANDX, SESSION_SETUP_ANDX, 0x74,
                           TREE_CONNECT_ANDX, NT_CREATE_ANDX})
ANDX_NONE = 0xFF
# MS-CIFS 2.2.3.1: a batch chains a few commands; more hops than this is a crafted loop.
ANDX_LIMIT = 16

FLAGS_REPLY = 0x80
FLAGS2_UNICODE = 0x8000
STATUS_SUCCESS = 0x00000000
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
TRANS_TRANSACT_NMPIPE = 0x0026
TRANS_SECONDARY_WORDS = 8      # MS-CIFS 2.2.4.34.1: WordCount of TRANSACTION_SECONDARY
# Samba reply_pipe_write_and_X: with both "raw mode" and "message start" set in WriteMode
# the data is preceded by a 2-byte length of the pipe message.
WRITEMODE_RAW = 0x0004
WRITEMODE_MSG_START = 0x0008
# Same bound as SMB2's: MaxMpxCount is 50 on Windows, far below.
PENDING_LIMIT = 8192
TREES_LIMIT = 1024

_header = struct.Struct("<4sBIBHH8sHHHHH")
_u16 = struct.Struct("<H")
_write_andx = struct.Struct("<HIIHHHHH")   # FID Offset Timeout WriteMode Remaining LenHigh Len DataOffset
_read_andx_resp = struct.Struct("<HHHHHH")  # Available Compaction Reserved DataLength DataOffset LenHigh


class _Pending:
    __slots__ = ("auth", "path", "name", "read_fid", "trans_fid")

    def __init__(self) -> None:
        self.auth: NtlmAuthenticate | None = None
        self.path = ""
        self.name = ""
        self.read_fid: int | None = None
        self.trans_fid: int | None = None


class Smb1Protocol(SmbProtocolState):
    LAYER = "smb1"

    def __init__(self, flow: FlowKey, stats: Stats, sessions: SessionBook) -> None:
        super().__init__(flow, stats, sessions)
        self._pending: dict[tuple[int, int, int], _Pending] = {}
        self._trees: dict[int, tuple[str, bool]] = {}

    def wants_whole(self, prefix: bytes) -> bool:
        """Is this large message pipe I/O (buffer it) rather than bulk file I/O (skip it)?"""
        if len(prefix) < HEADER_SIZE + 1 + 2 * 12:
            return False
        (_m, command, _st, flags, _f2, pid_high, _sec, _r, _tid, pid_low, _uid, mid) = _header.unpack_from(prefix)
        if command in (TRANSACTION, TRANSACTION_SECONDARY):
            return True
        if flags & FLAGS_REPLY:
            entry = self._pending.get((mid, (pid_high << 16) | pid_low, command))
            return (command == READ_ANDX and entry is not None and entry.read_fid is not None
                    and self.pipes.get(entry.read_fid) is not None)
        if command == WRITE_ANDX:
            return self.pipes.known(_u16.unpack_from(prefix, HEADER_SIZE + 1 + 4)[0])
        return False

    def message(self, ts: float, frame: int, data: bytes, truncated: bool) -> list:
        events: list = []
        if len(data) < HEADER_SIZE + 3:
            return [self._bad(ts, "short message")]
        (_m, command, status, flags, flags2, pid_high, _sec, _r, tid, pid_low, uid, mid) = _header.unpack_from(data)
        # MS-CIFS 3.2.4.1.3 wants MIDs unique among outstanding requests, but clients (and
        # exploits: suricata-verify smb-filename) reuse MID 0 for several at once; a response
        # carries its request's command, so the command is part of the key.
        key = (mid, (pid_high << 16) | pid_low, command)
        unicode = bool(flags2 & FLAGS2_UNICODE)
        self.stats["smb1_messages"] += 1
        if flags & FLAGS_REPLY:
            if command == NEGOTIATE:
                self._pending.pop(key, None)
                if status == STATUS_SUCCESS:
                    self.sessions.dialect = "SMB1"
                return events
            # A transaction's response may come in several parts (MS-CIFS 3.3.4.1.2), all
            # with the request's MID: its entry stays until the MID is reused or evicted.
            entry = self._pending.get(key) if command in TRANSACTIONS else self._pending.pop(key, None)
            if entry is None:
                events.append(self.stats.anomaly(ts, "smb1", "smb1_unmatched_response", self.flow,
                                                 f"MID {mid} command 0x{command:02x}"))
                return events
        elif command == TRANSACTION_SECONDARY:
            if not truncated:
                self._trans_secondary(ts, frame, data, (mid, key[1], TRANSACTION), events)
            return events
        else:
            entry = _Pending()
            if len(self._pending) >= PENDING_LIMIT and key not in self._pending:
                del self._pending[next(iter(self._pending))]
                events.append(self.stats.anomaly(ts, "smb1", "smb1_pending_table_full", self.flow))
            self._pending[key] = entry
        if truncated:
            return events
        mv = memoryview(data)
        offset = HEADER_SIZE
        for _ in range(ANDX_LIMIT):
            word_count = mv[offset]
            words = mv[offset + 1:offset + 1 + 2 * word_count]
            if len(words) != 2 * word_count or offset + 3 + 2 * word_count > len(mv):
                events.append(self._bad(ts, f"block cut at {offset}"))
                return events
            byte_count = _u16.unpack_from(mv, offset + 1 + 2 * word_count)[0]
            at = offset + 3 + 2 * word_count
            block = (command, words, at, mv[at:at + byte_count])
            if flags & FLAGS_REPLY:
                self._response(ts, frame, mv, block, status, tid, uid, entry, events)
            else:
                self._request(ts, frame, mv, block, tid, uid, unicode, entry, events)
            if command not in ANDX_COMMANDS or word_count < 2 or words[0] == ANDX_NONE:
                return events
            next_offset = _u16.unpack_from(words, 2)[0]
            if next_offset <= offset or next_offset >= len(mv):
                events.append(self.stats.anomaly(ts, "smb1", "smb1_andx_loop", self.flow,
                                                 f"AndXOffset {next_offset} after {offset}"))
                return events
            command, offset = words[0], next_offset
        events.append(self.stats.anomaly(ts, "smb1", "smb1_andx_loop", self.flow,
                                         f"more than {ANDX_LIMIT} AndX hops"))
        return events

    # -- requests --------------------------------------------------------------------------
    def _request(self, ts, frame, mv, block, tid, uid, unicode, entry, events) -> None:
        command, words, at, data = block
        wc = len(words) // 2
        if command == SESSION_SETUP_ANDX and wc == 12:
            length = _u16.unpack_from(words, 14)[0]
            message = self._ntlmssp(ts, data[:length], events)
            if isinstance(message, NtlmAuthenticate):
                entry.auth = message
                events.append(self.sessions.authenticating(ts, frame, "smb1", message))
            elif message is None:       # a Kerberos AP-REQ instead (its service names the server)
                events += authentication_events(self.flow, ts, frame, "smb1", data[:length], self.stats)
        elif command == SESSION_SETUP_ANDX and wc == 13:
            entry.auth = _clear_text_logon(words, at, data, unicode)
        elif command == TREE_CONNECT_ANDX and wc == 4:
            password_length = _u16.unpack_from(words, 6)[0]
            entry.path, _ = _string(data, password_length, at, unicode)
        elif command == NT_CREATE_ANDX and wc == 24:
            entry.name, _ = _string(data, 0, at, unicode)
        elif command == WRITE_ANDX and wc in (12, 14):
            fid, _o, _t, mode, _rem, _high, length, offset = _write_andx.unpack_from(words, 4)
            pipe = self.pipes.get(fid)
            payload = bytes(mv[offset:offset + length])
            if mode & (WRITEMODE_RAW | WRITEMODE_MSG_START) == WRITEMODE_RAW | WRITEMODE_MSG_START:
                payload = payload[2:]
            if pipe is None:
                pipe, opened = self.pipes.adopt(ts, frame, fid, (1, uid, tid, fid), payload)
                events += opened
            if pipe is not None and payload:
                events.append(PipeData(self.flow, ts, frame, pipe, True, payload))
        elif command == READ_ANDX and wc in (10, 12):
            entry.read_fid = _u16.unpack_from(words, 4)[0]
        elif command == TRANSACTION and wc >= 16:
            setup_count = words[26]
            if setup_count < 2 or _u16.unpack_from(words, 28)[0] != TRANS_TRANSACT_NMPIPE:
                return
            entry.trans_fid = fid = _u16.unpack_from(words, 30)[0]
            count, offset = struct.unpack_from("<HH", words, 22)
            payload = bytes(mv[offset:offset + count])
            pipe = self.pipes.get(fid)
            if pipe is None:
                pipe, opened = self.pipes.adopt(ts, frame, fid, (1, uid, tid, fid), payload)
                events += opened
            if pipe is not None and payload:
                events.append(PipeData(self.flow, ts, frame, pipe, True, payload))
        elif command == CLOSE and wc >= 1:
            events += self.pipes.close(ts, _u16.unpack_from(words, 0)[0])

    def _trans_secondary(self, ts, frame, data, primary_key, events) -> None:
        """MS-CIFS 2.2.4.34.1: the rest of a TransactNmPipe write that did not fit its primary
        request (TotalDataCount > DataCount), sent in order under the primary's MID."""
        primary = self._pending.get(primary_key)
        words_at = HEADER_SIZE + 1
        if primary is None or primary.trans_fid is None or data[HEADER_SIZE] != TRANS_SECONDARY_WORDS:
            return
        count, offset = struct.unpack_from("<HH", data, words_at + 10)
        payload = bytes(data[offset:offset + count])
        pipe = self.pipes.get(primary.trans_fid)
        if len(payload) != count:
            events.append(self._bad(ts, "TRANS secondary data runs past the message"))
        elif pipe is not None and payload:
            events.append(PipeData(self.flow, ts, frame, pipe, True, payload))

    # -- responses -------------------------------------------------------------------------
    def _response(self, ts, frame, mv, block, status, tid, uid, entry, events) -> None:
        command, words, at, data = block
        wc = len(words) // 2
        if command == SESSION_SETUP_ANDX:
            if status == STATUS_MORE_PROCESSING_REQUIRED and wc == 4:
                length = _u16.unpack_from(words, 6)[0]
                message = self._ntlmssp(ts, data[:length], events)
                if isinstance(message, NtlmChallenge):
                    self.sessions.challenge = message
            elif status == STATUS_SUCCESS and wc in (3, 4):
                events += self.sessions.authenticated(ts, uid, entry.auth)
            return
        if status not in (STATUS_SUCCESS, STATUS_BUFFER_OVERFLOW) or not wc:
            return
        if command == TREE_CONNECT_ANDX and status == STATUS_SUCCESS:
            service = bytes(data).split(b"\x00", 1)[0]
            if len(self._trees) < TREES_LIMIT:
                self._trees[tid] = (entry.path, service == b"IPC" or is_ipc_path(entry.path))
            else:
                events.append(self.stats.anomaly(ts, "smb1", "smb1_tree_table_full", self.flow))
        elif command == NT_CREATE_ANDX and wc >= 34:
            fid = _u16.unpack_from(words, 5)[0]
            tree = self._trees.get(tid)
            if tree is None:   # tree connect missed: a pipe only if its first write is DCE/RPC
                if looks_like_pipe(entry.name):
                    self.pipes.candidate(fid, entry.name, "")
            elif tree[1]:
                events += self.pipes.open(ts, frame, fid, (1, uid, tid, fid), entry.name, tree[0])
        elif command == READ_ANDX and entry.read_fid is not None and wc >= 12:
            _a, _c, _r, length, offset, _high = _read_andx_resp.unpack_from(words, 4)
            self._server_data(ts, frame, self.pipes.get(entry.read_fid), mv, offset, length, events)
        elif command == TRANSACTION and entry.trans_fid is not None and wc >= 10:
            count, offset = struct.unpack_from("<HH", words, 12)
            self._server_data(ts, frame, self.pipes.get(entry.trans_fid), mv, offset, count, events)




def _clear_text_logon(words, at: int, data: memoryview, unicode: bool) -> NtlmAuthenticate:
    """MS-CIFS 2.2.4.53.1, the non-extended form: passwords, then AccountName, PrimaryDomain.
    A 24-byte case-sensitive password is an NTLMv1 response, a longer one NTLMv2."""
    oem_length, unicode_length = struct.unpack_from("<HH", words, 14)
    user, pos = _string(data, oem_length + unicode_length, at, unicode)
    domain, _ = _string(data, pos, at, unicode)
    if unicode_length == NTLMV1_RESPONSE_LENGTH:
        version = "NTLMv1"
    elif unicode_length > NTLMV1_RESPONSE_LENGTH:
        version = "NTLMv2"
    else:
        version = ""
    return NtlmAuthenticate(0, user, domain, "", version)


def _string(data: memoryview, pos: int, base: int, unicode: bool) -> tuple[str, int]:
    """The NUL-terminated string at ``pos`` of the bytes block and the position after it.

    MS-CIFS 2.2.3.1: unicode strings are aligned to 2 bytes from the start of the header;
    the block starts at ``base`` bytes from it."""
    raw = bytes(data)
    if not unicode:
        end = raw.find(b"\x00", pos)
        end = len(raw) if end < 0 else end
        return raw[pos:end].decode("latin-1"), end + 1
    if (base + pos) % 2:
        pos += 1
    end = pos
    while end + 1 < len(raw) and raw[end:end + 2] != b"\x00\x00":
        end += 2
    return raw[pos:end].decode("utf-16-le", errors="replace"), end + 2
