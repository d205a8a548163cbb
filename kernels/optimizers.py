"""Fused optimizer updates: one pass over a parameter updates it and its optimizer state.

Each of Knet's optimizers has a CPU kernel (``numba.njit``, one loop) and a CUDA kernel
(``numba.cuda.jit``, one thread per element) that read the gradient once and write the
weight and every state array in the same pass. Arrays are 1-D and contiguous (callers pass
flat views). Hyperparameters arrive as scalars in the weight's dtype, precomputed on the
host (``1 - rho``, Adam's ``1 - beta1^t``), so changing ``lr`` or Adam's step count never
recompiles. ``scale`` multiplies the gradient: the gradient-clipping factor on the host, 1
when not clipping. On the device, clipping stays there too: ``device_clipped`` reduces the
squared norm, computes the factor and scales a copy of the gradient in three small kernels,
so no number comes down to decide it. New state arrays are zero-filled on the device
(``device_zeros``). Every launch here counts in ``kn.stats()["launches"]``.

The formulas are Knet's (knetc.train.optimizers documents them; tests/test_optimizers.py
holds the numpy reference). Each kernel reads ``g[i]`` before writing ``w[i]``, so a
gradient that aliases the weight still gives the right answer.

Example: ``update("adam", w, g, (m, v), 1.0, (lr, b1, 1 - b1, b2, 1 - b2, 1 - b1**t, 1 - b2**t, eps))``

This file is also loaded standalone (tests/ptx.py compiles it to PTX), so it imports
knetc by absolute names only.
"""
import math

import numpy as np
from numba import cuda, float64, njit

from knetc.report import count
from knetc.runtime.device import download, is_device_array
from knetc.runtime.launch import library_launch
from knetc.runtime.pool import device_array

THREADS = 256  # threads per block for every kernel here


# ---------------------------------------------------------------- CPU kernels (numba.njit)
# cache=True: the machine code is kept next to this file, so later processes skip compiling.
# error_model="numpy": x / 0 is inf or NaN as in numpy, and no zero test per division keeps
# LLVM from vectorizing the loop (Adam over 400k weights: 2.2 -> 1.1 ms).
cpu_kernel = njit(cache=True, error_model="numpy")

@cpu_kernel
def sgd_cpu(w, g, scale, lr):
    for i in range(w.size):
        w[i] -= lr * (scale * g[i])


@cpu_kernel
def momentum_cpu(w, g, v, scale, lr, gamma):
    for i in range(w.size):
        gi = scale * g[i]
        v[i] = gamma * v[i] + lr * gi
        w[i] -= v[i]


@cpu_kernel
def nesterov_cpu(w, g, v, scale, lr, gamma, one_plus_gamma):
    for i in range(w.size):
        gi = scale * g[i]
        wi = w[i] - gamma * v[i]
        v[i] = gamma * v[i] - lr * gi
        w[i] = wi + one_plus_gamma * v[i]


@cpu_kernel
def adagrad_cpu(w, g, G, scale, lr, eps):
    for i in range(w.size):
        gi = scale * g[i]
        G[i] += gi * gi
        w[i] -= lr * gi / math.sqrt(G[i] + eps)


@cpu_kernel
def rmsprop_cpu(w, g, G, scale, lr, rho, one_minus_rho, eps):
    for i in range(w.size):
        gi = scale * g[i]
        G[i] = rho * G[i] + one_minus_rho * (gi * gi)
        w[i] -= lr * gi / math.sqrt(G[i] + eps)


@cpu_kernel
def adadelta_cpu(w, g, G, delta, scale, lr, rho, one_minus_rho, eps):
    for i in range(w.size):
        gi = scale * g[i]
        G[i] = rho * G[i] + one_minus_rho * (gi * gi)
        update = math.sqrt(delta[i] + eps) * gi / math.sqrt(G[i] + eps)
        w[i] -= lr * update
        delta[i] = rho * delta[i] + one_minus_rho * (update * update)


@cpu_kernel
def adam_cpu(w, g, m, v, scale, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, correction1, correction2, eps):
    for i in range(w.size):
        gi = scale * g[i]
        m[i] = beta1 * m[i] + one_minus_beta1 * gi
        v[i] = beta2 * v[i] + one_minus_beta2 * (gi * gi)
        w[i] -= lr / (math.sqrt(v[i] / correction2) + eps) * (m[i] / correction1)


# ---------------------------------------------------------------- CUDA kernels (one thread per element)

@cuda.jit
def sgd_cuda(w, g, scale, lr):
    i = cuda.grid(1)
    if i < w.size:
        w[i] -= lr * (scale * g[i])


@cuda.jit
def momentum_cuda(w, g, v, scale, lr, gamma):
    i = cuda.grid(1)
    if i < w.size:
        gi = scale * g[i]
        vi = gamma * v[i] + lr * gi
        v[i] = vi
        w[i] -= vi


@cuda.jit
def nesterov_cuda(w, g, v, scale, lr, gamma, one_plus_gamma):
    i = cuda.grid(1)
    if i < w.size:
        gi = scale * g[i]
        wi = w[i] - gamma * v[i]
        vi = gamma * v[i] - lr * gi
        v[i] = vi
        w[i] = wi + one_plus_gamma * vi


@cuda.jit
def adagrad_cuda(w, g, G, scale, lr, eps):
    i = cuda.grid(1)
    if i < w.size:
        gi = scale * g[i]
        Gi = G[i] + gi * gi
        G[i] = Gi
        w[i] -= lr * gi / math.sqrt(Gi + eps)


@cuda.jit
def rmsprop_cuda(w, g, G, scale, lr, rho, one_minus_rho, eps):
    i = cuda.grid(1)
    if i < w.size:
        gi = scale * g[i]
        Gi = rho * G[i] + one_minus_rho * (gi * gi)
        G[i] = Gi
        w[i] -= lr * gi / math.sqrt(Gi + eps)


@cuda.jit
def adadelta_cuda(w, g, G, delta, scale, lr, rho, one_minus_rho, eps):
    i = cuda.grid(1)
    if i < w.size:
        gi = scale * g[i]
        Gi = rho * G[i] + one_minus_rho * (gi * gi)
        G[i] = Gi
        update = math.sqrt(delta[i] + eps) * gi / math.sqrt(Gi + eps)
        w[i] -= lr * update
        delta[i] = rho * delta[i] + one_minus_rho * (update * update)


@cuda.jit
def adam_cuda(w, g, m, v, scale, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, correction1, correction2, eps):
    i = cuda.grid(1)
    if i < w.size:
        gi = scale * g[i]
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        w[i] -= lr / (math.sqrt(vi / correction2) + eps) * (mi / correction1)


@cuda.jit
def sum_of_squares_cuda(x, out):
    """out[0] += sum(x**2), accumulated in float64: a grid-stride loop, a shared-memory
    tree per block, one atomic add per block."""
    partial = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        xi = float64(x[i])
        acc += xi * xi
    partial[tid] = acc
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            partial[tid] += partial[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        cuda.atomic.add(out, 0, partial[0])


@cuda.jit
def fill_cuda(x, value):
    """x[:] = value (new optimizer state: zeros made on the device, nothing copied up)."""
    i = cuda.grid(1)
    if i < x.size:
        x[i] = value


@cuda.jit
def clip_scale_cuda(sumsq, gclip, scale):
    """scale[0] = gclip / norm unless norm = sqrt(sumsq[0]) <= gclip, then 1 (one thread; Knet's
    gclip: a NaN norm makes the whole gradient NaN), stored in the gradient's dtype."""
    if cuda.grid(1) == 0:
        norm = math.sqrt(sumsq[0])
        scale[0] = 1.0 if norm <= gclip else gclip / norm


@cuda.jit
def scaled_cuda(g, scale, out):
    """out = scale[0] * g (the clipped gradient, in g's dtype)."""
    i = cuda.grid(1)
    if i < g.size:
        out[i] = scale[0] * g[i]


# ---------------------------------------------------------------- the table and launchers

# name: (CPU kernel, CUDA kernel, number of state arrays, number of scalars after `scale`)
KERNELS = {
    "sgd": (sgd_cpu, sgd_cuda, 0, 1),
    "momentum": (momentum_cpu, momentum_cuda, 1, 2),
    "nesterov": (nesterov_cpu, nesterov_cuda, 1, 3),
    "adagrad": (adagrad_cpu, adagrad_cuda, 1, 2),
    "rmsprop": (rmsprop_cpu, rmsprop_cuda, 1, 4),
    "adadelta": (adadelta_cpu, adadelta_cuda, 2, 4),
    "adam": (adam_cpu, adam_cuda, 2, 8),
}


def _signature(n_state, n_scalars, t):
    arrays = [f"{t}[::1]"] * (2 + n_state)  # w, g, state...
    return "void(" + ", ".join(arrays + [t] * (1 + n_scalars)) + ")"  # scale, hyperparameters...


# What tests/ptx.py compiles: {kernel name: numba signature}, float32 (the GPU's usual
# dtype) here and float64 in PTX_SIGNATURES_FLOAT64.
PTX_SIGNATURES = {f"{name}_cuda": _signature(s, n, "float32") for name, (_, _, s, n) in KERNELS.items()}
PTX_SIGNATURES["sum_of_squares_cuda"] = "void(float32[::1], float64[::1])"
PTX_SIGNATURES["fill_cuda"] = "void(float32[::1], float32)"
PTX_SIGNATURES["clip_scale_cuda"] = "void(float64[::1], float64, float32[::1])"
PTX_SIGNATURES["scaled_cuda"] = "void(float32[::1], float32[::1], float32[::1])"
PTX_SIGNATURES_FLOAT64 = {f"{name}_cuda": _signature(s, n, "float64") for name, (_, _, s, n) in KERNELS.items()}
PTX_SIGNATURES_FLOAT64["sum_of_squares_cuda"] = "void(float64[::1], float64[::1])"
PTX_SIGNATURES_FLOAT64["fill_cuda"] = "void(float64[::1], float64)"
PTX_SIGNATURES_FLOAT64["clip_scale_cuda"] = "void(float64[::1], float64, float64[::1])"
PTX_SIGNATURES_FLOAT64["scaled_cuda"] = "void(float64[::1], float64[::1], float64[::1])"


def _blocks(n):
    return (n + THREADS - 1) // THREADS


def _launch(kernel, n, *args, blocks=None):
    """kernel[blocks, THREADS](*args) for n elements, counted in kn.stats()["launches"]."""
    count("launches")  # (outside any driver, whose header counts its library calls)
    library_launch(kernel, blocks or _blocks(n), THREADS, *args)


def device_zeros(shape, dtype):
    """A new device array of zeros (from knetc's pool), filled by a kernel: nothing is copied up.
    Example: ``m = device_zeros((784, 64), np.float32)``"""
    out = device_array(tuple(shape), np.dtype(dtype))
    if out.size:
        _launch(fill_cuda, out.size, _flat_device(out), np.dtype(dtype).type(0))
    return out


def _sum_of_squares(g):
    """sum(g**2) as a one-element float64 device array (g: flat, on the device)."""
    out = device_zeros((1,), np.float64)
    if g.size:
        _launch(sum_of_squares_cuda, g.size, g, out, blocks=min(_blocks(g.size), 1024))
    return out


def device_norm(g):
    """The 2-norm of a device array (a float), reduced on the device (the one number comes
    down): ``device_norm(g_dev)``."""
    return math.sqrt(float(download(_sum_of_squares(_flat_device(g)))[0]))


def device_clipped(g, gclip):
    """A new device array: g scaled to norm gclip when its norm is larger (Knet's gclip), else
    g's values; all on the device, nothing copied down. ``g2 = device_clipped(g_dev, 5.0)``"""
    flat = _flat_device(g)
    scale = device_array((1,), np.dtype(flat.dtype))
    _launch(clip_scale_cuda, 1, _sum_of_squares(flat), np.float64(gclip), scale)
    out = device_array(tuple(g.shape), np.dtype(flat.dtype))
    if flat.size:
        _launch(scaled_cuda, flat.size, flat, scale, _flat_device(out))
    return out


def _flat_device(x):
    if not getattr(x, "__cuda_ndarray__", False):  # another library's CUDA array: view it
        x = cuda.as_cuda_array(x)
    if x.ndim != 1:
        if not x.is_c_contiguous():
            raise ValueError("optimizer update: device arrays must be C-contiguous")
        x = x.reshape(x.size)
    return x


def update(name, w, g, states, scale, scalars):
    """Run optimizer `name`'s fused update in place: w, g and the state arrays have one
    shape and dtype, on the host (numpy, C-contiguous) or all on the device.

    Example: ``update("sgd", w, g, (), 1.0, (0.1,))  # w -= 0.1 * g``"""
    cpu_kernel, cuda_kernel, n_state, n_scalars = KERNELS[name]
    assert len(states) == n_state and len(scalars) == n_scalars, (name, len(states), len(scalars))
    cast = np.dtype(w.dtype).type  # scalars in the weight's dtype: one specialization per dtype
    scalars = [cast(scale)] + [cast(s) for s in scalars]
    if is_device_array(w):
        arrays = [_flat_device(a) for a in (w, g, *states)]
        if arrays[0].size:
            _launch(cuda_kernel, arrays[0].size, *arrays, *scalars)
    else:
        cpu_kernel(*[a.reshape(-1) for a in (w, g, *states)], *scalars)
