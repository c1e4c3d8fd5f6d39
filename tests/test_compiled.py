"""The compiled core's switch (sensor/compiled.py): which modules a process runs, and why.

That both cores give the same records and counters is checked where the fast paths are
checked, on every capture: tests/net/test_lane.py (pcaps/, the corpus) and
tests/smb/test_fastpath.py (the small-message workload). scripts/test runs the packet-path
tests a second time with DFS_SENSOR_PURE=1.
"""
from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path


from sensor import compiled

ROOT = Path(__file__).resolve().parent.parent
SENSOR = ROOT / ".venv" / "bin" / "dfs-sensor"
CI = os.environ.get("CI") == "true"
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def loaded_from(env: dict) -> dict[str, str]:
    """module -> the file a fresh process imported it from, under ``env``."""
    script = ("import importlib, sys\nfrom sensor import compiled\n"
              "for name in compiled.MODULES: print(name, importlib.import_module(name).__file__)\n"
              "print('CORE', compiled.CORE)")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_pure_env_imports_every_module_from_its_source_and_says_so():
    files = loaded_from(dict(os.environ, DFS_SENSOR_PURE="1"))
    assert files.pop("CORE") == "pure Python (DFS_SENSOR_PURE is set)"
    assert set(files) == set(compiled.MODULES)
    for name, path in files.items():
        assert Path(path) == ROOT.joinpath(*name.split(".")).with_suffix(".py"), name


def test_version_names_the_core():
    for env in (dict(os.environ, DFS_SENSOR_PURE="1"),
                {k: v for k, v in os.environ.items() if k != "DFS_SENSOR_PURE"}):
        out = subprocess.run([str(SENSOR), "--version"], env=env, capture_output=True, text=True,
                             check=True).stdout
        assert out.strip().endswith(f"(per-packet core: {loaded_from(env)['CORE']})"), out


def test_a_built_core_is_the_one_imported_and_ci_builds_it():
    """CI installs gcc and python3-dev (scripts/setup --test): there the core must be compiled,
    or every equality test would compare the pure path with itself."""
    env = {k: v for k, v in os.environ.items() if k != "DFS_SENSOR_PURE"}
    files = loaded_from(env)
    core = files.pop("CORE")
    if CI:
        assert core == "compiled with Cython", core
    if core == "compiled with Cython":
        for name, path in files.items():
            assert path.endswith(SUFFIX), name
    else:
        assert all(path.endswith(".py") for path in files.values())


def fake_tree(tmp_path: Path, built: bool = True) -> Path:
    """A package root with every module's source and (``built``) an extension file beside it."""
    for name in compiled.MODULES:
        base = tmp_path.joinpath(*name.split("."))
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_suffix(".py").write_text("")
        os.utime(base.with_suffix(".py"), (1_000_000, 1_000_000))
        if built:
            Path(str(base) + SUFFIX).write_bytes(b"")
            os.utime(str(base) + SUFFIX, (1_000_000, 1_000_000))
    return tmp_path


def test_the_core_is_used_only_when_every_module_is_built_and_none_is_older_than_its_source(tmp_path, monkeypatch):
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    monkeypatch.setattr(compiled, "_PACKAGE_ROOT", str(fake_tree(tmp_path)))
    assert compiled._why_pure() == ""
    # A wheel writes a .py a moment after its .so: not stale.
    tcp = tmp_path / "sensor" / "net" / "tcp.py"
    os.utime(tcp, (1_000_001, 1_000_001))
    assert compiled._why_pure() == ""
    # An edited checkout, not rebuilt: its source is what runs.
    os.utime(tcp, (1_000_060, 1_000_060))
    assert compiled._why_pure() == ("the build is older than sensor/net/tcp.py: reinstall (scripts/setup) "
                                    "to rebuild")
    os.utime(tcp, (1_000_000, 1_000_000))
    Path(str(tmp_path / "sensor" / "pipeline") + SUFFIX).unlink()
    assert compiled._why_pure().startswith("not built")
    monkeypatch.setenv(compiled.PURE_ENV, "0")
    assert compiled._why_pure().startswith("not built")
    monkeypatch.setenv(compiled.PURE_ENV, "1")
    assert compiled._why_pure() == "DFS_SENSOR_PURE is set"


def test_nothing_built_is_pure(tmp_path, monkeypatch):
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    monkeypatch.setattr(compiled, "_PACKAGE_ROOT", str(fake_tree(tmp_path, built=False)))
    assert compiled._why_pure() == "not built (no C compiler or Cython when installed)"
