"""Reductions. The primitives keep reduced axes (size 1); the public functions follow Knet:
with `dims` the reduced axes stay, without it the result is a scalar."""
import functools
import math

import numpy as np

from ..errors import ShapeError
from .broadcast import reduce_sum
from .core import Aval, Monoid, Op, astype, aval_of, check_nonempty, normalize_axes, reduce_rule, register
from .elementwise import add, div, eq, iota, masked, mul, ne, sqrt, sub
from .shape import reshape


def _extreme_start(sign):
    # -inf for max, inf for min; integers start at the dtype's limits, bools at False / True
    def start(dtype):
        if np.dtype(dtype) == np.bool_:
            return sign > 0
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            return info.min if sign < 0 else info.max
        return sign * math.inf
    return start


def _extreme_grad(dy, y, x, axes):
    # Entries equal to the extreme share dy equally, so the gradient sums to dy (as
    # torch.amax/amin). A NaN extreme matches no entry: its whole block gets NaN, as
    # torch, jax and autograd give (0/0), without a division by zero in kernels.
    hit = eq(x, y)
    count = reduce_sum(hit, axes=axes)
    none = eq(count, 0)
    return add(mul(div(dy, add(count, none)), hit), masked(math.nan, none))


reduce_max = register(Op(
    "reduce_max", reduce_rule("maximum", identity=False), lambda x, axes: np.max(x, axis=axes, keepdims=True),
    (_extreme_grad,), "reduce", monoid=Monoid(_extreme_start(-1), "{acc} = {v} if {v} > {acc} else {acc}",
                                              "knetc.kernels.fastmath:maximum"), online="row_max"))


reduce_min = register(Op(
    "reduce_min", reduce_rule("minimum", identity=False), lambda x, axes: np.min(x, axis=axes, keepdims=True),
    (_extreme_grad,), "reduce", monoid=Monoid(_extreme_start(1), "{acc} = {v} if {v} < {acc} else {acc}",
                                              "knetc.kernels.fastmath:minimum")))


def _prod_grad(dy, y, x, axes):
    # d prod / d x_i is the product of the other entries. With no zeros that is y / x_i;
    # with exactly one zero, only the zero entry gets the product of the nonzeros; with
    # more, all are 0. Written without dividing by zero, so no NaN.
    zero = eq(x, 0)
    nonzero_product = reduce_prod(add(x, zero), axes=axes)
    zeros = reduce_sum(zero, axes=axes)
    others = add(mul(div(sub(1, zero), add(x, zero)), eq(zeros, 0)), mul(zero, eq(zeros, 1)))
    return mul(mul(dy, nonzero_product), others)


reduce_prod = register(Op(
    "reduce_prod", reduce_rule("prod", accumulate=True), lambda x, axes: np.prod(x, axis=axes, keepdims=True),
    (_prod_grad,), "reduce", monoid=Monoid(lambda dtype: 1, "{acc} *= {v}")))


def _applied(name, x, args, dims):
    """x and dims of name(x, dims=None), name(x, dims) or Julia's name(f, x[, dims]) form, which
    reduces f(x) (`kn.sum(kn.abs2, x)`)."""
    if callable(x) and not hasattr(x, "shape") and args:
        x, args = x(args[0]), args[1:]
    if len(args) > 1 or args and dims is not None:
        raise TypeError(f"{name}: give dims once: {name}(x, dims) or {name}(f, x, dims)")
    return x, args[0] if args else dims


def _public(name, primitive):
    def reduction(x, *args, dims=None):
        x, dims = _applied(name, x, args, dims)
        aval = aval_of(x)
        reduced = primitive(x, axes=normalize_axes(name, dims, aval.ndim))
        return reshape(reduced, shape=()) if dims is None else reduced
    reduction.__name__ = name
    return reduction


sum = _public("sum", reduce_sum)
maximum = _public("maximum", reduce_max)
minimum = _public("minimum", reduce_min)
prod = _public("prod", reduce_prod)
minimum.__doc__ = """minimum(x, dims=None): the smallest entry (over `dims`, kept as size 1); ties share the gradient.

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> kn.minimum(a)
        array(1.)
        >>> kn.minimum(a, dims=1)
        array([[1.],
               [2.]])
"""
prod.__doc__ = """prod(x, dims=None): the product of the entries; `kn.prod(x, dims=0)` of (3,4) is (1,4).

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> kn.prod(a)
        array(30.)
        >>> kn.prod(a, dims=0)
        array([[ 3., 10.]])
"""
sum.__doc__ = """sum(x, dims=None): Knet's sum. `kn.sum(x, dims=1)` of a (4,5) array is (4,1); no dims: a scalar.

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> kn.sum(a)
        array(11.)
        >>> kn.sum(a, dims=1)
        array([[6.],
               [5.]])
        >>> kn.sum(kn.abs2, a)      # Julia's sum(f, x), as maximum, minimum, prod and mean take it
        array(39.)
"""
maximum.__doc__ = """maximum(x, dims=None): the largest entry (over `dims`, kept as size 1), as Knet's maximum.

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> kn.maximum(a)
        array(5.)
        >>> kn.maximum(a, dims=0)
        array([[3., 5.]])
"""


def float16_in_float32(fn):
    """fn of a float16 array computed in float32, its (float) results float16 again: numpy computes
    float16 means and variances so, and torch its losses (a sum or a count above 65,504 is inf
    in float16)."""
    def as_half(v):
        return astype(v, dtype=np.dtype(np.float16)) if not isinstance(v, int) and aval_of(v).dtype == np.float32 else v

    @functools.wraps(fn)
    def widened(x, *args, **kwargs):
        if callable(x) and not hasattr(x, "shape") or getattr(x, "dtype", None) != np.float16:
            return fn(x, *args, **kwargs)
        out = fn(astype(x, dtype=np.dtype(np.float32)), *args, **kwargs)
        return tuple(map(as_half, out)) if isinstance(out, tuple) else as_half(out)
    return widened


@float16_in_float32
def mean(x, *args, dims=None):
    """mean(x, dims=None): Knet's mean; reduced axes are kept when `dims` is given. Julia's
    mean(f, x) form is the mean of f(x): `kn.mean(kn.abs, a, dims=1)`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> float(kn.mean(a))
        2.75
        >>> kn.mean(a, dims=1)
        array([[3. ],
               [2.5]])
        >>> float(kn.mean(kn.abs, -a))
        2.75
    """
    x, dims = _applied("mean", x, args, dims)
    aval = aval_of(x)
    count = int(np.prod([aval.shape[a] for a in normalize_axes("mean", dims, aval.ndim)]))
    return divide_by_count(sum(x, dims), count)  # the mean of no entries is NaN, as numpy and Julia


def _count(name, x, dims):
    aval = aval_of(x)
    return int(np.prod([aval.shape[a] for a in normalize_axes(name, dims, aval.ndim)]))


@float16_in_float32
def var(x, dims=None, corrected=True, mean=None):
    """var(x, dims=None, corrected=True, mean=None): the variance, as Julia's `var`.

    corrected divides by n-1 (else n); `mean=` gives a precomputed mean (broadcastable).
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> kn.var(x, dims=0)          # per column of a (N, D) array, shape (1, D)
    array([[2., 8.]])
    """
    m = _mean(x, dims) if mean is None else mean
    d = sub(x, m)
    n = _count("var", x, dims)
    return divide_by_count(sum(mul(d, d), dims), n - (1 if corrected else 0))


def divide_by_count(total, count):
    """total / count for the variances; a count <= 0 gives numpy's and Julia's NaN (inf for a
    positive total), as a product with inf, since kernels must not divide by zero."""
    return div(total, count) if count > 0 else mul(total, math.inf)


def sqrt0(v):
    """sqrt(v) for a standard deviation: where v == 0 (one entry, or all equal) the gradient
    is 0, not 0 * inf = NaN. Adding and subtracting the mask changes no value; the mask
    carries no gradient, and sqrt's gradient at 1 is finite."""
    zero = eq(v, 0)
    return sub(sqrt(add(v, zero)), zero)


def varm(x, m, dims=None, corrected=True):
    """varm(x, m, dims=None, corrected=True): the variance about a given mean m.

    Example:
        >>> import numpy as np, knetc as kn
        >>> round(float(kn.varm(np.array([1.0, 2.0, 3.0, 4.0]), 2.5)), 4)
        1.6667
    """
    return var(x, dims, corrected, mean=m)


def std(x, dims=None, corrected=True, mean=None):
    """std(x, dims=None, corrected=True, mean=None): sqrt(var(...)), as Julia's `std`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> round(float(kn.std(np.array([1.0, 2.0, 3.0, 4.0]))), 4)
        1.291
    """
    return sqrt0(var(x, dims, corrected, mean))


def stdm(x, m, dims=None, corrected=True):
    """stdm(x, m, dims=None, corrected=True): the standard deviation about a given mean m.

    Example:
        >>> import numpy as np, knetc as kn
        >>> round(float(kn.stdm(np.array([1.0, 2.0, 3.0, 4.0]), 2.5)), 4)
        1.291
    """
    return sqrt0(var(x, dims, corrected, mean=m))


_mean = mean


# ----------------------------------------------------------------------------- argmax & co.
# Index form: without dims, the flat (C-order) position in x, a scalar (np.argmax's);
# with dims, the reduced axes are kept as size 1 and the result is the position inside
# each reduced block: along the axis for one axis (np.argmax(x, axis, keepdims=True), the
# form np.take_along_axis takes), the C-order position over the reduced axes for several.
# Ties: the first position. Not differentiable.

def _arg_impl(pick):
    def impl(x, axes):
        x = np.asarray(x)
        rest = [a for a in range(x.ndim) if a not in axes]
        moved = np.transpose(x, rest + list(axes))
        block = moved.reshape(moved.shape[:len(rest)] + (-1,))
        if block.shape[-1] == 0:
            raise ValueError("argmax/argmin of an empty array")
        found = pick(block, axis=-1)
        return found.reshape(tuple(1 if a in axes else n for a, n in enumerate(x.shape))).astype(np.int64)
    return impl


def _arg_rule(x, axes):
    if any(not 0 <= a < x.ndim for a in axes):
        raise ShapeError(f"argmax: axes {axes} out of range for {x}")
    check_nonempty("argmax/argmin", x, axes)
    return Aval(tuple(1 if i in axes else n for i, n in enumerate(x.shape)), np.dtype("int64"))


def _arg_decompose(extreme):
    # In generated code: the smallest flat block position among the entries equal to the
    # extreme (entries that are not get a position past the end), one fused reduction.
    def decompose(x, axes):
        shape = aval_of(x).shape
        found = extreme(x, axes=axes)  # NaN when the block holds one: then the first NaN is the hit (numpy's)
        hit = astype(add(eq(x, found), mul(ne(x, x), ne(found, found))), dtype=np.int64)
        position, stride = None, 1
        for a in reversed(axes):
            term = iota(x, axis=a, dtype=np.int64)
            term = term if stride == 1 else mul(term, stride)
            position = term if position is None else add(position, term)
            stride *= shape[a]
        return reduce_min(add(position, mul(sub(1, hit), stride)), axes=axes)
    return decompose


argmax_ = register(Op("argmax", _arg_rule, _arg_impl(np.argmax), (None,), "composite",
                      decompose=_arg_decompose(reduce_max)))
argmin_ = register(Op("argmin", _arg_rule, _arg_impl(np.argmin), (None,), "composite",
                      decompose=_arg_decompose(reduce_min)))


def argmax(x, dims=None):
    """argmax(x, dims=None): 0-based position of the largest entry (first among ties).

    No dims: the flat C-order index (a scalar). With dims: the position within each
    reduced block, reduced axes kept as size 1 (`kn.argmax(x, dims=1)` of (4,5) is (4,1)).

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> kn.argmax(a)
        array(1)
        >>> kn.argmax(a, dims=1)
        array([[1],
               [0]])
    """
    out = argmax_(x, axes=normalize_axes("argmax", dims, aval_of(x).ndim))
    return reshape(out, shape=()) if dims is None else out


def argmin(x, dims=None):
    """argmin(x, dims=None): as argmax, for the smallest entry.

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> kn.argmin(a)
        array(0)
    """
    out = argmin_(x, axes=normalize_axes("argmin", dims, aval_of(x).ndim))
    return reshape(out, shape=()) if dims is None else out


def findmax(x, dims=None):
    """findmax(x, dims=None) -> (maximum(x, dims), argmax(x, dims)); indices as in argmax.

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> kn.findmax(a)
        (array(5.), array(1))
    """
    return maximum(x, dims), argmax(x, dims)


def findmin(x, dims=None):
    """findmin(x, dims=None) -> (minimum(x, dims), argmin(x, dims)).

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = np.array([[1.0, 5.0], [3.0, 2.0]])
        >>> kn.findmin(a)
        (array(1.), array(0))
    """
    return minimum(x, dims), argmin(x, dims)

