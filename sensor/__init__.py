# Before any module makes a dataclass: their generated methods' code, compiled at install.
from sensor import dataclass_code as _dataclass_code

_dataclass_code.install()
# Chooses the compiled or the pure-Python per-packet modules before any of them is imported.
from sensor import compiled as _compiled  # noqa: E402,F401
