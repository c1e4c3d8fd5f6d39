"""Which handles of one SMB connection are named pipes, and how pipe names are written.

PipeTable maps a protocol's handle (SMB2 FileId bytes, SMB1 FID) to its PipeId and emits
PipeOpened / PipeClosed, bounded by PIPES_LIMIT. The name helpers are shared with the tshark
engine, so both engines name and recognise pipes alike.
"""
from __future__ import annotations

from sensor.anomaly import Anomaly, Stats
from sensor.dcerpc import pdu
from sensor.net.stream import FlowKey
from sensor.smb.events import PipeClosed, PipeId, PipeOpened

# Windows servers default to 16384 opens per session, but a client keeps a handful of
# pipes open; 256 covers the worst real client seen (20-fids) many times over.
PIPES_LIMIT = 256


class PipeTable:
    def __init__(self, flow: FlowKey, stats: Stats) -> None:
        self.flow = flow
        self.stats = stats
        self._pipes: dict[bytes | int, PipeId] = {}
        # Opens of a pipe-like name on a tree whose connect was missed: handle -> (name, tree).
        # A disk file may have such a name too, so it becomes a pipe only if its first write
        # carries DCE/RPC (see adopt); until then its I/O is not pipe I/O. None: its first
        # write did not, it is a file for the rest of its life.
        self._candidates: dict[bytes | int, tuple[str, str] | None] = {}

    def get(self, handle: bytes | int) -> PipeId | None:
        return self._pipes.get(handle)

    def known(self, handle: bytes | int) -> bool:
        """A pipe, or a candidate whose first write decides (framing keeps its I/O whole)."""
        return handle in self._pipes or self._candidates.get(handle) is not None

    def candidate(self, handle: bytes | int, name: str, tree: str) -> None:
        """An open whose name looks like a pipe's on a tree whose connect was not captured."""
        if handle in self._candidates or len(self._candidates) < PIPES_LIMIT:
            self._candidates[handle] = (name, tree)
            self.stats["smb_pipe_candidates"] += 1

    def open(self, ts: float, frame: int, handle: bytes | int, pipe: PipeId, name: str,
             tree: str) -> list[PipeOpened | Anomaly]:
        events: list = []
        if handle not in self._pipes and len(self._pipes) >= PIPES_LIMIT:
            # Evict the oldest rather than refuse the new one: else an attacker opens
            # PIPES_LIMIT pipes it never closes and the pipe it then abuses goes unseen.
            evicted_handle = next(iter(self._pipes))
            events.append(self.stats.anomaly(ts, "smb", "pipe_table_full", self.flow, name))
            events.extend(self.close(ts, evicted_handle))
        self._pipes[handle] = pipe
        self.stats["smb_pipes_opened"] += 1
        events.append(PipeOpened(self.flow, ts, frame, pipe, normalise_pipe_name(name), tree))
        return events

    def adopt(self, ts: float, frame: int, handle: bytes | int, pipe: PipeId,
              data: bytes) -> tuple[PipeId | None, list[PipeOpened]]:
        """A write on a handle not known as a pipe: a candidate (pipe-like name, tree connect
        missed) or one whose open was not captured (midstream). It is taken for a pipe only
        when it carries a DCE/RPC PDU. A candidate's name is known, so it is announced; an
        unseen open's is not, and the DCE/RPC stage infers the interface from bind or stub."""
        if handle in self._candidates and self._candidates[handle] is None:
            return None, []
        named = self._candidates.pop(handle, None)
        if not looks_like_dcerpc(data) or len(self._pipes) >= PIPES_LIMIT:
            if named is not None:
                self._candidates[handle] = None
            return None, []
        self._pipes[handle] = pipe
        if named is None:
            self.stats["smb_pipes_adopted"] += 1
            return pipe, []
        self.stats["smb_pipes_opened"] += 1
        return pipe, [PipeOpened(self.flow, ts, frame, pipe, normalise_pipe_name(named[0]), named[1])]

    def close(self, ts: float, handle: bytes | int) -> list[PipeClosed]:
        self._candidates.pop(handle, None)
        pipe = self._pipes.pop(handle, None)
        return [] if pipe is None else [PipeClosed(self.flow, ts, pipe)]

    def close_all(self, ts: float) -> list[PipeClosed]:
        closed = [PipeClosed(self.flow, ts, pipe) for pipe in self._pipes.values()]
        self._pipes.clear()
        self._candidates.clear()
        return closed


def normalise_pipe_name(name: str) -> str:
    """"\\\\PIPE\\\\netdfs", "\\\\netdfs", "netdfs" -> "netdfs" (SMB1 TRANS and NT_CREATE name
    pipes with the prefix, SMB2 CREATE without)."""
    name = name.rstrip("\x00").lower().lstrip("\\")
    if name.startswith("pipe\\"):
        name = name[5:].lstrip("\\")
    return name


def looks_like_pipe(name: str) -> bool:
    """Tree connect missed (midstream): a bare name with no path or extension may be a pipe
    (a candidate: PipeTable.adopt decides on its first write)."""
    name = normalise_pipe_name(name)
    return bool(name) and not any(c in name for c in "\\.:")


# C706 12.6.3.1: rpc_vers 5, rpc_vers_minor 0 or 1, then the PDU type; what a client writes first.
DCERPC_CLIENT_PTYPES = frozenset({pdu.PTYPE_REQUEST, pdu.PTYPE_BIND, pdu.PTYPE_ALTER_CONTEXT, pdu.PTYPE_AUTH3})


def looks_like_dcerpc(data: bytes) -> bool:
    """Does a client write start with a connection-oriented DCE/RPC header?"""
    return len(data) >= 16 and data[0] == 5 and data[1] in (0, 1) and data[2] in DCERPC_CLIENT_PTYPES


def is_ipc_path(path: str) -> bool:
    """A tree connect path naming the IPC$ share: "\\\\host\\IPC$" (any case)."""
    return path.rstrip("\x00").upper().endswith("\\IPC$") or path.upper() == "IPC$"
