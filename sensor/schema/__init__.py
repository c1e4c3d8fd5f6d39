"""JSON Schemas (draft 2020-12) of what the sensor writes out: alert.schema.json (every rule's
envelope, sensor/alerts.py) and event.schema.json (the xdr_data-named RpcCallEvent)."""
from __future__ import annotations

import json
from importlib import resources


def load(name: str) -> dict:
    """``load("alert")`` or ``load("event")``: the schema as a dict."""
    return json.loads(resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8"))
