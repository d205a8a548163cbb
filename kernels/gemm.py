"""Tiled GEMM in Numba CUDA: ``C = alpha * op(A) @ op(B) + beta * C``.

The fallback when cuBLAS is missing (see knetc.runtime.cublas), and the GEMM that runs
under the CUDA simulator. op is identity or transpose, chosen by flags and done by
indexing (no copies). float32 and float64; any sizes (edge tiles are bounds-checked).

Each block computes a TILE x TILE tile of C with TILE x ROWS threads: thread (tx, ty)
owns the TILE // ROWS outputs C[row0 + ty + ROWS*r, col0 + tx]. The K dimension is
walked in TILE-wide steps; each step stages a tile of op(A) and op(B) in shared memory.

Example: ``c = gemm(cuda.to_device(a), cuda.to_device(b), trans_b=True).copy_to_host()``

This file is also loaded standalone (tests/ptx.py compiles it to PTX), so it imports
only numba and numpy, never knetc.
"""
import math

import numpy as np
from numba import cuda, float32, float64

from knetc.kernels.bmm import as3
from knetc.runtime import cublas

TILE = 32           # output tile edge and K step; a warp spans one tile row
ROWS = 8            # thread rows per block: TILE x ROWS = 256 threads
PER_THREAD = TILE // ROWS  # outputs (and tile loads) per thread
# +1 column of padding: the transposed loads write a column of a tile, and a row
# stride of TILE + 1 words puts those writes in different shared-memory banks.
# (A named constant: numba needs literal shapes and does not fold TILE + 1.)
PADDED = TILE + 1


@cuda.jit(device=True, inline="always")  # inlined in Numba IR: PTX builds without a GPU
def _stage(M, T, trans, r0, c0, rows, cols, tx, s, zero):
    """Load one tile entry per call: T[i, j] = op(M)[r0 + i, c0 + j] (zero outside the rows x
    cols matrix op(M)) for (i, j) = (s, tx), or (tx, s) when op(M) = M.T. Consecutive tx
    always read consecutive addresses of the row-major M (coalesced): the transposed case
    swaps which tile index tx and s feed instead of reading down a column."""
    if trans:  # op(M)[r, c] = M[c, r]: tx walks r
        r, c = r0 + tx, c0 + s
        T[tx, s] = M[c, r] if r < rows and c < cols else zero
    else:      # tx walks c
        r, c = r0 + s, c0 + tx
        T[s, tx] = M[r, c] if r < rows and c < cols else zero


def _make_gemm_kernel(dtype):
    """Build the kernel for one element type (shared/local arrays need a fixed dtype)."""

    @cuda.jit
    def kernel(A, B, C, alpha, beta, trans_a, trans_b):
        # op(A) is m x k, op(B) is k x n, C is m x n.
        m, n = C.shape
        k = A.shape[0] if trans_a else A.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row0 = cuda.blockIdx.y * TILE
        col0 = cuda.blockIdx.x * TILE
        zero = dtype(0)

        As = cuda.shared.array((TILE, PADDED), dtype)  # As[i, kk] = op(A)[row0+i, k0+kk]
        Bs = cuda.shared.array((TILE, PADDED), dtype)  # Bs[kk, j] = op(B)[k0+kk, col0+j]
        acc = cuda.local.array(PER_THREAD, dtype)
        for r in range(PER_THREAD):
            acc[r] = zero

        for k0 in range(0, k, TILE):
            # Stage the tiles: op(A) is m x k from (row0, k0), op(B) k x n from (k0, col0).
            for r in range(PER_THREAD):
                s = ty + ROWS * r
                _stage(A, As, trans_a, row0, k0, m, k, tx, s, zero)
                _stage(B, Bs, trans_b, k0, col0, k, n, tx, s, zero)
            cuda.syncthreads()

            # A warp shares ty, so As[ty + ROWS*r, kk] is one broadcast read and
            # Bs[kk, tx] is 32 consecutive words: no bank conflicts either way.
            for kk in range(TILE):
                b = Bs[kk, tx]
                for r in range(PER_THREAD):
                    acc[r] += As[ty + ROWS * r, kk] * b
            cuda.syncthreads()  # before the next step overwrites the tiles

        j = col0 + tx
        for r in range(PER_THREAD):
            i = row0 + ty + ROWS * r
            if i < m and j < n:
                # BLAS convention: beta == 0 means C is not read (it may hold NaN).
                if beta == zero:
                    C[i, j] = alpha * acc[r]
                else:
                    C[i, j] = alpha * acc[r] + beta * C[i, j]

    return kernel


gemm_kernel_f32 = _make_gemm_kernel(float32)
gemm_kernel_f64 = _make_gemm_kernel(float64)

_KERNELS = {np.dtype(np.float32): gemm_kernel_f32, np.dtype(np.float64): gemm_kernel_f64}

# What tests/ptx.py compiles: {kernel name: numba signature}.
_SIGNATURE = "void({t}[:, :], {t}[:, :], {t}[:, :], {t}, {t}, boolean, boolean)"
PTX_SIGNATURES = {
    "gemm_kernel_f32": _SIGNATURE.format(t="float32"),
    "gemm_kernel_f64": _SIGNATURE.format(t="float64"),
}


def gemm(a, b, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, stream=0):
    """``out = alpha * op(a) @ op(b) + beta * out`` on 2-D float32/float64 device arrays.

    op(x) is x.T when the matching trans flag is set. ``out`` is allocated (on
    ``stream``) when None, in which case beta must be 0. Returns ``out``; the launch is
    asynchronous on ``stream``. Raises ValueError on bad shapes or dtypes.
    Example: ``c = gemm(a_dev, b_dev, trans_a=True)  # c = a.T @ b``
    """
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError("gemm: a and b must be 2-D, got shapes %s and %s" % (a.shape, b.shape))
    dtype = np.dtype(a.dtype)
    if dtype not in _KERNELS or np.dtype(b.dtype) != dtype:
        raise ValueError("gemm: a and b must both be float32 or both float64, got %s and %s"
                         % (a.dtype, b.dtype))
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError("gemm: inner dimensions differ: op(a) is %dx%d, op(b) is %dx%d"
                         % (m, k, kb, n))
    if out is None:
        if beta != 0:
            raise ValueError("gemm: beta=%r needs an existing `out`" % (beta,))
        out = cuda.device_array((m, n), dtype=dtype, stream=stream)
    elif out.ndim != 2 or tuple(out.shape) != (m, n) or np.dtype(out.dtype) != dtype:
        raise ValueError("gemm: out must be %s of shape (%d, %d), got %s of shape %s"
                         % (dtype, m, n, out.dtype, tuple(out.shape)))
    if m == 0 or n == 0:
        return out  # nothing to compute; an empty grid would be a launch error

    grid = (math.ceil(n / TILE), math.ceil(m / TILE))
    scalar = dtype.type  # pass alpha/beta in the element type so the signature matches
    _KERNELS[dtype][grid, (TILE, ROWS), stream](
        a, b, out, scalar(alpha), scalar(beta), bool(trans_a), bool(trans_b))
    return out


def bmm_cuda(a, b, out, trans_a=False, trans_b=False):
    """out[i] = op(a[i]) @ op(b[i]) over the batch axes of device arrays (bmm's library call;
    kernels/bmm.py has the CPU one): one GEMM per batch index (cuBLAS when it is installed,
    else the tiled GEMM above), all on the default stream."""
    multiply = cublas.gemm if cublas.available() else gemm
    a3, b3, out3 = map(as3, (a, b, out))  # (batch, rows, columns) views
    if out3.shape[0] == 0 or out3.shape[1] == 0 or out3.shape[2] == 0:
        return
    for i in range(out3.shape[0]):
        multiply(a3[i], b3[i], out3[i], trans_a=trans_a, trans_b=trans_b)
