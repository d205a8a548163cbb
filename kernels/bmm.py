"""Batched matrix products for compiled `kn.bmm`: out[i] = op(a[i]) @ op(b[i]) for every
batch index i, as one GEMM per matrix (BLAS on the CPU, cuBLAS or knetc's tiled GEMM on a
GPU) instead of a broadcast product reduced over k.

The generated drivers call `fn(a, b, out, trans_a=.., trans_b=..)` with C-contiguous arrays
whose leading (batch) axes are equal (the op broadcasts them first): a (..., m, k) or, with
trans_a, (..., k, m); b (..., k, n) or (..., n, k); out (..., m, n). op is the identity or,
with the flag, the transpose of the last two axes, taken as a view (no copy).

    >>> bmm_cpu(q, k, scores, trans_a=False, trans_b=True)   # scores[i] = q[i] @ k[i].T

The CPU routine runs the batch on the calling thread and its GEMMs with BLAS's threads
(Numba's np.dot calls SciPy's OpenBLAS, see kernels/matmul.py), and leaves the GIL so that
the Python driver's kernel threads are not held up.
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _bmm_nn(a, b, out):
    for i in range(out.shape[0]):
        np.dot(a[i], b[i], out[i])


@njit(cache=True, nogil=True)
def _bmm_nt(a, b, out):
    for i in range(out.shape[0]):
        np.dot(a[i], b[i].T, out[i])


@njit(cache=True, nogil=True)
def _bmm_tn(a, b, out):
    for i in range(out.shape[0]):
        np.dot(a[i].T, b[i], out[i])


@njit(cache=True, nogil=True)
def _bmm_tt(a, b, out):
    for i in range(out.shape[0]):
        np.dot(a[i].T, b[i].T, out[i])


def _as3(x):
    """x (..., r, c) as (batch, r, c): a view of the C-contiguous array."""
    return x.reshape((-1,) + x.shape[-2:])


def bmm_cpu(a, b, out, trans_a=False, trans_b=False):
    a3, b3, out3 = _as3(a), _as3(b), _as3(out)
    if out3.shape[0] == 0 or out3.shape[1] == 0 or out3.shape[2] == 0:
        return
    if (a3.shape[1] if trans_a else a3.shape[2]) == 0:  # k == 0: a sum of nothing
        out3[...] = 0
        return
    if trans_a:
        (_bmm_tt if trans_b else _bmm_tn)(a3, b3, out3)
    else:
        (_bmm_nt if trans_b else _bmm_nn)(a3, b3, out3)
