"""The CPU fast paths of kernels/conv.py and kernels/pool.py (issue 18), against float64
references and numerical gradients:

- conv: the im2col routines with several samples per GEMM (a chunk's samples side by side),
  uint64-indexed row copies (im2col, col2im, the columns moved between a chunk's GEMM and
  the samples), for few input channels (LeNet's first layer has 1) and many, with padding
  (outputs whose windows lie partly or wholly in it), strides, dilation, groups and depth;
  float32 and float64.
- pool: max pooling without padding (windows scanned directly; 2x2 windows of stride 2 by
  vectorized rows), its gradient for non-overlapping windows (written, not accumulated;
  tiled or with gaps), ties, signed zeros and NaNs (both nan_opt), 4-D and 5-D, float32
  and float64.
"""
import numpy as np
import pytest

import knetc as kn
from knetc.kernels import conv as kconv
from knetc.kernels import pool as kpool

from numgrad import assert_close, numgrad
from test_conv import ref_conv, ref_deconv
from test_pooling import reference_pool

rng = np.random.default_rng(18)


def _osize(n, k, p, s, d):
    return 1 + (n + 2 * p - (k - 1) * d - 1) // s


def _tup(v, n):
    return (v,) * n if np.ndim(v) == 0 else tuple(v)


def ref_conv_dw(x, dy, wshape, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """The filter gradient in float64 as the adjoint of ref_conv: <dw, w> = <dy, conv(w, x)>,
    column by column over the filter's entries (ref_conv is linear in w)."""
    dw = np.zeros(wshape)
    for i in np.ndindex(wshape):
        e = np.zeros(wshape)
        e[i] = 1
        dw[i] = np.sum(dy * ref_conv(e, x, padding, stride, dilation, mode, alpha, group))
    return dw


# (x shape, w shape, params): few input channels per group, unit strides ...
FEW_CHANNELS = [
    ((3, 1, 28, 28), (4, 1, 5, 5), dict()),                                  # LeNet's conv1
    ((2, 1, 9, 7), (3, 1, 3, 2), dict(padding=(1, 2), mode=1, alpha=0.5)),
    ((2, 3, 8, 9), (4, 3, 3, 3), dict(padding=1, dilation=(2, 1))),          # RGB-like, dilated
    ((2, 4, 7, 6), (6, 2, 2, 3), dict(group=2, padding=(0, 1))),             # 2 channels per group
    ((2, 6, 5, 5), (6, 1, 3, 3), dict(group=6, padding=1)),                  # depthwise
    ((2, 2, 4, 5, 6), (3, 2, 2, 3, 2), dict(padding=(1, 0, 1), dilation=(1, 1, 2))),  # 3-D
]
# ... and more channels, strides, batches of 9 or more (several samples per GEMM)
MANY_CHANNELS = [
    ((9, 6, 12, 12), (5, 6, 5, 5), dict()),                                  # LeNet's conv2, smaller
    ((11, 5, 9, 10), (4, 5, 3, 3), dict(padding=(1, 2), stride=(2, 3), mode=1)),
    ((10, 6, 8, 9), (4, 3, 3, 2), dict(group=2, stride=(1, 2), dilation=(2, 1), padding=1, alpha=1.5)),
    ((9, 5, 4, 5, 6), (3, 5, 2, 3, 2), dict(padding=(1, 0, 1), stride=(1, 2, 1))),  # 3-D
    ((17, 5, 3, 3), (2, 5, 3, 3), dict(padding=2, stride=2)),                # outputs all padding-edge
]


def _run(routine, out_shape, a, b, kw, extra=()):
    nsp = a.ndim - 2
    out = np.full(out_shape, np.nan, a.dtype)  # every entry must be written
    routine(a, b, out, _tup(kw.get("padding", 0), nsp), _tup(kw.get("stride", 1), nsp),
            _tup(kw.get("dilation", 1), nsp), kw.get("mode", 0), float(kw.get("alpha", 1)), kw.get("group", 1), *extra)
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs,ws,kw", FEW_CHANNELS + MANY_CHANNELS)
def test_cpu_routines_match_float64_references(xs, ws, kw, dtype):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    nsp = len(xs) - 2
    p, s, d = _tup(kw.get("padding", 0), nsp), _tup(kw.get("stride", 1), nsp), _tup(kw.get("dilation", 1), nsp)
    ys = (xs[0], ws[0]) + tuple(_osize(*t) for t in zip(xs[2:], ws[2:], p, s, d))
    dy = rng.standard_normal(ys)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-4)
    xt, wt, dyt = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
    y = _run(kconv.conv4_cpu, ys, wt, xt, kw)
    assert y.dtype == dtype
    assert_close(y, ref_conv(w, x, **kw), **tol)
    dx = _run(kconv.deconv4_cpu, xs, wt, dyt, kw, (xs[2:],))
    # the transposed convolution over the padded input, cropped to x (inputs past the last
    # window, which strides can leave, get no gradient)
    full = ref_deconv(w, dy, **dict(kw, padding=0))
    expected = np.zeros(xs)
    crop = tuple(slice(0, min(n, f - q)) for n, f, q in zip(xs[2:], full.shape[2:], p))
    expected[(slice(None), slice(None)) + crop] = full[(slice(None), slice(None)) + tuple(
        slice(q, q + c.stop) for q, c in zip(p, crop))]
    assert_close(dx, expected, **tol)
    dw = _run(kconv.conv4_dw_cpu, ws, xt, dyt, kw, (ws[2:],))
    assert_close(dw, ref_conv_dw(x, dy, ws, **kw), **tol)


def test_chunks_put_several_samples_in_one_gemm():
    # LeNet's batch of 100 gives chunks of 6-7 samples; both its layers take them together
    assert kconv._chunks(100) == kconv.MAX_CHUNKS
    assert kconv._per_gemm(1 * 25, 576, 7) == 7
    assert kconv._per_gemm(20 * 25, 64, 7) == 4
    assert kconv._per_gemm(10 ** 6, 64, 7) == 1  # a huge sample: one at a time


@pytest.mark.parametrize("xs,ws,kw", [FEW_CHANNELS[1], FEW_CHANNELS[3], MANY_CHANNELS[1]])
def test_gradients_through_the_fast_paths_match_numerical(xs, ws, kw):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    c = rng.standard_normal(kn.conv4(w, x, **kw).shape)

    def loss(w, x):
        return kn.sum(kn.conv4(w, x, **kw) * c)
    gw, gx = kn.grad(lambda wx: loss(*wx))((w, x))
    # (central differences of a sum of ~1e4 terms: their rounding is about 1e-8)
    assert_close(gw, numgrad(lambda w: loss(w, x), w), rtol=1e-6, atol=1e-7)
    assert_close(gx, numgrad(lambda x: loss(w, x), x), rtol=1e-6, atol=1e-7)


def test_lenet_sizes_float32_against_float64():
    x, w1 = rng.random((100, 1, 28, 28)), rng.standard_normal((20, 1, 5, 5))
    y = kn.conv4(w1.astype(np.float32), x.astype(np.float32))
    assert_close(y, ref_conv(w1, x), rtol=1e-4, atol=1e-4)
    h = rng.random((100, 20, 12, 12))
    w2 = rng.standard_normal((50, 20, 5, 5)) * 0.1
    dy = rng.standard_normal((100, 50, 8, 8))
    dx = _run(kconv.deconv4_cpu, h.shape, w2.astype(np.float32), dy.astype(np.float32), {}, ((12, 12),))
    assert_close(dx, ref_deconv(w2, dy), rtol=1e-4, atol=1e-4)
    dw = _run(kconv.conv4_dw_cpu, w2.shape, h.astype(np.float32), dy.astype(np.float32), dict(mode=1), ((5, 5),))
    expected = np.stack([np.stack([np.einsum("nkij,ncij->kc", dy, h[:, :, a:a + 8, b:b + 8]) for b in range(5)], -1)
                         for a in range(5)], -2)  # cross-correlation: dw[k, c, a, b]
    assert_close(dw, expected, rtol=1e-4, atol=2e-3)


# ------------------------------------------------------------------ pooling

POOL_CASES = [  # shape, window, stride: no padding
    ((3, 4, 24, 24), (2, 2), (2, 2)),        # LeNet's pools: tiled (the 2x2 routines)
    ((2, 3, 7, 9), (2, 2), (2, 2)),          # 2x2, odd sizes: the last row and column uncovered
    ((2, 2, 3, 6, 5), (1, 2, 2), (1, 2, 2)),  # 2x2 in each depth slice of a 5-D array
    ((2, 3, 7, 9), (3, 2), (3, 2)),          # tiled but for the last rows/columns
    ((2, 3, 9, 9), (2, 2), (3, 3)),          # gaps between windows
    ((2, 3, 7, 9), (2, 3), (1, 2)),          # overlapping (forward fast path, general gradient)
    ((2, 2, 5, 6, 7), (2, 2, 3), (2, 3, 3)),  # 3-D
]


def _pool3(t, nsp):
    return (1,) * (3 - nsp) + tuple(t)


def _with_ties_and_nans(shape, dtype, nans):
    x = rng.standard_normal(shape)
    x.flat[::5] = np.round(x.flat[::5])  # ties (equal values within windows)
    x.flat[1::11] = x.flat[::11][:len(x.flat[1::11])]
    if nans:
        x.flat[::13] = np.nan
        x.flat[3::17] = np.nan
    return x.astype(dtype)


def _loop_argmax(x, window, stride, nan_opt):
    """The first maximum of each window in window order (a NaN wins when nan_opt is 1, loses
    to any number when 0), as flat positions in each (n, c) slice: the definition."""
    n = x.ndim - 2
    sizes = [1 + (x.shape[2 + i] - window[i]) // stride[i] for i in range(n)]
    arg = np.zeros(x.shape[:2] + tuple(sizes), np.int64)
    for b, c in np.ndindex(x.shape[:2]):
        for out in np.ndindex(*sizes):
            best, best_i = None, None
            for off in np.ndindex(*window):
                pos = tuple(out[i] * stride[i] + off[i] for i in range(n))
                v = x[(b, c) + pos]
                if best is None:
                    take = True
                elif nan_opt and np.isnan(v) and not np.isnan(best):
                    take = True
                elif not nan_opt and np.isnan(best) and not np.isnan(v):
                    take = True
                else:
                    take = v > best
                if take:
                    best, best_i = v, np.ravel_multi_index(pos, x.shape[2:])
            arg[(b, c) + out] = best_i
    return arg


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,window,stride", POOL_CASES)
def test_unpadded_max_pool_and_gradient(shape, window, stride, dtype):
    nsp = len(shape) - 2
    win, st = _pool3(window, nsp), _pool3(stride, nsp)
    x = _with_ties_and_nans(shape, dtype, nans=False)
    ref = reference_pool(x, window, (0,) * nsp, stride, 0, 0.5)
    y = np.empty(ref.shape, dtype)
    kpool.pool_cpu(x, y, win, (0, 0, 0), st, 0, 1, 0.5)
    assert_close(y, ref, rtol=1e-6 if dtype == np.float32 else 1e-15, atol=0)
    for nans in (False, True):
        x = _with_ties_and_nans(shape, dtype, nans)
        dy = rng.standard_normal(ref.shape).astype(dtype)
        for nan_opt in (0, 1):
            arg = _loop_argmax(x, window, stride, nan_opt)
            flat = x.reshape(x.shape[:2] + (-1,))
            y = np.empty(ref.shape, dtype)
            kpool.pool_cpu(x, y, win, (0, 0, 0), st, 0, nan_opt, 0.5)
            expected = 0.5 * np.take_along_axis(flat, arg.reshape(arg.shape[:2] + (-1,)), 2).reshape(ref.shape)
            np.testing.assert_array_equal(y, expected)  # NaNs in the same places
            dx = np.full(shape, 7.0, dtype)  # every entry must be written
            kpool.pool_grad_max_cpu(x, y, dy, dx, win, (0, 0, 0), st, 0, nan_opt, 1.5)
            want = np.zeros(x.shape[:2] + (flat.shape[2],))
            a2 = arg.reshape(arg.shape[:2] + (-1,))
            for b, c in np.ndindex(x.shape[:2]):
                np.add.at(want[b, c], a2[b, c], 1.5 * dy[b, c].ravel().astype(np.float64))
            assert_close(dx, want.reshape(shape).astype(dtype), rtol=1e-6, atol=1e-6)


def test_unpadded_pool_gradient_matches_numerical():
    x = rng.standard_normal((2, 2, 6, 7))

    def f(x):
        return kn.sum(kn.pool(x, window=(2, 3), stride=(3, 3), alpha=1.5) ** 2)
    assert_close(kn.grad(f)(x), numgrad(f, x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("window", [(1, 2, 2), (1, 2, 3)])
def test_signed_zeros_tie_to_the_first(window):
    x = np.array([[[[-0.0, 0.0, 0.0], [0.0, -0.0, 0.0]]]])
    y = np.empty((1, 1, 1, 1))
    kpool.pool_cpu(x, y, window, (0, 0, 0), window, 0, 1, 1.0)
    assert np.signbit(y[0, 0, 0, 0])
    dx = np.full(x.shape, 5.0)
    kpool.pool_grad_max_cpu(x, y, np.ones_like(y), dx, window, (0, 0, 0), window, 0, 1, 1.0)
    assert dx.ravel()[0] == 1 and np.sum(dx) == 1
