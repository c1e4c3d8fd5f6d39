"""Address groups: named lists of hosts a deployment declares in its configuration
(``[address_groups]``), which rules test with ``<expr> in $<group>``, as Suricata's rules use
``$HOME_NET`` or ``$DNS_SERVERS`` from suricata.yaml's vars.address-groups.

An entry is an address, a CIDR range or a host name, compared canonically as the read
commands' ``--server`` compares (sensor/hosts.py): ``2001:db8::1`` and ``2001:0db8:0:0::1`` are
one host, ``DC01`` is ``dc01.corp.example``. A value that is an address is matched against
the address and range entries only; a name against the name entries only.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Mapping

from sensor.hosts import HostQuery, canonical_address
from sensor.xql.functions import to_string

# (name, entries) pairs: a tuple, so the settings that carry it stay immutable.
AddressGroups = tuple[tuple[str, tuple[str, ...]], ...]
# The groups the shipped rules use, empty until the deployment declares its hosts: out of the
# box nothing is excluded and detection is what it is without groups.
DEFAULT_GROUPS: AddressGroups = (("print_servers", ()),)
GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def address_groups(declared: Mapping[str, object]) -> AddressGroups:
    """The default groups with the declared ones over them; ValueError (one line naming the
    group and the entry) for a bad name or entry."""
    groups = dict(DEFAULT_GROUPS)
    for name, entries in declared.items():
        if not GROUP_NAME.match(name):
            raise ValueError(f"address_groups: {name!r} is not a group name (letters, digits, _)")
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ValueError(f"address_groups.{name} must be a list of addresses, CIDR ranges or names (strings)")
        for entry in entries:
            try:
                query = HostQuery.parse(entry)
            except ValueError as e:
                raise ValueError(f"address_groups.{name}: {e}") from None
            # No top-level domain is all digits (RFC 3696 2): "10.0.0.300" is a mistyped address.
            if query.name is not None and query.name.rsplit(".", 1)[-1].isdigit():
                raise ValueError(f"address_groups.{name}: {entry!r} is not an address, a CIDR range or a host name")
        groups[name] = tuple(entries)
    return tuple(groups.items())


@lru_cache(maxsize=64)
def _queries(entries: tuple[str, ...]) -> tuple[HostQuery, ...]:
    return tuple(HostQuery.parse(e) for e in entries)


def in_group(value, entries: tuple[str, ...]) -> bool | None:
    """Whether the host ``value`` names is one of the group's; null for a null value (as ``in``)."""
    if value is None:
        return None
    text = to_string(value)
    names = [] if canonical_address(text) is not None else [text]
    return any(q.matches([text], names) for q in _queries(entries))


def _address_pattern() -> str:
    """The texts Python's ipaddress reads as an address (before a %scope), as a regex that
    PostgreSQL can test before it casts to inet (a cast of anything else fails the query):
    IPv4 dotted decimal without leading zeros; IPv6 as eight hextets, or "::" standing for at
    least one, with an optional IPv4 tail worth two (RFC 4291 2.2)."""
    octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
    v4 = f"{octet}([.]{octet}){{3}}"
    h = "[0-9A-Fa-f]{1,4}"

    def hextets(n: int) -> str:       # n hextets joined by ":"
        return "" if n == 0 else f"({h}:){{{n - 1}}}{h}" if n > 1 else h
    forms = [hextets(8), f"({h}:){{6}}{v4}"]
    forms += [f"{hextets(left)}::" + (f"(({h}:){{0,{6 - left}}}{h})?" if left < 7 else "") for left in range(8)]
    forms += [f"{hextets(left)}::({h}:){{0,{5 - left}}}{v4}" for left in range(6)]
    return "^(" + v4 + "|" + "|".join(forms) + ")$"


ADDRESS_PATTERN = _address_pattern()
