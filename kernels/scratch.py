"""Local arrays of the generated CPU kernels: a row's buffered entries, the accumulators of
a block of a column sum (knetc/backend/expressions.py).

np.empty written in a kernel makes Numba compile numpy's allocation code again in each new
process, about 0.1 s for the first kernel that needs it. Behind this cached function it is
compiled once per dtype and number of axes, then loaded from the cache.

    >>> empty_cpu((4, 3), np.float32).shape   # (4, 3)
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def empty_cpu(shape, dtype):
    """np.empty(shape, dtype), dtype a numpy scalar type (np.float32, np.bool_, ...)."""
    return np.empty(shape, dtype)
