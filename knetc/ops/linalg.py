"""Matrix products (the primitive is 2-D; `matmul` folds leading axes and vectors into it,
`bmm` batches), norms and Knet's BLAS-1 updates, and np.linalg's inv, solve, det, slogdet,
cholesky, eigh and eigvalsh."""
import math

import numpy as np

from .. import context
from ..context import is_boxed, is_symbolic, training
from ..errors import CompileError, ShapeError
from .broadcast import broadcast_to, reduce_sum, unbroadcast
from .core import Aval, Op, astype, aval_of, broadcast_shapes, register, result_dtype
from .elementwise import abs as abs_, add, div, eq, exp, gt, mul, ne, power, sub
from .reduce import maximum, minimum, sqrt0, sum
from .shape import reshape, transpose


def _matmul_rule(a, b):
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ShapeError(f"matmul: {a} @ {b}: inner dimensions {a.shape[-1:]} and {b.shape[:1]} differ")
    return Aval((a.shape[0], b.shape[1]), result_dtype(a, b))


def _t(x):
    return transpose(x, perm=(1, 0))


matmul2d = register(Op(
    "matmul", _matmul_rule, np.matmul,
    (lambda dy, y, a, b: matmul2d(dy, _t(b)), lambda dy, y, a, b: matmul2d(_t(a), dy)), "matmul"))


def matmul(a, b):
    """`a @ b` with numpy semantics for 1-D operands and an N-D `a` against a 2-D `b`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.matmul(np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]]))
        array([[11.]])
    """
    sa, sb = aval_of(a).shape, aval_of(b).shape
    if len(sa) == 2 and len(sb) == 2 and sa[1] == sb[0]:
        return matmul2d(a, b)  # no reshapes: the common case
    if len(sa) == 0 or len(sb) == 0:
        raise ShapeError(f"matmul: {sa} @ {sb}: operands must have at least one dimension")
    if len(sb) > 2:
        if len(sa) == 1:
            return _reshaped(bmm(_reshaped(a, (1, sa[0])), b), sb[:-2] + sb[-1:])
        return bmm(a, b)  # numpy: a stack of matrix products
    if sa[-1] != sb[0]:
        raise ShapeError(f"matmul: {sa} @ {sb}: inner dimensions {sa[-1]} and {sb[0]} differ")
    a2 = _reshaped(a, (1, sa[0]) if len(sa) == 1 else (int(np.prod(sa[:-1])), sa[-1]))
    out = matmul2d(a2, _reshaped(b, (sb[0], 1) if len(sb) == 1 else sb))
    return _reshaped(out, sa[:-1] + sb[1:])


def _reshaped(x, shape):
    return x if aval_of(x).shape == tuple(shape) else reshape(x, shape=tuple(shape))


# ----------------------------------------------------------------------------- bmm

def _mat_dims(shape, trans):
    return (shape[-1], shape[-2]) if trans else (shape[-2], shape[-1])


def _bmm_rule(a, b, trans_a, trans_b):
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError(f"bmm: operands need at least 2 dimensions (..., m, n), got {a} and {b}")
    (m, k), (k2, n) = _mat_dims(a.shape, trans_a), _mat_dims(b.shape, trans_b)
    if k != k2:
        raise ShapeError(f"bmm: {a} and {b} (trans_a={trans_a}, trans_b={trans_b}): inner dimensions {k} and {k2} differ")
    batch = broadcast_shapes("bmm (batch axes)", a.shape[:-2], b.shape[:-2])
    return Aval(batch + (m, n), result_dtype(a, b))


def _swap(x):
    return np.swapaxes(np.asarray(x), -1, -2)


def _bmm_impl(a, b, trans_a, trans_b):
    return np.matmul(_swap(a) if trans_a else np.asarray(a), _swap(b) if trans_b else np.asarray(b))


def _bmm_grad_a(dy, y, a, b, trans_a, trans_b):
    g = bmm(b, dy, trans_a=trans_b, trans_b=True) if trans_a else bmm(dy, b, trans_b=not trans_b)
    return unbroadcast(g, aval_of(a).shape)


def _bmm_grad_b(dy, y, a, b, trans_a, trans_b):
    g = bmm(dy, a, trans_a=True, trans_b=trans_a) if trans_b else bmm(a, dy, trans_a=not trans_a)
    return unbroadcast(g, aval_of(b).shape)


def _bmm_decompose(a, b, trans_a, trans_b):
    # One GEMM per matrix of the batch (bmm_gemm, a library call), the batch axes broadcast
    # first. (A broadcast product reduced over k, the earlier lowering, read each entry of
    # a and b n and m times: a Transformer's attention step was 6x slower than BLAS's.)
    # Integer products, which BLAS does not do, keep that product-and-sum kernel.
    dtype = np.dtype(result_dtype(aval_of(a), aval_of(b)))
    if dtype not in (np.float32, np.float64):
        return _bmm_product_sum(a, b, trans_a, trans_b)
    a, b = (x if aval_of(x).dtype == dtype else astype(x, dtype=dtype) for x in (a, b))
    sa, sb = aval_of(a).shape, aval_of(b).shape
    batch = broadcast_shapes("bmm (batch axes)", sa[:-2], sb[:-2])
    if sa[:-2] != batch:
        a = broadcast_to(a, shape=batch + sa[-2:])
    if sb[:-2] != batch:
        b = broadcast_to(b, shape=batch + sb[-2:])
    return bmm_gemm(a, b, trans_a=trans_a, trans_b=trans_b)


def _bmm_product_sum(a, b, trans_a, trans_b):
    # c[..., i, j] = sum_k a[..., i, k] b[..., k, j]: one fused kernel, a broadcast
    # product reduced over k.
    a = _swap_op(a) if trans_a else a
    b = _swap_op(b) if trans_b else b
    sa, sb = aval_of(a).shape, aval_of(b).shape
    a4 = reshape(a, shape=sa + (1,))                 # (..., m, k, 1)
    b4 = reshape(b, shape=sb[:-2] + (1,) + sb[-2:])  # (..., 1, k, n)
    product = mul(a4, b4)
    axis = aval_of(product).ndim - 2
    out = reduce_sum(product, axes=(axis,))  # (in int64; numpy's matmul keeps the operands' type: wrapped
    dtype = result_dtype(aval_of(a), aval_of(b))  # int32 sums are int64 sums wrapped, bool sums are any())
    out = out if aval_of(out).dtype == dtype else astype(out, dtype=dtype)
    shape = aval_of(out).shape
    return reshape(out, shape=shape[:axis] + shape[axis + 1:])


def _bmm_gemm_rule(a, b, trans_a, trans_b):
    if a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(f"bmm_gemm: batch axes of {a} and {b} differ (bmm broadcasts them first)")
    return _bmm_rule(a, b, trans_a, trans_b)


# The lowered form of bmm: equal batch axes, a (BLAS / cuBLAS) GEMM per matrix
# (kernels/bmm.py). Its gradients are bmm's, for a program differentiated after lowering.
bmm_gemm = register(Op("bmm_gemm", _bmm_gemm_rule, _bmm_impl, (_bmm_grad_a, _bmm_grad_b), "call",
                       lowering={"cpu": "knetc.kernels.bmm:bmm_cpu", "cuda": "knetc.kernels.gemm:bmm_cuda"}))


def _swap_op(x):
    n = aval_of(x).ndim
    return transpose(x, perm=tuple(range(n - 2)) + (n - 1, n - 2))


bmm_ = register(Op("bmm", _bmm_rule, _bmm_impl, (_bmm_grad_a, _bmm_grad_b), "composite",
                   decompose=_bmm_decompose))


def bmm(a, b, trans_a=False, trans_b=False):
    """Batched matrix product with numpy matmul semantics: a (..., m, k) @ b (..., k, n).

    The batch axes lead and broadcast; trans_a/trans_b transpose the last two axes first
    (Knet's transA/transB). `kn.bmm(a, b)` of (5,2,3) and (5,3,4) is (5,2,4). Memory
    layouts: Knet's bmm(A, B) of (m,n,b) and (n,k,b) arrays is, on the same bytes read
    as (b,n,m) and (b,k,n) here, `kn.bmm(b, a)` (reversed shapes transpose each matrix).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.bmm(np.ones((4, 2, 3)), np.ones((4, 3, 5))).shape
        (4, 2, 5)
    """
    return bmm_(a, b, trans_a=bool(trans_a), trans_b=bool(trans_b))


# ----------------------------------------------------------------------------- norm, BLAS-1

def norm(x, p=2, dims=None):
    """norm(x, p=2): the vector p-norm of all entries (Julia's `norm` of an array); with
    `dims`, of each vector along them (kept as size 1, as knetc's reductions).

    p=2 (default), 1, inf (largest magnitude), -inf, 0 (count of nonzeros), or any real p.
    >>> float(kn.norm(np.array([3.0, -4.0])))
    5.0

    Integer and bool arrays are measured in float64 (as Julia's norm: no wraparound in x*x).
    """
    if np.dtype(aval_of(x).dtype).kind in "biu":
        x = astype(x, dtype=np.float64)
    x_abs = abs_(x)
    if p == 2:
        return sqrt0(sum(mul(x, x), dims))  # at x == 0 the gradient is 0 (torch's), not 0 * inf = NaN
    if p == 1:
        return sum(x_abs, dims)
    if p == np.inf:  # (of no entries 0, as numpy's)
        return maximum(x_abs, dims) if _entries(x, dims) else sum(x_abs, dims)
    if p == -np.inf:
        return minimum(x_abs, dims)
    if p == 0:
        return sum(ne(x, 0), dims)
    if p < 0:  # a zero entry's 0 ** p is inf, and the norm 0 (as Julia's and numpy's)
        return power(sum(power(x_abs, exponent=float(p)), dims), exponent=1.0 / p)
    return _power0(sum(_power0(x_abs, float(p)), dims), 1.0 / p)


def _entries(x, dims):
    """How many entries each norm of x along dims measures."""
    shape = aval_of(x).shape
    return math.prod(shape if dims is None else [shape[d] for d in np.atleast_1d(dims)])


def _power0(v, exponent):
    """v ** exponent for v >= 0 whose gradient is 0 where v == 0 (as torch's norms), not
    inf * 0 = NaN: where v is 0 it computes 1 ** exponent - 1, whose gradient is finite."""
    zero = eq(v, 0)
    return sub(power(add(v, zero), exponent=exponent), zero)


def _mutable(name, y):
    if is_symbolic(y):
        raise CompileError(f"{name}: changes its argument in place, which compiled code cannot do",
                           hint="write the functional form, e.g. y = y + a * x")
    if is_boxed(y):
        if not hasattr(y, "opt") or training():
            raise TypeError(f"{name}: in-place update of a value recorded inside diff; "
                            "write the functional form (y = y + a * x) instead")
        return y.value
    if not isinstance(y, np.ndarray) and context.kind(y) != "device":
        raise TypeError(f"{name}: expected a numpy array, a KnetArray or a Param, got {type(y).__name__}")
    return y


def _scaled_in_place(target, a, plus=None):
    """target = a * target (+ plus), in place: numpy's in-place ops, or a KnetArray's assignment."""
    if isinstance(target, np.ndarray):
        if plus is None:
            target *= np.asarray(a, target.dtype)
        else:
            target += np.asarray(a, target.dtype) * np.asarray(plus)
    else:  # a KnetArray: computed on the device, written back into it
        target[...] = target * a if plus is None else target + plus * a


def axpy_(a, x, y):
    """y += a * x in place (BLAS axpy, Knet's axpy!); returns y. y: a numpy array, KnetArray or Param.

    Example:
        >>> import numpy as np, knetc as kn
        >>> y = np.ones(3)
        >>> kn.axpy_(2.0, np.array([1.0, 2.0, 3.0]), y)
        array([3., 5., 7.])
    """
    _scaled_in_place(_mutable("axpy_", y), a, plus=x)
    return y


def lmul_(a, x):
    """x = a * x in place (Knet's lmul!, a a scalar); returns x.

    Example:
        >>> import numpy as np, knetc as kn
        >>> x = np.array([1.0, 2.0])
        >>> kn.lmul_(3.0, x)
        array([3., 6.])
    """
    _scaled_in_place(_mutable("lmul_", x), a)
    return x


def rmul_(x, a):
    """x = x * a in place (Knet's rmul!, a a scalar); returns x.

    Example:
        >>> import numpy as np, knetc as kn
        >>> x = np.array([1.0, 2.0])
        >>> kn.rmul_(x, 0.5)
        array([0.5, 1. ])
    """
    _scaled_in_place(_mutable("rmul_", x), a)
    return x



# ----------------------------------------------------------------------------- np.linalg
# inv, solve, det, slogdet, cholesky, eigh, svd and qr of a batch of matrices (the last two
# axes) are library routines (kernels/linalg.py). Their gradients are written with
# these ops, so they have gradients of any order: d inv = -inv^T dy inv^T; solve's b gets
# solve(a^T, dy) and a minus that times x^T; logabsdet's a gets dy inv(a)^T. cholesky and eigh
# read one triangle of a (LAPACK's): their gradients are of that function (zero on the other
# triangle, as central differences find), which on a symmetric a built from x (x + x^T, x x^T)
# gives x the same gradient as PyTorch's and JAX's symmetric ones.

def _square_rule(name, result=lambda a, **params: a):
    def rule(a, *others, **params):
        if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
            raise ShapeError(f"np.linalg.{name}: the last 2 dimensions of the array must be square, got {a}")
        return result(a, *others, **params)
    return rule


def _lowering(name):
    return {target: f"knetc.kernels.linalg:{name}_{target}" for target in ("cpu", "cuda")}


def _solve_result(a, b):
    if b.shape[:-2] != a.shape[:-2] or b.ndim < 2 or b.shape[-2] != a.shape[-1]:
        raise ShapeError(f"np.linalg.solve: {a} and {b} do not match: a (..., n, n), b (..., n, k)")
    return Aval(b.shape, result_dtype(a, b))


def _solve_grad_b(dy, y, a, b):
    return solve_(_swap_op(a), dy)


inv_ = register(Op("inv", _square_rule("inv"), np.linalg.inv,
                   (lambda dy, y, a: mul(bmm(bmm(y, dy, trans_a=True), y, trans_b=True), -1),), "call",
                   lowering=_lowering("inv")))
solve_ = register(Op("solve", _square_rule("solve", _solve_result), np.linalg.solve,
                     (lambda dy, y, a, b: mul(bmm(_solve_grad_b(dy, y, a, b), y, trans_b=True), -1), _solve_grad_b),
                     "call", lowering=_lowering("solve")))
slogdet_ = register(Op(
    "slogdet", _square_rule("slogdet", lambda a, part: Aval(a.shape[:-2], a.dtype)),
    lambda a, part: np.asarray(np.linalg.slogdet(a)[part]),
    (lambda dy, y, a, part: None if part == 0 else mul(reshape(dy, shape=aval_of(dy).shape + (1, 1)), _swap_op(inv_(a))),),
    "call", lowering=_lowering("slogdet")))


def _triangle_read(g, upper=False):
    """The gradient, in a, of a function of a's lower (upper) triangle mirrored, whose gradient
    in that symmetric matrix is g: the off-diagonal entries get g_ij + g_ji, the diagonal g_ii."""
    n, dtype = aval_of(g).shape[-1], aval_of(g).dtype
    one_side = np.triu(np.ones((n, n), dtype), 1) if upper else np.tril(np.ones((n, n), dtype), -1)
    return add(mul(add(g, _swap_op(g)), one_side), mul(g, np.eye(n, dtype=dtype)))


def _cholesky_grad(dy, y, a):
    # PyTorch's (Murray 2016): with phi(x) the lower triangle of x, its diagonal halved,
    # g = sym(L^-T phi(L^T dL) L^-1) in the symmetric matrix
    n, dtype = aval_of(y).shape[-1], aval_of(y).dtype
    phi = mul(bmm(y, dy, trans_a=True), np.tril(np.ones((n, n), dtype)) - np.eye(n, dtype=dtype) / 2)
    inverse = inv_(y)
    s = bmm(bmm(inverse, phi, trans_a=True), inverse)
    return _triangle_read(mul(add(s, _swap_op(s)), 0.5))


def _eigh_grad(dy, y, a, part, UPLO):
    # a = V diag(w) V^T: dw gives V diag(dw) V^T; dV gives V (F * V^T dV) V^T with
    # F_ij = 1 / (w_j - w_i) off the diagonal (NaN or infinite for repeated eigenvalues, as PyTorch's)
    v = y if part == 1 else eigh_(a, part=1, UPLO=UPLO)
    shape, n, dtype = aval_of(v).shape, aval_of(v).shape[-1], aval_of(v).dtype
    if part == 0:
        g = bmm(mul(v, reshape(dy, shape=shape[:-2] + (1, n))), v, trans_b=True)
    else:
        w = eigh_(a, part=0, UPLO=UPLO)
        gaps = sub(reshape(w, shape=shape[:-2] + (1, n)), reshape(w, shape=shape[:-2] + (n, 1)))
        off, eye = 1 - np.eye(n, dtype=dtype), np.eye(n, dtype=dtype)
        f = div(off, add(gaps, eye))
        g = bmm(bmm(v, mul(f, bmm(v, dy, trans_a=True))), v, trans_b=True)
    return _triangle_read(g, upper=UPLO == "U")


cholesky_ = register(Op("cholesky", _square_rule("cholesky"), np.linalg.cholesky, (_cholesky_grad,), "call",
                        lowering=_lowering("cholesky")))
eigh_ = register(Op(
    "eigh", _square_rule("eigh", lambda a, part, UPLO: Aval(a.shape[:-1] if part == 0 else a.shape, a.dtype)),
    lambda a, part, UPLO: np.linalg.eigh(a, UPLO)[part], (_eigh_grad,), "call", lowering=_lowering("eigh")))


def _svd_rule(a, part):
    if a.ndim < 2:
        raise ShapeError(f"np.linalg.svd: {a.ndim}-dimensional array given. Array must be at least two-dimensional")
    m, n = a.shape[-2:]
    k = min(m, n)
    return Aval(a.shape[:-2] + ((m, k), (k,), (k, n))[part], a.dtype)


def _svd_grad(dy, y, a, part):
    # PyTorch's (real, thin): with E_jk = s_k^2 - s_j^2 and skew(x) = x - x^T,
    # gA = U [skew(U^T gU) S / E + S skew(V^T gV) / E + diag(gS)] V^T
    #      + (I - U U^T) gU S^-1 V^T (m > k) + U S^-1 gV^T (I - V V^T) (n > k)
    u, s, vh = (svd_(a, part=i) for i in range(3))
    batch, (m, n) = aval_of(a).shape[:-2], aval_of(a).shape[-2:]
    k, dtype = min(m, n), aval_of(s).dtype
    row, column = (lambda v: reshape(v, shape=batch + (1, k))), (lambda v: reshape(v, shape=batch + (k, 1)))
    if part == 1:
        return bmm(mul(u, row(dy)), vh)
    gaps = add(sub(row(mul(s, s)), column(mul(s, s))), np.eye(k, dtype=dtype))
    if part == 0:
        x = bmm(u, dy, trans_a=True)
        g = bmm(bmm(u, div(mul(sub(x, _swap_op(x)), row(s)), gaps)), vh)
        if m > k:
            scaled = div(dy, row(s))
            g = add(g, bmm(sub(scaled, bmm(u, bmm(u, scaled, trans_a=True))), vh))
        return g
    x = bmm(vh, dy, trans_b=True)  # V^T gV, gV = dy^T
    g = bmm(bmm(u, div(mul(column(s), sub(x, _swap_op(x))), gaps)), vh)
    if n > k:
        scaled = div(dy, column(s))
        g = add(g, bmm(u, sub(scaled, bmm(bmm(scaled, vh, trans_b=True), vh))))
    return g


svd_ = register(Op("svd", _svd_rule, lambda a, part: np.linalg.svd(a, full_matrices=False)[part], (_svd_grad,), "call",
                   lowering=_lowering("svd")))


def _for_lapack(a):
    """a in a dtype LAPACK takes: float32/64; integers and bools as float64 (numpy's rules)."""
    dtype = np.dtype(aval_of(a).dtype)
    if dtype.kind in "iub":
        return astype(a, dtype=np.dtype(np.float64))
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"np.linalg on Params and recorded values: array type {dtype} is unsupported in linalg")
    return a


def inv(a):
    """np.linalg.inv: the inverse of each matrix (the last two axes)."""
    return inv_(_for_lapack(a))


def solve(a, b):
    """np.linalg.solve: x with a @ x = b; b (n,) is one vector, else (..., n, k) (numpy 2's rule)."""
    a, b = _for_lapack(a), _for_lapack(b)
    vector = aval_of(b).ndim == 1
    b = reshape(b, shape=aval_of(b).shape + (1,)) if vector else b
    (sa, sb), dtype = (aval_of(a).shape, aval_of(b).shape), result_dtype(aval_of(a), aval_of(b))
    batch = broadcast_shapes("np.linalg.solve (batch axes)", sa[:-2], sb[:-2])
    a, b = (astype(x, dtype=dtype) if aval_of(x).dtype != dtype else x for x in (a, b))
    a = broadcast_to(a, shape=batch + sa[-2:]) if sa[:-2] != batch else a
    x = solve_(a, broadcast_to(b, shape=batch + sb[-2:]) if sb[:-2] != batch else b)
    return reshape(x, shape=aval_of(x).shape[:-1]) if vector else x


_SLOGDET = type(np.linalg.slogdet(np.eye(1)))  # numpy's (sign, logabsdet) named tuple


def slogdet(a):
    """np.linalg.slogdet: (sign, logabsdet) of each matrix; the sign has no gradient."""
    a = _for_lapack(a)
    return _SLOGDET(slogdet_(a, part=0), slogdet_(a, part=1))


def cholesky(a, upper=False):
    """np.linalg.cholesky: the lower factor L of each matrix, a = L L^T (upper=True: L^T),
    from a's lower triangle (upper: its upper triangle)."""
    a = _for_lapack(a)
    return _swap_op(cholesky_(_swap_op(a))) if upper else cholesky_(a)


_EIGH = type(np.linalg.eigh(np.eye(1)))  # numpy's (eigenvalues, eigenvectors) named tuple


def eigh(a, UPLO="L"):
    """np.linalg.eigh: (eigenvalues ascending, eigenvectors in columns) of each symmetric
    matrix, from its lower (UPLO="U": upper) triangle; gradients through both."""
    a, UPLO = _for_lapack(a), _uplo(UPLO)
    return _EIGH(eigh_(a, part=0, UPLO=UPLO), eigh_(a, part=1, UPLO=UPLO))


def eigvalsh(a, UPLO="L"):
    """np.linalg.eigvalsh: the eigenvalues of each symmetric matrix, ascending."""
    return eigh_(_for_lapack(a), part=0, UPLO=_uplo(UPLO))


def _uplo(UPLO):
    """"L" or "U" (numpy takes either case)."""
    if str(UPLO).upper() not in ("L", "U"):
        raise ValueError(f"UPLO argument must be 'L' or 'U', got {UPLO!r}")
    return UPLO.upper()


def _qr_rule(a, part):
    if a.ndim < 2:
        raise ShapeError(f"np.linalg.qr: {a.ndim}-dimensional array given. Array must be at least two-dimensional")
    m, n = a.shape[-2:]
    return Aval(a.shape[:-2] + ((m, min(m, n)), (min(m, n), n))[part], a.dtype)


def _qr_grad(dy, y, a, part):
    # a = Q R with m >= n: gA = (gQ + Q N) R^-T, N = tril(M - M^T, -1) - M, M = Q^T gQ - gR R^T
    # (the transpose of JAX's JVP rule)
    m, n = aval_of(a).shape[-2:]
    if m < n:
        raise TypeError(f"the gradient of np.linalg.qr of a wide matrix ({m} x {n}) is not supported: pass its transpose")
    q, r = qr_(a, part=0), qr_(a, part=1)
    g_q, m_ = (dy, bmm(q, dy, trans_a=True)) if part == 0 else (None, mul(bmm(dy, r, trans_b=True), -1))
    strict = np.tril(np.ones((n, n), aval_of(a).dtype), -1)
    g = bmm(q, sub(mul(sub(m_, _swap_op(m_)), strict), m_))
    g = add(g_q, g) if g_q is not None else g
    return _swap_op(solve_(r, _swap_op(g)))  # g R^-T


qr_ = register(Op("qr", _qr_rule, lambda a, part: np.linalg.qr(a)[part], (_qr_grad,), "call", lowering=_lowering("qr")))
_QR = type(np.linalg.qr(np.eye(1)))  # numpy's (Q, R) named tuple


def qr(a, mode="reduced"):
    """np.linalg.qr: (Q, R) of each matrix (mode "reduced"; "r": R alone; "complete" where it
    is the reduced one: no more rows than columns). Gradients for square and tall matrices
    (the transpose of JAX's rule); Q's and R's signs are LAPACK's."""
    a = _for_lapack(a)
    m, n = aval_of(a).shape[-2:] if aval_of(a).ndim >= 2 else (0, 0)
    if mode not in ("reduced", "r", "complete") or mode == "complete" and m > n:
        raise TypeError(f"np.linalg.qr(mode={mode!r}) on Params and recorded values: modes 'reduced' and 'r' "
                        "('complete' of a matrix with no more rows than columns)")
    return qr_(a, part=1) if mode == "r" else _QR(qr_(a, part=0), qr_(a, part=1))


_SVD = type(np.linalg.svd(np.eye(1)))  # numpy's (U, S, Vh) named tuple


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """np.linalg.svd: (U, S, Vh) of each matrix, singular values descending; gradients through
    all three (as PyTorch's: NaN or infinite where two singular values are equal, and an entry's
    singular vectors' signs are LAPACK's, so only functions that do not depend on them have a
    gradient that means something). full_matrices=True is the thin decomposition's when it is
    the same (square matrices); otherwise U's or Vh's extra vectors have no gradient: refused."""
    a = _for_lapack(a)
    shape = aval_of(a).shape
    if compute_uv and full_matrices and len(shape) >= 2 and shape[-1] != shape[-2]:
        raise TypeError("np.linalg.svd of a non-square Param or recorded value: pass full_matrices=False (the "
                        "singular vectors beyond the smaller side have no gradient)")
    if not compute_uv:
        return svd_(a, part=1)
    return _SVD(svd_(a, part=0), svd_(a, part=1), svd_(a, part=2))


_UNSET = object()


def pinv(a, rcond=None, hermitian=False, *, rtol=_UNSET):
    """np.linalg.pinv: V diag(1/s) U^T over the singular values s above rcond times the largest
    (numpy's defaults: rcond 1e-15; rtol=None: max(m, n) * eps)."""
    a = _for_lapack(a)
    shape = aval_of(a).shape
    if rcond is None:
        rcond = 1e-15 if rtol is _UNSET else max(shape[-2:]) * np.finfo(aval_of(a).dtype).eps if rtol is None else rtol
    u, s, vh = svd(a, full_matrices=False)
    cutoff = mul(maximum(s, (len(shape) - 2,)), np.asarray(rcond)[..., None] if np.ndim(rcond) else rcond)
    large = gt(s, cutoff)  # (1 or 0 in s's type; an rcond per matrix, as numpy's)
    inverse = div(large, add(s, sub(1, large)))  # 1 / s where large, else 0 (and no 1 / 0 in the gradient)
    k = aval_of(s).shape[-1]
    return bmm(mul(_swap_op(vh), reshape(inverse, shape=shape[:-2] + (1, k))), u, trans_b=True)


def _adjugate_t_grad(dy, y, a):
    # <dy, adj(a)^T> = sum_i det(a with row i replaced by dy's row i) (Laplace along row i), so
    # its gradient is the sum over i of those matrices' adj^T with row i zeroed: adjugates only,
    # right at singular matrices too (det(a) inv(a)^T has no inverse there), to any order.
    batch, n, dtype = aval_of(a).shape[:-2], aval_of(a).shape[-1], aval_of(a).dtype
    rows = np.zeros((n, n, n), dtype)
    rows[np.arange(n), np.arange(n)] = 1  # rows[i]: row i of an n x n matrix
    stacked = lambda m: reshape(m, shape=batch + (1, n, n))  # noqa: E731
    replaced = add(mul(stacked(a), 1 - rows), mul(stacked(dy), rows))
    return reshape(sum(mul(adjugate_t_(replaced), 1 - rows), (len(batch),)), shape=batch + (n, n))


# The adjugate's transpose, det's gradient: from the SVD (library routine), so that it is
# right at singular matrices too, where det(a) inv(a)^T has no inverse to take.
def _adjugate_t(a):
    from knetc.kernels import linalg  # (numpy's routines; the module the drivers call too)
    return linalg.adjugate_t(np.asarray(a))


adjugate_t_ = register(Op("adjugate_t", _square_rule("adjugate_t"), _adjugate_t, (_adjugate_t_grad,),
                          "call", lowering=_lowering("adjugate_t")))
det_ = register(Op("det", _square_rule("det", lambda a: Aval(a.shape[:-2], a.dtype)), np.linalg.det,
                   (lambda dy, y, a: mul(reshape(dy, shape=aval_of(dy).shape + (1, 1)), adjugate_t_(a)),), "call",
                   lowering=_lowering("det")))


def det(a):
    """np.linalg.det; its gradient, the adjugate's transpose, is right at singular matrices too."""
    return det_(_for_lapack(a))
