"""pyproject.toml's runtime dependencies are exactly the third-party packages sensor/ imports;
what only tests, bench/ or the lab use belongs to the `test` extra."""
from __future__ import annotations

import ast
import re
import sys
import tomllib

from tests.conftest import ROOT


def requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def third_party_imports(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != package}


def test_runtime_dependencies_are_what_the_sensor_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(r) for r in project["dependencies"]}
    test_only = {requirement_name(r) for r in project["optional-dependencies"]["test"]}
    assert runtime == third_party_imports("sensor")
    assert not runtime & test_only
    assert "scapy" in test_only
