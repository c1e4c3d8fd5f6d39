"""The interface catalog: data, not code. One module per protocol adds its rows here.

An interface is a row: uuid, version, IDL name, the coercion technique it serves, the pipes
and transports it is reached on, and its operations (IDL name, NDR request type, the
arguments that name the listener a coerced server calls back). Adding the next coercion
protocol is one module (its NDR types and its ``Interface`` row) listed in ``PROTOCOL_MODULES``
(see sensor/interfaces/fsrvp.py for the smallest).

Pipes: a pipe may carry several interfaces (\\PIPE\\lsarpc carries LSA and EFSR, among
others), so the bind's uuid always decides. Only when the bind was missed is the pipe name
used, and then only a *dedicated* pipe (one no other well-known interface is served on) names
the interface by itself; a *shared* pipe names it only if the stub decodes cleanly as that
interface's call for its opnum (see event_builder.resolve).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from impacket.dcerpc.v5.ndr import NDRCALL

NCACN_NP = "ncacn_np"          # SMB named pipe
NCACN_IP_TCP = "ncacn_ip_tcp"  # TCP, endpoint from the endpoint mapper (135)


@dataclass(frozen=True)
class Operation:
    opnum: int
    name: str                                  # IDL name
    request: type[NDRCALL] | None = None       # decoder of the [in] parameters; None: not decoded
    # The [in] arguments that name the listener the server is made to contact (a host name,
    # an address, or a UNC path: sensor/interfaces/listener.py gets the host out of each).
    # Non-empty marks the operation as a coercion call.
    listener_args: tuple[str, ...] = ()
    # Wire forms some clients send that differ from the IDL's, tried in order after
    # ``request`` fails (each documented where it is defined).
    alternates: tuple[type[NDRCALL], ...] = ()

    @property
    def coerces(self) -> bool:
        return bool(self.listener_args)


@dataclass(frozen=True)
class Interface:
    uuid: str                                  # lower-case canonical text, no braces
    version: tuple[int, int]
    name: str                                  # IDL interface name, e.g. "netdfs"
    pipes: frozenset[str]                      # dedicated pipes, normalised like PipeOpened.name
    operations: Mapping[int, Operation] = field(default_factory=dict)
    technique: str = ""                        # the coercion technique, e.g. "PetitPotam"
    protocol: str = ""                         # the specification, e.g. "MS-EFSR"
    shared_pipes: frozenset[str] = frozenset()  # pipes other interfaces are served on too
    transports: frozenset[str] = frozenset({NCACN_NP})

    @property
    def xdr_uuid(self) -> str:
        """The form xdr_data uses: braces, upper case."""
        return "{" + self.uuid.upper() + "}"

    def operation(self, opnum: int) -> Operation | None:
        return self.operations.get(opnum)

    @property
    def coercion_opnums(self) -> frozenset[int]:
        return frozenset(op.opnum for op in self.operations.values() if op.coerces)


def operations(*ops: Operation) -> dict[int, Operation]:
    return {op.opnum: op for op in ops}


class Catalog:
    """Lookup by interface uuid, and the candidates a pipe name leaves when the bind was missed."""

    def __init__(self, interfaces: list[Interface]):
        self.by_uuid: dict[str, Interface] = {i.uuid: i for i in interfaces}
        self._dedicated: dict[str, list[Interface]] = {}
        self._shared: dict[str, list[Interface]] = {}
        for iface in interfaces:
            for pipe in iface.pipes:
                self._dedicated.setdefault(pipe, []).append(iface)
            for pipe in iface.shared_pipes:
                self._shared.setdefault(pipe, []).append(iface)

    def interface(self, uuid: str | None) -> Interface | None:
        return self.by_uuid.get(uuid.lower()) if uuid else None

    def for_pipe(self, pipe_name: str) -> Interface | None:
        """The one interface a pipe's name alone names, or None: unknown pipe, a pipe shared
        with other interfaces, or one that two catalogued interfaces both use."""
        found = self._dedicated.get(pipe_name, [])
        return found[0] if len(found) == 1 and pipe_name not in self._shared else None

    def candidates_for_pipe(self, pipe_name: str) -> list[Interface]:
        """Every catalogued interface served on this pipe (dedicated or shared)."""
        return self._dedicated.get(pipe_name, []) + self._shared.get(pipe_name, [])


def default_catalog() -> Catalog:
    return Catalog([row for module in PROTOCOL_MODULES for row in module.INTERFACES])


# One module per protocol, each defining INTERFACES (its rows). Imported with this module, at
# start-up, not when the first catalog is built: a live sensor has dropped its privileges by
# then and may no longer read the interpreter's library (impacket's rprn pulls in hmac...).
# They import this module's types in turn, which are all defined above.
from sensor.interfaces import dfsnm, efsr, even, fsrvp, par, rprn  # noqa: E402

PROTOCOL_MODULES = (dfsnm, efsr, rprn, par, fsrvp, even)
