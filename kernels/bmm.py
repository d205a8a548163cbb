"""Batched matrix products for compiled `kn.bmm`: out[i] = op(a[i]) @ op(b[i]) for every
batch index i, as one GEMM per matrix (BLAS on the CPU, cuBLAS or knetc's tiled GEMM on a
GPU) instead of a broadcast product reduced over k.

The generated drivers call `fn(a, b, out, trans_a=.., trans_b=..)` with C-contiguous arrays
whose leading (batch) axes are equal (the op broadcasts them first): a (..., m, k) or, with
trans_a, (..., k, m); b (..., k, n) or (..., n, k); out (..., m, n). op is the identity or,
with the flag, the transpose of the last two axes, taken as a view (no copy).

    >>> bmm_cpu(q, k, scores, trans_a=False, trans_b=True)   # scores[i] = q[i] @ k[i].T

The CPU routine runs its GEMMs through Numba's np.dot (SciPy's OpenBLAS, see
kernels/matmul.py) without the GIL, the batch split across knetc's threads when the product
is large (runtime.threads.in_parallel: all of them while BLAS runs on one thread, see
runtime/threads.py). One function per pair of transposes: each compiles for its operands'
layouts only (np.dot of a view that is neither C- nor F-contiguous would copy it).
"""
import math

import numpy as np
from numba import njit

from knetc.kernels.matmul import SPLIT_MIN
from knetc.runtime.threads import in_parallel


@njit(cache=True, nogil=True)
def _bmm_nn(a, b, out, lo, hi):
    for i in range(lo, hi):
        np.dot(a[i], b[i], out[i])


@njit(cache=True, nogil=True)
def _bmm_nt(a, b, out, lo, hi):
    for i in range(lo, hi):
        np.dot(a[i], b[i].T, out[i])


@njit(cache=True, nogil=True)
def _bmm_tn(a, b, out, lo, hi):
    for i in range(lo, hi):
        np.dot(a[i].T, b[i], out[i])


@njit(cache=True, nogil=True)
def _bmm_tt(a, b, out, lo, hi):
    for i in range(lo, hi):
        np.dot(a[i].T, b[i].T, out[i])


def as3(x):
    """x (..., r, c) as (batch, r, c): a view of the C-contiguous array (of size 0 too)."""
    return x.reshape((math.prod(x.shape[:-2]),) + x.shape[-2:])


def bmm_cpu(a, b, out, trans_a=False, trans_b=False):
    a3, b3, out3 = as3(a), as3(b), as3(out)
    if out3.shape[0] == 0 or out3.shape[1] == 0 or out3.shape[2] == 0:
        return
    if (a3.shape[1] if trans_a else a3.shape[2]) == 0:  # k == 0: a sum of nothing
        out3[...] = 0
        return
    kernel = (_bmm_tt if trans_b else _bmm_tn) if trans_a else (_bmm_nt if trans_b else _bmm_nn)
    if out3.size * (a3.shape[1] if trans_a else a3.shape[2]) >= SPLIT_MIN:
        in_parallel(kernel, out3.shape[0], a3, b3, out3)
    else:
        kernel(a3, b3, out3, 0, out3.shape[0])
