# Chooses the compiled or the pure-Python per-packet modules before any of them is imported.
from sensor import compiled as _compiled  # noqa: F401
