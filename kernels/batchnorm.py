"""Batch normalization's running statistics (CPU njit and Numba CUDA).

batchnorm itself is written with ops (reductions and elementwise ops that fuse); these
two tiny routines are the only stateful steps. The running arrays reach them as program
constants and are changed in place (on CUDA the compiler refreshes the device copies of
such "state" constants before a run and copies them back after, see compiler.Executable).

  running_update_*(stat, running, out, momentum, correction):
      out = stat;  running = momentum * correction * stat + (1 - momentum) * running
  read_state_*(running, out, shape):  out = running (reshaped)

The whole-layer routines below are what CUDA-compiled batchnorm runs when cuDNN is present
(cuDNN's fused batchnorm kernels, see knetc.runtime.cudnn_ops); their CPU versions are the
same computation as njit loops over a range of channels, split across threads when the
layer is large (kernels/rows.py); used by tests, and by any program that forces this design.
params is Knet's [scale; bias] vector of 2C entries.

  batchnorm_train_*(x, params, mean, var, out, eps, momentum, correction)  batch statistics
  batchnorm_infer_*(x, params, mean, var, out, eps)                         running statistics
  batchnorm_grad_*(x, params, dy, out, eps, part)   part 0: dx, part 1: [dscale; dbias]
"""
import math

import numpy as np
from numba import cuda, njit

from knetc.kernels.rows import kernel, run
from knetc.report import report
from knetc.runtime import cudnn_ops
from knetc.runtime.launch import library_launch
from knetc.runtime.pool import device_array

BLOCK = 128


@njit(cache=True)
def running_update_cpu(stat, running, out, momentum, correction):
    s = stat.reshape(stat.size)  # (one view per statement: Numba's parallel passes copy views packed in tuples)
    r = running.reshape(running.size)
    o = out.reshape(out.size)
    for c in range(s.size):
        o[c] = s[c]
        r[c] = momentum * correction * s[c] + (1.0 - momentum) * r[c]


@njit(cache=True)
def read_state_cpu(running, out, shape):
    r = running.reshape(running.size)
    o = out.reshape(out.size)
    for c in range(o.size):
        o[c] = r[c]


@cuda.jit
def running_update_kernel(stat, running, out, momentum, correction):
    c = cuda.grid(1)
    if c < stat.size:
        out[c] = stat[c]
        running[c] = momentum * correction * stat[c] + (1.0 - momentum) * running[c]


@cuda.jit
def copy_kernel(src, dst):
    c = cuda.grid(1)
    if c < dst.size:
        dst[c] = src[c]


def _blocks(n):
    return (n + BLOCK - 1) // BLOCK, BLOCK


def running_update_cuda(stat, running, out, momentum, correction):
    n = stat.size
    if n:
        library_launch(running_update_kernel, *_blocks(n), stat.reshape(n), running.reshape(n), out.reshape(n),
                       float(momentum), float(correction))


def read_state_cuda(running, out, shape):
    n = out.size
    if n:
        library_launch(copy_kernel, *_blocks(n), running.reshape(n), out.reshape(n))


# ----------------------------------------------------------------------------- whole layer

def _view(a, shape):
    """a reshaped without a copy (the kernels write into outputs and running statistics)."""
    if not a.flags.c_contiguous:
        raise ValueError(f"knetc.kernels.batchnorm: expected a C-contiguous array, got strides {a.strides}")
    return a.reshape(shape)


def _channels(x, channels, write=False):
    """x as (N, C, rest); write: a view of it, so that the kernel writes into x."""
    shape = (x.shape[0], channels, x.size // max(1, x.shape[0] * channels))
    return _view(x, shape) if write else x.reshape(shape)


@njit(cache=True)
def _statistics(xv, c):
    """Mean and biased variance of channel c of xv (N, C, S), in float64."""
    count = xv.shape[0] * xv.shape[2]
    total = 0.0
    for n in range(xv.shape[0]):
        for k in range(xv.shape[2]):
            total += xv[n, c, k]
    mu = total / count
    square = 0.0
    for n in range(xv.shape[0]):
        for k in range(xv.shape[2]):
            square += (xv[n, c, k] - mu) ** 2
    return mu, square / count


@njit(cache=True)
def _normalize(xv, yv, params, c, mu, sigma2, eps):
    """Channel c: yv = scale * (xv - mu) / sqrt(sigma2 + eps) + bias. mu is the caller's scalar
    (float64 batch mean, or the running mean in its own dtype), so the arithmetic is typed as
    when written inline."""
    C = params.size // 2
    a = params[c] / math.sqrt(sigma2 + eps)
    for n in range(xv.shape[0]):
        for k in range(xv.shape[2]):
            yv[n, c, k] = (xv[n, c, k] - mu) * a + params[C + c]


@kernel()
def _forward_cpu(xv, params, m, v, yv, eps, training, momentum, correction, lo, hi):
    """Channels lo..hi of batchnorm_train_cpu (training: batch statistics; the running ones
    are updated) or batchnorm_infer_cpu (the running statistics)."""
    for c in range(lo, hi):
        if training:
            mu, sigma2 = _statistics(xv, c)
            _normalize(xv, yv, params, c, mu, sigma2, eps)
            m[c] = momentum * mu + (1.0 - momentum) * m[c]
            v[c] = momentum * correction * sigma2 + (1.0 - momentum) * v[c]
        else:
            _normalize(xv, yv, params, c, m[c], v[c], eps)


def _forward(x, params, mean, var, out, eps, training, momentum, correction):
    C = params.size // 2
    run(_forward_cpu, C, 3 * x.size, _channels(x, C), params, _view(mean, C), _view(var, C),
        _channels(out, C, True), float(eps), training, float(momentum), float(correction))


def batchnorm_train_cpu(x, params, mean, var, out, eps, momentum, correction):
    _forward(x, params, mean, var, out, eps, True, momentum, correction)


def batchnorm_infer_cpu(x, params, mean, var, out, eps):
    _forward(x, params, mean, var, out, eps, False, 0.0, 0.0)


@kernel()
def _grad_cpu(xv, params, dv, out, ov, eps, part, lo, hi):
    """Channels lo..hi of batchnorm_grad_cpu."""
    C = params.size // 2
    count = xv.shape[0] * xv.shape[2]
    for c in range(lo, hi):
        mu, sigma2 = _statistics(xv, c)
        inv = 1.0 / math.sqrt(sigma2 + eps)
        dbias = 0.0
        dscale = 0.0
        for n in range(xv.shape[0]):
            for k in range(xv.shape[2]):
                dbias += dv[n, c, k]
                dscale += dv[n, c, k] * (xv[n, c, k] - mu) * inv
        if part == 1:
            out[c] = dscale
            out[C + c] = dbias
        else:
            a = params[c] * inv / count
            for n in range(xv.shape[0]):
                for k in range(xv.shape[2]):
                    ov[n, c, k] = a * (count * dv[n, c, k] - dbias - (xv[n, c, k] - mu) * inv * dscale)


def batchnorm_grad_cpu(x, params, dy, out, eps, part):
    C = params.size // 2
    # part 0: out is dx, written as (N, C, S); part 1: out is [dscale; dbias] (2C entries),
    # and the (N, C, S) view is an empty one of the same type (one compiled kernel for both)
    ov = _channels(out, C, True) if part != 1 else np.empty((0, 0, 0), out.dtype)
    run(_grad_cpu, C, 4 * x.size, _channels(x, C), params, _channels(dy, C), _view(out, out.size), ov, float(eps),
        int(part))


def _cudnn_ops():
    if not cudnn_ops.available():
        raise RuntimeError("batchnorm's whole-layer CUDA routines run cuDNN, which is not available here; "
                           "knetc.ops.normalization emits them only when it is")
    return cudnn_ops


_logged = []


def _log():
    if not _logged:
        report("cudnn", "batchnorm: cuDNN")
        _logged.append(True)


def batchnorm_train_cuda(x, params, mean, var, out, eps, momentum, correction):
    _log()  # cuDNN's running variance is unbiased: `correction` is what it applies itself
    _cudnn_ops().batchnorm_forward_training(x, params, mean, var, out, eps, momentum)


def batchnorm_infer_cuda(x, params, mean, var, out, eps):
    _cudnn_ops().batchnorm_forward_inference(x, params, mean, var, out, eps)


def batchnorm_grad_cuda(x, params, dy, out, eps, part):
    if part == 1:
        dx, dparams = device_array(x.shape, x.dtype), out
    else:
        dx, dparams = out, device_array(params.shape, params.dtype)
    _cudnn_ops().batchnorm_backward(x, params, dy, dx, dparams, eps)


def ptx_signatures(dtype="float64"):
    v = f"{dtype}[::1]"
    return {"running_update_kernel": f"void({v}, {v}, {v}, float64, float64)",
            "copy_kernel": f"void({v}, {v})"}
