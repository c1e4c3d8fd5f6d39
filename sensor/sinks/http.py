"""HTTP collectors: one POST per batch, in one of four request shapes.

    https://HOST/PATH           JSON lines (application/x-ndjson), or with
                                http_format = "array" one JSON array per request
    splunk+https://HOST:8088    Splunk HTTP Event Collector: /services/collector/event, a
                                concatenation of {"time", "host", "source", "sourcetype",
                                "event"} objects, "Authorization: Splunk TOKEN"
    elastic+https://HOST:9200/INDEX
                                Elasticsearch _bulk: a "create" action with _id = alert_id
                                (event_id for events), so a record sent twice is stored once;
                                "Authorization: ApiKey TOKEN"

http:// (and splunk+http://, elastic+http://) is for a collector on the same host. The token
comes from a file (outputs.token_file) or $DFS_SENSOR_HTTP_TOKEN, never the command line
(it would show in ps). TLS certificates are verified unless outputs.tls_verify = false.

A batch counts as delivered on a 2xx answer. Elasticsearch answers 200 with per-item results:
"created" and 409 "already exists" (a duplicate the _id caught) are delivered; 429 and 5xx
items make the batch fail and go again; other item errors (a mapping the index refuses) are
counted as rejected and not retried, or one bad record would block the spool forever.
"""
from __future__ import annotations

import json
import ssl
from datetime import datetime
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from sensor.sinks.sender import SinkUnavailable, formatted, record_of

TIMEOUT_SECONDS = 10.0
PRESETS = ("lines", "array", "splunk", "elastic")
SPLUNK_DEFAULT_PATH = "/services/collector/event"
SOURCETYPE = {"alerts": "dfs-sensor:alert", "events": "dfs-sensor:event"}
# An item status that says "try again later" rather than "this record is wrong".
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class HttpTransport:
    def __init__(self, url: str, preset: str, stream: str, sensor: str, token: str | None,
                 tls_context: ssl.SSLContext | None):
        if preset not in PRESETS:
            raise ValueError(f"unknown HTTP format {preset!r}")
        self.preset = preset
        self.stream = stream
        self.sensor = sensor
        self.token = token
        self.rejected = 0
        self.rejection = ""
        parts = urlsplit(url)
        path = parts.path
        if preset == "splunk" and path in ("", "/"):
            path = SPLUNK_DEFAULT_PATH
        self.index = None
        if preset == "elastic":
            self.index = path.strip("/").removesuffix("/_bulk") or None
            path = "/_bulk"
        self.url = urlunsplit((parts.scheme, parts.netloc, path or "/", parts.query, ""))
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=tls_context))

    def send(self, lines: list[str]) -> None:
        body, content_type = self._body(lines)
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": content_type})
        if self.token:
            scheme = {"splunk": "Splunk", "elastic": "ApiKey"}.get(self.preset, "Bearer")
            request.add_header("Authorization", f"{scheme} {self.token}")
        try:
            with self._opener.open(request, timeout=TIMEOUT_SECONDS) as answer:
                reply = answer.read()
        except urllib.error.HTTPError as e:
            raise SinkUnavailable(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ssl.SSLError) as e:
            reason = getattr(e, "reason", e)
            raise SinkUnavailable(str(getattr(reason, "strerror", None) or reason)) from None
        if self.preset == "elastic":
            self._check_bulk(reply)

    def _body(self, lines: list[str]) -> tuple[bytes, str]:
        # Every line is a record (Unformattable if not): one that is not would make the whole
        # request one the collector refuses (an array that is not JSON), again at every retry.
        records = formatted(lines, record_of)
        if self.preset == "lines":
            return ("\n".join(lines) + "\n").encode("utf-8"), "application/x-ndjson"
        if self.preset == "array":
            return ("[" + ",".join(lines) + "]").encode("utf-8"), "application/json"
        if self.preset == "splunk":
            return "".join(formatted(records, lambda record: json.dumps(
                {"time": _epoch(record), "host": self.sensor, "source": "dfs-sensor",
                 "sourcetype": SOURCETYPE[self.stream], "event": record}, separators=(",", ":")))
            ).encode("utf-8"), "application/json"
        out = []
        for line, record in zip(lines, records):
            action = {"_id": record.get("alert_id") or record.get("event_id")}
            if self.index:
                action["_index"] = self.index
            out += [json.dumps({"create": action}, separators=(",", ":")), line]
        return ("\n".join(out) + "\n").encode("utf-8"), "application/x-ndjson"

    def _check_bulk(self, reply: bytes) -> None:
        try:
            result = json.loads(reply)
        except ValueError:
            raise SinkUnavailable("not a _bulk answer") from None
        if not result.get("errors"):
            return
        results = [next(iter(item.values())) for item in result.get("items", [])]
        if any(r.get("status", 0) in RETRY_STATUSES for r in results):
            raise SinkUnavailable("some items were refused for now (429/5xx); retrying the batch")
        refused = [r for r in results if r.get("status", 0) >= 300 and r.get("status") != 409]
        if refused:
            error = refused[-1].get("error")
            kind = error.get("type") if isinstance(error, dict) else error
            self.rejection = f"Elasticsearch item status {refused[-1].get('status')}" + (f": {kind}" if kind else "")
        self.rejected += len(refused)

    def idle(self) -> None:
        """A 2xx answer is the collector's acknowledgement: nothing to redeliver."""

    def forked(self) -> None:
        """Connections are per request: nothing inherited."""

    def close(self) -> None:
        """Connections are per request (urllib); nothing held."""


def _epoch(record: dict) -> float | None:
    """Splunk's "time": epoch seconds of the alert's timestamp or the event's event_timestamp."""
    if "event_timestamp" in record:
        return record["event_timestamp"] / 1000
    text = record.get("timestamp")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None
