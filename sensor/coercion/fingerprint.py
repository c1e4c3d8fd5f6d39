"""Transform-header size fingerprint of impacket's DFSCoerce call inside an SMB3-encrypted session.

AES-CCM/GCM add no padding and the TRANSFORM_HEADER carries OriginalMessageSize in clear
(MS-SMB2 2.2.41), so each encrypted message's plaintext size is the clear-text SMB2 message's.
impacket's client (the public DFSCoerce tool) makes, after session setup (sizes of the SMB2
message, measured on pcaps/dfscoerce-smb311-clear.pcap and equal in the encrypted capture):

  C 132  CREATE of a 6-character pipe name (120 + UTF-16 "netdfs")
  C 184  WRITE of the bind: one context, NDR 2.0 (64 + 48 + 72-byte bind)
  S 148  READ response: bind_ack whose secondary address is \\PIPE\\ + 6 characters
  C 136 + stub   WRITE of the request; opnum 13 stub = two NDR strings + ApiFlags,
                 opnum 12 adds Comment: each string 12 + 2*(len+1) rounded up to 4
  S 108 | 112    READ response: a 4-byte WERROR response PDU, or a 32-byte fault

The root call is the first request on the pipe and its answer the first READ response after it:
a pipe whose first request or first answer has another size is not DFSCoerce's, whatever follows
(impacket's srvsvc NetrShareEnum has a root-call-sized 52-byte stub; its 316-byte answer ends it).

What it cannot tell apart: any 6-letter pipe (lsarpc, srvsvc, winreg, eventlog-less ones)
bound by impacket, then a first call whose stub is a multiple of 4 from 36 bytes and whose answer
is a bare status or a fault (srvsvc NetrShareDel refused: a 4-byte WERROR). See the README.
"""
from __future__ import annotations

from collections import OrderedDict

from sensor.anomaly import Stats
from sensor.coercion.events import ENCRYPTED_NETDFS, CoercionAlert
from sensor.net.stream import FlowKey
from sensor.smb.events import EncryptedMessage

CREATE_SIX_CHAR_PIPE = 132
BIND_ONE_CONTEXT = 184
BIND_ACK_SIX_CHAR_PIPE = 148
WRITE_REQUEST_OVERHEAD = 136          # SMB2 header 64 + WRITE body 48 + DCE/RPC request header 24
# Smallest opnum 13 stub: two one-character strings (16 each) + ApiFlags; largest: a 255-character
# DNS ServerName (524) + an 80-character share (176) + an 80-character Comment (176) + 4.
MIN_ROOT_STUB = 36
MAX_ROOT_STUB = 880
READ_RESPONSE_STATUS_ONLY = 108       # 64 + 16 + 24-byte response header + 4-byte WERROR
READ_RESPONSE_FAULT = 112             # 64 + 16 + 32-byte fault PDU
# Smallest READ response carrying a PDU: 64 + 16 + a 16-byte DCE/RPC common header. The server's
# other messages meanwhile are smaller: WRITE response 80, STATUS_PENDING interim response 73.
MIN_READ_RESPONSE = 96
# Encrypted sessions followed at once; oldest dropped first.
MAX_SESSIONS = 65_536
# Steps of the shape, in order.
_CREATE, _BIND, _BIND_ACK, _REQUEST, _ANSWER, _DONE = range(6)


class EncryptedNetdfsMatcher:
    """Feed EncryptedMessage records; returns an alert when a session shows the whole shape."""

    def __init__(self) -> None:
        self.stats = Stats()
        self._sessions: OrderedDict[tuple[FlowKey, int], int] = OrderedDict()

    def feed(self, record) -> list[CoercionAlert]:
        if type(record) is not EncryptedMessage:
            return []
        return self.observe(record.flow, record.session_id, record.ts, record.from_client,
                            record.original_size)

    def observe(self, flow: FlowKey, session_id: int, ts: float, from_client: bool,
                size: int) -> list[CoercionAlert]:
        key = (flow, session_id)
        step = self._sessions.get(key, _CREATE)
        if step == _DONE:
            return []
        if from_client:
            if size == CREATE_SIX_CHAR_PIPE:
                step = _BIND            # a new pipe open restarts the shape
            elif step == _BIND and size == BIND_ONE_CONTEXT:
                step = _BIND_ACK
            elif step == _REQUEST and size >= WRITE_REQUEST_OVERHEAD:     # the pipe's first request
                stub = size - WRITE_REQUEST_OVERHEAD
                step = _ANSWER if MIN_ROOT_STUB <= stub <= MAX_ROOT_STUB and stub % 4 == 0 else _CREATE
        elif step == _BIND_ACK and size == BIND_ACK_SIX_CHAR_PIPE:
            step = _REQUEST
        elif step == _ANSWER and size >= MIN_READ_RESPONSE:                  # that request's answer
            step = _DONE if size in (READ_RESPONSE_STATUS_ONLY, READ_RESPONSE_FAULT) else _CREATE
        if key not in self._sessions and len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
            self.stats["fingerprint_sessions_evicted"] += 1
        self._sessions[key] = step
        if step != _DONE:
            return []
        self.stats["fingerprint_hits"] += 1
        status = "status-only response" if size == READ_RESPONSE_STATUS_ONLY else "fault"
        return [CoercionAlert(ENCRYPTED_NETDFS, ts, victim_ip=flow.server_ip, listener_ip="",
                              client_ip=flow.client_ip, confidence=0.5, inbound_flow=flow,
                              detail=f"sizes: 6-char pipe CREATE, bind, bind_ack, root-call-sized "
                                     f"request, {status}")]

    def close(self) -> list[CoercionAlert]:
        self._sessions.clear()
        return []
