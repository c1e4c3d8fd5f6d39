"""Build of the compiled core (sensor/compiled.py): the per-packet modules compiled with Cython
from their own .py and .pxd when Cython and a C compiler are there. Where either is missing,
or a module fails to build, the install goes on without them (pure Python, with a warning in
pip's log); DFS_SENSOR_PURE=1 at install time skips the build. Also the XQL parser's LALR
tables and the shipped rules' parse (sensor/xql/prebuilt.py), and the dataclasses' generated
methods' code (sensor/dataclass_code.py). Everything else is in pyproject.toml.
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# Read without importing the package (its __init__ would choose a core).
_compiled = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sensor", "compiled.py"))
# Checks the generated C would make on every index and attribute are left out where the code
# never relies on them: negative indexes are used (wraparound stays), bounds are not.
DIRECTIVES = {"language_level": 3, "boundscheck": False,
              # Type annotations stay documentation: a parameter annotated ``bytes`` also
              # takes a memoryview, as in Python; the .pxd files say what is a C type.
              "annotation_typing": False}


def _extensions() -> list:
    if os.environ.get(_compiled["PURE_ENV"], "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("dfs-sensor: Cython is not installed: the per-packet modules stay pure Python", file=sys.stderr)
        return []
    sources = [module.replace(".", "/") + ".py" for module in _compiled["MODULES"]]
    try:
        return cythonize(sources, compiler_directives=DIRECTIVES, build_dir="build/cython", quiet=True)
    except Exception as e:      # a Cython error: the install goes on, pure Python
        print(f"dfs-sensor: Cython could not translate the per-packet modules ({e}): they stay pure Python",
              file=sys.stderr)
        return []


class OptionalBuildExt(build_ext):
    """Compile in parallel; a missing compiler or a failed compile leaves the pure-Python modules
    (sensor/compiled.py uses the compiled ones only when all of them are there)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:
            print(f"dfs-sensor: no C compiler could build the per-packet modules ({e}): they stay pure Python",
                  file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            print(f"dfs-sensor: {ext.name} was not compiled ({e}): the per-packet modules stay pure Python",
                  file=sys.stderr)


class BuildPyWithPrebuilt(build_py):
    """Writes what every start would otherwise build: the XQL parser's tables and the shipped
    rules' parse (sensor/xql/prebuilt.py) beside the grammar, the code of the dataclasses'
    generated methods (sensor/dataclass_code.py) beside that module; into the build (a wheel),
    or into the source tree for an editable install (as build_ext's in-place build). Without
    them the parser is built, and the methods compiled, at each start."""

    def run(self) -> None:
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        package = os.path.join(here if self.editable_mode else self.build_lib, "sensor")
        # Each in a process of its own: they import the package's modules from this source tree.
        steps = {"the XQL parser was not prebuilt": ["-m", "sensor.xql.prebuilt", os.path.join(package, "xql")],
                 "the dataclasses' methods were not precompiled": [
                     "-c", "import sys; from sensor.dataclass_code import write; print(write(sys.argv[1]))", package]}
        for failure, arguments in steps.items():
            done = subprocess.run([sys.executable, *arguments], cwd=here, capture_output=True, text=True)
            if done.returncode != 0:
                why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                print(f"dfs-sensor: {failure} ({why}): it is done at each start", file=sys.stderr)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithPrebuilt})
