"""The native engine's DCE/RPC calls against Zeek's dce_rpc.log baselines in ../shared/corpus
(zeek/expected/<trace>/.../dce_rpc.log): per connection, the multiset of (endpoint, operation).
Every difference is listed in zeek_expectations.json (the format of tests/expectations.py)
with its cause. Zeek names interfaces
and operations its own way; ZEEK_NAMES maps the uuids and opnums these baselines use (opnums
as in the interfaces' specifications) and is used for this comparison only."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from sensor.dcerpc.events import RpcCall
from tests import expectations
from tests.conftest import CORPUS, corpus_manifest

EXPECTATIONS_FILE = Path(__file__).with_name("zeek_expectations.json")
ZEEK_NAMES: dict[str, tuple[str, dict[int, str]]] = {
    "e3514235-4b06-11d1-ab04-00c04fc2dcd2": ("drsuapi", {0: "DRSBind", 1: "DRSUnbind", 12: "DRSCrackNames"}),
    "3919286a-b10c-11d0-9ba8-00c04fd92ef5": ("dssetup", {0: "DsRolerGetPrimaryDomainInformation"}),
    "e1af8308-5d1f-11c9-91a4-08002b14a0fa": ("epmapper", {2: "ept_lookup", 3: "ept_map"}),
    "a4f1db00-ca47-1067-b31f-00dd010662da": ("exchange_mapi", {0: "EcDoConnect", 2: "EcDoRpc",
                                                               4: "EcRRegisterPushNotification"}),
    "12345678-1234-abcd-ef00-01234567cffb": ("netlogon", {45: "NetrLogonSamLogonWithFlags"}),
    "f5cc5a18-4264-101a-8c59-08002b2f8426": ("nspi", {0: "NspiBind"}),
}
LOG_COLUMNS = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "endpoint", "operation")


def baselines() -> dict[str, Path]:
    """Capture (manifest local_file) -> its Zeek dce_rpc.log."""
    return {c["local_file"]: CORPUS / log
            for c in corpus_manifest()
            for log in c.get("peer_expected_output_files") or () if log.endswith("/dce_rpc.log")}


def zeek_calls(log: Path) -> Counter:
    fields: list[str] = []
    calls: Counter = Counter()
    for line in log.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            row = dict(zip(fields, line.split("\t")))
            orig_h, orig_p, resp_h, resp_p, endpoint, operation = (row[c] for c in LOG_COLUMNS)
            calls[f"{orig_h}:{orig_p}->{resp_h}:{resp_p}|{endpoint}|{operation}"] += 1
    return calls


def zeek_name(call: RpcCall) -> str:
    if call.interface_uuid is None:
        return f"unknown|{call.opnum}"
    endpoint, operations = ZEEK_NAMES.get(call.interface_uuid, (call.interface_uuid, {}))
    return f"{endpoint}|{operations.get(call.opnum, call.opnum)}"


def native_calls(path: Path) -> Counter:
    from sensor.capture.pcapfile import open_capture
    from sensor.pipeline import Pipeline, PipelineSettings

    calls: Counter = Counter()

    def observe(flow, pipe, ev):
        if isinstance(ev, RpcCall):
            calls[f"{flow}|{zeek_name(ev)}"] += 1

    pipeline = Pipeline(PipelineSettings(rpc_observer=observe))
    for ts, linktype, data, frame in open_capture(path):
        pipeline.feed(ts, linktype, data, frame)
    pipeline.close()
    return calls


def test_native_calls_against_zeek_dce_rpc_logs(corpus):
    assert baselines(), "the corpus manifest lists no Zeek dce_rpc.log"
    observed = {}
    for capture, log in sorted(baselines().items()):
        diff = expectations.difference(native_calls(corpus / capture), zeek_calls(log))
        if diff:
            observed[capture] = diff
    assert observed == expectations.load(EXPECTATIONS_FILE).differences
