"""Gather (`take` along an axis) and its adjoint, scatter-add, for integer-array indexing
in compiled code; and argsort along the last axis (np.sort and np.argsort), numpy's stable
order with NaNs last. The generated drivers call `fn(x, idx, out, axis=..)` with C-contiguous
arrays; both routines view them as (pre, n, post) blocks around the indexed axis.

Indices are 0-based; negative ones count from the end (numpy). The CPU routines raise
IndexError for an index out of range. A GPU kernel cannot raise, so compiled programs
check the index arrays before they run (ops/indexing.py `checked_indices`) and refuse
indices computed on the device; the CUDA routines still read 0 for (take) or skip
(scatter-add) an index out of range rather than touch memory outside the array.
"""
import numpy as np
from numba import cuda, njit

from knetc.runtime.launch import library_launch

THREADS = 256


def _blocks(shape, axis):
    pre = 1
    for n in shape[:axis]:
        pre *= n
    post = 1
    for n in shape[axis + 1:]:
        post *= n
    return pre, shape[axis], post


@njit(cache=True)
def _wrapped(k, n):
    """Index k into an axis of n (negative: from the end, as numpy), or -1 out of range."""
    if k < 0:
        k += n
    return k if 0 <= k < n else -1


@njit(cache=True)
def take_cpu(x, idx, out, axis):
    pre, n, post = 1, x.shape[axis], 1
    for a in range(axis):
        pre *= x.shape[a]
    for a in range(axis + 1, x.ndim):
        post *= x.shape[a]
    xs, ks, outs = x.reshape(x.size), idx.reshape(idx.size), out.reshape(out.size)
    m = ks.size
    for i in range(pre):
        for j in range(m):
            k = _wrapped(ks[j], n)
            if k < 0:
                raise IndexError("take: index out of range")
            for p in range(post):
                outs[(i * m + j) * post + p] = xs[(i * n + k) * post + p]


@njit(cache=True)
def scatter_add_cpu(dy, idx, out, axis, size):
    n = size
    pre, post = 1, 1
    for a in range(axis):
        pre *= dy.shape[a]
    for a in range(axis + idx.ndim, dy.ndim):
        post *= dy.shape[a]
    ds, ks, outs = dy.reshape(dy.size), idx.reshape(idx.size), out.reshape(out.size)
    m = ks.size
    outs[:] = 0
    for i in range(pre):
        for j in range(m):
            k = _wrapped(ks[j], n)
            if k < 0:
                raise IndexError("scatter_add: index out of range")
            for p in range(post):
                outs[(i * n + k) * post + p] += ds[(i * m + j) * post + p]


@cuda.jit(device=True, inline="always")  # inlined in Numba IR: PTX builds without a GPU
def _source_at(t, ks, n, m, post):
    """Where entry t of take's (pre, m, post) result lies in the (pre, n, post) source, or -1
    when its index is out of range."""
    p = t % post
    j = (t // post) % m
    i = t // (post * m)
    k = ks[j]
    if k < 0:
        k += n
    if k >= 0 and k < n:
        return (i * n + k) * post + p
    return -1


@cuda.jit(cache=True)
def _take_kernel(xs, ks, outs, n, m, post):
    t = cuda.grid(1)
    if t < outs.size:
        at = _source_at(t, ks, n, m, post)
        outs[t] = xs[at] if at >= 0 else 0


@cuda.jit(cache=True)
def _zero_kernel(outs):
    t = cuda.grid(1)
    if t < outs.size:
        outs[t] = 0


@cuda.jit(cache=True)
def _scatter_add_kernel(ds, ks, outs, n, m, post):
    # One thread per dy entry; repeated indices meet at the same output: atomic adds.
    t = cuda.grid(1)
    if t < ds.size:
        at = _source_at(t, ks, n, m, post)
        if at >= 0:
            cuda.atomic.add(outs, at, ds[t])


def _launch(size):
    threads = max(1, min(size, THREADS))
    return (size + threads - 1) // threads, threads


def take_cuda(x, idx, out, axis):
    pre, n, post = _blocks(x.shape, axis)
    if out.size:
        library_launch(_take_kernel, *_launch(out.size), x.reshape(x.size), idx.reshape(idx.size),
                       out.reshape(out.size), n, idx.size, post)


def scatter_add_cuda(dy, idx, out, axis, size):
    post = int(np.prod(dy.shape[axis + idx.ndim:]))
    flat = out.reshape(out.size)
    if out.size:
        library_launch(_zero_kernel, *_launch(out.size), flat)
    if dy.size:
        library_launch(_scatter_add_kernel, *_launch(dy.size), dy.reshape(dy.size), idx.reshape(idx.size), flat,
                       size, idx.size, post)


@njit(cache=True)
def argsort_cpu(x, out):
    rows, n = out.size // max(x.shape[-1], 1), x.shape[-1]
    xs, outs = x.reshape(x.size), out.reshape(out.size)
    for r in range(rows):
        outs[r * n:(r + 1) * n] = np.argsort(xs[r * n:(r + 1) * n], kind="mergesort")


@cuda.jit(device=True, inline="always")
def _before(a, i, b, j):
    """Does entry a (at i) sort before b (at j): numpy's order, NaNs last, ties by position."""
    if a != a:
        return b != b and i < j
    return b != b or a < b or a == b and i < j


@cuda.jit(cache=True)
def _argsort_kernel(xs, outs, n):
    # One thread per entry: its rank is how many entries of its row sort before it (n reads:
    # for the short rows sorts see; a long row wants a merge sort).
    t = cuda.grid(1)
    if t < xs.size:
        start, rank = t - t % n, 0
        for j in range(start, start + n):
            rank += _before(xs[j], j, xs[t], t)
        outs[start + rank] = t - start


def argsort_cuda(x, out):
    if out.size:
        library_launch(_argsort_kernel, *_launch(out.size), x.reshape(x.size), out.reshape(out.size), x.shape[x.ndim - 1])


# The CUDA kernels' signatures ({name: [numba signature, ...]}), for compiling them to PTX
# without a GPU (tests/test_indexing.py).
PTX_SIGNATURES = {
    name: [signature.format(t=t) for t in ("float32", "float64")]
    for name, signature in {
        "_take_kernel": "void({t}[::1], int64[::1], {t}[::1], int64, int64, int64)",
        "_zero_kernel": "void({t}[::1])",
        "_scatter_add_kernel": "void({t}[::1], int64[::1], {t}[::1], int64, int64, int64)",
        "_argsort_kernel": "void({t}[::1], int64[::1], int64)",
    }.items()
}
