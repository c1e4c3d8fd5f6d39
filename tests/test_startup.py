"""What a command loads before its first packet (issue 14: the fixed cost of every replay).

Structure, not timing (bench/startup.py times it): the heavy modules are imported when
something needs them, checked in a fresh interpreter's sys.modules.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sensor.xql import prebuilt
from sensor.xql.rules import SHIPPED_RULES

ROOT = Path(__file__).resolve().parents[1]
ATTACK_CAPTURE = ROOT / "pcaps" / "dfscoerce-smb21.pcap"      # netdfs calls only
CI = os.environ.get("CI") == "true"


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def under(modules: set[str], package: str) -> set[str]:
    return {m for m in modules if m == package or m.startswith(package + ".")}


def test_the_command_line_loads_no_ndr_engine():
    """impacket's DCE/RPC modules (rpcrt pulls in its crypto, NTLM and Kerberos) come with the
    first decoded call, not with the command line or the catalog; ctypes with live capture."""
    modules = loaded_after("import sensor.cli\nfrom sensor.interfaces.catalog import default_catalog\n"
                           "default_catalog()")
    assert not under(modules, "impacket")
    assert not under(modules, "Cryptodome")
    assert not under(modules, "ctypes")          # live capture's libpcap bindings: live only
    assert not under(modules, "tomllib")         # with a configuration or allow-list file only
    assert "sensor.xql.sql" not in modules       # hunt's SQL compiler
    assert not {"ssl", "http.client"} & modules  # a collector's transport: with a remote target only


def test_a_decoded_call_loads_its_own_interfaces_types_only():
    modules = loaded_after(
        "from sensor.pipeline import Pipeline, PipelineSettings\n"
        "from sensor.capture.pcapfile import open_capture\n"
        "from sensor.events import RpcCallEvent\n"
        "pipeline = Pipeline(PipelineSettings())\n"
        f"with open_capture({str(ATTACK_CAPTURE)!r}) as reader:\n"
        "    records = [r for item in reader for r in pipeline.feed(*item)] + list(pipeline.close())\n"
        "assert any(isinstance(r, RpcCallEvent) and r.action_rpc_func_opnum == 12 for r in records)\n")
    assert "sensor.interfaces.dfsnm" in modules and "impacket.dcerpc.v5.ndr" in modules
    assert not {"sensor.interfaces.rprn", "sensor.interfaces.efsr", "impacket.dcerpc.v5.rprn",
                "impacket.dcerpc.v5.even", "impacket.dcerpc.v5.rpcrt"} & modules



def test_the_shipped_rules_need_no_lark(tmp_path):
    """The detector's rules come prebuilt from the install (sensor/xql/prebuilt.py): no lark
    import, no LALR parse; a user's rule is parsed with lark as before."""
    if prebuilt.shipped_query((SHIPPED_RULES / "family" / "even.xql").read_text()) is None:
        pytest.skip("missing or stale prebuilt XQL (tests/xql/test_prebuilt.py says which): run scripts/setup")
    plans = "from sensor.detect.rarity import RaritySettings, detector_plans\ndetector_plans(RaritySettings({}))\n"
    assert not under(loaded_after("import sensor.cli\n" + plans.format("")), "lark")
    rule = tmp_path / "mine.xql"
    rule.write_text((SHIPPED_RULES / "family" / "even.xql").read_text().replace("// id: ", "// id: mine-"))
    assert "lark" in loaded_after(plans.format(f"rules=({str(rule)!r},)"))


def probed_replay(probe: str, tmp_path) -> tuple[str, list]:
    """A replay of the attack capture in a fresh interpreter after ``probe`` (which gathers
    names into the list ``noted``): the replay's output and ``noted``."""
    script = (f"import json, sys\nnoted = []\n{probe}"
              "from sensor.cli import main\n"
              f"sys.argv = ['dfs-sensor', 'replay', '--db', {str(tmp_path / 'replay.db')!r}, {str(ATTACK_CAPTURE)!r}]\n"
              "try:\n"
              "    main()\n"
              "except SystemExit:\n"
              "    pass\n"
              "print(json.dumps(noted))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert '"rule":{"id":"dfscoerce-rare-dfsnm-root-call"' in done.stdout      # it did replay
    return done.stdout, json.loads(done.stdout.splitlines()[-1])


def test_a_replay_compiles_no_dataclass_method(tmp_path):
    """Every dataclass a replay makes runs its methods' code stored at install
    (sensor/dataclass_code.py): Python's parser and compiler do not run for them. Stale or
    missing (a class edited since the install), every start compiles them again (correct,
    slower); CI installs afresh, so there it must hold."""
    _, compiled = probed_replay("import dataclasses\n"
                                "from sensor import dataclass_code\n"
                                "stored_exec = getattr(dataclasses, 'exec', exec)\n"
                                "def counting(source, *args):\n"
                                "    if source not in dataclass_code.CODES:\n"
                                "        noted.append(source)\n"
                                "    stored_exec(source, *args)\n"
                                "dataclasses.exec = counting\n", tmp_path)
    if compiled and not CI:
        pytest.skip("missing or stale precompiled dataclasses (not CI): run scripts/setup")
    assert compiled == []


def test_a_replay_makes_no_dataclass_without_a_docstring(tmp_path):
    """dataclasses gives a class without a docstring one made by inspect.signature, at every
    start (~0.25 M instructions a class): every dataclass a replay makes has its own."""
    _, undocumented = probed_replay("import inspect\n"
                                    "signature = inspect.signature\n"
                                    "def noting(obj, *args, **kwargs):\n"
                                    "    if sys._getframe(1).f_code.co_name == '_process_class':     # dataclasses' __doc__\n"
                                    "        noted.append(f'{obj.__module__}.{obj.__qualname__}')\n"
                                    "    return signature(obj, *args, **kwargs)\n"
                                    "inspect.signature = noting\n"
                                    "import dataclasses\n"
                                    "dataclasses.dataclass(type('Undocumented', (), {'__annotations__': {'x': int}}))\n",
                                    tmp_path)
    assert undocumented == ["__main__.Undocumented"]      # the probe's own: it sees them
