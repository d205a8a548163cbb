"""Dropout masks (CPU njit and Numba CUDA) for knetc.ops.normalization.dropout.

The mask is counter-based: entry i keeps (value 1/(1-p)) when uniform(key, i) >= p, where
uniform hashes (key, i) with SplitMix64, so the CPU, the CUDA kernel and the numpy
reference in knetc.ops.normalization give the same mask for the same key. The key is
the seed when one is given (the same mask every call, as Knet reseeds), else it mixes a
counter held in a one-element int64 array `state` (advanced by each unseeded call) with
`salt` (the call's position in its program, so two dropouts in one step differ).

Routines: dropout_mask_cpu / dropout_mask_cuda(state, out, shape, dtype, p, seed, salt).
"""
import warnings

import numpy as np
from numba import cuda, njit

from knetc.kernels.rows import kernel, run
from knetc.report import report
from knetc.runtime.launch import library_launch

BLOCK = 256
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S30, S27, S31, S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53: 53 random bits -> [0, 1)


def _mix(z):
    """SplitMix64's finaliser (uint64 in, uint64 out; arithmetic wraps)."""
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


_mix_cpu = njit(cache=True)(_mix)


@njit(cache=True)
def _uniform_cpu(key, i):
    return (_mix_cpu(key + (np.uint64(i) + np.uint64(1)) * GOLDEN) >> S11) * TO_UNIT


@njit(cache=True)
def _key_cpu(state0, seed, salt):
    if seed != 0:
        return _mix_cpu(np.uint64(seed))
    return _mix_cpu(np.uint64(state0) + np.uint64(salt) * GOLDEN)


def key_of(state0, seed, salt):
    """The mask's key as a Python int (for the numpy reference)."""
    return int(_key_cpu(state0, seed, salt))


@kernel()
def _fill(out, key, p, scale, lo, hi):
    for i in range(lo, hi):
        out[i] = scale if _uniform_cpu(key, i) >= p else 0.0


def dropout_mask_cpu(state, out, shape, dtype, p, seed, salt):
    if not out.flags.c_contiguous:
        raise ValueError(f"knetc.kernels.dropout: the mask must be C-contiguous, got strides {out.strides}")
    key = np.uint64(_key_cpu(state[0], seed, salt))  # (a uint64 scalar: a Python int may type as int64)
    if seed == 0:
        state[0] += 1
    p = float(p)
    flat = out.reshape(out.size)  # a view
    run(_fill, flat.size, flat.size * 8, flat, key, p, 1.0 / (1.0 - p) if p < 1 else 0.0)  # (a hash: ~8 steps)


@cuda.jit
def dropout_mask_kernel(state, out, p, scale, seed, salt):
    # SplitMix64 written out twice (Numba cannot compile CUDA device functions to PTX
    # without a GPU): first the key, then entry i's hash.
    i = cuda.grid(1)
    if i < out.size:
        if seed != 0:
            z = np.uint64(seed)
        else:
            z = np.uint64(state[0]) + np.uint64(salt) * GOLDEN
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        z = z + (np.uint64(i) + np.uint64(1)) * GOLDEN
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        u = (z >> S11) * TO_UNIT
        out[i] = scale if u >= p else 0.0


@cuda.jit
def advance_kernel(state):
    if cuda.grid(1) == 0:
        state[0] += 1


_logged = []


def dropout_mask_cuda(state, out, shape, dtype, p, seed, salt):
    if not _logged:  # cuDNN's dropout keeps its own RNG state; this mask matches the CPU's bit for bit
        report("cudnn", "dropout: Numba kernels (counter-based mask, identical on CPU and GPU)")
        _logged.append(True)
    flat = out.reshape(out.size)
    with warnings.catch_warnings():
        # Numba's CUDA simulator runs the hash on numpy scalars, which warn when they wrap
        # around (as meant); on a GPU nothing warns.
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        if out.size:
            library_launch(dropout_mask_kernel, (out.size + BLOCK - 1) // BLOCK, BLOCK,
                           state, flat, float(p), 1.0 / (1.0 - p) if p < 1 else 0.0, int(seed), int(salt))
        if seed == 0:
            library_launch(advance_kernel, 1, 1, state)  # after the mask kernel on the same stream


def ptx_signatures(dtype="float64"):
    return {"dropout_mask_kernel": f"void(int64[::1], {dtype}[::1], float64, float64, int64, int64)",
            "advance_kernel": "void(int64[::1])"}
