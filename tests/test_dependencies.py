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


def optional_imports(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``try: ... except ImportError``: optional at run time (the
    compiled core's ``import cython``: Cython is a build dependency, pyproject's build-system)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return guarded


def third_party_imports(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        optional = optional_imports(tree)
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
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
