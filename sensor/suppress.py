"""The allow-list: alerts an operator has judged benign, for every rule. A suppressed alert is
stored (``dfs-sensor alerts --suppressed`` lists it, with the entry's reason) and counted,
never written out. The file is TOML, reloaded on SIGHUP:

    [[allow]]
    host = "10.0.0.20"              # this host in any role: server, client or listener
    reason = "vulnerability scanner, ticket OPS-1234"
    expires = 2026-12-31            # optional: a TOML date or date-time (UTC); ignored after it

    [[allow]]
    client = "10.0.0.0/24"          # a pair: this client calling this server
    server = "DC01"
    reason = "DFS management from the admin subnet"

    [[allow]]
    listener = "backup01"           # a listener host: coerced authentication to it is expected
    reason = "the backup server; DCs authenticate to it by design"

Hosts are addresses, CIDR ranges or names, compared as the read commands compare them
(sensor/hosts.py). Roles in an alert: the server is the flow's destination (the victim of a
coercion, agent_* of a call), the client its source, the listener the host a coercion
authenticated to (or the ServerName of a DFSCoerce call).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timezone

from sensor.hosts import HostQuery

SERVER = (("dest_ip", "victim_ip", "agent_ip"), ("agent_hostname", "victim_name"))
CLIENT = (("src_ip", "client_ip", "actor_remote_ip"), ("client_name",))
LISTENER = (("listener_ip", "dfs_relay_server"), ("listener_name", "dfs_relay_server"))
_ROLES = {"server": SERVER, "client": CLIENT, "listener": LISTENER}
_KEYS = {"host", "client", "server", "listener", "reason", "expires"}


class AllowListError(ValueError):
    """The file cannot be used; one line naming the file and the entry."""


@dataclass(frozen=True)
class Entry:
    """One allow-list entry: why, and what it matches."""
    reason: str
    host: HostQuery | None = None
    client: HostQuery | None = None
    server: HostQuery | None = None
    listener: HostQuery | None = None
    expires: datetime | None = None

    def matches(self, alert: dict, now: datetime) -> bool:
        if self.expires is not None and now >= self.expires:
            return False
        if self.host is not None:
            return any(_plays(self.host, alert, role) for role in _ROLES.values())
        return all(query is None or _plays(query, alert, _ROLES[role])
                   for role, query in (("client", self.client), ("server", self.server),
                                       ("listener", self.listener)))


def _plays(query: HostQuery, alert: dict, role: tuple) -> bool:
    addresses, names = role
    return query.matches([alert.get(f) for f in addresses], [alert.get(f) for f in names])


class AllowList:
    def __init__(self, path: str | None):
        self.path = path
        self.entries: list[Entry] = load(path) if path else []

    def reload(self) -> str:
        """SIGHUP: read the file again; on error keep the entries in force. The line to log."""
        try:
            self.entries = load(self.path) if self.path else []
        except AllowListError as e:
            return f"allow-list not reloaded, the previous one stays in force: {e}"
        return f"allow-list reloaded: {len(self.entries)} entr{'y' if len(self.entries) == 1 else 'ies'}"

    def match(self, alert: dict, now: datetime | None = None) -> Entry | None:
        now = now or datetime.now(timezone.utc)
        return next((e for e in self.entries if e.matches(alert, now)), None)


def load(path: str) -> list[Entry]:
    import tomllib      # only with an allow-list, which is loaded at start (before live drops privileges)

    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise AllowListError(f"{path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise AllowListError(f"{path}: not valid TOML: {e}") from None
    unknown = set(document) - {"allow"}
    if unknown:
        raise AllowListError(f"{path}: unknown section {sorted(unknown)[0]!r} (entries are [[allow]])")
    entries = document.get("allow", [])
    if not isinstance(entries, list):
        raise AllowListError(f"{path}: allow must be a list of [[allow]] tables")
    return [_entry(path, n, item) for n, item in enumerate(entries, 1)]


def _entry(path: str, n: int, item) -> Entry:
    where = f"{path}: entry {n}"
    if not isinstance(item, dict):
        raise AllowListError(f"{where}: not a table")
    if set(item) - _KEYS:
        raise AllowListError(f"{where}: unknown key {sorted(set(item) - _KEYS)[0]!r}")
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise AllowListError(f"{where}: every entry needs a reason")
    hosts = {}
    for key in ("host", "client", "server", "listener"):
        if key in item:
            if not isinstance(item[key], str):
                raise AllowListError(f"{where}: {key} must be a string")
            try:
                hosts[key] = HostQuery.parse(item[key])
            except ValueError as e:
                raise AllowListError(f"{where}: {key}: {e}") from None
    if not hosts:
        raise AllowListError(f"{where}: give host, or client/server, or listener")
    if "host" in hosts and len(hosts) > 1:
        raise AllowListError(f"{where}: host means any role; use client/server/listener for a pair")
    return Entry(reason=reason, expires=_expiry(where, item.get("expires")), **hosts)


def _expiry(where: str, value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):             # the whole day is allowed: expires at its end
        return datetime.combine(value, time.max, tzinfo=timezone.utc)
    raise AllowListError(f"{where}: expires must be a TOML date or date-time, not {value!r}")
