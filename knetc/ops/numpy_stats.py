"""numpy's NaN-skipping reductions and order statistics on Params, taped and compiled values:
np.nansum/nanprod/nanmean/nanvar/nanstd/nanmax/nanmin/nancumsum/nancumprod, np.average,
np.ptp, np.median, np.quantile and np.percentile (method="linear"), and a few functions
numpy composes the same way: np.sinc, np.heaviside, np.nan_to_num, np.float_power, np.fix,
np.rot90, np.rollaxis, np.hsplit/vsplit/dsplit, np.kron, np.vdot, np.cross, np.select,
np.broadcast_arrays, np.ediff1d, np.trapezoid, np.diagflat.

Each is written with knetc's ops (masks, reductions, np.sort's gather), so it is recorded,
differentiated and compiled as they are: a NaN entry a reduction skips gets no gradient;
an order statistic's gradient goes to the entries it was interpolated from.

    >>> import numpy as np, knetc as kn
    >>> w = kn.Param(np.array([1.0, np.nan, 3.0]))
    >>> float(np.nanmean(w)), kn.grad(kn.diff(lambda: np.nanmean(w)), w).tolist()
    (2.0, [0.5, 0.0, 0.5])
"""
import numpy as np

from ..errors import ShapeError
from . import elementwise as ew
from .broadcast import broadcast_to
from .core import astype, aval_of, listed
from .methods import FUNCTIONS, UFUNCS, _axes_arg, _no_out, _numpy_ravel
from .numpy_more import _isnan, _moveaxis, _shape, _sort, _split
from .indexing import getindex
from .shape import reshape


def _where(condition, a, b):
    return FUNCTIONS[np.where](condition, a, b)


def _float(a):
    """a in numpy's float type for a mean of it (integers and bools: float64)."""
    return a if np.dtype(aval_of(a).dtype).kind == "f" else astype(a, dtype=np.dtype(np.float64))


# ----------------------------------------------------------------------------- NaN-skipping

def _nan_as(fill, function):
    """np.nansum (np.sum, fill 0), nanprod (np.prod, 1), nancumsum, nancumprod: `function` of a
    with its NaNs as `fill` (numpy's signature: the rest passed on)."""
    def nan_function(a, *args, **kwargs):
        return FUNCTIONS[function](_where(_isnan(a), fill, a), *args, **kwargs)
    return nan_function


def _count(a, axis, keepdims):
    return FUNCTIONS[np.sum](astype(ew.eq(_isnan(a), 0), dtype=np.dtype(np.int64)), axis, None, None, keepdims)


def _nanmean(a, axis=None, dtype=None, out=None, keepdims=False):
    """The mean of the entries that are not NaN (NaN where there are none, as numpy)."""
    a = _float(_no_out(out, a)) if dtype is None else astype(a, dtype=np.dtype(dtype))
    total = FUNCTIONS[np.sum](_where(_isnan(a), 0, a), axis, None, None, keepdims)
    return ew.div(total, astype(_count(a, axis, keepdims), dtype=aval_of(total).dtype))


def _nanvar(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    a = _float(_no_out(out, a)) if dtype is None else astype(a, dtype=np.dtype(dtype))
    deviation = _where(_isnan(a), 0, ew.sub(a, _nanmean(a, axis, keepdims=True)))
    squares = FUNCTIONS[np.sum](ew.mul(deviation, deviation), axis, None, None, keepdims)
    dof = ew.sub(_count(a, axis, keepdims), ddof)
    return _where(ew.le(dof, 0), np.nan, ew.div(squares, astype(dof, dtype=aval_of(squares).dtype)))  # (numpy's NaN)


def _nanstd(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    return ew.sqrt(_nanvar(a, axis, dtype, out, ddof, keepdims))


def _nan_extreme(reduction, empty):
    """np.nanmax/nanmin: NaNs as `empty` (-inf, inf); NaN where every entry is NaN, as numpy."""
    def extreme(a, axis=None, out=None, keepdims=False):
        a = _no_out(out, a)
        if np.dtype(aval_of(a).dtype).kind != "f":
            return FUNCTIONS[reduction](a, axis, None, keepdims)
        found = FUNCTIONS[reduction](_where(_isnan(a), empty, a), axis, None, keepdims)
        return _where(ew.eq(_count(a, axis, keepdims), 0), np.nan, found)
    return extreme


# ----------------------------------------------------------------------------- averages, order statistics

def _average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    """np.average: sum(a * w) / sum(w) along axis; 1-D weights along the one axis given."""
    if weights is None:
        avg = FUNCTIONS[np.mean](_float(a), axis, None, None, keepdims)
        count = np.prod(_shape(a)) / max(np.prod(_shape(avg)), 1)
        return (avg, np.full(_shape(avg), count, aval_of(avg).dtype)) if returned else avg
    w = listed(weights)
    if _shape(w) != _shape(a):
        if axis is None or len(_shape(w)) != 1 or not isinstance(axis, (int, np.integer)):
            raise TypeError("np.average: axis must be specified when shapes of a and weights differ")
        if _shape(w)[0] != _shape(a)[axis]:
            raise ValueError("np.average: length of weights differs from the length of the axis")
        axis_ = _axes_arg(axis, len(_shape(a)))[0]
        w = reshape(w, shape=tuple(n if i == axis_ else 1 for i, n in enumerate(_shape(a))))
    total = FUNCTIONS[np.sum](ew.mul(a, w), axis, None, None, keepdims)
    scale = FUNCTIONS[np.sum](broadcast_to(w, shape=_shape(a)), axis, None, None, keepdims)
    avg = ew.div(total, scale)
    return (avg, astype(scale, dtype=aval_of(avg).dtype) if aval_of(scale).dtype != aval_of(avg).dtype else scale) \
        if returned else avg


def _ptp(a, axis=None, out=None, keepdims=False):
    a = _no_out(out, a)
    return ew.sub(FUNCTIONS[np.max](a, axis, None, keepdims), FUNCTIONS[np.min](a, axis, None, keepdims))


def _sorted_rows(a, axis, keepdims):
    """(a's entries along `axis` sorted, in rows on the last axis; whether each row holds a
    NaN; the result's shape)."""
    a = _float(a)
    ndim = len(_shape(a))
    axes = tuple(range(ndim)) if axis is None else _axes_arg(axis, ndim)
    rest = [i for i in range(ndim) if i not in axes]
    rows = reshape(_moveaxis(a, list(axes), list(range(ndim - len(axes), ndim))),
                   shape=tuple(_shape(a)[i] for i in rest) + (int(np.prod([_shape(a)[i] for i in axes])),))
    if _shape(rows)[-1] == 0:
        raise ValueError("np.quantile/median of no entries on Params and recorded values (numpy: NaN)")
    shape = tuple(1 if i in axes else n for i, n in enumerate(_shape(a))) if keepdims else tuple(_shape(a)[i] for i in rest)
    return _sort(rows, -1), FUNCTIONS[np.any](_isnan(rows), -1), shape


def _entry(rows, i):
    return getindex(rows, (Ellipsis, i))


def _quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *,
              weights=None, interpolation=None):
    """np.quantile, method "linear": from the sorted entries, position q (n - 1) interpolated
    between its neighbours as numpy's _lerp; NaN wherever a NaN is among the entries."""
    if method != "linear" or interpolation is not None or weights is not None:
        raise TypeError("np.quantile/percentile on Params and recorded values: method='linear' only, no weights")
    if not isinstance(q, (np.ndarray, np.number, float, int, list, tuple)):
        raise TypeError("np.quantile/percentile on Params and recorded values: q must be known (numbers or a numpy array)")
    q = np.asarray(q, dtype=np.float64)
    if not np.all((q >= 0) & (q <= 1)):
        raise ValueError("Quantiles must be in the range [0, 1]")
    ordered, nan, shape = _sorted_rows(_no_out(out, a), axis, keepdims)
    n, results = _shape(ordered)[-1], []
    for t in q.ravel():
        below = int(np.floor(t * (n - 1)))
        fraction = float(t * (n - 1) - below)  # (a Python float: float32 entries stay float32)
        lo, hi = _entry(ordered, below), _entry(ordered, min(below + 1, n - 1))
        gap = ew.sub(hi, lo)
        value = ew.sub(hi, ew.mul(gap, 1 - fraction)) if fraction >= 0.5 else ew.add(lo, ew.mul(gap, fraction))
        results.append(reshape(_where(nan, np.nan, value), shape=shape))
    return results[0] if q.ndim == 0 else reshape(FUNCTIONS[np.stack](results), shape=q.shape + shape)


def _percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *,
                weights=None, interpolation=None):
    if not isinstance(q, (np.ndarray, np.number, float, int, list, tuple)):
        raise TypeError("np.percentile on Params and recorded values: q must be known (numbers or a numpy array)")
    return _quantile(a, np.asarray(q, dtype=np.float64) / 100, axis, out, overwrite_input, method, keepdims,
                     weights=weights, interpolation=interpolation)


def _median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """np.median: the middle entry, or the mean of the two middle ones, as numpy computes it."""
    ordered, nan, shape = _sorted_rows(_no_out(out, a), axis, keepdims)
    n = _shape(ordered)[-1]
    middle = _entry(ordered, n // 2)
    if n % 2 == 0:
        middle = ew.div(ew.add(_entry(ordered, n // 2 - 1), middle), 2)
    return reshape(_where(nan, np.nan, middle), shape=shape)


# ----------------------------------------------------------------------------- elementwise compositions

def _sinc(x):
    """sin(pi x) / (pi x), 1 at 0 (its gradient 0 there)."""
    x = _float(x)
    zero = ew.eq(x, 0)
    safe = ew.mul(_where(zero, 1, x), np.pi)
    return _where(zero, 1, ew.div(ew.sin(safe), safe))


def _heaviside(x1, x2):
    step = _where(_isnan(x1), np.nan, _where(ew.lt(x1, 0), 0, _where(ew.gt(x1, 0), 1, x2)))
    dtype = np.heaviside(*(x if isinstance(x, (int, float)) else np.zeros(0, aval_of(x).dtype) for x in (x1, x2))).dtype
    return step if aval_of(step).dtype == dtype else astype(step, dtype=dtype)


def _nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    dtype = np.dtype(aval_of(x).dtype)
    if dtype.kind != "f":
        return x
    big = np.finfo(dtype).max
    x = _where(_isnan(x), nan, x)
    x = _where(ew.eq(x, np.inf), big if posinf is None else posinf, x)
    return _where(ew.eq(x, -np.inf), -big if neginf is None else neginf, x)


def _fix(x, out=None):
    """np.fix: rounded towards zero (integers and bools as they are, as numpy 2's)."""
    return ew.trunc(_no_out(out, x))


# ----------------------------------------------------------------------------- shapes and products

def _rot90(m, k=1, axes=(0, 1)):
    ndim = len(_shape(m))
    if len(axes) != 2 or _axes_arg(axes[0], ndim) == _axes_arg(axes[1], ndim):
        raise ValueError("np.rot90: len(axes) must be 2 and the axes must be different")
    a, b = _axes_arg(axes[0], ndim)[0], _axes_arg(axes[1], ndim)[0]
    flip, swap = FUNCTIONS[np.flip], FUNCTIONS[np.swapaxes]
    k %= 4
    if k == 0:
        return m
    if k == 2:
        return flip(flip(m, a), b)
    return swap(flip(m, b), a, b) if k == 1 else flip(swap(m, a, b), b)


def _rollaxis(a, axis, start=0):
    ndim = len(_shape(a))
    axis = _axes_arg(axis, ndim)[0]
    start += ndim if start < 0 else 0
    if not 0 <= start <= ndim:
        raise ShapeError(f"np.rollaxis: start {start} is out of bounds for an array of dimension {ndim}")
    start -= start > axis
    return _moveaxis(a, axis, start) if axis != start else a


def _split_along(axis, at_least):
    def split(ary, indices_or_sections):
        if len(_shape(ary)) < at_least:
            raise ValueError(f"this split only works on arrays of {at_least} or more dimensions")
        return _split(ary, indices_or_sections, 0 if len(_shape(ary)) == 1 and axis == 1 else axis)
    return split


def _kron(a, b):
    """np.kron: the block product; (m, n) and (p, q) give (m p, n q)."""
    sa, sb = _shape(a), _shape(b)
    ndim = max(len(sa), len(sb))
    sa, sb = (1,) * (ndim - len(sa)) + sa, (1,) * (ndim - len(sb)) + sb
    product = ew.mul(reshape(a, shape=tuple(n for s in sa for n in (s, 1))), reshape(b, shape=tuple(n for s in sb for n in (1, s))))
    return reshape(product, shape=tuple(x * y for x, y in zip(sa, sb)))


def _vdot(a, b):
    return FUNCTIONS[np.dot](_numpy_ravel(a), _numpy_ravel(b))


def _cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """np.cross of 3-vectors (a vector) or 2-vectors (the z component) along the last axis."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = _moveaxis(a, axisa, -1), _moveaxis(b, axisb, -1)
    n, m = _shape(a)[-1], _shape(b)[-1]
    if n not in (2, 3) or m not in (2, 3) or n != m:
        raise ValueError("np.cross on Params and recorded values: both vectors of dimension 3, or both of 2")
    last = lambda x, i: getindex(x, (Ellipsis, i))  # noqa: E731
    if n == 2:
        return ew.sub(ew.mul(last(a, 0), last(b, 1)), ew.mul(last(a, 1), last(b, 0)))
    parts = [ew.sub(ew.mul(last(a, i), last(b, j)), ew.mul(last(a, j), last(b, i))) for i, j in ((1, 2), (2, 0), (0, 1))]
    return _moveaxis(FUNCTIONS[np.stack](parts, -1), -1, axisc)


def _select(condlist, choicelist, default=0):
    """np.select: where the first true condition is, its choice; elsewhere default."""
    if len(condlist) != len(choicelist):
        raise ValueError("list of cases must be same length as list of conditions")
    result = default
    for condition, choice in reversed(list(zip(condlist, choicelist))):
        result = _where(condition, choice, result)
    return result


def _broadcast_arrays(*args, subok=False):
    shape = np.broadcast_shapes(*(_shape(a) for a in args))
    return tuple(a if _shape(a) == shape else broadcast_to(a, shape=shape) for a in args)


def _ediff1d(ary, to_end=None, to_begin=None):
    parts = [_numpy_ravel(np.asarray(p, aval_of(ary).dtype) if type(p) in (list, tuple, int, float) else p)
             for p in (to_begin, ary, to_end) if p is not None]
    flat = _numpy_ravel(ary)
    steps = ew.sub(getindex(flat, slice(1, None)), getindex(flat, slice(0, max(_shape(flat)[0] - 1, 0))))
    parts[1 if to_begin is not None else 0] = steps
    return FUNCTIONS[np.concatenate](parts) if len(parts) > 1 else steps


def _trapezoid(y, x=None, dx=1.0, axis=-1):
    """np.trapezoid: the trapezoid rule's integral of y along axis (spacing x's steps, or dx)."""
    x = listed(x)
    n = _shape(y)[_axes_arg(axis, len(_shape(y)))[0]]
    later, earlier = (FUNCTIONS[np.take](y, np.arange(1, n), axis), FUNCTIONS[np.take](y, np.arange(0, max(n - 1, 0)), axis))
    width = dx if x is None else FUNCTIONS[np.diff](x, axis=axis if len(_shape(x)) > 1 else -1)
    if x is not None and len(_shape(x)) == 1 and len(_shape(y)) > 1:  # (1-D x along the axis)
        axis_ = _axes_arg(axis, len(_shape(y)))[0]
        width = reshape(width, shape=tuple(n - 1 if i == axis_ else 1 for i in range(len(_shape(y)))))
    return FUNCTIONS[np.sum](ew.mul(ew.mul(ew.add(later, earlier), width), 0.5), axis)


FUNCTIONS.update({
    np.select: _select, np.broadcast_arrays: _broadcast_arrays, np.ediff1d: _ediff1d, np.trapezoid: _trapezoid,
    np.diagflat: lambda v, k=0: FUNCTIONS[np.diag](_numpy_ravel(v), k),
    np.nansum: _nan_as(0, np.sum), np.nanprod: _nan_as(1, np.prod),
    np.nancumsum: _nan_as(0, np.cumsum), np.nancumprod: _nan_as(1, np.cumprod),
    np.nanmean: _nanmean, np.nanvar: _nanvar, np.nanstd: _nanstd,
    np.nanmax: _nan_extreme(np.max, -np.inf), np.nanmin: _nan_extreme(np.min, np.inf),
    np.average: _average, np.ptp: _ptp, np.median: _median, np.quantile: _quantile, np.percentile: _percentile,
    np.sinc: _sinc, np.nan_to_num: _nan_to_num, np.fix: _fix,
    np.rot90: _rot90, np.rollaxis: _rollaxis, np.hsplit: _split_along(1, 1), np.vsplit: _split_along(0, 2),
    np.dsplit: _split_along(2, 3), np.kron: _kron, np.vdot: _vdot, np.cross: _cross,
})
def _float_power(x, y):
    """np.float_power: x ** y in float64."""
    return ew.power_any(*(astype(v, dtype=np.dtype(np.float64)) if hasattr(v, "shape") else float(v) for v in (x, y)))


UFUNCS.update({np.heaviside: _heaviside, np.float_power: _float_power})
