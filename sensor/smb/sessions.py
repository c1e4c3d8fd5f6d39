"""Who authenticated on one SMB connection (SMB1 and SMB2 share it).

SessionBook keeps the negotiated dialect, the last NTLMSSP CHALLENGE (it names the server)
and one SmbSession per session id, bounded by SESSIONS_LIMIT.
"""
from __future__ import annotations

from dataclasses import replace

from sensor.anomaly import Anomaly, Stats
from sensor.net.stream import FlowKey
from sensor.smb.events import NtlmAuthentication, SmbSession
from sensor.smb.ntlmssp import NtlmAuthenticate, NtlmChallenge

# Windows allows a few sessions per connection (multi-user terminal servers reuse one);
# a flow with more is a scan or an attack on the table, not a client.
SESSIONS_LIMIT = 64


class SessionBook:
    def __init__(self, flow: FlowKey, stats: Stats) -> None:
        self.flow = flow
        self.stats = stats
        self.dialect = ""
        self.challenge: NtlmChallenge | None = None
        self.sessions: dict[int, SmbSession] = {}

    def authenticating(self, ts: float, frame: int, protocol: str,
                       auth: NtlmAuthenticate) -> NtlmAuthentication:
        """A session setup request carries an AUTHENTICATE: who, to the server the last
        CHALLENGE named."""
        c = self.challenge or NtlmChallenge(0)
        self.stats["ntlm_authentications"] += 1
        return NtlmAuthentication(self.flow, ts, frame, protocol, auth.user, auth.domain,
                                  auth.workstation, auth.ntlm_version,
                                  c.nb_computer_name, c.dns_computer_name)

    def authenticated(self, ts: float, session_id: int,
                      auth: NtlmAuthenticate | None) -> list[SmbSession | Anomaly]:
        """A session setup succeeded; ``auth`` is its NTLMSSP AUTHENTICATE, if it had one."""
        known = self.sessions.get(session_id)
        if auth is None and known is not None:
            return []   # a re-authentication without NTLMSSP (Kerberos) tells nothing new
        if known is None and len(self.sessions) >= SESSIONS_LIMIT:
            return [self.stats.anomaly(ts, "smb", "smb_session_table_full", self.flow)]
        c = self.challenge or NtlmChallenge(0)
        session = SmbSession(
            self.flow, ts, session_id, self.dialect,
            user=auth.user if auth else "",
            domain=auth.domain if auth else "",
            workstation=auth.workstation if auth else "",
            ntlm_version=auth.ntlm_version if auth else "",
            server_netbios_name=c.nb_computer_name,
            server_dns_name=c.dns_computer_name,
            server_netbios_domain=c.nb_domain_name,
            encrypted=known.encrypted if known else False,
        )
        self.sessions[session_id] = session
        self.stats["smb_sessions"] += 1
        return [session]

    def encrypted(self, ts: float, session_id: int) -> list[SmbSession | Anomaly]:
        """The session encrypts: say so once (a session never seen set up is reported too)."""
        known = self.sessions.get(session_id)
        if known is not None and known.encrypted:
            return []
        if known is None:
            if len(self.sessions) >= SESSIONS_LIMIT:
                return [self.stats.anomaly(ts, "smb", "smb_session_table_full", self.flow)]
            known = SmbSession(self.flow, ts, session_id, self.dialect)
        session = replace(known, ts=ts, encrypted=True)
        self.sessions[session_id] = session
        return [session]
