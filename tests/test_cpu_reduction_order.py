"""CPU reductions over leading axes (column sums: bias and layer-norm gradients) stream their
input row by row (backend/expressions.py KernelBody._stream): every monoid over axis 0 and
axes (0, 1), with NaNs and infinities for max/min, integer sums and products, fused
prologues and epilogues, sizes on the threaded path (threads.PARALLEL_MIN_WORK) and small
ones, several blocks of rows per thread (STREAM_BLOCK) and narrow blocks (STREAM_MIN),
against float64 (or exact integer) numpy; bias gradients compiled against eager."""
import numpy as np
import pytest

import knetc as kn
from knetc.backend.expressions import STREAM_BLOCK, STREAM_MIN
from knetc.runtime import threads

MONOIDS = {"sum": (kn.sum, np.sum), "prod": (kn.prod, np.prod), "maximum": (kn.maximum, np.max),
           "minimum": (kn.minimum, np.min)}

# (shape, dims): small (one call, no threads), threaded with wide blocks, several blocks per
# thread with a narrow last block, threaded and narrow (the plain order), 3-d.
CASES = [((7, 5), 0), ((40, 9000), 0), ((40, 2 * STREAM_BLOCK + 2 * 5), 0), ((20000, 7), 0),
         ((6, 4, 5), 0), ((6, 4, 5), (0, 1)), ((30, 80, 70), 0), ((3, 50, 1000), (0, 1)), ((5, 3, 5000), 0)]


def compiled(fn, dims):
    return kn.compile(lambda x: fn(x, dims=dims), target="cpu")


def data(name, shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        if name == "prod":  # exact and without overflow
            return rng.choice(np.array([-1, 1, 1, 1], dtype), shape)
        return rng.integers(-1000, 1000, shape, dtype=dtype)
    if name == "prod":
        return rng.uniform(0.99, 1.01, shape).astype(dtype)
    if name == "sum":
        return rng.uniform(0.5, 1.5, shape).astype(dtype)  # no cancellation: a relative tolerance
    return rng.standard_normal(shape).astype(dtype)


def with_specials(x):
    """NaNs first, last and in the middle of some columns, infinities in others."""
    x = x.copy()
    flat = x.reshape(x.shape[0], -1)
    n, m = flat.shape
    for column, row, value in ((0, 0, np.nan), (1 % m, n - 1, np.nan), (2 % m, n // 2, np.nan),
                               (3 % m, n // 3, np.inf), (4 % m, 0, -np.inf), (m - 1, n // 2, np.nan)):
        flat[row, column] = value
    return x


def tolerance(name, dtype, shape, axes):
    n = int(np.prod([shape[a] for a in axes]))
    if name in ("maximum", "minimum") or np.issubdtype(dtype, np.integer):
        return dict(rtol=0, atol=0)
    eps = np.finfo(dtype).eps
    return dict(rtol=4 * eps * np.sqrt(n) * (10 if name == "prod" else 1) + 4 * eps, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("name", sorted(MONOIDS))
def test_monoids_over_leading_axes(name, dtype):
    fn, ref = MONOIDS[name]
    for shape, dims in CASES:
        axes = tuple(np.atleast_1d(dims))
        x = data(name, shape, dtype, seed=len(shape))
        inputs = [x] + ([with_specials(x)] if name in ("maximum", "minimum") and dtype != np.int64 else [])
        f = compiled(fn, dims)
        for value in inputs:
            got = f(value)
            expected = ref(value.astype(np.float64) if dtype != np.int64 else value, axis=axes, keepdims=True)
            assert got.dtype == dtype and got.shape == expected.shape, (shape, dims)
            np.testing.assert_allclose(got, expected, err_msg=f"{name} {shape} {dims}",
                                       **tolerance(name, dtype, shape, axes))
            if name in ("maximum", "minimum") or dtype == np.int64:
                np.testing.assert_array_equal(got, ref(value, axis=axes, keepdims=True))


def test_column_reductions_stream_their_input():
    f = compiled(kn.sum, 0)
    x = np.ones((600, 300), np.float32)
    np.testing.assert_array_equal(f(x), np.full((1, 300), 600, np.float32))
    (executable,) = f.specializations()[0].executables()
    (text,) = [k.text for k in executable.generated.kernels.values()]
    assert "for blo in range(lo, hi, brows):" in text and "in_parallel(k_reduce_sum" in executable.generated.driver
    # The reduction's loop outside the loop over the output's entries, which loads unsigned.
    assert text.index("for j1_0 in range(m0):") < text.index("u1 = uint64(i1)") < text.index("x0[j1_0, u1]")
    # A sum over the last axis, a full sum and a middle axis keep the plain order.
    for dims in (1, (0, 1)):
        g = compiled(kn.sum, dims)
        g(x)
        (executable,) = g.specializations()[0].executables()
        assert all("blo" not in k.text for k in executable.generated.kernels.values())
    h = compiled(kn.sum, 1)
    x3 = np.arange(60.0).reshape(3, 4, 5)
    np.testing.assert_array_equal(h(x3), x3.sum(1, keepdims=True))
    (executable,) = h.specializations()[0].executables()
    assert all("blo" not in k.text for k in executable.generated.kernels.values())


@pytest.mark.parametrize("workers", [3, 7])
@pytest.mark.parametrize("shape", [(50, 9000), (20000, 9), (40, 2 * STREAM_BLOCK + 2 * STREAM_MIN - 3)])
def test_threads_write_their_own_entries(monkeypatch, workers, shape):
    """Blocks of rows of uneven sizes, some narrower than STREAM_MIN: every output entry is
    written once, by the thread that owns its row."""
    monkeypatch.setattr(threads, "THREADS", workers)
    monkeypatch.setattr(threads, "row_threads", lambda: workers)  # (all of them, BLAS's threads or not)
    f = kn.compile(lambda x: kn.sum(x * x, dims=0) * 0.5 - kn.maximum(x, dims=0), target="cpu")
    x = np.random.default_rng(1).standard_normal(shape)
    assert x.size >= threads.PARALLEL_MIN_WORK
    expected = (x * x).sum(0, keepdims=True) * 0.5 - x.max(0, keepdims=True)
    np.testing.assert_allclose(f(x), expected, rtol=1e-12, atol=1e-12)


def fused(x, y, b, m):
    """Prologues (a product, a broadcast bias, bools summed as int64) and epilogues
    (a scale, sqrt, two streamed reductions in one kernel)."""
    sq = kn.sum(x * x, dims=0)
    norm = kn.sqrt(kn.sum((x - b) * (x - b), dims=0)) * 0.5
    both = kn.sum(y * b, dims=0) + kn.maximum(y, dims=0)
    positive = kn.sum(m, dims=0)
    return sq, norm, both, positive, kn.mean(x, dims=0), kn.var(x, dims=0)


@pytest.mark.parametrize("shape", [(5, 3), (700, 300), (40, 9000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_prologues_and_epilogues(shape, dtype):
    rng = np.random.default_rng(2)
    x, y, b = (rng.standard_normal(s).astype(dtype) for s in (shape, shape, shape[1:]))
    y[shape[0] // 2, 1] = np.nan
    got = kn.compile(fused, target="cpu")(x, y, b, x > 0)
    x64, y64, b64 = (v.astype(np.float64) for v in (x, y, b))
    expected = ((x64 * x64).sum(0, keepdims=True), np.sqrt(((x64 - b64) ** 2).sum(0, keepdims=True)) * 0.5,
                (y64 * b64).sum(0, keepdims=True) + y64.max(0, keepdims=True), (x64 > 0).sum(0, keepdims=True),
                x64.mean(0, keepdims=True), x64.var(0, ddof=1, keepdims=True))
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, **tol)
    assert got[3].dtype == np.int64 and np.isnan(got[2][0, 1]) and not np.isnan(got[2][0, 0])


def dense(p, x):
    w, b = p
    return kn.sum(kn.relu(x @ w + b) ** 2) / x.shape[0]


def norm_layer(p, x):
    g, b = p
    return kn.sum(kn.tanh(x * g + b))


@pytest.mark.parametrize("batch", [3, 100, 2048])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_gradients_compiled_against_eager(batch, dtype):
    rng = np.random.default_rng(3)
    w, b, x = (rng.standard_normal(s).astype(dtype) for s in ((20, 64), (64,), (batch, 20)))
    g, x3 = rng.standard_normal(64).astype(dtype), rng.standard_normal((batch, 4, 64)).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    f = kn.compile(dense, target="cpu")
    for got, expected in zip(kn.grad(f)((w, b), x), kn.grad(dense)((w, b), x)):
        assert got.shape == expected.shape and got.dtype == dtype
        np.testing.assert_allclose(got, expected, **tol)
    h = kn.compile(norm_layer, target="cpu")  # gain and bias of (batch, 4, 64): sums over axes (0, 1)
    for got, expected in zip(kn.grad(h)((g, b), x3), kn.grad(norm_layer)((g, b), x3)):
        assert got.shape == (64,) and got.dtype == dtype
        np.testing.assert_allclose(got, expected, **tol)


@pytest.mark.parametrize("shape", [(0, 50), (5, 0), (0, 3, 40), (4, 0, 40)])
def test_empty_axes(shape):
    f = compiled(kn.sum, 0)
    x = np.ones(shape)
    np.testing.assert_array_equal(f(x), x.sum(0, keepdims=True))
    g = compiled(kn.prod, 0)
    np.testing.assert_array_equal(g(x), x.prod(0, keepdims=True))
