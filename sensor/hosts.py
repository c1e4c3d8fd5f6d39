"""Host filters of the read commands: an address, a CIDR range or a host name, compared
canonically.

Addresses are compared as numbers, so ``2001:db8::1``, ``2001:0db8:0:0::1`` and an IPv4-mapped
``::ffff:10.0.0.5`` (for ``10.0.0.5``) are one host. Names are compared without case and
without a trailing dot, and a short name matches a fully qualified one by its first label
(``DC01`` is ``dc01.corp.example``): the wire gives NetBIOS names in some places and DNS
names in others.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def canonical_address(text: str | None) -> Address | None:
    """The address ``text`` writes (IPv4-mapped IPv6 as IPv4, scope id dropped); None if not one."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _name(text: str) -> str:
    return text.strip().rstrip(".").lower()


@dataclass(frozen=True)
class HostQuery:
    """A --server/--client value: an address or CIDR network, or a host name."""
    text: str
    network: Network | None = None     # an address is a /32 or /128
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> "HostQuery":
        """Raises ValueError with a message for the user when ``text`` is none of the three."""
        value = text.strip()
        if not value:
            raise ValueError("an empty host")
        address = canonical_address(value)
        if address is not None:
            return cls(text, network=ipaddress.ip_network(address))
        if "/" in value:
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not an address, a CIDR range or a host name") from None
            if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 \
                    and network.network_address.ipv4_mapped is not None:
                network = ipaddress.ip_network(f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}")
            return cls(text, network=network)
        if any(c.isspace() or c in "\\/@" for c in value):
            raise ValueError(f"{text!r} is not an address, a CIDR range or a host name")
        return cls(text, name=_name(value))

    @property
    def single_address(self) -> str | None:
        """The one address this query is (canonical text), for an index lookup; else None."""
        if self.network is not None and self.network.num_addresses == 1:
            return str(self.network.network_address)
        return None

    def matches(self, addresses: Iterable[str | None], names: Iterable[str | None] = ()) -> bool:
        if self.network is not None:
            return any(a is not None and a.version == self.network.version and a in self.network
                       for a in map(canonical_address, addresses))
        return any(n and _same_name(self.name, _name(n)) for n in names)


def _same_name(a: str, b: str) -> bool:
    if a == b:
        return True
    if "." in a and "." not in b:
        return a.split(".", 1)[0] == b
    if "." in b and "." not in a:
        return b.split(".", 1)[0] == a
    return False
