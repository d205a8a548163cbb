"""Python operators and numpy interop shared by IR values, Params and taped values.

`x + y`, `x @ w`, `np.exp(x)`, `np.sum(x, axis=1)` on any of them go through the op table,
so they are recorded (eagerly) or emitted (compiled) like `kn.` calls."""
import inspect

import numpy as np

from ..context import is_symbolic
from ..errors import CompileError, ShapeError
from . import elementwise as ew
from .core import astype, aval_of, listed
from .linalg import matmul
from .reduce import maximum, mean, sum
from .shape import reshape, resolve_shape, transpose
from .reduce import argmax, argmin, divide_by_count, minimum, prod, sqrt0
from .indexing import getindex, setindex_
from .arrays import cat


def _numpy_reduction(knet_reduction, typed=True):
    # numpy's signature, (a, axis, dtype, out, keepdims) or without dtype (max, min); numpy
    # drops the reduced axes unless keepdims, Knet's functions keep them
    def reduction(x, axis=None, dtype=None, out=None, keepdims=False):
        x = _no_out(out, x if dtype is None else astype(x, dtype=np.dtype(dtype)))
        aval = aval_of(x)
        axes = tuple(range(aval.ndim)) if axis is None else _reduction_axes(axis, aval.ndim)
        result = knet_reduction(x, axes)
        if dtype is not None and aval_of(result).dtype != np.dtype(dtype):  # int8 sums in int64, wrapped as numpy's
            result = astype(result, dtype=np.dtype(dtype))
        return result if keepdims else reshape(result, shape=tuple(n for i, n in enumerate(aval.shape) if i not in axes))
    if typed:
        return reduction
    return lambda x, axis=None, out=None, keepdims=False: reduction(x, axis, None, out, keepdims)


def _no_out(out, x):
    """x, where numpy's out= is None (knetc values are not written into)."""
    if out is not None:
        raise TypeError("out= is not supported on Params and recorded values: assign the result")
    return x


UFUNCS = {
    np.add: ew.add, np.subtract: ew.sub, np.multiply: ew.mul, np.true_divide: ew.div,
    np.negative: ew.neg, np.exp: ew.exp, np.log: ew.log, np.tanh: ew.tanh, np.sqrt: ew.sqrt,
    np.absolute: ew.abs, np.sign: ew.sign, np.power: ew.power_any, np.matmul: matmul,
    np.less: ew.lt, np.less_equal: ew.le, np.greater: ew.gt, np.greater_equal: ew.ge,
    np.equal: ew.eq, np.not_equal: ew.ne,
    # the rest of Knet's unary and binary vocabulary (knetc/ops/math.py)
    np.arccos: ew.acos, np.arccosh: ew.acosh, np.arcsin: ew.asin, np.arcsinh: ew.asinh, np.arctan: ew.atan,
    np.arctanh: ew.atanh, np.cbrt: ew.cbrt, np.ceil: ew.ceil, np.cos: ew.cos, np.cosh: ew.cosh,
    np.exp2: ew.exp2, np.expm1: ew.expm1, np.floor: ew.floor, np.log10: ew.log10, np.log1p: ew.log1p,
    np.log2: ew.log2, np.rint: lambda x: ew.round(_as_float(x)), np.sin: ew.sin, np.sinh: ew.sinh, np.square: ew.abs2, np.tan: ew.tan,
    np.trunc: ew.trunc, np.maximum: ew.max, np.minimum: ew.min,
    np.remainder: ew.mod, np.floor_divide: ew.floordiv, np.fmod: ew.fmod,
    np.divmod: lambda a, b: (ew.floordiv(a, b), ew.mod(a, b)),
}


# The ufunc methods that are numpy functions: np.add.reduce is np.sum along axis 0 (its default).
UFUNC_METHODS = {("reduce", np.add): np.sum, ("reduce", np.multiply): np.prod, ("reduce", np.maximum): np.max,
                 ("reduce", np.minimum): np.min, ("accumulate", np.add): np.cumsum, ("accumulate", np.multiply): np.cumprod}


def _ufunc_method(ufunc, op, method, inputs, kwargs):
    """np.<ufunc>.outer, and the reduce/accumulate that are numpy functions (UFUNC_METHODS);
    NotImplemented for the rest (a clear TypeError on Params and taped values)."""
    if method == "outer" and op is not None and not kwargs:
        a, b = map(listed, inputs)  # (a's axes, then b's)
        return op(reshape(a, shape=aval_of(a).shape + (1,) * len(aval_of(b).shape)), b)
    if (method, ufunc) not in UFUNC_METHODS:
        return NotImplemented
    fn, kwargs = FUNCTIONS[UFUNC_METHODS[method, ufunc]], {"axis": 0, **kwargs}  # (numpy passes them by keyword)
    try:
        inspect.signature(fn).bind(*inputs, **kwargs)
    except TypeError:  # (initial=, where=: refused as numpy's functions' are)
        return NotImplemented
    return fn(*inputs, **kwargs)


def _as_float(x):
    """x in the float dtype numpy gives a float function of it (np.rint of integers is a float;
    kn.round keeps Julia's integer)."""
    dtype = np.dtype(aval_of(x).dtype)
    return x if dtype.kind in "fc" else astype(x, dtype=ew._float_result(aval_of(x)))


def _only_c_order(name, order):
    if order not in ("C", "A", "K"):
        raise NotImplementedError(f"{name}(order={order!r}) on knetc values: only C order")


def supported_call(func):
    """How knetc takes the numpy function func on Params and recorded values (its signature),
    or None where its op table has no entry. Example: ``supported_call(np.max)``"""
    fn = FUNCTIONS.get(func)
    return None if fn is None else f"{numpy_name(func)}{inspect.signature(fn)}"


def numpy_name(func):
    """np.sum, np.linalg.inv: a numpy function as the user wrote it."""
    return (getattr(func, "__module__", None) or "numpy").replace("numpy", "np", 1) + "." + getattr(func, "__name__", "?")


def _numpy_reshape(x, shape, order="C"):
    _only_c_order("reshape", order)
    size = int(np.prod(aval_of(x).shape))
    return reshape(x, shape=resolve_shape(size, (shape,) if isinstance(shape, int) else shape))


def _numpy_dot(a, b):
    """numpy's dot: a product with a 0-d operand, else a sum over the last axis of `a` and the
    second-to-last of `b` (the only axis of a 1-D `b`). Up to a 2-D `b` that is matmul; for an
    N-D `b` it is not (no batch axes: every `a` row meets every matrix of `b`)."""
    sa, sb = aval_of(a).shape, aval_of(b).shape
    if not sa or not sb:  # (a Python number is a float64 or int64 array here: not a ufunc's weak scalar)
        return ew.mul(*(np.asarray(x) if isinstance(x, (int, float)) else x for x in (a, b)))
    if len(sb) <= 2:
        return matmul(a, b)
    if sa[-1] != sb[-2]:
        raise ShapeError(f"dot: shapes {sa} and {sb} not aligned: {sa[-1]} (dim {len(sa) - 1}) != "
                         f"{sb[-2]} (dim {len(sb) - 2})")
    # dot(a, b)[..., k..., m] = sum_j a[..., j] b[k..., j, m]: bring b's axis j first
    perm = (len(sb) - 2,) + tuple(range(len(sb) - 2)) + (len(sb) - 1,)
    b2 = reshape(transpose(b, perm=perm), shape=(sb[-2], int(np.prod(sb)) // sb[-2]))
    return reshape(matmul(a, b2), shape=sa[:-1] + sb[:-2] + sb[-1:])


def _numpy_stack(arrays, axis=0):
    # numpy's stack: equal shapes joined along a new axis
    arrays = list(map(listed, arrays))
    if not arrays:
        raise ValueError("stack: need at least one array to stack")
    shapes = {aval_of(a).shape for a in arrays}
    if len(shapes) != 1:
        raise ShapeError(f"stack: all input arrays must have the same shape, got {sorted(shapes)}")
    shape = shapes.pop()
    if not -len(shape) - 1 <= axis <= len(shape):
        raise ShapeError(f"stack: axis {axis} is out of bounds for {len(shape) + 1}-d result")
    axis %= len(shape) + 1
    expanded = shape[:axis] + (1,) + shape[axis:]
    return cat(*[reshape(a, shape=expanded) for a in arrays], dims=axis)


def _permutation(axes, ndim):
    """numpy's transpose axes (None: reversed; negative axes count from the end)."""
    if axes is None:
        return tuple(reversed(range(ndim)))
    if any(not -ndim <= int(a) < ndim for a in axes):
        raise ShapeError(f"transpose: axes {tuple(axes)} out of bounds for an array of dimension {ndim}")
    return tuple(int(a) % ndim for a in axes)


FUNCTIONS = {
    np.sum: _numpy_reduction(sum), np.mean: _numpy_reduction(mean), np.max: _numpy_reduction(maximum, False),
    np.amax: _numpy_reduction(maximum, False), np.dot: _numpy_dot, np.matmul: matmul, np.stack: _numpy_stack,
    np.reshape: _numpy_reshape,
    np.transpose: lambda x, axes=None: transpose(x, perm=_permutation(axes, aval_of(x).ndim)),
}


def _numpy_var(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, root=False):
    # numpy's var/std: divide by n - ddof (nan or inf when that is <= 0, as numpy), drop the
    # axes unless keepdims. std's gradient is 0 where the variance is 0 (one entry, or all equal).
    x = _no_out(out, x if dtype is None else astype(x, dtype=np.dtype(dtype)))
    aval = aval_of(x)
    axes = tuple(range(aval.ndim)) if axis is None else _reduction_axes(axis, aval.ndim)
    d = ew.sub(x, mean(x, axes))
    n = int(np.prod([aval.shape[a] for a in axes]))
    out = divide_by_count(sum(ew.mul(d, d), axes), n - ddof)
    out = sqrt0(out) if root else out
    return out if keepdims else reshape(out, shape=tuple(n for i, n in enumerate(aval.shape) if i not in axes))


def _numpy_arg(knet_arg):
    def arg(x, axis=None, out=None, keepdims=False):
        if axis is None:  # a flat index; kept dims: all of them, size 1
            index = knet_arg(_no_out(out, x))
            return reshape(index, shape=(1,) * aval_of(x).ndim) if keepdims else index
        out = knet_arg(x, axis)
        shape = aval_of(out).shape
        return out if keepdims else reshape(out, shape=shape[:axis % len(shape)] + shape[axis % len(shape) + 1:])
    return arg


FUNCTIONS.update({
    np.prod: _numpy_reduction(prod), np.min: _numpy_reduction(minimum, False), np.amin: _numpy_reduction(minimum, False),
    np.var: _numpy_var, np.std: lambda x, axis=None, dtype=None, out=None, ddof=0, keepdims=False:
    _numpy_var(x, axis, dtype, out, ddof, keepdims, True),
    np.argmax: _numpy_arg(argmax), np.argmin: _numpy_arg(argmin),
    np.concatenate: lambda arrays, axis=0: cat(*arrays, dims=axis) if axis is not None else  # (None: flattened)
    cat(*(_numpy_ravel(listed(a)) for a in arrays), dims=0),
})


_NONZERO = object()


def _numpy_where(condition, x=_NONZERO, y=_NONZERO):
    """np.where(c, x, y) with broadcasting: x where c is nonzero, else y. The gradient goes to
    the chosen input only (as torch.where); an inf or NaN in the branch not taken stays out."""
    if x is _NONZERO or y is _NONZERO:
        what, fix = "np.where(condition) alone (positions whose number depends on the data)", \
            "use np.where(condition, x, y), or multiply by the mask"
        if is_symbolic(condition):
            raise CompileError(f"{what} is not supported in compiled code", hint=fix)
        raise TypeError(f"{what} is not supported on recorded values: {fix}")
    x, y = _with_dtype_of(x, y), _with_dtype_of(y, x)
    return ew.add(ew.masked(x, condition), ew.masked(y, ew.eq(condition, 0)))


def _with_dtype_of(v, other):
    # a Python number takes its dtype beside the other operand as numpy's weak scalars do
    # (NEP 50: 0 beside int64 is int64, 2.5 beside int8 float64), so that masked() never
    # gives it the condition's dtype (a bool mask would turn 2.5 into True)
    if not isinstance(v, (bool, int, float)):
        return v
    dtype = aval_of(other).dtype
    return np.asarray(v, np.result_type(v, other if dtype is None else dtype))


def _numpy_clip(a, a_min=None, a_max=None, *, min=None, max=None):
    """np.clip: the gradient is dy inside [a_min, a_max], bounds included (torch.clamp's), and
    goes to an array bound where it is taken; NaN stays NaN. `min=`/`max=` are numpy 2.1's
    names of the bounds."""
    if min is not None or max is not None:
        if a_min is not None or a_max is not None:
            raise TypeError("clip: give the bounds as a_min/a_max or as min/max, not both")
        a_min, a_max = min, max
    a_min, a_max, out = _with_dtype_of(a_min, a), _with_dtype_of(a_max, a), a  # (Python numbers are weak: int8 stays int8)
    if a_min is not None:
        out = ew.add(ew.masked(out, ew.eq(ew.lt(out, a_min), 0)), ew.masked(a_min, ew.lt(out, a_min)))
    if a_max is not None:
        out = ew.add(ew.masked(out, ew.eq(ew.gt(out, a_max), 0)), ew.masked(a_max, ew.gt(out, a_max)))
    return out


def _reduction_axes(axis, ndim):
    """numpy's axis argument of a reduction as axes in 0..ndim-1: out of bounds or repeated
    axes raise as numpy does (not wrapped around)."""
    axes = _axes_arg(axis, ndim)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"axis {axis}: duplicate value in axis")
    return axes


def _axes_arg(axis, ndim):
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if any(not -ndim <= a < ndim for a in axes):
        raise ShapeError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return tuple(sorted(int(a) % ndim for a in axes))


def _numpy_squeeze(x, axis=None):
    shape = aval_of(x).shape
    axes = tuple(i for i, n in enumerate(shape) if n == 1) if axis is None else _axes_arg(axis, len(shape))
    if any(shape[a] != 1 for a in axes):
        raise ShapeError(f"squeeze: cannot select an axis to squeeze out which has size not equal to one "
                         f"(shape {shape}, axis {axis})")
    return reshape(x, shape=tuple(n for i, n in enumerate(shape) if i not in axes))


def _numpy_expand_dims(x, axis):
    shape = list(aval_of(x).shape)
    axes = _axes_arg(axis, len(shape) + (1 if isinstance(axis, (int, np.integer)) else len(tuple(axis))))
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, shape=tuple(shape))


def _numpy_ravel(x, order="C"):
    _only_c_order("ravel", order)
    return reshape(x, shape=(int(np.prod(aval_of(x).shape)),))


def _numpy_swapaxes(x, axis1, axis2):
    perm = list(range(aval_of(x).ndim))
    a, b = _axes_arg(axis1, len(perm))[0], _axes_arg(axis2, len(perm))[0]
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm=tuple(perm))


FUNCTIONS.update({
    np.where: _numpy_where, np.clip: _numpy_clip, np.squeeze: _numpy_squeeze, np.expand_dims: _numpy_expand_dims,
    np.ravel: _numpy_ravel, np.swapaxes: _numpy_swapaxes,
})
def _numpy_reciprocal(x):
    """np.reciprocal: 1 / x of floats (numpy's integer reciprocal truncates: 1 // x, 0 for |x| > 1)."""
    if np.dtype(aval_of(x).dtype).kind in "biu":
        raise TypeError("np.reciprocal of integers truncates in numpy (1 // x); write 1.0 / x for the float reciprocal")
    return ew.div(1.0, x)


def _numpy_square(x):
    """np.square: x * x; of bools numpy's int8 (x * x is x for bools)."""
    return astype(x, dtype=np.dtype(np.int8)) if np.dtype(aval_of(x).dtype) == np.bool_ else ew.abs2(x)


def _numpy_fabs(x):
    """np.fabs: |x| as a float (of integers and bools: numpy's float type for them, float16 for int8)."""
    dtype = np.dtype(aval_of(x).dtype)
    return ew.abs(x if dtype.kind == "f" else astype(x, dtype=np.fabs(np.zeros(0, dtype)).dtype))


UFUNCS.update({np.fabs: _numpy_fabs, np.positive: lambda x: x, np.reciprocal: _numpy_reciprocal, np.square: _numpy_square})


class ArrayMethods:
    """Mixin: operators, shape properties and numpy dispatch for knetc's array-like types."""
    __array_priority__ = 1000

    def __add__(self, other): return ew.add(self, other)
    def __radd__(self, other): return ew.add(other, self)
    def __sub__(self, other): return ew.sub(self, other)
    def __rsub__(self, other): return ew.sub(other, self)
    def __mul__(self, other): return ew.mul(self, other)
    def __rmul__(self, other): return ew.mul(other, self)
    def __truediv__(self, other): return ew.div(self, other)
    def __rtruediv__(self, other): return ew.div(other, self)
    def __floordiv__(self, other): return ew.floordiv(self, other)
    def __rfloordiv__(self, other): return ew.floordiv(other, self)
    def __mod__(self, other): return ew.mod(self, other)
    def __rmod__(self, other): return ew.mod(other, self)
    def __divmod__(self, other): return ew.floordiv(self, other), ew.mod(self, other)
    def __rdivmod__(self, other): return ew.floordiv(other, self), ew.mod(other, self)
    def __neg__(self): return ew.neg(self)
    def __pos__(self): return self
    def __abs__(self): return ew.abs(self)
    def __pow__(self, exponent):  # numpy's `x ** 0.5` is np.sqrt (nan at -inf, -0.0 at -0.0; np.power gives inf, 0.0),
        if type(exponent) is int and exponent == 2 and self.dtype == np.bool_:  # and a bool array's `x ** 2`
            return _numpy_square(self)  # np.square's int8 (np.power: int64)
        root = type(exponent) is float and exponent == 0.5 and np.dtype(self.dtype).kind == "f"  # (of integers: np.power's float64)
        return ew.sqrt(self) if root else ew.power_any(self, exponent)
    def __rpow__(self, base): return ew.power_any(base, self)
    def __matmul__(self, other): return matmul(self, other)
    def __rmatmul__(self, other): return matmul(other, self)
    def __lt__(self, other): return ew.lt(self, other)
    def __le__(self, other): return ew.le(self, other)
    def __gt__(self, other): return ew.gt(self, other)
    def __ge__(self, other): return ew.ge(self, other)
    # == and != keep identity semantics (these objects are dict keys); use kn.eq / np.equal.
    __hash__ = object.__hash__

    @property
    def shape(self): return aval_of(self).shape
    @property
    def dtype(self): return aval_of(self).dtype
    @property
    def ndim(self): return len(aval_of(self).shape)
    @property
    def size(self): return int(np.prod(aval_of(self).shape))
    @property
    def T(self): return transpose(self, perm=tuple(reversed(range(self.ndim))))

    def __getitem__(self, index): return getindex(self, index)

    def __setitem__(self, index, value): setindex_(self, index, value)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def reshape(self, *shape, order="C"):
        _only_c_order("reshape", order)
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return reshape(self, shape=resolve_shape(self.size, shape))

    # numpy's method signatures: (axis, dtype, out, keepdims), max and min without dtype
    def sum(self, axis=None, dtype=None, out=None, keepdims=False): return FUNCTIONS[np.sum](self, axis, dtype, out, keepdims)
    def mean(self, axis=None, dtype=None, out=None, keepdims=False): return FUNCTIONS[np.mean](self, axis, dtype, out, keepdims)
    def max(self, axis=None, out=None, keepdims=False): return FUNCTIONS[np.max](self, axis, out, keepdims)
    def min(self, axis=None, out=None, keepdims=False): return FUNCTIONS[np.min](self, axis, out, keepdims)
    def prod(self, axis=None, dtype=None, out=None, keepdims=False): return FUNCTIONS[np.prod](self, axis, dtype, out, keepdims)
    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return FUNCTIONS[np.var](self, axis, dtype, out, ddof, keepdims)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return FUNCTIONS[np.std](self, axis, dtype, out, ddof, keepdims)
    def dot(self, other): return _numpy_dot(self, other)
    def clip(self, a_min=None, a_max=None, **bounds): return _numpy_clip(self, a_min, a_max, **bounds)
    def ravel(self, order="C"): return _numpy_ravel(self, order)
    def astype(self, dtype): return astype(self, dtype=np.dtype(dtype))
    def flatten(self, order="C"): return _numpy_ravel(self, order)
    def squeeze(self, axis=None): return _numpy_squeeze(self, axis)
    def swapaxes(self, axis1, axis2): return _numpy_swapaxes(self, axis1, axis2)

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))) else axes
        return FUNCTIONS[np.transpose](self, axes or None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        op = UFUNCS.get(ufunc)
        out = kwargs.get("out", None)  # (out=None, or (None,), is no `out`; arrays compare elementwise: `is`)
        if out is None or type(out) is tuple and all(o is None for o in out):
            kwargs.pop("out", None)
        if method != "__call__":
            return _ufunc_method(ufunc, op, method, inputs, kwargs)
        if op is None or kwargs:
            return NotImplemented  # Params and taped values raise a clear TypeError (autograd._Recordable)
        return op(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        fn = FUNCTIONS.get(func)
        if fn is None:
            return NotImplemented
        try:
            return fn(*args, **kwargs)
        except TypeError:
            try:
                inspect.signature(fn).bind(*args, **kwargs)
            except TypeError:  # numpy's arguments knetc does not take (where=, initial=, ...)
                return NotImplemented  # (numpy's own on plain values; refused where it would be recorded)
            raise

