"""Validate what the sensor writes against its shipped JSON Schemas (with format checks:
ipv4/ipv6/uuid)."""
from __future__ import annotations

import json

from jsonschema import Draft202012Validator, FormatChecker

from sensor import schema

_VALIDATORS = {name: Draft202012Validator(schema.load(name), format_checker=FormatChecker())
               for name in ("alert", "event")}


def check(kind: str, record: dict | str) -> dict:
    """The record (parsed if given as a line); AssertionError naming every violation."""
    if isinstance(record, str):
        record = json.loads(record)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in _VALIDATORS[kind].iter_errors(record)]
    assert not errors, f"{kind} does not match its schema: {errors}"
    return record
