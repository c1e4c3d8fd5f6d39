"""The interface catalog: data, not code. One module per protocol adds its rows here.

An interface is a row: uuid, version, IDL name, the coercion technique it serves, the pipes
and transports it is reached on, and its operations (IDL name, the dotted path of the NDR
request type, the arguments that name the listener a coerced server calls back). Adding the
next coercion protocol is its ``Interface`` row (a module in sensor/interfaces/rows/, listed
in ``PROTOCOL_MODULES``) and, where impacket has none, its NDR request types (a module here;
see rows/fsrvp.py and fsrvp.py for the smallest).

The request types are imported at the first decode of a call that needs them (``Operation.
request``), not with the catalog: impacket's DCE/RPC modules cost more than a replay of a
small capture does (its rpcrt alone pulls in its crypto, NTLM and Kerberos modules), and most
runs decode no catalogued call. ``Catalog.request_types`` imports them all at once: live does
before it drops privileges, and the tests find a broken module or path with it.

Pipes: a pipe may carry several interfaces (\\PIPE\\lsarpc carries LSA and EFSR, among
others), so the bind's uuid always decides. Only when the bind was missed is the pipe name
used, and then only a *dedicated* pipe (one no other well-known interface is served on) names
the interface by itself; a *shared* pipe names it only if the stub decodes cleanly as that
interface's call for its opnum (see event_builder.resolve).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module
from typing import Mapping

NCACN_NP = "ncacn_np"          # SMB named pipe
NCACN_IP_TCP = "ncacn_ip_tcp"  # TCP, endpoint from the endpoint mapper (135)


@dataclass(frozen=True)
class Operation:
    """One operation (opnum) of an interface."""
    opnum: int
    name: str                                  # IDL name
    # The NDRCALL type of the [in] parameters by dotted path ("sensor.interfaces.dfsnm.
    # NetrDfsAddStdRoot", "impacket.dcerpc.v5.rprn.RpcOpenPrinter"); None: not decoded.
    request_path: str | None = None
    # The [in] arguments that name the listener the server is made to contact (a host name,
    # an address, or a UNC path: sensor/interfaces/listener.py gets the host out of each).
    # Non-empty marks the operation as a coercion call.
    listener_args: tuple[str, ...] = ()
    # Wire forms some clients send that differ from the IDL's, tried in order after
    # ``request`` fails (each documented where it is defined); dotted paths too.
    alternate_paths: tuple[str, ...] = ()

    @property
    def coerces(self) -> bool:
        return bool(self.listener_args)

    @property
    def request(self) -> type | None:
        """The request type (an impacket NDRCALL), imported on first use; None: not decoded."""
        return None if self.request_path is None else ndr_type(self.request_path)

    @property
    def alternates(self) -> tuple[type, ...]:
        return tuple(ndr_type(path) for path in self.alternate_paths)


@lru_cache(maxsize=None)
def ndr_type(path: str) -> type:
    """The class a row names by dotted path ("package.module.Class"), importing its module."""
    module, _, name = path.rpartition(".")
    return getattr(import_module(module), name)


@dataclass(frozen=True)
class Interface:
    """A DCE/RPC interface the sensor knows: its UUID, version, pipes and operations."""
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

    def request_types(self) -> dict[tuple[str, int], tuple[type, ...]]:
        """(uuid, opnum) -> the request type and its alternates, of every decoded operation,
        all imported now (ImportError or AttributeError naming a broken module or path)."""
        return {(iface.uuid, op.opnum): (op.request, *op.alternates)
                for iface in self.by_uuid.values() for op in iface.operations.values() if op.request_path}


def default_catalog() -> Catalog:
    return Catalog([row for module in PROTOCOL_MODULES for row in module.INTERFACES])


# One module per protocol, each defining INTERFACES (its rows, data only). Imported with this
# module; they import this module's types in turn, which are all defined above.
from sensor.interfaces.rows import dfsnm, efsr, even, fsrvp, par, rprn  # noqa: E402

PROTOCOL_MODULES = (dfsnm, efsr, rprn, par, fsrvp, even)
