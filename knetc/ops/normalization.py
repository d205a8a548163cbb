"""Batch normalization and dropout: Knet's `batchnorm` and `dropout` (the running statistics
`bnmoments` and the parameter vector `bnparams` are user state: they live in knetc.layers).

Both are written with ops, so they run eagerly, on the tape and in compiled code, where the
normalisation and the dropout product fuse with their neighbours. The only stateful steps
are small "call" ops that update (or read) arrays in place: batchnorm's running mean and
variance, and dropout's random counter. Those arrays enter compiled programs as constants;
ops list them in `state_inputs`. On CUDA each has one device copy, shared by every compiled
program and kept there between runs; host code that reads or writes them calls
`runtime.device_state.on_host` first (the BNMoments properties and eager dropout do), so
eager code, CPU and CUDA compiled code all see one set of running statistics. Eagerly the
running statistics are simply updated on the host.

CUDA-compiled batchnorm uses cuDNN's batchnorm (whole-layer "call" ops) when cuDNN is
present; dropout's mask is always knetc's counter-based kernel (one pass, the same bits on
CPU and GPU for a seed; cuDNN's dropout keeps its own generator state).

Training or not: `batchnorm(training=None)` and `dropout(drop=None)` follow kn.training(),
True inside `diff`. Compiled functions follow the way they are called: a plain call is
inference; a gradient (`kn.grad(f)`, the training iterators, a call inside `diff`) trains.

    moments, w = kn.bnmoments(), kn.Param(kn.bnparams(np.float32, 16))
    y = kn.batchnorm(x, moments, w)          # x (N, 16, H, W); per-channel statistics
    y = kn.dropout(y, 0.5)                   # only inside diff: zero half, scale by 2
"""
import os

import numpy as np

from .. import context
from ..context import is_symbolic, training as _training, value_of
from ..errors import ShapeError
from ..runtime import cudnn_ops
from ..runtime.device_state import on_host
from .broadcast import broadcast_to, reduce_sum
from .core import Aval, Op, aval_of, check_float, no_second_derivative, register
from .elementwise import add, div, iota, mul, sqrt, sub
from .shape import reshape

__all__ = ["batchnorm", "dropout"]


# ----------------------------------------------------------------------------- stateful ops

def _lowering(module, name):
    return {"cpu": f"knetc.kernels.{module}:{name}_cpu", "cuda": f"knetc.kernels.{module}:{name}_cuda"}


def _running_rule(stat, running, momentum, correction):
    if int(np.prod(running.shape)) != int(np.prod(stat.shape)):
        raise ShapeError(f"batchnorm: running statistics of shape {running.shape} do not fit "
                         f"{int(np.prod(stat.shape))} channels")
    return stat


def _running_impl(stat, running, momentum, correction):
    stat = np.asarray(stat)
    flat = running.reshape(-1)  # a view: the update lands in the caller's array
    flat[...] = momentum * correction * stat.reshape(-1) + (1 - momentum) * flat
    return stat.copy()


# out = stat (the batch statistic, passed on so this op stays live), running updated in place
running_update = register(Op(
    "bn_running_update", _running_rule, _running_impl, (lambda dy, y, stat, running, **p: dy, None),
    "call", lowering=_lowering("batchnorm", "running_update"), state_inputs=(1,)))

read_state = register(Op(
    "bn_read_state", lambda running, shape: Aval(tuple(shape), running.dtype),
    lambda running, shape: np.array(running).reshape(shape), (None,),
    "call", lowering=_lowering("batchnorm", "read_state"), state_inputs=(0,)))


# ----------------------------------------------------------------------------- whole-layer ops
# CUDA-compiled batchnorm runs cuDNN's fused kernels when cuDNN is present (these ops; their
# CPU routines are njit loops and their numpy references below). Elsewhere batchnorm is
# written with reductions and elementwise ops, which fuse with their neighbours.
# WHOLE_LAYER: None chooses so; True (tests) or False forces either design in compiled code.
WHOLE_LAYER = None


def _layer_parts(x, params):
    C = params.size // 2
    axes = tuple(a for a in range(x.ndim) if a != 1)
    kept = tuple(C if a == 1 else 1 for a in range(x.ndim))
    return axes, kept, params[:C].reshape(kept), params[C:].reshape(kept)


def _train_impl(x, params, mean, var, eps, momentum, correction):
    x, params = np.asarray(x), np.asarray(params)
    axes, kept, scale, bias = _layer_parts(x, params)
    mu, sigma2 = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    mean.reshape(-1)[...] = momentum * mu.reshape(-1) + (1 - momentum) * mean.reshape(-1)
    var.reshape(-1)[...] = momentum * correction * sigma2.reshape(-1) + (1 - momentum) * var.reshape(-1)
    return ((x - mu) / np.sqrt(sigma2 + eps) * scale + bias).astype(x.dtype)


def _infer_impl(x, params, mean, var, eps):
    x, params = np.asarray(x), np.asarray(params)
    axes, kept, scale, bias = _layer_parts(x, params)
    return ((x - mean.reshape(kept)) / np.sqrt(var.reshape(kept) + eps) * scale + bias).astype(x.dtype)


def _grad_impl(x, params, dy, eps, part):
    x, params, dy = np.asarray(x), np.asarray(params), np.asarray(dy)
    axes, kept, scale, bias = _layer_parts(x, params)
    count = x.size * 2 // params.size  # (params: scale and bias, 2 per channel)
    mu, sigma2 = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    xhat = (x - mu) / np.sqrt(sigma2 + eps)
    dbias, dscale = dy.sum(axis=axes, keepdims=True), (dy * xhat).sum(axis=axes, keepdims=True)
    if part == 1:
        return np.concatenate([dscale.reshape(-1), dbias.reshape(-1)]).astype(params.dtype)
    return (scale / np.sqrt(sigma2 + eps) / count * (count * dy - dbias - xhat * dscale)).astype(x.dtype)


def _layer_rule(x, params, *rest, **p):
    return x


layer_grad = register(Op(
    "batchnorm_grad", lambda x, params, dy, eps, part: params if part == 1 else x, _grad_impl,
    (no_second_derivative("cuDNN's batchnorm"),) * 3,
    "call", lowering=_lowering("batchnorm", "batchnorm_grad")))

layer_train = register(Op(
    "batchnorm_train", _layer_rule, _train_impl,
    (lambda dy, y, x, params, mean, var, eps, **p: layer_grad(x, params, dy, eps=eps, part=0),
     lambda dy, y, x, params, mean, var, eps, **p: layer_grad(x, params, dy, eps=eps, part=1), None, None),
    "call", lowering=_lowering("batchnorm", "batchnorm_train"), state_inputs=(2, 3)))


def _infer_grad_x(dy, y, x, params, mean, var, eps):
    kept = _kept_of(x)
    scale, _ = _split_params(params, kept[1], kept)
    return div(mul(dy, scale), sqrt(add(reshape(var, shape=kept), eps)))


def _infer_grad_params(dy, y, x, params, mean, var, eps):
    kept = _kept_of(x)
    axes = tuple(a for a in range(len(kept)) if a != 1)
    xhat = div(sub(x, reshape(mean, shape=kept)), sqrt(add(reshape(var, shape=kept), eps)))
    dscale = reshape(reduce_sum(mul(dy, xhat), axes=axes), shape=(1, kept[1]))
    dbias = reshape(reduce_sum(dy, axes=axes), shape=(1, kept[1]))
    second = iota(broadcast_to(dscale, shape=(2, kept[1])), axis=0, dtype=aval_of(params).dtype)
    rows = add(mul(dscale, sub(1, second)), mul(dbias, second))  # [dscale; dbias] as Knet's layout
    return reshape(rows, shape=aval_of(params).shape)


layer_infer = register(Op(
    "batchnorm_infer", _layer_rule, _infer_impl, (_infer_grad_x, _infer_grad_params, None, None),
    "call", lowering=_lowering("batchnorm", "batchnorm_infer"), state_inputs=(2, 3)))


def _kept_of(x):
    shape = aval_of(x).shape
    return tuple(n if a == 1 else 1 for a, n in enumerate(shape))


def _whole_layer(x, aval, moments, params, eps):
    """Use the whole-layer ops? Only in compiled code, on CUDA with cuDNN (or when forced),
    for arrays of one dtype."""
    if not is_symbolic(x) or WHOLE_LAYER is False:
        return False
    dtypes = {np.dtype(aval.dtype)} | ({np.dtype(aval_of(params).dtype)} if params is not None else set()) | \
        ({np.dtype(moments.mean.dtype), np.dtype(moments.var.dtype)} if moments is not None else set())
    if len(dtypes) != 1:
        return False
    if WHOLE_LAYER:
        return True
    if context.target() != "cuda":
        return False
    return cudnn_ops.available() and cudnn_ops.batchnorm_supported(aval.dtype, eps)


def _batchnorm_layer(x, aval, moments, params, eps, training, kept, count):
    channels = aval.shape[1]
    if params is None:  # a constant: scale 1, bias 0 (bnparams' layout)
        params = np.concatenate([np.ones(channels, aval.dtype), np.zeros(channels, aval.dtype)])
    else:
        params = reshape(params, shape=(2 * channels,))
    if training:
        if moments is None:  # cuDNN wants somewhere to put running statistics: scratch arrays
            mean, var, momentum = np.zeros(kept, aval.dtype), np.ones(kept, aval.dtype), 0.1
        else:
            mean, var, momentum = moments.mean, moments.var, moments.momentum
        unbiased = count / (count - 1) if count > 1 else 1.0
        return layer_train(x, params, mean, var, eps=float(eps), momentum=momentum, correction=unbiased)
    return layer_infer(x, params, moments.mean, moments.var, eps=float(eps))


# ----------------------------------------------------------------------------- batchnorm

def _is_moments(m):
    """Running statistics as kn.bnmoments() makes them (knetc.layers.BNMoments, above this
    module): mean, var, momentum and initialize(dtype, shape)."""
    return callable(getattr(m, "initialize", None)) and all(hasattr(m, a) for a in ("mean", "var", "momentum"))


def _split_params(params, channels, kept):
    """(scale, bias), each of the statistics' shape, from Knet's one vector [scale; bias]."""
    pa = aval_of(params)
    if int(np.prod(pa.shape)) != 2 * channels:
        raise ShapeError(f"batchnorm: params of shape {pa.shape} do not fit {channels} channels "
                         f"(expected 2*C = {2 * channels} entries: scale then bias; see bnparams)")
    rows = reshape(params, shape=(2, channels))
    second = iota(rows, axis=0, dtype=pa.dtype)  # 0 on the scale row, 1 on the bias row
    scale = reduce_sum(mul(rows, sub(1, second)), axes=(0,))
    bias = reduce_sum(mul(rows, second), axes=(0,))
    return reshape(scale, shape=kept), reshape(bias, shape=kept)


def batchnorm(x, moments=None, params=None, eps=1e-5, training=None):
    """Batch normalization over all axes but the channels (axis 1) of a 2-D (N,C), 4-D
    (N,C,H,W) or 5-D (N,C,D,H,W) x: y = (x - mean) / sqrt(var + eps) * scale + bias.

    training (default kn.training(), i.e. inside diff): use the batch's mean and (biased)
    variance and update `moments` if given, with the unbiased variance as cuDNN and
    PyTorch do; otherwise use moments' running statistics (then moments is required).
    params: Knet's one vector of 2C entries, scale then bias (bnparams), or None.

    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> y = kn.batchnorm(x, kn.bnmoments(), kn.Param(kn.bnparams(x.shape[1])), training=True)
    >>> y.round(3)  # each column (channel) to mean 0, variance 1
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    aval = aval_of(x)
    if aval.ndim not in (2, 4, 5):
        raise ShapeError(f"batchnorm: expected a 2-d (N,C), 4-d (N,C,H,W) or 5-d (N,C,D,H,W) array, got {aval}")
    check_float("batchnorm", aval)
    channels = aval.shape[1]
    axes = tuple(a for a in range(aval.ndim) if a != 1)
    kept = tuple(channels if a == 1 else 1 for a in range(aval.ndim))
    count = int(np.prod([aval.shape[a] for a in axes]))
    if moments is not None and not _is_moments(moments):
        raise TypeError(f"batchnorm: moments must come from kn.bnmoments(), got {type(moments).__name__}")
    if training is None:
        training = _training()
    if moments is not None:
        moments.initialize(aval.dtype, kept)
        for name, array in (("mean", moments.mean), ("var", moments.var)):
            if array.size != channels:
                raise ShapeError(f"batchnorm: running {name} of shape {array.shape} does not fit {channels} channels")
    if params is not None and int(np.prod(aval_of(params).shape)) != 2 * channels:
        raise ShapeError(f"batchnorm: params of shape {aval_of(params).shape} do not fit {channels} channels "
                         f"(expected 2*C = {2 * channels} entries: scale then bias; see bnparams)")
    if not training and moments is None:
        raise ValueError("batchnorm: outside training (kn.training() is False) the running statistics "
                         "are needed: pass moments=kn.bnmoments(), or training=True")
    if training and count == 0:
        raise ShapeError(f"batchnorm: no entries per channel in {aval}")
    if _whole_layer(x, aval, moments, params, eps):
        return _batchnorm_layer(x, aval, moments, params, eps, training, kept, count)
    if training:
        mean = div(reduce_sum(x, axes=axes), count)
        centered = sub(x, mean)
        var = div(reduce_sum(mul(centered, centered), axes=axes), count)
        if moments is not None:
            unbiased = count / (count - 1) if count > 1 else 1.0
            if _compiling(x):  # an op whose result is used, so that the update stays in the program
                mean = running_update(mean, moments.mean, momentum=moments.momentum, correction=1.0)
                var = running_update(var, moments.var, momentum=moments.momentum, correction=unbiased)
                centered = sub(x, mean)
            else:  # eagerly (numpy, on the tape, KnetArrays): update the host arrays now
                _running_impl(np.asarray(value_of(mean)), moments.mean, moments.momentum, 1.0)
                _running_impl(np.asarray(value_of(var)), moments.var, moments.momentum, unbiased)
    else:
        mean = _bind_with(x, read_state, moments.mean, shape=kept)
        var = _bind_with(x, read_state, moments.var, shape=kept)
        centered = sub(x, mean)
    y = div(centered, sqrt(add(var, eps)))
    if params is not None:
        scale, bias = _split_params(params, channels, kept)
        y = add(mul(y, scale), bias)
    return y


# ----------------------------------------------------------------------------- dropout

# The counter of unseeded masks; random per process so runs differ, advanced by each mask.
_COUNTER = np.array([int.from_bytes(os.urandom(7), "little")], dtype=np.int64)

_U64 = np.uint64
_GOLDEN, _MIX1, _MIX2 = _U64(0x9E3779B97F4A7C15), _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)


def reseed_dropout(n):
    """Restart the unseeded masks' counter from the integer n (kn.seed_): the same calls
    then draw the same masks."""
    on_host(_COUNTER)[0] = int(_mix(np.array([n % 2 ** 64], dtype=_U64) * _GOLDEN)[0] >> _U64(1))


def _mix(z):
    """SplitMix64's finaliser on uint64 arrays (numpy wraps on overflow, as C does)."""
    z = (z ^ (z >> _U64(30))) * _MIX1
    z = (z ^ (z >> _U64(27))) * _MIX2
    return z ^ (z >> _U64(31))


def mask_key(counter, seed, salt):
    """The mask's 64-bit key: from the seed alone when given, else from counter and salt."""
    if seed:
        z = np.array([seed], dtype=np.int64).astype(_U64)
    else:
        z = np.array([counter], dtype=np.int64).astype(_U64) + np.array([salt], _U64) * _GOLDEN  # arrays wrap quietly
    return _mix(z)


def _mask_impl(state, shape, dtype, p, seed, salt):
    key = mask_key(int(on_host(state)[0]), seed, salt)  # (on_host: a CUDA run may have advanced it)
    positions = np.arange(1, int(np.prod(shape)) + 1, dtype=_U64)
    u = (_mix(key + positions * _GOLDEN) >> _U64(11)) * (1.0 / 9007199254740992.0)
    if not seed:
        state[0] += 1
    scale = 1.0 / (1.0 - p) if p < 1 else 0.0
    return np.where(u >= p, scale, 0.0).astype(dtype).reshape(shape)


def _mask_rule(state, shape, dtype, p, seed, salt):
    return Aval(tuple(shape), np.dtype(dtype))


dropout_mask = register(Op("dropout_mask", _mask_rule, _mask_impl, (None,), "call",
                           lowering=_lowering("dropout", "dropout_mask"), state_inputs=(0,)))


def dropout(x, p, drop=None, seed=0):
    """Zero each entry with probability p and scale the rest by 1/(1-p) (Knet's dropout).

    drop (default kn.training(): only inside diff, or when a compiled function is
    differentiated) switches it on; p=0 or drop=False returns x. A non-zero `seed` gives the
    same mask on every call (and on CPU and GPU); seed=0 draws a fresh mask each call.
    The gradient is dy times the same mask.

    >>> x = np.ones((2, 4))
    >>> kn.dropout(x, 0.5, drop=True, seed=1)  # the same mask on every call with seed=1
    array([[2., 0., 0., 2.],
           [0., 2., 0., 0.]])
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p={p} must lie in [0, 1]")
    if drop is None:
        drop = _training()
    if not drop or p == 0:
        return x
    aval = aval_of(x)
    check_float("dropout", aval)
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"dropout: seed={seed!r} must be an int in [0, 2**63)")
    dtype = np.dtype(aval.dtype or np.float64).name
    mask = _bind_with(x, dropout_mask, _COUNTER, shape=tuple(aval.shape), dtype=dtype, p=float(p), seed=int(seed), salt=_salt(x))
    return mul(x, mask)


def _compiling(x):
    """Is x an IR value, or a taped one holding an IR value (a kn.grad inside compiled code)?"""
    return is_symbolic(value_of(x))


def _bind_with(x, op, *args, **params):
    """op(*args) in the mode x is in: its inputs are plain arrays, which would otherwise run
    now, at compile time, and freeze the result into the program."""
    if _compiling(x):
        return context.symbolic_trace().process(op, args, params)
    return op(*args, **params)


def _salt(x):
    """In compiled code, how many masks its program drew before this one, so that two dropouts
    in one program draw different masks (and are not merged as common subexpressions). Not
    the number of ops before it: that differs between targets (batchnorm is one cuDNN op on a
    GPU, several on a CPU), and the masks must not."""
    return sum(e.op is dropout_mask for e in context.symbolic_trace().eqns) if _compiling(x) else 0
