"""The dataclasses' generated methods compiled at install (sensor/dataclass_code.py): a class
made with the stored code is the class Python's compiler makes, a text not stored is compiled
as before, a file of another Python or a damaged one is not used. That a replay finds all of
its classes stored: tests/test_startup.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.util import MAGIC_NUMBER
from pathlib import Path

import pytest

from sensor import dataclass_code

ROOT = Path(__file__).resolve().parents[1]
# A package of dataclasses of each kind dataclasses generates methods for.
MODULE = '''
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0


@dataclass(order=True)
class Bag:
    name: str
    items: list = field(default_factory=list)
'''
# What a fresh interpreter sees of those classes; argv[1]: the stored code's file, or "" for none.
PROBE = '''
import dataclasses, json, sys
from sensor import dataclass_code
if sys.argv[1]:
    dataclass_code.install(sys.argv[1])
from tests_pkg.shapes import Bag, Point

def nested(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            yield from nested(const)

stored = [c for code in dataclass_code.CODES.values() for c in nested(code)]
p = Point(1)
try:
    p.x = 2
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
bag = Bag("b")
bag.items.append(1)
print(json.dumps({
    "behaviour": [repr(p), p == Point(1, 0), p == Point(2), hash(p) == hash(Point(1, 0)), frozen,
                  repr(bag), Bag("a") < Bag("b"), Bag("c").items is not Bag("c").items],
    "stored_init": any(Point.__init__.__code__ is c for c in stored),
    # (__repr__ is wrapped by dataclasses' recursion guard)
    "stored_methods": sorted(name for cls in (Point, Bag) for name, f in vars(cls).items()
                             if any(getattr(getattr(f, "__wrapped__", f), "__code__", None) is c for c in stored)),
}))
'''


@pytest.fixture
def package(tmp_path):
    (tmp_path / "tests_pkg").mkdir()
    (tmp_path / "tests_pkg" / "__init__.py").write_text("")
    (tmp_path / "tests_pkg" / "shapes.py").write_text(MODULE)
    return tmp_path


def run(package: Path, code: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=package,
                          env=env, check=True)
    return done.stdout


def written(package: Path) -> Path:
    """The stored code of ``tests_pkg``, written as setup.py writes the package's."""
    run(package, "import sys; from sensor.dataclass_code import write; write(sys.argv[1], 'tests_pkg')",
        str(package / "tests_pkg"))
    return package / "tests_pkg" / dataclass_code.DATA_FILE_NAME


def seen(package: Path, data_file: Path | str) -> dict:
    return json.loads(run(package, PROBE, str(data_file)))


def test_a_class_made_with_the_stored_code_is_the_compiled_one(package):
    data_file = written(package)
    compiled, stored = seen(package, ""), seen(package, data_file)
    assert stored["behaviour"] == compiled["behaviour"]
    assert stored["behaviour"] == ["Point(x=1, y=0)", True, False, True, True, "Bag(name='b', items=[1])", True,
                                   True]
    assert not compiled["stored_init"]
    assert stored["stored_init"]
    assert stored["stored_methods"] == ["__delattr__", "__eq__", "__eq__", "__ge__", "__gt__", "__hash__",
                                        "__init__", "__init__", "__le__", "__lt__", "__repr__", "__repr__",
                                        "__setattr__"]


def test_a_class_edited_since_the_install_is_compiled(package):
    data_file = written(package)
    shapes = package / "tests_pkg" / "shapes.py"
    shapes.write_text(MODULE.replace("y: int = 0", "y: int = 0\n    z: int = 5"))
    stored = seen(package, data_file)
    assert not stored["stored_init"]                         # the new __init__ is compiled now
    assert stored["behaviour"][0] == "Point(x=1, y=0, z=5)"
    assert "__repr__" in stored["stored_methods"]           # Bag's are the stored ones still


def test_the_stored_code_is_what_exec_compiles(package):
    codes = dataclass_code.read(written(package))
    # Point (frozen): __init__ __repr__ __eq__ __hash__ __setattr__ __delattr__; Bag (order):
    # __init__ __repr__ __eq__ __lt__ __le__ __gt__ __ge__; one text each
    assert len(codes) == 13
    for text, code in codes.items():
        fresh = compile(text, "<string>", "exec", dont_inherit=True)
        assert code == fresh and code.co_filename == fresh.co_filename == "<string>"


@pytest.mark.parametrize("damage", [lambda data: b"\0\0\r\n" + data[len(MAGIC_NUMBER):],    # another Python's
                                    lambda data: data[:len(data) // 2],                      # truncated
                                    lambda data: MAGIC_NUMBER + b"\xff" * 16,
                                    lambda data: b""])
def test_a_file_of_another_python_or_damaged_is_not_used(package, damage):
    data_file = written(package)
    data_file.write_bytes(damage(data_file.read_bytes()))
    assert dataclass_code.read(data_file) == {}
    stored = seen(package, data_file)
    assert not stored["stored_init"] and stored["behaviour"] == seen(package, "")["behaviour"]


def test_a_missing_file_is_not_used(tmp_path):
    assert dataclass_code.read(tmp_path / "absent") == {}
