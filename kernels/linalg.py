"""Batched inverse, solve and log-determinant for np.linalg on Params and in compiled code
(knetc/ops/linalg.py). The generated drivers call `fn(*inputs, out)` with C-contiguous arrays
whose last two axes are the matrices (a determinant's out: one entry per matrix, 0-d stored as
(1,)). The CPU routines are Numba's LAPACK calls, one matrix of the batch at a time, and raise
numpy's LinAlgError for a singular matrix. knetc binds no cuSOLVER: the CUDA routines copy the
matrices to the host and back, for the small systems a model solves now and then.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def inv_cpu(a, out):
    n = a.shape[a.ndim - 1]
    matrices, results = a.reshape(-1, n, n), out.reshape(-1, n, n)
    for i in range(matrices.shape[0]):
        results[i] = np.linalg.inv(matrices[i])


@njit(cache=True)
def solve_cpu(a, b, out):
    n, k = b.shape[b.ndim - 2], b.shape[b.ndim - 1]
    matrices, rights, results = a.reshape(-1, n, n), b.reshape(-1, n, k), out.reshape(-1, n, k)
    for i in range(matrices.shape[0]):
        results[i] = np.linalg.solve(matrices[i], rights[i])


@njit(cache=True)
def slogdet_cpu(a, out, part):
    n = a.shape[a.ndim - 1]
    matrices, results = a.reshape(-1, n, n), out.reshape(-1)
    for i in range(matrices.shape[0]):
        results[i] = np.linalg.slogdet(matrices[i])[part]


def _on_host(function):
    def routine(*arrays_and_out, **params):
        *arrays, out = arrays_and_out
        result = function(*(a.copy_to_host() for a in arrays), **params)
        out.copy_to_device(np.ascontiguousarray(result, out.dtype).reshape(out.shape))
    return routine


inv_cuda = _on_host(np.linalg.inv)
solve_cuda = _on_host(np.linalg.solve)
slogdet_cuda = _on_host(lambda a, part: np.linalg.slogdet(a)[part])
