"""The interface catalog: data, not code. One module per protocol adds its table here.

Adding the next coercion protocol is an ``Interface`` row plus NDRCALL types for the
calls whose arguments matter (see sensor/interfaces/dfsnm.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from impacket.dcerpc.v5.ndr import NDRCALL


@dataclass(frozen=True)
class Operation:
    opnum: int
    name: str                                  # IDL name
    request: type[NDRCALL] | None = None       # decoder of the [in] parameters; None: not decoded
    listener_arg: str | None = None            # the argument that names the coerced listener


@dataclass(frozen=True)
class Interface:
    uuid: str                                  # lower-case canonical text, no braces
    version: tuple[int, int]
    name: str                                  # IDL interface name, e.g. "netdfs"
    pipes: frozenset[str]                      # well-known pipe names, normalised like PipeOpened.name
    operations: Mapping[int, Operation] = field(default_factory=dict)

    @property
    def xdr_uuid(self) -> str:
        """The form xdr_data uses: braces, upper case."""
        return "{" + self.uuid.upper() + "}"

    def operation(self, opnum: int) -> Operation | None:
        return self.operations.get(opnum)


def operations(*ops: Operation) -> dict[int, Operation]:
    return {op.opnum: op for op in ops}


class Catalog:
    """Lookup by interface uuid and by pipe name."""

    def __init__(self, interfaces: list[Interface]):
        self.by_uuid: dict[str, Interface] = {i.uuid: i for i in interfaces}
        self.by_pipe: dict[str, Interface] = {}
        for iface in interfaces:
            for pipe in iface.pipes:
                self.by_pipe.setdefault(pipe, iface)

    def interface(self, uuid: str | None) -> Interface | None:
        return self.by_uuid.get(uuid.lower()) if uuid else None

    def for_pipe(self, pipe_name: str) -> Interface | None:
        return self.by_pipe.get(pipe_name)


def default_catalog() -> Catalog:
    from sensor.interfaces import dfsnm

    return Catalog([dfsnm.INTERFACE])
