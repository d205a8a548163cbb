"""Reductions, statistics, array operations and indexing: Knet's names, translated.

Julia -> Python (see API.md): shapes are reversed, so Julia's dim 1 is Python's last
axis. `vcat` joins Julia dim 1 = the LAST axis (1-D inputs: a longer vector); `hcat` joins
Julia dim 2 = axis -2, and 1-D inputs count as rows (1, n), so `hcat` of vectors stacks
them as the rows of a matrix: the same bytes as Julia's matrix with those columns.
`cat(*xs, dims=axis)` joins along a Python axis; inputs with fewer dimensions get leading
size-1 axes (Julia's trailing singleton dims).

    kn.vcat(np.ones(2), np.zeros(3)).shape      # (5,)
    kn.hcat(np.ones(3), np.zeros(3)).shape      # (2, 3)
    kn.mat(np.ones((10, 3, 4, 4))).shape        # (10, 48)
"""
import numpy as np

from .. import context
from ..context import is_boxed, is_symbolic, value_of
from ..errors import ShapeError
from .core import aval_of, listed
from .elementwise import mul
from .api import reshape, transpose
from .indexing import concat, getindex, setindex, setindex_
from .linalg import axpy_, bmm, lmul_, matmul, norm, rmul_
from .reduce import (argmax, argmin, findmax, findmin, maximum, mean, minimum, prod, std, stdm, sum,
                     var, varm)
from .shape import reshape as reshape_op

__all__ = [
    "sum", "prod", "maximum", "minimum", "mean", "std", "stdm", "var", "varm", "norm",
    "argmax", "argmin", "findmax", "findmin",
    "cat", "hcat", "vcat", "cat1d", "reshape", "vec", "permutedims", "transpose", "adjoint",
    "copy", "fill_", "zeros", "ones", "similar", "getindex", "setindex", "setindex_",
    "bmm", "mat", "matmul", "axpy_", "lmul_", "rmul_",
]


def _as_array(x):
    if isinstance(x, (int, float, np.generic)) or (isinstance(x, np.ndarray) and x.ndim == 0):
        return np.atleast_1d(np.asarray(x, dtype=np.result_type(x, np.float32) if isinstance(x, int) else None))
    return listed(x)


def _with_ndim(x, ndim):
    shape = aval_of(x).shape
    return x if len(shape) >= ndim else reshape_op(x, shape=(1,) * (ndim - len(shape)) + tuple(shape))


def cat(*xs, dims):
    """cat(*xs, dims): join arrays along Python axis `dims` (negative counts from the end).

    Inputs with fewer dimensions get leading size-1 axes. Differentiable; in compiled code
    one fused kernel. `kn.cat(a, b, dims=0)` of (2,3) and (4,3) is (6,3).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.cat(np.zeros((2, 3)), np.ones((1, 3)), dims=0).shape
        (3, 3)
    """
    if not xs:
        raise ValueError("cat: nothing to concatenate")
    if not isinstance(dims, (int, np.integer)):
        raise ShapeError(f"cat: dims must be one axis (an int), got {dims!r}")
    xs = [_as_array(x) for x in xs]
    ndim = max(len(aval_of(x).shape) for x in xs)
    if not -ndim <= dims < ndim:
        raise ShapeError(f"cat: dims={dims} is out of range for {ndim}-d arrays")
    xs = [_with_ndim(x, ndim) for x in xs]
    axis = int(dims) % ndim
    while len(xs) > _MAX_INPUTS:  # the concat op has gradient rules for this many inputs
        xs = [concat(*xs[k:k + _MAX_INPUTS], axis=axis) if len(xs[k:k + _MAX_INPUTS]) > 1 else xs[k]
              for k in range(0, len(xs), _MAX_INPUTS)]
    return xs[0] if len(xs) == 1 else concat(*xs, axis=axis)


_MAX_INPUTS = len(concat.grads)


def vcat(*xs):
    """Julia's vcat (join along Julia dim 1): the LAST Python axis. vcat(a, b) of (3,2), (3,4) is (3,6).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.vcat(np.zeros((3, 2)), np.ones((3, 4))).shape
        (3, 6)
    """
    return cat(*xs, dims=-1)


def hcat(*xs):
    """Julia's hcat (Julia dim 2): Python axis -2; 1-D inputs are rows. hcat of two (3,) is (2,3).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.hcat(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
        array([[1., 2.],
               [3., 4.]])
    """
    return cat(*[_with_ndim(_as_array(x), 2) for x in xs], dims=-2)


def cat1d(*xs):
    """vcat(vec.(xs)...): all entries of all arrays, flattened (C order) and joined: a vector.

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.cat1d(np.array([[1.0, 2.0]]), np.array([3.0]))
        array([1., 2., 3.])
    """
    return cat(*[vec(_as_array(x)) for x in xs], dims=0)


def vec(x):
    """The entries as a 1-D array (C order: the same bytes as Julia's column-major vec).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.vec(np.array([[1.0, 2.0], [3.0, 4.0]]))
        array([1., 2., 3., 4.])
    """
    return reshape(x, -1)


def mat(x, dims=None):
    """Reshape to a matrix joining the LAST `dims` axes (Knet's first `dims` Julia dims).

    dims defaults to ndim-1: `mat(x)` of (N, C, H, W) is (N, C*H*W); `mat(x, dims=1)` of
    an RNN output (T, B, H) is (T*B, H); dims=0 gives a column (n, 1), dims=ndim a row (1, n).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.mat(np.zeros((2, 3, 4))).shape
        (2, 12)
    """
    shape = aval_of(x).shape
    if dims is None and not shape:
        raise ShapeError("mat: x is 0-d (a number): it has no instance axis to keep; mat(x, dims=0) is its (1, 1) matrix")
    dims = len(shape) - 1 if dims is None else dims
    if not 0 <= dims <= len(shape):
        raise ShapeError(f"mat: dims={dims} must lie in 0..{len(shape)} for an array of shape {shape}")
    cols = int(np.prod(shape[len(shape) - dims:]))
    return reshape_op(x, shape=(int(np.prod(shape[:len(shape) - dims])), cols))


def permutedims(x, perm=None):
    """Permute the axes: `perm` lists Python axes (0-based), as np.transpose; default: reversed.

    Translating Julia's `permutedims(x, p)` (1-based p on the reversed shape) gives
    `perm[a] = n - p[n - 1 - a]` (p as a 0-indexed Python list): Julia (2,1,3) on an
    (N, B, T) array is kn.permutedims(x, (0, 2, 1)).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.permutedims(np.zeros((2, 3, 4)), (2, 0, 1)).shape
        (4, 2, 3)
    """
    ndim = len(aval_of(x).shape)
    if perm is not None and any(not -ndim <= int(p) < ndim for p in perm):
        raise ShapeError(f"permutedims: {tuple(perm)} names an axis out of bounds for a {ndim}-d array "
                         f"(axes are 0-based, as numpy's)")
    perm = tuple(reversed(range(ndim))) if perm is None else tuple(int(p) % ndim if ndim else p for p in perm)
    if sorted(perm) != list(range(ndim)):
        raise ShapeError(f"permutedims: {perm} is not a permutation of the axes of a {ndim}-d array")
    return transpose(x, perm)


def adjoint(x):
    """The (real) adjoint: a matrix's transpose. A vector's adjoint is Julia's 1xn row,
    which is shape (n, 1) here (reversed shapes).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.adjoint(np.array([[1.0, 2.0, 3.0]])).shape
        (3, 1)
    """
    shape = aval_of(x).shape
    if len(shape) == 1:
        return reshape_op(x, shape=(shape[0], 1))
    if len(shape) != 2:
        raise ShapeError(f"adjoint: expected a vector or a matrix, got shape {shape}")
    return transpose(x)


def copy(x):
    """A copy of x (numpy arrays and KnetArrays copied; on Params and taped values a
    recorded identity, so gradients flow through it).

    Example:
        >>> import numpy as np, knetc as kn
        >>> x = np.array([1.0, 2.0])
        >>> y = kn.copy(x)
        >>> y is x, y
        (False, array([1., 2.]))
    """
    if is_symbolic(x):
        return x
    if is_boxed(x):
        return mul(x, 1)  # recorded (a new value, differentiable), like AutoGrad's copy
    return x.copy() if hasattr(x, "copy") else np.array(x, copy=True)


def fill_(x, value):
    """Set every entry of x (a numpy array or a Param, outside diff) to value, in place.

    Example:
        >>> import numpy as np, knetc as kn
        >>> x = np.zeros(3)
        >>> kn.fill_(x, 7.0)
        array([7., 7., 7.])
    """
    setindex_(x, Ellipsis, value)
    return x


def _shape_args(dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        return tuple(dims[0])
    return tuple(dims)


def _dtype_and_shape(name, dims, dtype):
    """(dtype, shape) of zeros/ones: Knet's `zeros(Float32, 2, 3)` form puts the element type
    first, which is how bnmoments and RNN call their initialisers (`meaninit=kn.zeros`)."""
    if dims and isinstance(dims[0], (type, np.dtype)):
        if dtype is not None:
            raise TypeError(f"{name}: the element type is given twice ({dims[0]} and dtype={dtype})")
        dtype, dims = dims[0], dims[1:]
    return np.dtype(np.float64 if dtype is None else dtype), _shape_args(dims)


def zeros(*dims, dtype=None):
    """zeros(2, 3), zeros((2, 3), dtype=np.float32) or, as Knet's zeros(Float32, 2, 3),
    zeros(np.float32, 2, 3) (numpy shape order; float64 by default). The last form makes it an
    initialiser: `kn.bnmoments(meaninit=kn.zeros)`, `kn.RNN(3, 4, binit=kn.zeros)`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.zeros(2, 3).shape
        (2, 3)
        >>> kn.zeros((2,), dtype=np.float32)
        array([0., 0.], dtype=float32)
    """
    dtype, shape = _dtype_and_shape("zeros", dims, dtype)
    return np.zeros(shape, dtype)


def ones(*dims, dtype=None):
    """ones(2, 3), ones((2, 3), dtype=np.float32) or ones(np.float32, 2, 3) (Knet's form).

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.ones(2, 3).shape
        (2, 3)
        >>> kn.ones(np.float32, 2)
        array([1., 1.], dtype=float32)
    """
    dtype, shape = _dtype_and_shape("ones", dims, dtype)
    return np.ones(shape, dtype)


def similar(x, *dims, dtype=None):
    """An uninitialised array like x, where x is (a KnetArray for a KnetArray), with x's shape
    and dtype unless given: Julia's similar(x), similar(x, dims...), similar(x, T, dims...).

    Example:
        >>> import numpy as np, knetc as kn
        >>> y = kn.similar(np.zeros((2, 3), np.float32))
        >>> y.shape, y.dtype
        ((2, 3), dtype('float32'))
        >>> kn.similar(y, np.float64, 4).dtype
        dtype('float64')
    """
    aval = aval_of(x)
    if dims and isinstance(dims[0], (type, np.dtype)):  # similar(x, T, dims...)
        if dtype is not None:
            raise TypeError(f"similar: the element type is given twice ({dims[0]} and dtype={dtype})")
        dtype, dims = dims[0], dims[1:]
    shape, dtype = _shape_args(dims) if dims else aval.shape, np.dtype(dtype or aval.dtype or np.float64)
    if context.kind(value_of(x)) == "device":  # (a KnetArray: its own kind of array)
        return type(value_of(x)).empty(shape, dtype)
    return np.empty(shape, dtype)
