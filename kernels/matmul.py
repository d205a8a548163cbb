"""The CPU GEMMs, out = a @ b: `matmul(a, b, out)`, which generated drivers call, and
`gemm(a, b, out)`, the same on the calling thread for Numba functions (the convolutions,
batched products).

They call SciPy's OpenBLAS (the BLAS Numba binds), whose threads knetc.runtime.threads sets.
numpy's own np.dot would call numpy's separate OpenBLAS, whose threads, still spinning after
a GEMM, took the cores from the parallel loops that followed: the CPU LeNet step ran about
1.7x slower so.

`matmul` splits a large GEMM across knetc's threads while BLAS runs on one
(threads.splits_gemms: the program's GEMMs are large): the longer of out's rows and columns
in blocks, one BLAS call each. An entry's sum may round differently with the blocks (BLAS's
own blocking follows the sizes, as with its own threads). It calls BLAS's xgemm with
leading dimensions, so that a block of a transposed operand needs no copy (np.dot copies
an operand that is neither C- nor F-contiguous).

    >>> matmul(a, b.T, out)       # float32 or float64 matrices; transposed views are fine
    >>> gemm(a, b.T, out)         # inside a Numba function
"""
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from knetc.runtime import threads

SPLIT_MIN = 1 << 23  # multiply-adds from which a GEMM is split (below, waking a thread costs more)

ensure_blas()  # (SciPy's BLAS, which Numba's helper library's numba_xxgemm calls)
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,  # kind, trans a, b; m, n, k
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,     # alpha, a, lda, b, ldb
    types.voidptr, types.voidptr, types.intp))                                # beta, c, ldc


@intrinsic
def _address(typingctx, array):
    """The address of array's first element (a view's, for a block of rows or columns)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.bitcast(data, cgutils.voidptr_t)
    return types.voidptr(array), codegen


@njit(cache=True, nogil=True)
def _operand(x):
    """x as BLAS (column-major) reads it: ('n', leading dimension) where x's rows are
    contiguous (BLAS sees x.T), else ('t', ...) (x is a transposed view)."""
    size = x.itemsize
    if x.strides[1] == size or x.shape[1] == 1:
        return ord("n"), max(x.strides[0] // size, x.shape[1], 1)
    if x.strides[0] != size and x.shape[0] != 1:
        raise ValueError("gemm: each matrix needs rows or columns of adjacent entries")
    return ord("t"), max(x.strides[1] // size, x.shape[0], 1)


@njit(cache=True, nogil=True)
def gemm_block(a, b, out, by_rows, lo, hi):
    """out[lo:hi] = a[lo:hi] @ b (by_rows), else out[:, lo:hi] = a @ b[:, lo:hi]; out's rows
    contiguous. BLAS is column-major, so it computes out.T = b.T @ a.T."""
    if by_rows:
        a, out = a[lo:hi], out[lo:hi]
    else:
        b, out = b[:, lo:hi], out[:, lo:hi]
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        out[:] = 0
        return
    if out.strides[1] != out.itemsize and n != 1:
        raise ValueError("gemm: out needs rows of adjacent entries")
    scalars = np.array([1, 0], dtype=out.dtype)  # alpha, beta
    (trans_b, ldb), (trans_a, lda) = _operand(b), _operand(a)
    ldc = max(out.strides[0] // out.itemsize, n)
    _xxgemm(ord("s") if out.itemsize == 4 else ord("d"), trans_b, trans_a, n, m, k, _address(scalars),
            _address(b), ldb, _address(a), lda, _address(scalars[1:]), _address(out), ldc)


def matmul(a, b, out):
    """out = a @ b (float32 or float64 matrices of out's dtype, out C-contiguous)."""
    m, n = out.shape
    if threads.splits_gemms() and m * n * a.shape[1] >= SPLIT_MIN and max(m, n) > 1:
        threads.in_parallel(gemm_block, max(m, n), a, b, out, m >= n)
    else:
        gemm(a, b, out)


@njit(cache=True, nogil=True)
def gemm(a, b, out):
    """out = a @ b (a Numba function's; its rows contiguous)."""
    gemm_block(a, b, out, True, 0, out.shape[0])
