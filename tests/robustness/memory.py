"""Measuring what a flood costs: the traced heap peak while a function runs."""
from __future__ import annotations

import tracemalloc


def peak_of(fn):
    """(fn's result, the peak bytes traced by tracemalloc while it ran)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
