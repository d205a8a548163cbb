"""A toy library routine for tests/test_call_ops.py: cumulative sum along the last axis."""
from numba import cuda, njit


@njit(cache=True)
def cumsum_cpu(x, out, reverse):
    rows, n = x.shape
    for i in range(rows):
        total = 0.0
        for j in range(n):
            k = n - 1 - j if reverse else j
            total += x[i, k]
            out[i, k] = total


@cuda.jit
def _cumsum_rows(x, out, reverse):
    i = cuda.grid(1)
    if i < x.shape[0]:
        total = 0.0
        n = x.shape[1]
        for j in range(n):
            k = n - 1 - j if reverse else j
            total += x[i, k]
            out[i, k] = total


def cumsum_cuda(x, out, reverse):
    _cumsum_rows[(x.shape[0] + 31) // 32, 32](x, out, reverse)
