"""The CPU library routines that split their rows across threads (kernels/rows.py: pool,
batchnorm, dropout): split into blocks (more threads than rows, uneven blocks) they give
the one-call result bit for bit, and both match float64 numpy references."""
import numpy as np
import pytest

from knetc.kernels import batchnorm as kbn
from knetc.kernels import dropout as kdropout
from knetc.kernels import pool as kpool
from knetc.kernels import rows
from knetc.ops.normalization import _grad_impl, _mask_impl, _train_impl
from knetc.ops.pooling import _gather_impl, _grad_avg_impl, _grad_max_impl, _pool_impl, pooled_shape
from knetc.runtime import threads

from numgrad import assert_close

rng = np.random.default_rng(11)


@pytest.fixture
def blocks(monkeypatch):
    """blocks(f) -> [f() run in one call, f() split over 2, 3 and 5 threads]: every call
    splits its rows (the work threshold at 0)."""
    def run(f):
        results = []
        for n, threshold in ((1, 1 << 62), (2, 0), (3, 0), (5, 0)):
            with monkeypatch.context() as m:
                m.setattr(threads, "THREADS", n)
                m.setattr(threads, "_current", None)  # (BLAS's threads would take half: row_threads)
                m.setattr(rows, "PARALLEL_MIN_WORK", threshold)
                results.append(f())
        return results
    return run


def _same(results):
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return results[0]


def test_run_covers_each_row_once_in_blocks(monkeypatch):
    monkeypatch.setattr(threads, "_current", None)  # (BLAS's threads would take half: row_threads)
    for n in (1, 2, 3, 5):
        monkeypatch.setattr(threads, "THREADS", n)
        for count in (0, 1, 2, 3, 7):
            seen = []
            rows.run(lambda lo, hi: seen.append((lo, hi)), count, rows.PARALLEL_MIN_WORK)
            covered = sorted(r for lo, hi in seen for r in range(lo, hi))
            assert covered == list(range(count)) and len(seen) == max(1, min(count, n))


# (shape, window, padding, stride): the 2x2 fast path, unpadded non-overlapping windows,
# unpadded overlapping ones (the general gradient), padded, 3-D; 1, 2, 3 and 7 slices.
POOL_CASES = [((1, 1, 6, 7), (2, 2), (0, 0), (2, 2)), ((1, 2, 7, 6), (2, 3), (0, 0), (3, 3)),
              ((3, 1, 6, 6), (2, 2), (0, 0), (1, 1)), ((7, 1, 7, 5), (3, 3), (1, 1), (2, 2)),
              ((1, 3, 4, 5, 6), (2, 2, 3), (1, 0, 1), (1, 2, 2))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,window,padding,stride", POOL_CASES)
def test_pool_routines_split_over_slices(blocks, shape, window, padding, stride, dtype):
    k = len(shape) - 2
    w3, p3, s3 = (1,) * (3 - k) + window, (0,) * (3 - k) + padding, (1,) * (3 - k) + stride
    x = rng.standard_normal(shape).astype(dtype)
    x[..., 0] = x[..., 1]  # ties
    x64 = x.astype(np.float64)
    yshape = pooled_shape("pool", shape, w3, p3, s3)
    dy, g = rng.standard_normal(yshape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    for mode in (0, 1, 2, 3):
        def routines():
            y = np.full(yshape, np.nan, dtype)  # every entry must be written
            kpool.pool_cpu(x, y, w3, p3, s3, mode, 1, 0.5)
            dx, z = np.full(shape, np.nan, dtype), np.full(yshape, np.nan, dtype)
            if mode in (0, 3):
                kpool.pool_grad_max_cpu(x, y, dy, dx, w3, p3, s3, mode, 1, 1.5)
                kpool.pool_gather_cpu(x, y, g, z, w3, p3, s3, mode, 1, 2.0)
            else:
                kpool.pool_grad_avg_cpu(dy, dx, shape, w3, p3, s3, mode, 1.5)
            return y, dx, z
        y, dx, z = _same(blocks(routines))
        assert_close(y, _pool_impl(x64, w3, p3, s3, mode, 1, 0.5), **tol)
        if mode in (0, 3):
            assert_close(dx, _grad_max_impl(x64, y, dy.astype(np.float64), w3, p3, s3, mode, 1, 1.5), **tol)
            assert_close(z, _gather_impl(x64, y, g.astype(np.float64), w3, p3, s3, mode, 1, 2.0), **tol)
        else:
            assert_close(dx, _grad_avg_impl(dy.astype(np.float64), shape, w3, p3, s3, mode, 1.5), **tol)


@pytest.mark.parametrize("shape", [(4, 1, 3, 3), (5, 3, 2, 2), (6, 7)])
def test_batchnorm_routines_split_over_channels(blocks, shape):
    x = rng.standard_normal(shape) * 3 + 1
    C = shape[1]
    params, dy = rng.standard_normal(2 * C), rng.standard_normal(shape)

    def routines():
        mean, var, out = np.full(C, 0.5), np.full(C, 2.0), np.full(shape, np.nan)
        kbn.batchnorm_train_cpu(x, params, mean, var, out, 1e-5, 0.1, 1.25)
        dx, dparams = np.full(shape, np.nan), np.full(params.shape, np.nan)
        kbn.batchnorm_grad_cpu(x, params, dy, dx, 1e-5, 0)
        kbn.batchnorm_grad_cpu(x, params, dy, dparams, 1e-5, 1)
        return out, mean, var, dx, dparams
    out, mean, var, dx, dparams = _same(blocks(routines))
    want_mean, want_var = np.full(C, 0.5), np.full(C, 2.0)
    assert_close(out, _train_impl(x, params, want_mean, want_var, 1e-5, 0.1, 1.25), rtol=1e-12, atol=1e-12)
    assert_close(mean, want_mean, rtol=1e-13, atol=1e-15)
    assert_close(var, want_var, rtol=1e-13, atol=1e-15)
    assert_close(dx, _grad_impl(x, params, dy, 1e-5, 0), rtol=1e-10, atol=1e-12)
    assert_close(dparams, _grad_impl(x, params, dy, 1e-5, 1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 7, 1001])
def test_dropout_mask_splits_over_entries(blocks, size):
    for seed in (0, 5):
        def routine():
            state, out = np.array([3], np.int64), np.full(size, np.nan, np.float32)
            kdropout.dropout_mask_cpu(state, out, (size,), "float32", 0.3, seed, 2)
            return out, state
        out, state = _same(blocks(routine))
        reference_state = np.array([3], np.int64)
        np.testing.assert_array_equal(out, _mask_impl(reference_state, (size,), np.float32, 0.3, seed, 2))
        assert state[0] == reference_state[0] == (4 if seed == 0 else 3)


def test_outputs_must_be_views():
    """The routines write through reshaped views of their outputs: a strided output is
    refused, not silently copied (and the dropout counter does not move)."""
    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match="C-contiguous"):
        kpool.pool_cpu(x, np.empty((2, 3, 2, 4))[..., ::2], (1, 2, 2), (0, 0, 0), (1, 2, 2), 0, 1, 1.0)
    state = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="C-contiguous"):
        kdropout.dropout_mask_cpu(state, np.empty((4, 6))[:, ::2], (4, 3), "float64", 0.5, 0, 0)
    assert state[0] == 0
    with pytest.raises(ValueError, match="C-contiguous"):
        kbn.batchnorm_train_cpu(x, np.ones(6), np.zeros(3), np.ones(6)[::2], np.empty_like(x), 1e-5, 0.1, 1.0)
