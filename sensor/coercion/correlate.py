"""The coercion correlator: a server's machine account authenticating out, just after someone
talked to it.

Every coercion attack (DFSCoerce, PetitPotam, PrinterBug...) ends the same way: the server V
authenticates with its own machine account ("DC01$") to the listener L the call named, within
seconds. That AUTHENTICATE is in clear even when the call itself was encrypted. Fed the
pipeline's records, in capture order:

- inbound activity to V (SmbSession, EncryptedMessage, RpcCallEvent) is remembered per flow
  for ``window`` seconds after its last message;
- an NtlmAuthentication by a machine account from V to L then looks back over V's inbound
  flows: one that carried a catalogued coercion call whose listener argument names L (by
  address, or by a name L gave in its NTLMSSP CHALLENGE; sensor/interfaces/listener.py reads
  the host out of UNC, WebDAV and URL forms) makes CONFIRMED, naming the call's technique; else
  an encrypted one, or one whose coercion call was sealed (PKT_PRIVACY: opnum known, listener
  not), makes PROBABLE, unless the (V, L)
  pair is common (``pair_days``: distinct days seen, from the store) - a DC replicating to its
  partner every day learns itself out.

Servers are the hosts seen serving SMB (SmbSession) or Kerberos/LDAP (ServiceSeen), plus the
config's allow-list: a PROBABLE to a listener that is a server gets the lower confidence.

A real server authenticates to L while it serves the call, before it answers, and the
pipeline emits a call at its answer: so the call may come after the authentication. Machine
authentications are therefore remembered for ``window`` too, and a call naming L confirms
the ones V made since the call's request.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from sensor.anomaly import Stats
from sensor.coercion.events import CONFIRMED, PROBABLE, CoercionAlert
from sensor.events import RpcCallEvent
from sensor.interfaces.catalog import Catalog, default_catalog
from sensor.interfaces.listener import host_of
from sensor.net.stream import FlowKey, ServiceSeen
from sensor.smb.events import EncryptedMessage, KerberosAuthentication, NtlmAuthentication, SmbSession

# Coercion tools trigger the callback within a second or two; 30 s leaves room for a slow
# server (the spooler retries) while keeping unrelated machine logons out.
DEFAULT_WINDOW = 30.0
# Inbound flows remembered. Within a 30 s window even a busy DC sees a few thousand flows;
# the oldest go first when full.
MAX_INBOUND_FLOWS = 65_536
# Host names learned from NTLMSSP CHALLENGEs (name -> address). One per server on the network.
MAX_NAMES = 65_536
# Hosts remembered as servers (serving SMB, Kerberos or LDAP): one per server on the network;
# when full, later ones are not added (a listener then keeps the higher PROBABLE confidence).
MAX_SERVERS = 65_536
# Call ids listed per inbound flow; a client hammering one pipe keeps only its first calls.
MAX_CALLS_PER_FLOW = 16
# Machine-account authentications remembered for calls answered after them; oldest go first.
MAX_RECENT_AUTHENTICATIONS = 4096
# PROBABLE is raised for a (V, L) pair seen on fewer distinct days than this (30-day window):
# the hunting query's own "day_count < 7".
DEFAULT_RARE_DAYS = 7
# An event's time is its request's capture time rounded to the millisecond (xdr_time), so the
# request may have come up to half a millisecond before it: a server that answers at once
# (or a capture replayed at top speed) authenticates within that half millisecond.
EVENT_TIME_ROUNDING = 0.0005


@dataclass(frozen=True)
class CorrelatorSettings:
    """The correlator's settings ([coercion] of the configuration)."""
    window: float = DEFAULT_WINDOW
    rare_days: int = DEFAULT_RARE_DAYS
    known_servers: frozenset[str] = field(default_factory=frozenset)   # config allow-list


class _Inbound:
    __slots__ = ("flow", "client", "client_name", "first_ts", "last_ts", "encrypted", "calls", "sealed_technique")

    def __init__(self, flow: FlowKey, ts: float) -> None:
        self.flow = flow
        self.client = flow.client_ip
        self.client_name = ""     # the workstation its SMB session named
        self.first_ts = ts
        self.last_ts = ts
        self.encrypted = False
        # (event id, hosts its listener arguments name, technique)
        self.calls: list[tuple[str, frozenset[str], str]] = []
        self.sealed_technique = ""      # a coercion call whose stub was sealed: its technique


class Correlator:
    """``feed(record)`` -> alerts; ``pair_days(v, l, ts)`` records the pair's day and returns
    its distinct-day count (None: every pair is rare)."""

    def __init__(self, settings: CorrelatorSettings | None = None,
                 pair_days: Callable[[str, str, float], int] | None = None,
                 catalog: Catalog | None = None) -> None:
        self.settings = settings or CorrelatorSettings()
        self.catalog = catalog or default_catalog()
        self.pair_days = pair_days
        self.stats = Stats()
        self._inbound: OrderedDict[FlowKey, _Inbound] = OrderedDict()   # by last activity
        self._names: dict[str, str] = {}
        # Hosts seen serving SMB, Kerberos or LDAP, and the config's allow-list
        self.servers: set[str] = set(self.settings.known_servers)
        self._recent: deque[NtlmAuthentication | KerberosAuthentication] = deque(maxlen=MAX_RECENT_AUTHENTICATIONS)

    def feed(self, record) -> list[CoercionAlert]:
        kind = type(record)
        if kind is EncryptedMessage:
            self._touch(record.flow, record.ts).encrypted = True
        elif kind is SmbSession:
            inbound = self._touch(record.flow, record.ts)
            inbound.encrypted |= record.encrypted
            inbound.client_name = record.workstation or inbound.client_name
            self._note_server(record.flow.server_ip)
            self._learn(record.flow.server_ip, record.server_netbios_name, record.server_dns_name)
        elif kind is RpcCallEvent:
            flow = FlowKey(record.actor_remote_ip, record.actor_remote_port, record.agent_ip,
                           record.agent_port)
            inbound = self._touch(flow, record.event_timestamp / 1000)
            inbound.encrypted |= record.net_encrypted
            technique, hosts = self._listeners(record)
            if technique and record.net_stub_sealed:
                inbound.sealed_technique = technique
            if hosts:
                if len(inbound.calls) < MAX_CALLS_PER_FLOW:
                    inbound.calls.append((record.event_id, hosts, technique))
                return self._answered_call(record, flow, inbound, hosts, technique)
        elif kind is ServiceSeen:
            self._note_server(record.ip)
        elif kind is NtlmAuthentication:
            self._learn(record.flow.server_ip, record.server_netbios_name, record.server_dns_name)
            if record.is_machine_account:
                self._recent.append(record)
                return self._authentication(record)
        elif kind is KerberosAuthentication:
            # Whether the client is a machine account is encrypted: an AP-REQ only confirms
            # (a call named the ticket's service host or L), never makes PROBABLE.
            self._recent.append(record)
            return self._authentication(record)
        return []

    def close(self) -> list[CoercionAlert]:
        self._inbound.clear()
        self._names.clear()
        self._recent.clear()
        return []

    def _listeners(self, call: RpcCallEvent) -> tuple[str, frozenset[str]]:
        """(technique, hosts its listener arguments name) of a catalogued coercion call;
        ("", empty) for any other call."""
        iface = self.catalog.interface(call.action_rpc_interface_uuid.strip("{}"))
        op = iface.operation(call.action_rpc_func_opnum) if iface else None
        if op is None or not op.coerces:
            return "", frozenset()
        strings = call.str_fields()
        return iface.technique, frozenset(h for h in (host_of(strings.get(a, "")) for a in op.listener_args) if h)

    # -- state -----------------------------------------------------------------------------
    def _touch(self, flow: FlowKey, ts: float) -> _Inbound:
        inbound = self._inbound.get(flow)
        if inbound is None:
            if len(self._inbound) >= MAX_INBOUND_FLOWS:
                self._inbound.popitem(last=False)
                self.stats["coercion_inbound_evicted"] += 1
            inbound = self._inbound[flow] = _Inbound(flow, ts)
        else:
            self._inbound.move_to_end(flow)
        inbound.first_ts = min(inbound.first_ts, ts)
        inbound.last_ts = max(inbound.last_ts, ts)
        return inbound

    def _note_server(self, ip: str) -> None:
        if len(self.servers) < MAX_SERVERS:
            self.servers.add(ip)

    def _learn(self, ip: str, *names: str) -> None:
        for name in names:
            if name and len(self._names) < MAX_NAMES:
                self._names[name.lower()] = ip
                self._names[name.lower().split(".", 1)[0]] = ip

    def _names_listener(self, host: str, auth: NtlmAuthentication | KerberosAuthentication) -> bool:
        """Does a call's listener host name the server ``auth`` went to (its address, a name
        it gave, or, Kerberos, the host of the ticket's service principal)?"""
        if type(auth) is KerberosAuthentication and host == auth.service_host:
            return True
        return self._names_ip(host, auth.flow.server_ip)

    def _names_ip(self, host: str, ip: str) -> bool:
        return host == ip.lower() or self._names.get(host) == ip or \
            self._names.get(host.split(".", 1)[0]) == ip

    # -- the correlation ---------------------------------------------------------------------
    def _authentication(self, auth: NtlmAuthentication | KerberosAuthentication) -> list[CoercionAlert]:
        kerberos = type(auth) is KerberosAuthentication
        self.stats["coercion_kerberos_authentications" if kerberos else "coercion_machine_authentications"] += 1
        victim, listener = auth.flow.client_ip, auth.flow.server_ip
        since = auth.ts - self.settings.window
        confirmed: list[tuple[_Inbound, str, str]] = []
        encrypted: _Inbound | None = None
        for flow in reversed(self._inbound):          # newest activity first
            inbound = self._inbound[flow]
            if inbound.last_ts < since:
                break
            # A flow that began after the logon did not cause it (replayed files' clocks interleave).
            if flow.server_ip != victim or inbound.client == victim or inbound.first_ts > auth.ts:
                continue
            for event_id, hosts, technique in inbound.calls:
                if any(self._names_listener(h, auth) for h in hosts):
                    confirmed.append((inbound, event_id, technique))
            if encrypted is None and (inbound.encrypted or inbound.sealed_technique):
                encrypted = inbound
        base = dict(victim_ip=victim, listener_ip=listener, ts=auth.ts, **_who(auth))
        if confirmed:
            first = confirmed[-1][0]
            self.stats["coercion_confirmed"] += 1
            return [CoercionAlert(CONFIRMED, client_ip=first.client, inbound_flow=first.flow,
                                  client_name=first.client_name,
                                  delay=round(auth.ts - first.last_ts, 6), technique=confirmed[-1][2],
                                  call_event_ids=tuple(e for _, e, _ in reversed(confirmed)), **base)]
        if encrypted is None or kerberos:
            return []
        day_count = self.pair_days(victim, listener, auth.ts) if self.pair_days else 1
        if day_count >= self.settings.rare_days:
            self.stats["coercion_probable_common_pair"] += 1
            return []
        self.stats["coercion_probable"] += 1
        # A listener that serves SMB, Kerberos or LDAP to other hosts is more likely a real
        # server (a file server, a DC replicating) than an attacker's listener.
        confidence = 0.5 if listener in self.servers else 0.8
        return [CoercionAlert(PROBABLE, client_ip=encrypted.client, inbound_flow=encrypted.flow,
                              client_name=encrypted.client_name,
                              delay=round(auth.ts - encrypted.last_ts, 6), confidence=confidence,
                              day_count=day_count, technique=encrypted.sealed_technique,
                              detail=("inbound sealed coercion call to V" if encrypted.sealed_technique
                                      else "inbound encrypted session to V") +
                                     ", then V's machine account authenticated to L", **base)]

    def _answered_call(self, call: RpcCallEvent, flow: FlowKey, inbound: _Inbound,
                       hosts: frozenset[str], technique: str) -> list[CoercionAlert]:
        """The call arrived after V's authentications it caused: confirm those to a host it
        names. (An authentication after the call was in ``calls`` is _authentication's.)"""
        requested = call.event_timestamp / 1000
        out: list[CoercionAlert] = []
        for auth in self._recent:
            if auth.flow.client_ip != flow.server_ip or auth.flow.client_ip == inbound.client \
                    or not requested - EVENT_TIME_ROUNDING <= auth.ts <= requested + self.settings.window \
                    or not any(self._names_listener(h, auth) for h in hosts):
                continue
            self.stats["coercion_confirmed"] += 1
            out.append(CoercionAlert(CONFIRMED, auth.ts, victim_ip=auth.flow.client_ip,
                                     listener_ip=auth.flow.server_ip, client_ip=inbound.client,
                                     delay=round(max(auth.ts - requested, 0.0), 6), technique=technique, **_who(auth),
                                     call_event_ids=(call.event_id,), inbound_flow=flow,
                                     client_name=inbound.client_name))
        return out


def _who(auth: NtlmAuthentication | KerberosAuthentication) -> dict:
    """The alert's user, domain, protocol and the back-authentication's flow and names. NTLM:
    V by its machine account without the "$" (a computer's sAMAccountName is its NetBIOS name
    + "$", MS-ADTS 6.1.1.2.2; the workstation field is whatever the client filled in), L by the
    name in its CHALLENGE. Kerberos: the user is unknown (encrypted in the ticket), the domain
    is the ticket's realm, L is the ticket's service host, the protocol says "kerberos"."""
    if type(auth) is KerberosAuthentication:
        return dict(user="", domain=auth.realm, protocol=auth.protocol + "-kerberos", auth_flow=auth.flow,
                    listener_name=auth.service_host,
                    detail=f"Kerberos AP-REQ for {'/'.join(auth.sname)}@{auth.realm}; the client principal is encrypted")
    return dict(user=auth.user, domain=auth.domain, protocol=auth.protocol, auth_flow=auth.flow,
                victim_name=auth.user.removesuffix("$"),
                listener_name=auth.server_dns_name or auth.server_netbios_name)

