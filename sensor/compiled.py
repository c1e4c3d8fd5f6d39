"""The compiled core: the per-packet modules, built with Cython where it can, else pure Python.

The modules in MODULES are the packet path (bulk lane, SMB fast path, flow table, TCP,
NetBIOS framing, SMB2 header triage, the pipeline's feed, and the batch entry that walks the
capture reader's window into it; the reader itself compiled as it is ran no faster, so it is
not among them). ``setup.py`` compiles
each from its own ``.py`` with the C declarations of the ``.pxd`` beside it, if any (Cython's
"augmenting .pxd": which classes are C structs, the types of their attributes and of the hot
locals), so there is one source: the same ``.py`` is the pure-Python path wherever there is
no C compiler, and the tests run on both (scripts/test). A class declared in a ``.pxd`` takes
only the attributes declared there: a new attribute needs a line in its ``.pxd`` too.

The choice is made once, when ``sensor`` is imported, for all the modules together (the
compiled ones read each other's C fields, so they cannot be mixed with pure ones): the
compiled modules are used when every one is built and none is older than its source (an
edited checkout, not rebuilt yet, runs what it reads); otherwise, or with DFS_SENSOR_PURE=1
in the environment, the ``.py`` files are imported. ``CORE`` says which, and why
(``dfs-sensor --version`` shows it).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

# The per-packet modules, most with a .pxd of C declarations beside their .py (the order is
# the build's, leaves first). The byte budget is among them: the NetBIOS stage charges it per
# buffered segment; so is the pipe table: the SMB2 header triage asks it about handles.
# SmbConnection stays a Python class (its module compiled as is): a C class's __init__ has no
# signature for the stage contract's check to read.
MODULES = (
    "sensor.budget",
    "sensor.net.tcp",
    "sensor.net.flows",
    "sensor.net.lane",
    "sensor.smb.netbios",
    "sensor.smb.pipes",
    "sensor.smb.protocol",
    "sensor.smb.smb2",
    "sensor.smb.connection",
    "sensor.smb.fastpath",
    "sensor.pipeline",
    "sensor.capture.batch",
)
# Set to anything but "" or "0": import the pure-Python modules even where the compiled ones
# are built (a check that both give the same results; at build time: do not compile).
PURE_ENV = "DFS_SENSOR_PURE"
# An extension this much older than its source was built from an older version of it. A
# margin, not 0: a wheel install writes a module's .py and .so moments apart, in any order.
STALE_AFTER_SECONDS = 2.0

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _paths(module: str) -> tuple[str, list[str]]:
    """A module's source file and the extension files it may have been built into."""
    base = os.path.join(_PACKAGE_ROOT, *module.split("."))
    return base + ".py", [base + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES]


def _why_pure() -> str:
    """"" when the compiled modules are to be used, else why not."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    for module in MODULES:
        source, candidates = _paths(module)
        built = [path for path in candidates if os.path.exists(path)]
        if not built:
            return "not built (no C compiler or Cython when installed)"
        if os.path.getmtime(source) > os.path.getmtime(built[0]) + STALE_AFTER_SECONDS:
            return f"the build is older than {module.replace('.', '/')}.py: reinstall (scripts/setup) to rebuild"
    return ""


class _SourceFinder:
    """Imports the pure-Python source of MODULES, ahead of the extension modules beside them."""

    def find_spec(self, name: str, path=None, target=None):
        if name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(name, _paths(name)[0])


def _choose() -> str:
    why = _why_pure()
    if not why:
        return "compiled with Cython"
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
    return f"pure Python ({why})"


# Which core this process runs, for --version and the tests.
CORE = _choose()
COMPILED = CORE.startswith("compiled")
