"""The code of the dataclasses' generated methods, compiled once at install time (issue 14).

Python 3.11's dataclasses write each class's ``__init__``, ``__repr__``, ``__eq__`` and, for a
frozen class, ``__hash__``, ``__setattr__`` and ``__delattr__`` as source text and ``exec`` it
(``dataclasses._create_fn``): every start ran Python's parser and compiler ~450 times for the
package's dataclasses, ~270 M instructions, over a third of a one-frame replay. The texts are
the same at every start (they are made from the class definitions alone), so ``setup.py`` runs
``write(DIR)`` in a process of its own when the package is built (into the wheel, or beside
this module for an editable install; scripts/setup again once every runtime dependency is
installed): it imports every module of the package with the texts recorded and writes their
code objects to ``DATA_FILE``. ``install()`` (sensor/__init__.py, before any dataclass is
made) has dataclasses' ``exec`` of a text found there run the stored code:
``exec(compile(text, "<string>", "exec"))`` is what ``exec(text)`` does.

A text not found there (a class edited since the install, a class outside the package) is
compiled as before; a file of another Python's bytecode (its magic number heads the file, as
in a .pyc) or a missing one is not used. The file is marshalled code like the package's own
__pycache__, in the package's directory, so it is trusted as much as they are.
"""
from __future__ import annotations

import dataclasses
import importlib
import marshal
import os
from importlib.util import MAGIC_NUMBER
from types import CodeType

DATA_FILE_NAME = "dataclass_code.marshal"      # beside this module
DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), DATA_FILE_NAME)
# What exec(text) compiles with: the file name tracebacks show, the mode.
FILENAME, MODE = "<string>", "exec"

# The stored code of each generated method's text, once install() has read it.
CODES: dict[str, CodeType] = {}


def read(path: str = DATA_FILE) -> dict[str, CodeType]:
    """The texts' code in ``path``; empty when it is missing, unreadable or another Python's."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    if not data.startswith(MAGIC_NUMBER):
        return {}
    try:
        codes = marshal.loads(memoryview(data)[len(MAGIC_NUMBER):])
    except (EOFError, ValueError, TypeError):      # a truncated or foreign file
        return {}
    return codes if isinstance(codes, dict) else {}


def _exec_stored(source, globals=None, locals=None, /) -> None:
    code = CODES.get(source) if isinstance(source, str) else None
    exec(source if code is None else code, globals, locals)


def install(path: str = DATA_FILE) -> None:
    """Make dataclasses run the stored code of the texts in ``path`` instead of compiling them."""
    CODES.update(read(path))
    if CODES:
        dataclasses.exec = _exec_stored


def write(directory: str, package: str = "sensor") -> str:
    """Import every module of ``package`` with dataclasses' texts recorded (in a process that
    has made none of the package's dataclasses yet); write their code to
    ``directory``/DATA_FILE_NAME."""
    import pkgutil

    recorded: dict[str, CodeType] = {}

    def recording(source, globals=None, locals=None, /) -> None:
        if isinstance(source, str):
            source = recorded.setdefault(source, compile(source, FILENAME, MODE, dont_inherit=True))
        exec(source, globals, locals)

    dataclasses.exec = recording
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, package + "."):
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as e:
            # A runtime dependency that pip's isolated build environment does not hold (it has
            # the build requirements alone): that module's classes are compiled at run time.
            if e.name is None or e.name == package or e.name.startswith(package + "."):
                raise
    path = os.path.join(directory, DATA_FILE_NAME)
    with open(path + ".tmp", "wb") as f:
        f.write(MAGIC_NUMBER + marshal.dumps(recorded))
    os.replace(path + ".tmp", path)
    return path

