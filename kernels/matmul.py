"""The CPU GEMMs, out = a @ b: `matmul(a, b, out)`, which generated drivers call, and
`matmul_cpu(a, b, out)`, Numba's np.dot, for Numba functions (the convolutions, batched
products): np.dot is lowered inside its caller, so it adds no function of its own to compile
(a Numba function per operand layout costs about 0.3 s on a fresh install).

Both call SciPy's OpenBLAS (the BLAS Numba binds), whose threads knetc.runtime.threads sets.
numpy's own np.dot would call numpy's separate OpenBLAS, whose threads, still spinning after
a GEMM, took the cores from the parallel loops that followed: the CPU LeNet step ran about
1.7x slower so.

`matmul` splits a large GEMM across knetc's threads while BLAS runs on one
(threads.splits_gemms: the program's GEMMs are large): the longer of out's rows and columns
in blocks, one BLAS call each. An entry's sum may round differently with the blocks (BLAS's
own blocking follows the sizes, as with its own threads). It calls BLAS's xgemm with
leading dimensions and offsets, so that a transposed operand, or a block of one, needs no
copy, and one compiled function serves every layout (np.dot compiles per layout and copies
an operand that is neither C- nor F-contiguous; an operand that is neither here is copied).

    >>> matmul(a, b.T, out)       # float32 or float64 matrices; transposed views are fine
    >>> matmul_cpu(a, b.T, out)   # inside a Numba function
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
def _address(typingctx, array, offset):
    """The address of array's entry number `offset` (of its flat C-order data)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.bitcast(builder.gep(data, [args[1]]), cgutils.voidptr_t)
    return types.voidptr(array, offset), codegen


@njit(cache=True, nogil=True)
def _gemm(a, b, out, trans_a, trans_b, by_rows, lo, hi):
    """out = op(a) @ op(b) on out's rows lo..hi (by_rows) or its columns lo..hi; a, b and out
    C-contiguous, op(x) x.T where trans_. Blocks are addressed by offsets, not slices, so
    this compiles once per dtype. BLAS is column-major: it computes out.T = op(b).T @ op(a).T,
    reading each row-major array as its transpose (leading dimension: its row's length)."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if by_rows:
        m, a_at, b_at, out_at = hi - lo, lo * (1 if trans_a else a.shape[1]), 0, lo * n
    else:
        n, a_at, b_at, out_at = hi - lo, 0, lo * (b.shape[1] if trans_b else 1), lo
    if m <= 0 or n <= 0:
        return
    if k == 0:  # a sum of nothing
        if by_rows:
            out[lo:hi] = 0
        else:
            out[:, lo:hi] = 0
        return
    scalars = np.array([1, 0], dtype=out.dtype)  # alpha, beta
    _xxgemm(ord("s") if out.itemsize == 4 else ord("d"), ord("t") if trans_b else ord("n"), ord("t") if trans_a else ord("n"),
            n, m, k, _address(scalars, 0), _address(b, b_at), b.shape[1], _address(a, a_at), a.shape[1],
            _address(scalars, 1), _address(out, out_at), out.shape[1])


def _stored(x):
    """(x as a C-contiguous array, whether it is that array transposed): a transposed view
    is read through its array; another view is copied."""
    if x.flags.c_contiguous:
        return x, False
    if x.T.flags.c_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


def _operands(a, b, out):
    """_gemm's first five arguments for out = a @ b."""
    if not out.flags.c_contiguous:
        raise ValueError("matmul: out must be C-contiguous")
    (a, trans_a), (b, trans_b) = _stored(a), _stored(b)
    return a, b, out, trans_a, trans_b


def gemm_block(a, b, out, by_rows, lo, hi):
    """out[lo:hi] = a[lo:hi] @ b (by_rows), else out[:, lo:hi] = a @ b[:, lo:hi]."""
    _gemm(*_operands(a, b, out), by_rows, lo, hi)


def matmul(a, b, out):
    """out = a @ b (float32 or float64 matrices of out's dtype, out C-contiguous)."""
    operands = _operands(a, b, out)
    a, trans_a = operands[0], operands[3]
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if threads.splits_gemms() and m * n * k >= SPLIT_MIN and max(m, n) > 1:
        threads.in_parallel(_gemm, max(m, n), *operands, m >= n)
    else:
        _gemm(*operands, True, 0, m)


@njit(cache=True, nogil=True)
def matmul_cpu(a, b, out):
    np.dot(a, b, out)
