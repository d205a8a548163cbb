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
same computation as njit loops, parallel over channels (used by tests, and by any program
that forces this design). params is Knet's [scale; bias] vector of 2C entries.

  batchnorm_train_*(x, params, mean, var, out, eps, momentum, correction)  batch statistics
  batchnorm_infer_*(x, params, mean, var, out, eps)                         running statistics
  batchnorm_grad_*(x, params, dy, out, eps, part)   part 0: dx, part 1: [dscale; dbias]
"""
import math

from numba import cuda, njit, prange

from knetc.report import report
from knetc.runtime import cudnn_ops
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
        running_update_kernel[_blocks(n)](stat.reshape(n), running.reshape(n), out.reshape(n),
                                          float(momentum), float(correction))


def read_state_cuda(running, out, shape):
    n = out.size
    if n:
        copy_kernel[_blocks(n)](running.reshape(n), out.reshape(n))


# ----------------------------------------------------------------------------- whole layer

@njit(cache=True)
def _channels(x, channels):
    """x as (N, C, rest)."""
    return x.reshape((x.shape[0], channels, x.size // max(1, x.shape[0] * channels)))


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


@njit(cache=True, parallel=True)
def _forward_cpu(x, params, mean, var, out, eps, training, momentum, correction):
    """batchnorm_train_cpu (training: batch statistics; the running ones are updated) or
    batchnorm_infer_cpu (the running statistics)."""
    C = params.size // 2
    # one view per statement: Numba's parallel passes copy arrays packed in a tuple
    xv = _channels(x, C)
    yv = _channels(out, C)
    m = mean.reshape(C)
    v = var.reshape(C)
    for c in prange(C):
        if training:
            mu, sigma2 = _statistics(xv, c)
            _normalize(xv, yv, params, c, mu, sigma2, eps)
            m[c] = momentum * mu + (1.0 - momentum) * m[c]
            v[c] = momentum * correction * sigma2 + (1.0 - momentum) * v[c]
        else:
            _normalize(xv, yv, params, c, m[c], v[c], eps)


@njit(cache=True)
def batchnorm_train_cpu(x, params, mean, var, out, eps, momentum, correction):
    _forward_cpu(x, params, mean, var, out, eps, True, momentum, correction)


@njit(cache=True)
def batchnorm_infer_cpu(x, params, mean, var, out, eps):
    _forward_cpu(x, params, mean, var, out, eps, False, 0.0, 0.0)


@njit(cache=True, parallel=True)
def batchnorm_grad_cpu(x, params, dy, out, eps, part):
    C = params.size // 2
    xv = _channels(x, C)
    dv = _channels(dy, C)
    count = xv.shape[0] * xv.shape[2]
    for c in prange(C):
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
            ov = _channels(out, C)
            a = params[c] * inv / count
            for n in range(xv.shape[0]):
                for k in range(xv.shape[2]):
                    ov[n, c, k] = a * (count * dv[n, c, k] - dbias - (xv[n, c, k] - mu) * inv * dscale)


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
