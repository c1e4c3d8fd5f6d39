"""Reading tshark's JSON protocol trees (``-T json``), where fields sit under labelled
subtrees ("Ctx Item[1]: ...", "GUID handle File: netdfs") whose nesting changes between
releases. The helpers search by field name at any depth, in document order."""
from __future__ import annotations

from typing import Any, Iterator

# tshark -x adds "<field>_raw": [hex, offset, length, bitmask, type] beside each field.
RAW_SUFFIX = "_raw"


def values(tree: Any, name: str) -> Iterator[Any]:
    """Every value of field ``name`` under ``tree``, in document order (duplicates are lists)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == name:
                if isinstance(value, list) and not name.endswith(RAW_SUFFIX):
                    yield from value
                else:
                    yield value
            elif isinstance(value, (dict, list)):
                yield from values(value, name)
    elif isinstance(tree, list):
        for item in tree:
            yield from values(item, name)


def first(tree: Any, name: str, default: Any = None) -> Any:
    return next(values(tree, name), default)


def number(tree: Any, name: str, default: int | None = None) -> int | None:
    """An integer field; tshark prints some in hex ("0x0210"), some in decimal."""
    text = first(tree, name)
    if not isinstance(text, str):
        return default
    try:
        return int(text, 0)
    except ValueError:
        return default


def raw_bytes(tree: Any, name: str) -> bytes | None:
    """The bytes of a field from its ``_raw`` twin (present with tshark -x)."""
    raw = first(tree, name + RAW_SUFFIX)
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        return bytes.fromhex(raw[0])
    return None


def labels(tree: Any, prefix: str) -> Iterator[str]:
    """Subtree labels starting with ``prefix`` (tshark names some things only in labels)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key.startswith(prefix):
                yield key
            if isinstance(value, (dict, list)):
                yield from labels(value, prefix)
    elif isinstance(tree, list):
        for item in tree:
            yield from labels(item, prefix)
