"""The CPU GEMM generated drivers call: out = a @ b through Numba's np.dot.

Numba's np.dot calls SciPy's OpenBLAS, the BLAS whose threads knetc.runtime.threads sets
(one thread inside the convolutions' parallel loops). numpy's own np.dot would call numpy's
separate OpenBLAS, whose threads, still spinning after a GEMM, took the cores from the
parallel loops that followed: the CPU LeNet step ran about 1.7x slower so.

    >>> matmul_cpu(a, b.T, out)   # float32 or float64 matrices; transposed views are fine
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def matmul_cpu(a, b, out):
    np.dot(a, b, out)
