"""NDR decoding of a request's [in] arguments, on the catalog's impacket NDRCALL types.

Both transfer syntaxes: NDR20 (C706 chapter 14) and NDR64 (MS-RPCE 2.2.5), which the
association names per presentation context (RpcCall.ndr64). For the arguments here NDR64
differs only in widths: conformance/variance counts and referent ids are 8 bytes, aligned to 8.

impacket parses little-endian stubs only. A big-endian stub (C706 14.2.5: drep says the
integers are big endian) is first rewritten in place, field by field, by a small walker
guided by the NDRCALL's own structure; the same walker, in strict mode, is ``looks_like``.

Decisions:
- Trailing bytes after the last argument are tolerated by ``decode_request``: the server's
  NDR engine does not reject them, so a sensor that did would be evaded by padding.
- A string is cut at its first NUL: the server reads the argument as a C string, so what
  follows an embedded NUL never reaches it (and is a classic way to hide the listener).
- Invalid UTF-16 is replaced (U+FFFD), never raised.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from impacket.dcerpc.v5.dtypes import RPC_UNICODE_STRING, WSTR
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER

from sensor.interfaces.catalog import Operation

# Longest string argument kept, in UTF-16 units. UNC paths and host names are far below
# this (MAX_PATH 260, DNS names 255); the rest is cut and the argument named in ``truncated``.
MAX_STRING_CHARS = 4096
# Stubs may be padded to an 8-byte boundary after the last argument (C706 14.2.2 and
# MS-RPCE 2.2.5.3.4: the largest primitive alignment); more than that left over is not a
# clean decode.
MAX_TRAILING_PAD = 7

_U32 = (struct.Struct(">I"), struct.Struct("<I"))
_U64 = (struct.Struct(">Q"), struct.Struct("<Q"))


class NdrDecodeError(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DecodedCall:
    strings: dict[str, str]      # IDL argument name -> text, without its NUL
    ints: dict[str, str]         # IDL argument name -> decimal text (xdr_data int_call_fields)
    truncated: tuple[str, ...] = ()   # string arguments cut at MAX_STRING_CHARS


class _Walker:
    """Walks a stub along an NDRCALL structure: checks lengths (and, if strict, the
    conformance rules), and rewrites big-endian integers to little endian in ``out``."""

    def __init__(self, stub: bytes, little: bool, strict: bool, ndr64: bool = False):
        self.buf = stub
        self.out = bytearray(stub) if not little else None
        self.little = little
        self.strict = strict
        self.ndr64 = ndr64
        self.pos = 0

    def _take(self, size: int) -> int:
        """Align to ``size`` (C706 14.2.2: primitives align to their own size) and claim it."""
        self.pos += -self.pos & (size - 1)
        off = self.pos
        if off + size > len(self.buf):
            raise NdrDecodeError(f"stub ends at {len(self.buf)}, argument needs {off + size}")
        self.pos = off + size
        if self.out is not None and size > 1:
            self.out[off:off + size] = self.buf[off:off + size][::-1]
        return off

    def u32(self) -> int:
        return _U32[self.little].unpack_from(self.buf, self._take(4))[0]

    def count(self) -> int:
        """A conformance/variance count or referent id: uint32 in NDR20, uint64 in NDR64
        (MS-RPCE 2.2.5.3.4.1, 2.2.5.3.3)."""
        if self.ndr64:
            return _U64[self.little].unpack_from(self.buf, self._take(8))[0]
        return self.u32()

    def walk(self, structure) -> None:
        for name, kind in structure:
            if not isinstance(kind, type):
                raise NdrDecodeError(f"{name}: inline format {kind!r} not supported")
            self.value(name, kind)

    def value(self, name: str, kind: type) -> None:
        if issubclass(kind, WSTR):
            self.wstr(name)
        elif issubclass(kind, NDRPOINTER):
            # A [unique] pointer: referent id, then (top-level or pointer-to-pointer) the
            # pointee right after it (C706 14.3.12.3); 0 is NULL.
            if self.count():
                self.value(name, kind.referent[0][1])
        elif (size := _primitive_size(kind)) is not None:
            self._take(size)
        else:
            raise NdrDecodeError(f"{name}: {kind.__name__} not supported by the walker")

    def wstr(self, name: str) -> None:
        """C706 14.3.4.2 conformant varying string: max count, offset, actual count, units."""
        max_count, offset, actual = self.count(), self.count(), self.count()
        start = self.pos
        if start + 2 * actual > len(self.buf):
            raise NdrDecodeError(f"{name}: {actual} characters run past the stub")
        if self.strict:
            # C706 14.3.4.2: the receiver accepts max_count >= actual_count (a buffer larger
            # than the string); a server rejects max_count < actual_count and a non-zero offset.
            if max_count < actual or offset != 0 or actual == 0:
                raise NdrDecodeError(f"{name}: counts {max_count}/{offset}/{actual} not a plain string")
            if self.buf[start + 2 * actual - 2:start + 2 * actual] != b"\x00\x00":
                raise NdrDecodeError(f"{name}: not NUL-terminated")
        if self.out is not None:
            units = self.buf[start:start + 2 * actual]
            self.out[start:start + 2 * actual:2] = units[1::2]
            self.out[start + 1:start + 2 * actual:2] = units[0::2]
        self.pos = start + 2 * actual


def _primitive_size(kind: type) -> int | None:
    """Size of an impacket NDR primitive (a one-field structure such as ('Data', '<L=0'))."""
    fields = getattr(kind, "structure", ())
    if len(fields) != 1 or not isinstance(fields[0][1], str):
        return None
    fmt = fields[0][1].split("=", 1)[0]
    return struct.calcsize(fmt) if fmt and fmt[-1] in "bBhHlLqQ" else None


def _request_type(op: Operation) -> type[NDRCALL]:
    if op.request is None:
        raise NdrDecodeError(f"{op.name}: no decoder in the catalog")
    return op.request


def _text(raw: bytes) -> tuple[str, bool]:
    text = raw[:2 * (MAX_STRING_CHARS + 1)].decode("utf-16-le", errors="replace")
    text = text.split("\x00", 1)[0]
    if len(text) > MAX_STRING_CHARS:
        return text[:MAX_STRING_CHARS], True
    return text, False


def decode_request(op: Operation, stub: bytes, little_endian: bool, ndr64: bool = False) -> DecodedCall:
    """The [in] arguments of ``op`` from its request stub; NdrDecodeError(reason) if it does not
    parse as the IDL's request type nor as any of the operation's documented alternates."""
    kinds = (_request_type(op), *op.alternates)
    if op.alternates:
        # impacket's parser is lenient: a [unique] referent id read as a ref string's max count
        # can still "decode" into wrong strings. The form the stub cleanly is goes first.
        clean = tuple(k for k in kinds if _walks_cleanly(k, stub, little_endian, ndr64))
        kinds = clean + tuple(k for k in kinds if k not in clean)
    first_error: NdrDecodeError | None = None
    for kind in kinds:
        try:
            return _decode_as(op, kind, stub, little_endian, ndr64)
        except NdrDecodeError as exc:
            first_error = first_error or exc
    raise first_error


def _decode_as(op: Operation, kind: type[NDRCALL], stub: bytes, little_endian: bool, ndr64: bool) -> DecodedCall:
    if not little_endian:
        walker = _Walker(stub, little=False, strict=False, ndr64=ndr64)
        walker.walk(kind.structure)
        stub = bytes(walker.out)
    try:
        call = kind(stub, isNDR64=ndr64)
    except Exception as exc:   # impacket raises struct.error, IndexError, its own errors...
        raise NdrDecodeError(f"{op.name}: {type(exc).__name__}: {exc}") from None
    strings: dict[str, str] = {}
    ints: dict[str, str] = {}
    truncated = []
    for name, _ in kind.structure:
        value = _pointee(call.fields[name])
        if isinstance(value, RPC_UNICODE_STRING):
            # MS-DTYP 2.3.10: Length, MaximumLength, then a unique pointer to the characters
            value = _pointee(value.fields["Data"])
        if value is None:
            continue   # NULL [unique] pointer: the argument is absent
        if isinstance(value, WSTR):
            raw = value.fields["Data"]
            if len(raw) != 2 * value["ActualCount"]:
                raise NdrDecodeError(f"{op.name}: {name} runs past the stub")
            strings[name], cut = _text(raw)
            if cut:
                truncated.append(name)
        elif isinstance(value, int):
            ints[name] = str(value)
        elif hasattr(value, "fields") and isinstance(value.fields.get("Data"), int):
            ints[name] = str(value.fields["Data"])
        # Nested structures (NetrDfsRemove2's ppRootList, EFSR's certificate lists) and
        # handles carry no listener: left out.
    return DecodedCall(strings, ints, tuple(truncated))


def _pointee(value):
    """A [unique] pointer's referent, None when NULL; anything else as it is."""
    if isinstance(value, NDRPOINTER):
        return value.fields["Data"] if value.fields.get("ReferentID") else None
    return value


def looks_like(op: Operation, stub: bytes, little_endian: bool, ndr64: bool = False) -> bool:
    """True when ``stub`` is cleanly ``op``'s request: every string a plain NUL-terminated
    conformant varying string, and nothing left over but alignment padding. Used to name
    the interface of a call whose bind and pipe were both missed, so it errs on 'no'."""
    return op.request is not None and _walks_cleanly(op.request, stub, little_endian, ndr64)


def _walks_cleanly(kind: type[NDRCALL], stub: bytes, little_endian: bool, ndr64: bool) -> bool:
    walker = _Walker(stub, little_endian, strict=True, ndr64=ndr64)
    try:
        walker.walk(kind.structure)
    except NdrDecodeError:
        return False
    return len(stub) - walker.pos <= MAX_TRAILING_PAD
