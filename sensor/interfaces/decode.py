"""NDR decoding of a request's [in] arguments, on the catalog's impacket NDRCALL types.

Both transfer syntaxes: NDR20 (C706 chapter 14) and NDR64 (MS-RPCE 2.2.5), which the
association names per presentation context (RpcCall.ndr64). For the arguments here NDR64
differs only in widths: conformance/variance counts and referent ids are 8 bytes, aligned to 8.

impacket parses little-endian stubs only (its NDR formats are all '<'). A big-endian stub
(C706 14.2.5: drep says the integers are big endian, a legal client choice that Samba's
client makes with its ``bigendian`` binding option) is first rewritten to little endian,
field by field, by a walker guided by the NDRCALL's own types: nested structures, unions,
arrays and deferred pointer referents, in impacket's layout, so one walker serves every
catalogued interface. The same walker, in strict mode, is ``looks_like`` (naming the
interface of a call whose bind was missed).

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
from functools import lru_cache

from impacket.dcerpc.v5.dtypes import RPC_UNICODE_STRING, WSTR
from impacket.dcerpc.v5.ndr import (
    NDR,
    NDRCALL,
    NDRPOINTER,
    NDRSTRUCT,
    NDRUNION,
    NDRArray,
    NDRUniConformantArray,
    NDRUniConformantVaryingArray,
    NDRUniFixedArray,
    NDRUniVaryingArray,
)

from sensor.interfaces.catalog import Operation

# Longest string argument kept, in UTF-16 units. UNC paths and host names are far below
# this (MAX_PATH 260, DNS names 255); the rest is cut and the argument named in ``truncated``.
MAX_STRING_CHARS = 4096
# Stubs may be padded to an 8-byte boundary after the last argument (C706 14.2.2 and
# MS-RPCE 2.2.5.3.4: the largest primitive alignment); more than that left over is not a
# clean decode.
MAX_TRAILING_PAD = 7

# Deepest nesting walked (constructs inside constructs and referent levels). The catalog's
# deepest request, EfsRpcSetEncryptedFileMetadata with every pointer non-NULL, walks 8 deep;
# a deeper walk (a deep type along hostile data) is a decode error, never a RecursionError.
MAX_NESTING = 32
# struct format codes of integers: these are in the stub's byte order (C706 14.2.5).
_INTEGER_CODES = "hHiIlLqQ"

_U32 = (struct.Struct(">I"), struct.Struct("<I"))
_U64 = (struct.Struct(">Q"), struct.Struct("<Q"))


class NdrDecodeError(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DecodedCall:
    """A call's [in] arguments as text."""
    strings: dict[str, str]      # IDL argument name -> text, without its NUL
    ints: dict[str, str]         # IDL argument name -> decimal text (xdr_data int_call_fields)
    truncated: tuple[str, ...] = ()   # string arguments cut at MAX_STRING_CHARS


class _Walker:
    """Walks a stub along an impacket NDR type, in the layout impacket's own parser reads
    (C706 14.2-14.3, MS-RPCE 2.2.5): primitives aligned to their size, structures to their
    largest member with the count of a trailing conformant array hoisted before them
    (14.3.7.1), non-encapsulated unions as discriminant then arm (14.3.8), top-level pointers'
    referents inline and embedded pointers' referents deferred to after the construct that
    holds them, depth first (14.3.12.3), arrays' element referents right after the elements.

    It checks every length against the stub (and, if strict, the conformance rules), and
    rewrites big-endian integers and UTF-16 units to little endian in ``out``. Bounded: every
    array element, string unit and pointer claims at least one byte of the stub, counts are
    checked against what is left before any loop, and type nesting stops at MAX_NESTING."""

    def __init__(self, stub: bytes, little: bool, strict: bool, ndr64: bool = False):
        self.buf = stub
        self.out = bytearray(stub) if not little else None
        self.little = little
        self.strict = strict
        self.ndr64 = ndr64
        self.pos = 0
        self.depth = 0

    # -- octets ------------------------------------------------------------------------------
    def _align(self, size: int) -> None:
        if size > 1:
            self.pos += -self.pos % size

    def _claim(self, size: int, unit: int = 0) -> int:
        """Claim ``size`` octets; ``unit`` > 1: integers of that width, rewritten to little endian."""
        off = self.pos
        if off + size > len(self.buf):
            raise NdrDecodeError(f"stub ends at {len(self.buf)}, argument needs {off + size}")
        self.pos = off + size
        if self.out is not None and unit > 1:
            for i in range(unit):
                self.out[off + i:off + size:unit] = self.buf[off + unit - 1 - i:off + size:unit]
        return off

    def _left(self) -> int:
        return len(self.buf) - self.pos

    def u32(self) -> int:
        self._align(4)
        return _U32[self.little].unpack_from(self.buf, self._claim(4, 4))[0]

    def count(self) -> int:
        """A conformance/variance count or referent id: uint32 in NDR20, uint64 in NDR64
        (MS-RPCE 2.2.5.3.4.1, 2.2.5.3.3)."""
        if self.ndr64:
            self._align(8)
            return _U64[self.little].unpack_from(self.buf, self._claim(8, 8))[0]
        return self.u32()

    def inline(self, fmt: str, pad: bool) -> int | None:
        """An impacket inline field ('<L=0', '<H', '20s'...): its value when an integer.
        ``pad``: aligned to its size, as impacket aligns a primitive's own fields (a
        structure's inline fields ride the structure's alignment instead)."""
        fmt = fmt.split("=", 1)[0]
        try:
            size = struct.calcsize(fmt)
        except struct.error:
            raise NdrDecodeError(f"inline format {fmt!r} not supported by the walker") from None
        if pad:
            self._align(size)
        integer = fmt[-1] in _INTEGER_CODES
        off = self._claim(size, size if integer or fmt[-1] in "fd" else 0)
        if integer:
            return int.from_bytes(self.buf[off:off + size], "little" if self.little else "big")
        return None

    # -- types -------------------------------------------------------------------------------
    def walk(self, structure) -> None:
        """An NDRCALL's parameters: each a top-level construct, its deferred referents after it."""
        for _name, kind in structure:
            if isinstance(kind, str):
                self.inline(kind, pad=False)     # impacket's NDRCALL does not align these
            else:
                self.full(kind, top=True)

    def full(self, kind: type, top: bool = False) -> None:
        """A construct and then, depth first, the referents of the pointers it embeds."""
        deferred: list[type] = []
        self.value(kind, deferred, top)
        self.referents(deferred)

    def referents(self, deferred: list[type]) -> None:
        self._enter()
        try:
            for target in deferred:
                self.full(target)
        finally:
            self.depth -= 1

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise NdrDecodeError(f"types nested deeper than {MAX_NESTING}")

    def value(self, kind: type, deferred: list, top: bool = False) -> None:
        self._enter()
        try:
            if issubclass(kind, WSTR):
                self.wstr(kind.__name__)
            elif issubclass(kind, NDRPOINTER):
                self.pointer(kind, deferred, top)
            elif issubclass(kind, NDRUNION):
                self.union(kind, deferred, top)
            elif issubclass(kind, NDRArray):
                self.array(kind, self.conformance(kind))
            elif issubclass(kind, NDRSTRUCT):
                self.structure(kind, deferred)
            elif issubclass(kind, NDR):
                for _name, fmt in _shape(kind, self.ndr64).fields:
                    self.inline(fmt, pad=True)
            else:
                raise NdrDecodeError(f"{kind.__name__} not supported by the walker")
        finally:
            self.depth -= 1

    def pointer(self, kind: type, deferred: list, top: bool) -> None:
        """A [unique] pointer: referent id (0 is NULL), then the referent right after it when
        the pointer is a parameter, else after the construct that holds it."""
        if not self.count():
            return
        (_name, target), = kind.referent
        if top:
            self.full(target)
        else:
            deferred.append(target)

    def union(self, kind: type, deferred: list, top: bool) -> None:
        """A non-encapsulated union: its discriminant, then the arm it selects, aligned to 4
        (8 in NDR64), as impacket reads it."""
        shape = _shape(kind, self.ndr64)
        self._align(shape.alignment)
        (_name, tag_kind), = shape.fields
        (_fname, tag_fmt), = _shape(tag_kind, self.ndr64).fields
        tag = self.inline(tag_fmt, pad=True)
        arm = kind.union.get(tag, kind.union.get("default", False))
        if arm is False:
            raise NdrDecodeError(f"{kind.__name__}: no arm for discriminant {tag}")
        self._align(8 if self.ndr64 else 1 if hasattr(kind, "notAlign") else 4)
        if arm is not None:
            _arm_name, arm_kind = arm
            if isinstance(arm_kind, str):
                self.inline(arm_kind, pad=True)
            else:
                self.value(arm_kind, deferred, top)

    def conformance(self, kind: type) -> int | None:
        """The max count a conformant (varying) array carries before it (C706 14.3.3.2)."""
        if issubclass(kind, (NDRUniConformantArray, NDRUniConformantVaryingArray)):
            return self.count()
        return None

    def array(self, kind: type, max_count: int | None) -> None:
        if issubclass(kind, (NDRUniConformantVaryingArray, NDRUniVaryingArray)):
            offset, items = self.count(), self.count()
            if self.strict and (offset != 0 or (max_count is not None and items > max_count)):
                raise NdrDecodeError(f"{kind.__name__}: counts {max_count}/{offset}/{items}")
        elif max_count is not None:
            items = max_count
        else:    # a fixed array: impacket gives its size by getDataLen, raw octets
            self._claim(_shape(kind, self.ndr64).fixed_size)
            return
        item = kind.item
        if items > self._left():
            raise NdrDecodeError(f"{kind.__name__}: {items} elements run past the stub")
        if isinstance(item, str):
            size = struct.calcsize(item)
            self._align(size)
            self._claim(size * items, size if item[-1] in _INTEGER_CODES else 0)
            return
        deferred: list[type] = []
        for _ in range(items):
            start = self.pos
            self.value(item, deferred)
            if self.pos == start:      # an element of no octets: the count would bound nothing
                raise NdrDecodeError(f"{kind.__name__}: empty {item.__name__} element")
        self.referents(deferred)

    def structure(self, kind: type, deferred: list) -> None:
        shape = _shape(kind, self.ndr64)
        fields = shape.fields
        last = fields[-1][1] if fields else None
        hoisted = isinstance(last, type) and issubclass(last, NDRArray)
        max_count = self.conformance(last) if hoisted else None
        self._align(shape.alignment)
        for _name, field_kind in fields:
            if isinstance(field_kind, str):
                self.inline(field_kind, pad=False)
            elif hoisted and field_kind is last:
                self.array(field_kind, max_count)
            else:
                self.value(field_kind, deferred)

    def wstr(self, name: str) -> None:
        """C706 14.3.4.2 conformant varying string: max count, offset, actual count, units."""
        max_count, offset, actual = self.count(), self.count(), self.count()
        if 2 * actual > self._left():
            raise NdrDecodeError(f"{name}: {actual} characters run past the stub")
        if self.strict:
            # C706 14.3.4.2: the receiver accepts max_count >= actual_count (a buffer larger
            # than the string); a server rejects max_count < actual_count and a non-zero offset.
            if max_count < actual or offset != 0 or actual == 0:
                raise NdrDecodeError(f"{name}: counts {max_count}/{offset}/{actual} not a plain string")
            end = self.pos + 2 * actual
            if self.buf[end - 2:end] != b"\x00\x00":
                raise NdrDecodeError(f"{name}: not NUL-terminated")
        self._claim(2 * actual, 2)


@dataclass(frozen=True, slots=True)
class _Shape:
    """An NDR type's layout in the transfer syntax."""
    fields: tuple          # commonHdr + structure, in the transfer syntax's variant
    alignment: int         # impacket's getAlignment() of the type
    fixed_size: int = 0    # a fixed array's octets


@lru_cache(maxsize=None)
def _shape(kind: type, ndr64: bool) -> _Shape:
    """The fields and alignment impacket gives a type (its NDR64 variants when ``ndr64``)."""
    instance = kind(isNDR64=ndr64)
    fixed = instance.getDataLen(b"") if issubclass(kind, NDRUniFixedArray) else 0
    return _Shape(tuple(instance.commonHdr) + tuple(instance.structure), instance.getAlignment(), fixed)


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


def little_endian_stub(kind: type[NDRCALL], stub: bytes, ndr64: bool = False) -> bytes:
    """A big-endian request stub of ``kind`` rewritten to little endian, octet for octet
    (alignment gaps and opaque octets, such as a context handle's, as they were);
    NdrDecodeError when it does not walk as ``kind``."""
    walker = _Walker(stub, little=False, strict=False, ndr64=ndr64)
    walker.walk(kind.structure)
    return bytes(walker.out)


def _decode_as(op: Operation, kind: type[NDRCALL], stub: bytes, little_endian: bool, ndr64: bool) -> DecodedCall:
    if not little_endian:
        try:
            stub = little_endian_stub(kind, stub, ndr64)
        except NdrDecodeError as exc:
            raise NdrDecodeError(f"{op.name}: {exc.reason}") from None
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
