"""Run numpy's OpenBLAS single-threaded in the merging thread.

The merge's GEMMs have an inner dimension of the LoRA rank (8-64): they are memory-bound, so
more threads add little but a hand-off on every call. The second core goes to the thread
writing the output instead.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _set_threads_local() -> Callable[[int], int] | None:
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*.so*")):
        try:
            # Already loaded by numpy, so this returns the same library instance.
            fn = ctypes.CDLL(str(path)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


_SET_LOCAL = _set_threads_local()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Best effort: a numpy without that OpenBLAS entry point runs unchanged."""
    if _SET_LOCAL is None:
        yield
        return
    before = _SET_LOCAL(1)
    try:
        yield
    finally:
        _SET_LOCAL(before)
