"""Pooling: Knet's `pool` and `unpool` on (N,C,H,W) and (N,C,D,H,W) arrays.

The ops are library routines ("call" kind): knetc.kernels.pool has the CPU (njit, parallel
over N*C) and CUDA (Numba kernels, or cuDNN when present) versions; eagerly, float32 and
float64 arrays run the same CPU routines, other dtypes the numpy references below. Their
adjoints are ops too: average pooling and its gradient are each other's transposes, and
max pooling's gradient (sending dy to each window's argmax) has the gather `pool_gather` as
its own transpose, so every order of gradient works.

    >>> kn.pool(np.arange(16.0).reshape(1, 1, 4, 4))          # 2x2 max pooling
    array([[[[ 5.,  7.], [13., 15.]]]])
"""
import numpy as np

from ..errors import ShapeError
from .core import Aval, Op, aval_of, check_float, register

__all__ = ["pool", "unpool"]

MODES = {0: "max", 1: "average including padding", 2: "average excluding padding", 3: "deterministic max"}


def _lowering(name):
    return {"cpu": f"knetc.kernels.pool:{name}_cpu", "cuda": f"knetc.kernels.pool:{name}_cuda"}


# ----------------------------------------------------------------------------- keywords

def whole(v):
    """Is v a whole number (an int, or a float such as 2.0, as Knet's Cint(v) takes it)?"""
    return isinstance(v, (int, np.integer, float, np.floating)) and not isinstance(v, bool) and float(v).is_integer()


def spatial(name, keyword, value, n):
    """A scalar or an n-tuple (Python dim order) of whole numbers, as a tuple of n ints
    (pool's and conv4's window, padding, stride, dilation): 1.5 is refused, not truncated."""
    values = (value,) * n if np.ndim(value) == 0 else tuple(value)
    if len(values) != n or not all(map(whole, values)):
        raise ShapeError(f"{name}: {keyword}={value!r} must be an int or a tuple of {n} ints (one per spatial dim)")
    return tuple(int(v) for v in values)


def _three(values, fill):
    """Spatial tuples as (d, h, w): 2-D pooling has depth 1."""
    return (fill,) * (3 - len(values)) + tuple(values)


def _keywords(name, x, window, padding, stride, mode):
    if x.ndim not in (4, 5):
        raise ShapeError(f"{name}: expected a 4-d (N,C,H,W) or 5-d (N,C,D,H,W) array, got {x}")
    check_float(name, x)
    n = x.ndim - 2
    window = spatial(name, "window", window, n)
    padding = spatial(name, "padding", padding, n)
    stride = window if stride is None else spatial(name, "stride", stride, n)
    if min(window) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ShapeError(f"{name}: window and stride must be >= 1 and padding >= 0, got window={window}, "
                         f"stride={stride}, padding={padding}")
    if any(p >= w for p, w in zip(padding, window)):
        raise ShapeError(f"{name}: padding={padding} must be smaller than window={window} (a window would hold only padding)")
    if mode not in MODES:
        raise ShapeError(f"{name}: mode={mode!r} must be one of {sorted(MODES)} ({', '.join(MODES.values())})")
    return _three(window, 1), _three(padding, 0), _three(stride, 1)


def pooled_shape(name, shape, window, padding, stride):
    """Knet's output size Y = 1 + floor((X + 2*padding - window) / stride) per spatial dim."""
    spatial = shape[2:]
    window, padding, stride = (t[3 - len(spatial):] for t in (window, padding, stride))
    out = []
    for x, w, p, s in zip(spatial, window, padding, stride):
        if x + 2 * p < w:
            raise ShapeError(f"{name}: window={window} is larger than the padded input {tuple(spatial)} "
                             f"(padding={padding})")
        out.append(1 + (x + 2 * p - w) // s)
    return tuple(shape[:2]) + tuple(out)


def unpooled_shape(shape, window, padding, stride):
    """Knet's updims: Y = (X - 1)*stride + window - 2*padding."""
    spatial = shape[2:]
    window, padding, stride = (t[3 - len(spatial):] for t in (window, padding, stride))
    return tuple(shape[:2]) + tuple((x - 1) * s + w - 2 * p for x, w, p, s in zip(spatial, window, padding, stride))


# ----------------------------------------------------------------------------- numpy references

def _as_slices(x):
    """(N*C, D, H, W) view of a 4-D or 5-D array."""
    x = np.asarray(x)
    return x.reshape((x.shape[0] * x.shape[1],) + ((1,) if x.ndim == 4 else ()) + x.shape[2:])


def _offsets(window):
    return [(a, b, c) for a in range(window[0]) for b in range(window[1]) for c in range(window[2])]


def _window_view(xp, offset, outer, stride):
    """xp[:, a::sd, b::sh, c::sw] cut to the output size: each output's entry at `offset`."""
    (a, b, c), (od, oh, ow), (sd, sh, sw) = offset, outer, stride
    return (slice(None), slice(a, a + sd * (od - 1) + 1, sd), slice(b, b + sh * (oh - 1) + 1, sh),
            slice(c, c + sw * (ow - 1) + 1, sw))


def _padded(x, padding, value=0):
    pd, ph, pw = padding
    return np.pad(x, ((0, 0), (pd, pd), (ph, ph), (pw, pw)), constant_values=value)


def _argmax_index(x, window, padding, stride, nan_opt, outer):
    """For every output, the offset number (in window order) of its window's maximum."""
    xs = _as_slices(x)
    xp, real = _padded(xs, padding), _padded(np.ones(xs.shape, bool), padding, False)
    shape = (xs.shape[0],) + outer
    best, index = np.zeros(shape, xs.dtype), np.full(shape, -1)
    for k, offset in enumerate(_offsets(window)):
        view = _window_view(xp, offset, outer, stride)
        v, r = xp[view], real[view]
        best_nan, v_nan = np.isnan(best), np.isnan(v)
        if nan_opt:
            better = np.where(best_nan, False, v_nan | (v > best))
        else:
            better = np.where(best_nan, ~v_nan, ~v_nan & (v > best))
        take = r & ((index < 0) | better)
        best, index = np.where(take, v, best), np.where(take, k, index)
    return index


def _outer(y_shape):
    return ((1,) if len(y_shape) == 4 else ()) + tuple(y_shape[2:])


def _divisors(shape, window, padding, stride, mode, outer):
    if mode == 1:
        return float(np.prod(window))
    real = _padded(np.ones((1,) + _as_slices(np.empty(shape)).shape[1:]), padding)
    return sum(real[_window_view(real, off, outer, stride)] for off in _offsets(window))


def _pool_impl(x, window, padding, stride, mode, nan_opt, alpha):
    x = np.asarray(x)
    y_shape = pooled_shape("pool", x.shape, window, padding, stride)
    outer = _outer(y_shape)
    xs = _as_slices(x)
    if mode in (0, 3):
        index = _argmax_index(x, window, padding, stride, nan_opt, outer)
        xp = _padded(xs, padding)
        y = sum(np.where(index == k, xp[_window_view(xp, off, outer, stride)], 0)
                for k, off in enumerate(_offsets(window)))
    else:
        xp = _padded(xs, padding)
        total = sum(xp[_window_view(xp, off, outer, stride)] for off in _offsets(window))
        y = total / _divisors(x.shape, window, padding, stride, mode, outer)
    return (alpha * y).astype(x.dtype).reshape(y_shape)


def _scatter(shape, dtype, values_at, window, padding, stride, outer):
    """Sum, into an array of `shape`, values_at(k) placed at each output's window offset k."""
    xs_shape = _as_slices(np.empty(shape, dtype)).shape
    dxp = _padded(np.zeros(xs_shape, dtype), padding)
    for k, off in enumerate(_offsets(window)):
        dxp[_window_view(dxp, off, outer, stride)] += values_at(k)
    pd, ph, pw = padding
    return dxp[:, pd:pd + xs_shape[1], ph:ph + xs_shape[2], pw:pw + xs_shape[3]].reshape(shape)


def _grad_max_impl(x, y, dy, window, padding, stride, mode, nan_opt, alpha):
    x, dy = np.asarray(x), np.asarray(dy)
    outer = _outer(dy.shape)
    index = _argmax_index(x, window, padding, stride, nan_opt, outer)
    g = alpha * _as_slices(dy).reshape(index.shape)
    return _scatter(x.shape, x.dtype, lambda k: np.where(index == k, g, 0), window, padding, stride, outer)


def _grad_avg_impl(dy, shape, window, padding, stride, mode, alpha):
    dy = np.asarray(dy)
    outer = _outer(dy.shape)
    g = alpha * _as_slices(dy).reshape((-1,) + outer) / _divisors(shape, window, padding, stride, mode, outer)
    return _scatter(tuple(shape), dy.dtype, lambda k: g, window, padding, stride, outer)


def _gather_impl(x, y, g, window, padding, stride, mode, nan_opt, alpha):
    x, g = np.asarray(x), np.asarray(g)
    y_shape = np.shape(y)
    outer = _outer(y_shape)
    index = _argmax_index(x, window, padding, stride, nan_opt, outer)
    gp = _padded(_as_slices(g), padding)
    z = sum(np.where(index == k, gp[_window_view(gp, off, outer, stride)], 0) for k, off in enumerate(_offsets(window)))
    return (alpha * z).astype(g.dtype).reshape(y_shape)


# ----------------------------------------------------------------------------- eager: the CPU routines
# Eagerly, float32 and float64 arrays run the CPU routines that compiled code calls
# (knetc.kernels.pool, parallel over N*C; the numpy references above take several passes over
# the data per window position, 5-10x longer at LeNet's sizes); other dtypes, and inputs of
# mixed dtypes, run the references.

_ROUTINE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _routine(name, shape, arrays, params):
    """The CPU routine knetc.kernels.pool.<name>_cpu(*arrays, out, **params), or None where
    the reference is to run."""
    dtype = np.result_type(*arrays)
    if dtype not in _ROUTINE_DTYPES or any(np.asarray(a).dtype != dtype for a in arrays):
        return None
    from knetc.kernels import pool as kernels  # (imports Numba: on first use)
    out = np.empty(shape, dtype)
    getattr(kernels, f"{name}_cpu")(*[np.ascontiguousarray(a) for a in arrays], out, **params)
    return out


def _pool_eager(x, window, padding, stride, mode, nan_opt, alpha):
    shape = pooled_shape("pool", np.shape(x), window, padding, stride)
    out = _routine("pool", shape, (x,), dict(window=window, padding=padding, stride=stride, mode=mode,
                                                         nan_opt=nan_opt, alpha=alpha))
    return _pool_impl(x, window, padding, stride, mode, nan_opt, alpha) if out is None else out


def _grad_max_eager(x, y, dy, window, padding, stride, mode, nan_opt, alpha):
    params = dict(window=window, padding=padding, stride=stride, mode=mode, nan_opt=nan_opt, alpha=alpha)
    out = _routine("pool_grad_max", np.shape(x), (x, y, dy), params)
    return _grad_max_impl(x, y, dy, **params) if out is None else out


def _gather_eager(x, y, g, window, padding, stride, mode, nan_opt, alpha):
    params = dict(window=window, padding=padding, stride=stride, mode=mode, nan_opt=nan_opt, alpha=alpha)
    out = _routine("pool_gather", np.shape(y), (x, y, g), params)
    return _gather_impl(x, y, g, **params) if out is None else out


def _grad_avg_eager(dy, shape, window, padding, stride, mode, alpha):
    params = dict(shape=shape, window=window, padding=padding, stride=stride, mode=mode, alpha=alpha)
    out = _routine("pool_grad_avg", tuple(shape), (dy,), params)
    return _grad_avg_impl(dy, **params) if out is None else out


# ----------------------------------------------------------------------------- ops

def _pool_rule(x, window, padding, stride, mode, nan_opt, alpha):
    if x.ndim not in (4, 5):
        raise ShapeError(f"pool: expected a 4-d or 5-d array, got {x}")
    return Aval(pooled_shape("pool", x.shape, window, padding, stride), x.dtype)


def _pool_grad(dy, y, x, window, padding, stride, mode, nan_opt, alpha):
    if mode in (0, 3):
        return pool_grad_max(x, y, dy, window=window, padding=padding, stride=stride, mode=mode,
                             nan_opt=nan_opt, alpha=alpha)
    return pool_grad_avg(dy, shape=aval_of(x).shape, window=window, padding=padding, stride=stride,
                         mode=mode, alpha=alpha)


pool_op = register(Op("pool", _pool_rule, _pool_eager, (_pool_grad,), "call", lowering=_lowering("pool")))


def _same_as_first(x, *rest, **params):
    return x


pool_grad_max = register(Op(
    "pool_grad_max", _same_as_first, _grad_max_eager,
    (None, None, lambda g, dx, x, y, dy, **p: pool_gather(x, y, g, **p)),  # linear in dy; piecewise constant in x
    "call", lowering=_lowering("pool_grad_max")))

pool_gather = register(Op(
    "pool_gather", lambda x, y, g, **p: y, _gather_eager,
    (None, None, lambda dz, z, x, y, g, **p: pool_grad_max(x, y, dz, **p)),
    "call", lowering=_lowering("pool_gather")))


def _grad_avg_rule(dy, shape, window, padding, stride, mode, alpha):
    return Aval(tuple(shape), dy.dtype)


pool_grad_avg = register(Op(
    "pool_grad_avg", _grad_avg_rule, _grad_avg_eager,
    (lambda g, dx, dy, shape, **p: pool_op(g, nan_opt=1, **p),),  # the transpose of a linear map
    "call", lowering=_lowering("pool_grad_avg")))


# ----------------------------------------------------------------------------- public

def pool(x, window=2, padding=0, stride=None, mode=0, maxpooling_nan_opt=1, alpha=1):
    """Knet's pool: max (mode 0 or 3) or average (1: including padding, 2: excluding it) over
    windows of the spatial axes of x (N,C,H,W) or (N,C,D,H,W); y = alpha * pool(x).

    window, padding, stride: an int or a tuple per spatial axis in Python order ((wH, wW));
    stride defaults to window. Output size per axis: 1 + (X + 2*padding - window) // stride.
    maxpooling_nan_opt=1 propagates NaNs through max pooling, 0 ignores them.

    >>> x = np.zeros((8, 3, 6, 9))
    >>> kn.pool(x, window=(2, 3), mode=1).shape
    (8, 3, 3, 3)
    """
    aval = aval_of(x)
    window, padding, stride = _keywords("pool", aval, window, padding, stride, mode)
    if maxpooling_nan_opt not in (0, 1):
        raise ShapeError(f"pool: maxpooling_nan_opt={maxpooling_nan_opt!r} must be 0 or 1")
    return pool_op(x, window=window, padding=padding, stride=stride, mode=int(mode),
                   nan_opt=int(maxpooling_nan_opt), alpha=float(alpha))


def unpool(x, window=2, padding=0, stride=None, mode=0, maxpooling_nan_opt=1, alpha=1):
    """Knet's unpool, the reverse of pooling: each entry is copied over its window (nearest
    neighbour upsampling; overlapping windows add up) and divided by alpha, so that
    `pool(unpool(x, **o), **o) == x` for non-overlapping windows. Output size per axis:
    (X - 1)*stride + window - 2*padding. `mode` and `maxpooling_nan_opt` are accepted for
    symmetry with pool and ignored (Knet's unpool is the gradient of average pooling).

    >>> kn.unpool(np.array([[[[1.0, 2.0]]]]))
    array([[[[1., 1., 2., 2.],
             [1., 1., 2., 2.]]]])
    """
    aval = aval_of(x)
    window, padding, stride = _keywords("unpool", aval, window, padding, stride, mode)
    shape = unpooled_shape(aval.shape, window, padding, stride)
    if min(shape[2:]) < 1:
        raise ShapeError(f"unpool: the output size {shape} is empty (padding={padding[5 - aval.ndim:]} is too large)")
    # average pooling's gradient spreads dy/|window| over each window: scale back by |window|/alpha
    return pool_grad_avg(x, shape=shape, window=window, padding=padding, stride=stride, mode=1,
                         alpha=float(np.prod(window)) / float(alpha))
