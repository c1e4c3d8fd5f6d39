"""SMB2/3 (MS-SMB2) message state for one connection: what it takes to follow named pipes.

State: the tree connects (TreeId -> path, pipe share or not), the requests waiting for their
response (MessageId -> _Pending, bounded), the pipe handles (FileId -> PipeId, in the shared
PipeTable) and, through the SessionBook, the dialect and who authenticated.

A request is remembered until its final response: an async interim response (STATUS_PENDING)
keeps it. A CREATE's FileId is only known from its response, so data a related compound
operation writes to "the file just created" is held on the CREATE's entry until then.
"""
from __future__ import annotations

import struct

from sensor.anomaly import Stats
from sensor.net.stream import FlowKey
from sensor.smb.events import EncryptedMessage, PipeData
from sensor.smb.kerberos import authentication_events
from sensor.smb.ntlmssp import NtlmAuthenticate, NtlmChallenge
from sensor.smb.pipes import is_ipc_path, looks_like_dcerpc, looks_like_pipe
from sensor.smb.protocol import SmbProtocolState
from sensor.smb.sessions import SessionBook

PROTOCOL_ID = b"\xfeSMB"
HEADER_SIZE = 64

NEGOTIATE = 0x00
SESSION_SETUP = 0x01
TREE_CONNECT = 0x03
CREATE = 0x05
CLOSE = 0x06
READ = 0x08
WRITE = 0x09
IOCTL = 0x0B
CANCEL = 0x0C

FLAGS_SERVER_TO_REDIR = 0x00000001
FLAGS_ASYNC_COMMAND = 0x00000002
FLAGS_RELATED_OPERATIONS = 0x00000004

STATUS_SUCCESS = 0x00000000
STATUS_PENDING = 0x00000103
STATUS_BUFFER_OVERFLOW = 0x80000005        # a partial pipe message read: data follows
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016   # SESSION_SETUP leg carrying the CHALLENGE

FSCTL_PIPE_TRANSCEIVE = 0x0011C017
SHARE_TYPE_PIPE = 0x02
SESSION_FLAG_ENCRYPT_DATA = 0x0004
# MS-SMB2 2.2.1: an unsolicited message (oplock break notification) has no request.
UNSOLICITED_MESSAGE_ID = 0xFFFFFFFFFFFFFFFF
# MS-SMB2 3.3.5.2.7.2: a related operation's FileId of all ones means "the previous one".
RELATED_FILE_ID = b"\xff" * 16

DIALECTS = {0x0202: "2.0.2", 0x0210: "2.1", 0x0300: "3.0", 0x0302: "3.0.2", 0x0311: "3.1.1"}
DIALECT_WILDCARD = 0x02FF   # multi-protocol negotiate answer: a real SMB2 NEGOTIATE follows

# Windows grants a connection at most 8192 credits (Smb2MaxCredits), so no more requests can
# be outstanding; entries of responses never captured are evicted oldest first.
PENDING_LIMIT = 8192
# Windows clients keep a few trees per session; a connection with more is not a client's.
TREES_LIMIT = 1024
# Windows sends compounds of at most a handful of operations; bounds the chain walk.
COMPOUND_LIMIT = 64
# Data written to a pipe in the same compound as its CREATE, held until the FileId is known.
DEFERRED_WRITES_LIMIT = 16
# What ``quick`` leaves to ``message``: authentication, tree connects and pipe transceives
# (requests); the dialect, authentication and tree types (responses). A bit per command code
# (_among): the triage tests a command with a shift, not a set lookup.
_PARSED_REQUESTS = 1 << SESSION_SETUP | 1 << TREE_CONNECT | 1 << IOCTL
_PARSED_RESPONSES = 1 << NEGOTIATE | 1 << SESSION_SETUP | 1 << TREE_CONNECT
# MS-SMB2 2.2.1: the command codes run from NEGOTIATE 0x0000 to OPLOCK_BREAK 0x0012.
COMMANDS = 0x13
# Requests that name a handle: where their FileId is in the body (MS-SMB2 2.2.15, 2.2.19,
# 2.2.21, 2.2.31), by command code, -1 for the others (_handle_at).
_HANDLE_AT = tuple({CLOSE: 8, READ: 16, WRITE: 16, IOCTL: 8}.get(command, -1) for command in range(COMMANDS))

_header = struct.Struct("<4sHHIHHIIQIIQ")   # through SessionId; Signature follows
_u8 = struct.Struct("<B")
_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")
_u16u16 = struct.Struct("<HH")
_u16u32 = struct.Struct("<HI")
_u32u32 = struct.Struct("<II")
_B = HEADER_SIZE   # bodies start right after the header; offsets below are from it
# (HEADER_SIZE, CLOSE, CANCEL, the two FLAGS_, three STATUS_, PENDING_LIMIT, _B,
# UNSOLICITED_MESSAGE_ID, RELATED_FILE_ID, _PARSED_REQUESTS, _PARSED_RESPONSES, COMMANDS and
# _HANDLE_AT are C variables in the compiled core, smb2.pxd: the triage reads them per
# message; no other module imports them.)


class _Pending:
    """A request awaiting its response (made by ``_new_pending``)."""

    __slots__ = ("command", "session_id", "tree_id", "file_id", "via", "auth", "path",
                 "raw_name", "is_pipe", "deferred", "transceive")

    @property
    def name(self) -> str:
        """Read only when the name decides something (a pipe open, a missed tree connect):
        most CREATEs on a file server are on trees known as disk shares."""
        return self.raw_name.decode("utf-16-le", errors="replace")


def _new_pending(command: int, session_id: int, tree_id: int) -> _Pending:
    """A new request's entry. A function rather than ``_Pending.__init__``: the compiled core
    makes the entry from its free list and sets its C fields, without a Python-level call
    (one per request on the triage's path)."""
    entry = _Pending.__new__(_Pending)
    entry.command = command
    entry.session_id = session_id
    entry.tree_id = tree_id
    entry.file_id = None          # bytes, once known
    entry.via = None              # the CREATE of this compound (a _Pending), for FileId all ones
    entry.auth = None             # a SESSION_SETUP's NtlmAuthenticate
    entry.path = ""
    entry.raw_name = b""          # a CREATE's UTF-16LE name, decoded only if needed
    entry.is_pipe = False
    entry.deferred = None         # writes of the same compound held until the FileId is known (a list, made at the first)
    entry.transceive = False
    return entry


class Smb2Protocol(SmbProtocolState):
    LAYER = "smb2"

    def __init__(self, flow: FlowKey, stats: Stats, sessions: SessionBook) -> None:
        super().__init__(flow, stats, sessions)
        self._pending: dict[int, _Pending] = {}
        self._trees: dict[tuple[int, int], tuple[str, bool]] = {}   # -> (path, is pipe share)
        self.smb1: SmbProtocolState | None = None     # the connection's SMB1 state, once made

    def connection_held(self) -> int:
        """``held()`` of the whole connection, SMB1 state included (read per segment for the
        flow memory budget: one C call in the compiled core)."""
        return self.held() if self.smb1 is None else self.held() + self.smb1.held()

    # -- framing decisions -------------------------------------------------------------
    def wants_whole(self, prefix: bytes) -> bool:
        """Is this large message pipe I/O (buffer it) rather than bulk file I/O (skip it)?"""
        if len(prefix) < HEADER_SIZE + 32:
            return False
        (_m, _s, _c, _st, command, _cr, flags, _n, message_id, _r, _t, _sid) = _header.unpack_from(prefix)
        if flags & FLAGS_SERVER_TO_REDIR:
            entry = self._pending.get(message_id)
            return entry is not None and command in (READ, IOCTL) and self._pipe_of(entry) is not None
        if command == WRITE:
            return self.pipes.known(bytes(prefix[_B + 16:_B + 32]))
        if command == IOCTL:
            return self.pipes.known(bytes(prefix[_B + 8:_B + 24]))
        return False

    # -- messages ------------------------------------------------------------------------
    def message(self, ts: float, frame: int, data: bytes, truncated: bool) -> list:
        """One SMB2 message (a compound chain); ``truncated``: only its start is here."""
        events: list = []
        mv = memoryview(data)
        offset = 0
        session_id = tree_id = 0
        file_id: bytes | None = None
        create: _Pending | None = None
        for _ in range(COMPOUND_LIMIT):
            if offset + HEADER_SIZE > len(mv):
                if not truncated:
                    events.append(self._bad(ts, f"header cut at {offset}"))
                return events
            (magic, size, _charge, status, command, _credit, flags, next_command, message_id,
             _reserved, tid, sid) = _header.unpack_from(mv, offset)
            if magic != PROTOCOL_ID or size != HEADER_SIZE:
                events.append(self._bad(ts, f"bad header at {offset}"))
                return events
            end = offset + next_command if next_command else len(mv)
            if next_command and (next_command < HEADER_SIZE or next_command % 8 or end > len(mv)):
                if not (truncated and next_command >= HEADER_SIZE and next_command % 8 == 0):
                    events.append(self._bad(ts, f"NextCommand {next_command}"))
                    next_command = 0
                    end = len(mv)
            op = mv[offset:end]
            self.stats["smb2_operations"] += 1
            if flags & FLAGS_SERVER_TO_REDIR:
                self._response(ts, frame, op, command, status, flags, message_id, sid, tid,
                               truncated, events)
            else:
                if flags & FLAGS_RELATED_OPERATIONS and offset:
                    # MS-SMB2 3.3.5.2.7.2: related operations use the previous operation's
                    # SessionId and TreeId (and FileId, when theirs is all ones).
                    sid, tid = session_id, tree_id
                session_id, tree_id = sid, tid
                file_id, create = self._request(ts, frame, op, command, message_id, sid, tid,
                                                file_id, create, truncated, events)
            if not next_command:
                return events
            offset += next_command
        events.append(self.stats.anomaly(ts, "smb2", "smb2_compound_loop", self.flow,
                                         f"more than {COMPOUND_LIMIT} operations"))
        return events

    def encrypted(self, ts: float, frame: int, from_client: bool, data: bytes, wire_size: int) -> list:
        """MS-SMB2 2.2.41 TRANSFORM_HEADER: OriginalMessageSize at 36, SessionId at 44."""
        if len(data) < 52:
            return [self._bad(ts, "short transform header")]
        original_size = _u32.unpack_from(data, 36)[0]
        session_id = struct.unpack_from("<Q", data, 44)[0]
        self.stats["smb2_encrypted_messages"] += 1
        events: list = [EncryptedMessage(self.flow, ts, frame, from_client, session_id,
                                         original_size, wire_size)]
        events += self.sessions.encrypted(ts, session_id)
        return events

    # -- header triage (the SMB fast path) ----------------------------------------------------
    def quick(self, ts: float, frame: int, buf, at: int, length: int) -> tuple | None:
        """One whole SMB2 message at ``buf[at:at + length]`` (in a frame's bytes or the
        capture's mapped window, read in place) that is one operation whose whole effect its
        header and FileId decide: what ``message`` would do with it, without building a view
        or reading its body. Returns ``()`` (it produced no event), or None, with nothing
        changed, for ``message`` to parse.

        Taken: requests other than SESSION_SETUP, TREE_CONNECT and IOCTL (a WRITE only to a
        handle that is no pipe or candidate, with data that does not start a DCE/RPC PDU,
        which would adopt it as a pipe); responses other than NEGOTIATE, SESSION_SETUP,
        TREE_CONNECT and async interims, to a remembered request, that touch no pipe (a CREATE
        only on a tree known as a disk share). Every bound ``message`` would find broken is
        left to it, so it reports the anomaly."""
        # The header (MS-SMB2 2.2.1), field by field: ProtocolId, StructureSize, Status,
        # Command, Flags, NextCommand, MessageId, TreeId, SessionId.
        if (buf[at] != 0xFE or buf[at + 1] != 0x53 or buf[at + 2] != 0x4D or buf[at + 3] != 0x42
                or le16(buf, at + 4) != HEADER_SIZE or le32(buf, at + 20)):
            return None
        status = le32(buf, at + 8)
        command = le16(buf, at + 12)
        flags = le32(buf, at + 16)
        message_id = le64(buf, at + 24)
        body = at + _B
        pending = self._pending
        if flags & FLAGS_SERVER_TO_REDIR:
            if _among(_PARSED_RESPONSES, command):
                return None
            if message_id != UNSOLICITED_MESSAGE_ID:
                if flags & FLAGS_ASYNC_COMMAND and status == STATUS_PENDING:
                    return None
                key = message_id      # the dict key, boxed once
                entry = pending.get(key)
                if entry is None:
                    return None
                if command == CLOSE:
                    handle = entry.file_id if entry.file_id else (entry.via.file_id if entry.via else None)
                    if handle is not None and not self.pipes.unknown(handle):
                        return None
                elif _carries_body(command, status):
                    if command == CREATE:
                        tree = self._trees.get((entry.session_id, entry.tree_id))
                        if not tree or tree[1] or length < _B + 80:
                            return None
                        entry.path, entry.is_pipe = tree
                        entry.file_id = buf[body + 64:body + 80]
                    elif command == READ:
                        if length < _B + 8 or self._pipe_of(entry) is not None:
                            return None
                    elif command == IOCTL and entry.transceive:
                        return None
                del pending[key]
        elif command != CANCEL:
            if _among(_PARSED_REQUESTS, command) or (len(pending) >= PENDING_LIMIT and message_id not in pending):
                return None
            tid = le32(buf, at + 36)
            sid = le64(buf, at + 40)
            entry = _new_pending(command, sid, tid)
            handle_at = _handle_at(command)
            if command == CREATE:
                if length < _B + 48:
                    return None
                name_at = at + le16(buf, body + 44)
                end = at + length
                entry.raw_name = buf[min(name_at, end):min(name_at + le16(buf, body + 46), end)]
                tree = self._trees.get((sid, tid))
                if tree:
                    entry.path, entry.is_pipe = tree
            elif handle_at >= 0:
                fid_at = body + handle_at
                if length < fid_at + 16 - at:
                    return None
                fid = buf[fid_at:fid_at + 16]
                if fid == RELATED_FILE_ID:
                    return None
                if command == WRITE:
                    # the data's offset and length (MS-SMB2 2.2.21); a PDU header is 16 bytes
                    write_at = at + le16(buf, body + 2)
                    write_length = le32(buf, body + 4)
                    if write_length and (write_at + write_length > at + length or not self.pipes.unknown(fid)
                                         or looks_like_dcerpc(buf[write_at:write_at + min(write_length, 16)])):
                        return None
                entry.file_id = fid
            pending[message_id] = entry
        return ()      # one operation (the fast path counts it in smb2_operations)

    def quick_whole(self, ts: float, frame: int, data: bytes) -> bool:
        """``quick`` for one whole message the NetBIOS stage reassembled from segments (a 1-8
        KB READ or WRITE, mostly): True if it took it (counted in smb2_operations, as
        ``message`` counts it), else False, with nothing changed, for ``message`` to parse."""
        if self.quick(ts, frame, data, 0, len(data)) is None:
            return False
        self.stats["smb2_operations"] += 1
        return True

    # -- requests --------------------------------------------------------------------------
    def _request(self, ts, frame, op, command, message_id, sid, tid, file_id, create,
                 truncated, events) -> tuple[bytes | None, _Pending | None]:
        """Remember the request; returns the chain's (FileId, pending CREATE) for the next."""
        if command == CANCEL:
            return file_id, create
        entry = _new_pending(command, sid, tid)
        if len(self._pending) >= PENDING_LIMIT and message_id not in self._pending:
            del self._pending[next(iter(self._pending))]
            events.append(self.stats.anomaly(ts, "smb2", "smb2_pending_table_full", self.flow))
        self._pending[message_id] = entry
        if command == SESSION_SETUP and not truncated:
            offset, length = _u16u16.unpack_from(op, _B + 12)
            message = self._ntlmssp(ts, op[offset:offset + length], events)
            if isinstance(message, NtlmAuthenticate):
                entry.auth = message
                events.append(self.sessions.authenticating(ts, frame, "smb2", message))
            elif message is None:       # a Kerberos AP-REQ instead (its service names the server)
                events += authentication_events(self.flow, ts, frame, "smb2", op[offset:offset + length], self.stats)
        elif command == TREE_CONNECT and not truncated:
            offset, length = _u16u16.unpack_from(op, _B + 4)
            entry.path = _utf16(op[offset:offset + length])
        elif command == CREATE and not truncated:
            offset, length = _u16u16.unpack_from(op, _B + 44)
            entry.raw_name = bytes(op[offset:offset + length])
            tree = self._trees.get((sid, tid))
            if tree:   # else decided at the response, when the tree connect may have been answered
                entry.path, entry.is_pipe = tree
            return None, entry
        elif _handle_at(command) >= 0:
            at = _handle_at(command)
            fid = bytes(op[_B + at:_B + at + 16])
            if fid == RELATED_FILE_ID:
                entry.file_id, entry.via = file_id, (None if file_id else create)
            else:
                entry.file_id, create = fid, None
            if not truncated:
                self._client_data(ts, frame, op, command, entry, events)
            return entry.file_id, create
        return file_id, create

    def _client_data(self, ts, frame, op, command, entry, events) -> None:
        if command == WRITE:
            offset, length = _u16u32.unpack_from(op, _B + 2)
        elif command == IOCTL:
            entry.transceive = _u32.unpack_from(op, _B + 4)[0] == FSCTL_PIPE_TRANSCEIVE
            if not entry.transceive:
                return
            offset, length = _u32u32.unpack_from(op, _B + 24)
        else:
            return
        if not length:
            return
        data = bytes(op[offset:offset + length])
        if len(data) != length:
            events.append(self._bad(ts, f"data runs past the message (command {command})"))
            return
        pipe = self._pipe_of(entry)
        if pipe is None and entry.file_id is not None:
            pipe, opened = self.pipes.adopt(ts, frame, entry.file_id,
                                            (2, entry.session_id, entry.tree_id, entry.file_id), data)
            events += opened
        if pipe is not None:
            events.append(PipeData(self.flow, ts, frame, pipe, True, data))
        elif entry.via is not None and entry.via.is_pipe:
            if entry.via.deferred is None:
                entry.via.deferred = []
            if len(entry.via.deferred) < DEFERRED_WRITES_LIMIT:
                entry.via.deferred.append((ts, frame, data))
            else:
                events.append(self.stats.anomaly(ts, "smb2", "smb2_deferred_writes_full", self.flow))

    # -- responses -------------------------------------------------------------------------
    def _response(self, ts, frame, op, command, status, flags, message_id, sid, tid,
                  truncated, events) -> None:
        if command == NEGOTIATE and status == STATUS_SUCCESS and not truncated:
            # Also the answer to an SMB1 multi-protocol NEGOTIATE, which has no SMB2 request.
            self._pending.pop(message_id, None)
            dialect = _u16.unpack_from(op, _B + 4)[0]
            if dialect != DIALECT_WILDCARD:
                self.sessions.dialect = dialect_name(dialect)
            return
        if message_id == UNSOLICITED_MESSAGE_ID:
            return
        if status == STATUS_PENDING and flags & FLAGS_ASYNC_COMMAND:
            # MS-SMB2 3.3.4.2: interim response; the final one comes with the same MessageId.
            self.stats["smb2_async_interim"] += 1
            return
        entry = self._pending.pop(message_id, None)
        if entry is None:
            events.append(self.stats.anomaly(ts, "smb2", "smb2_unmatched_response", self.flow,
                                             f"MessageId {message_id} command {command}"))
            return
        if command == CLOSE:
            pipe_handle = entry.file_id if entry.file_id else (entry.via.file_id if entry.via else None)
            if pipe_handle is not None:
                events += self.pipes.close(ts, pipe_handle)
            return
        if truncated or not _carries_body(command, status):
            return
        if command == SESSION_SETUP:
            session_flags, offset, length = struct.unpack_from("<HHH", op, _B + 2)
            if status == STATUS_MORE_PROCESSING_REQUIRED:
                message = self._ntlmssp(ts, op[offset:offset + length], events)
                if isinstance(message, NtlmChallenge):
                    self.sessions.challenge = message
            else:
                events += self.sessions.authenticated(ts, sid, entry.auth)
                if session_flags & SESSION_FLAG_ENCRYPT_DATA:
                    events += self.sessions.encrypted(ts, sid)
        elif command == TREE_CONNECT:
            share_type = _u8.unpack_from(op, _B + 2)[0]
            if len(self._trees) < TREES_LIMIT:
                self._trees[(sid, tid)] = (entry.path, share_type == SHARE_TYPE_PIPE or is_ipc_path(entry.path))
            else:
                events.append(self.stats.anomaly(ts, "smb2", "smb2_tree_table_full", self.flow))
        elif command == CREATE:
            tree = self._trees.get((entry.session_id, entry.tree_id))
            if tree:
                entry.path, entry.is_pipe = tree
            elif not looks_like_pipe(entry.name):
                return
            fid = bytes(op[_B + 64:_B + 80])
            if len(fid) != 16:
                events.append(self._bad(ts, "short CREATE response"))
                return
            entry.file_id = fid
            if not tree:   # tree connect missed: a pipe only if its first write is DCE/RPC
                self.pipes.candidate(fid, entry.name, entry.path)
                return
            if not entry.is_pipe:
                return
            opened = self.pipes.open(ts, frame, fid, (2, entry.session_id, entry.tree_id, fid),
                                     entry.name, entry.path)
            events += opened
            pipe = self.pipes.get(fid)
            if pipe is not None and entry.deferred is not None:
                for d_ts, d_frame, data in entry.deferred:
                    events.append(PipeData(self.flow, d_ts, d_frame, pipe, True, data))
        elif command == READ:
            offset = _u8.unpack_from(op, _B + 2)[0]
            length = _u32.unpack_from(op, _B + 4)[0]
            self._server_data(ts, frame, self._pipe_of(entry), op, offset, length, events)
        elif command == IOCTL and entry.transceive:
            offset, length = _u32u32.unpack_from(op, _B + 32)
            self._server_data(ts, frame, self._pipe_of(entry), op, offset, length, events)

    # -- helpers ---------------------------------------------------------------------------
    def _pipe_of(self, entry: _Pending):
        if entry.file_id is not None:
            return self.pipes.get(entry.file_id)
        if entry.via is not None and entry.via.file_id is not None:
            return self.pipes.get(entry.via.file_id)
        return None



def le16(buf, at: int) -> int:
    """The little-endian 16-bit unsigned integer at ``buf[at:at + 2]`` (SMB2 is little-endian)."""
    return buf[at] | buf[at + 1] << 8


def le32(buf, at: int) -> int:
    """... 32-bit, one byte at a time so that the compiled core adds in a 64-bit C integer."""
    value = buf[at + 3]
    value = value << 8 | buf[at + 2]
    value = value << 8 | buf[at + 1]
    return value << 8 | buf[at]


def le64(buf, at: int) -> int:
    """... 64-bit (MessageId, SessionId)."""
    return le32(buf, at + 4) << 32 | le32(buf, at)


def _among(commands: int, command: int) -> bool:
    """Is ``command`` in ``commands`` (a bit per command code)?"""
    return command < 64 and (commands >> command & 1) == 1


def _handle_at(command: int) -> int:
    """Where a request's FileId is in its body, -1 if it names none (or is no command)."""
    return _HANDLE_AT[command] if command < COMMANDS else -1


def _carries_body(command: int, status: int) -> bool:
    """MS-SMB2 3.3.4.4: an error response has the 9-byte ERROR body, except these cases."""
    if status == STATUS_SUCCESS:
        return True
    if status == STATUS_BUFFER_OVERFLOW:
        return command in (READ, IOCTL)
    return status == STATUS_MORE_PROCESSING_REQUIRED and command == SESSION_SETUP


def _utf16(raw: bytes | memoryview) -> str:
    return bytes(raw).decode("utf-16-le", errors="replace")


def dialect_name(dialect: int) -> str:
    """A negotiated DialectRevision as SmbSession.dialect writes it ("2.1"; unknown ones in hex)."""
    return DIALECTS.get(dialect, f"0x{dialect:04x}")
