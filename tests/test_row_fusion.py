"""A value per row fused into the kernel that reads it (ir/fuse.py's `rows`, on the CPU).

A row's maximum, sum or mean read back along the row (softmax, log-softmax, layer
normalisation, nll) is computed in the consumer's loop over the rows, before its loop
along the row, instead of in a kernel of its own and a stored (n, 1) array. These tests
compare values and gradients with float64 numpy and the eager path, at shapes that take
the size-1, 3-D and threaded (rows split across threads) paths, and check that values
that vary along an inner axis (a column mean) are still stored, not recomputed per element.
"""
import numpy as np
import pytest

import knetc as kn
from knetc.backend import cpu

RNG = np.random.default_rng(11)


def softmax_rows(x):
    e = kn.exp(x - kn.maximum(x, dims=1))
    return e / kn.sum(e, dims=1)


def softmax_last(x):
    e = kn.exp(x - kn.maximum(x, dims=x.ndim - 1))
    return e / kn.sum(e, dims=x.ndim - 1)


def layernorm(x, g, b):
    mu = kn.mean(x, dims=2)
    d = x - mu
    var = kn.mean(d * d, dims=2)
    return kn.sum(d / kn.sqrt(var + 1e-5) * g + b)


def minus_row_sum_of_planes(x):
    return x - kn.sum(x, dims=2)  # varies along the two leading axes


def minus_column_mean(x):
    return x - kn.mean(x, dims=0)  # varies along the inner axis: stays a kernel of its own


def nll_loss(w, x, y):
    return kn.nll(x @ w, y)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _kernels(compiled):
    return sum(len(spec.executables()[0].schedule.kernels()) for spec in compiled.specializations())


@pytest.mark.parametrize("shape", [(7, 33), (1, 8), (5, 1), (5000, 64)])
def test_softmax_over_rows_matches_numpy_in_two_kernels(shape):
    x = RNG.standard_normal(shape) * 3
    f = kn.compile(softmax_rows, target="cpu")
    np.testing.assert_allclose(f(x), _softmax(x, 1), rtol=1e-12, atol=1e-15)
    if shape == (5000, 64):  # rows split across threads by the driver
        assert 5000 * 64 * 64 >= cpu.PARALLEL_MIN_WORK
    if 1 not in shape:
        assert _kernels(f) == 2  # max+sub+exp, sum+div


def test_softmax_over_the_last_axis_of_3d_input_float32():
    x = (RNG.standard_normal((3, 4, 10)) * 3).astype(np.float32)
    got = kn.compile(softmax_last, target="cpu")(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _softmax(x.astype(np.float64), 2), rtol=1e-5, atol=1e-7)


def test_values_per_leading_axes_of_a_3d_domain():
    x = RNG.standard_normal((6, 5, 4))
    f = kn.compile(minus_row_sum_of_planes, target="cpu")
    np.testing.assert_allclose(f(x), x - x.sum(axis=2, keepdims=True), rtol=1e-13, atol=1e-14)
    assert _kernels(f) == 1


def test_a_value_per_column_is_still_stored():
    x = RNG.standard_normal((9, 7))
    f = kn.compile(minus_column_mean, target="cpu")
    np.testing.assert_allclose(f(x), x - x.mean(axis=0, keepdims=True), rtol=1e-13, atol=1e-14)
    assert _kernels(f) == 2  # the column mean, then the difference


def test_layernorm_gradients_match_eager_and_numerical():
    x = RNG.standard_normal((4, 3, 9))
    g, b = RNG.standard_normal(9), RNG.standard_normal(9)
    compiled = kn.compile(layernorm, target="cpu")
    for argnum in (0, 1, 2):
        got = kn.grad(compiled, argnum)(x, g, b)
        want = kn.grad(layernorm, argnum)(x, g, b)  # eager
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert compiled(x, g, b) == pytest.approx(layernorm(x, g, b), rel=1e-12)
    w = kn.Param(g.copy())
    assert kn.gcheck(lambda x: compiled(x, w, b), x, verbose=0)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
def test_nll_gradient_matches_eager(dtype, rtol):
    w = RNG.standard_normal((12, 6)).astype(dtype)
    x = RNG.standard_normal((40, 12)).astype(dtype)
    y = RNG.integers(0, 6, 40)
    compiled = kn.compile(nll_loss, target="cpu")
    grad, loss = kn.gradloss(compiled)(w, x, y)
    want_grad, want_loss = kn.gradloss(nll_loss)(w, x, y)
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * 1e-2)
    assert float(loss) == pytest.approx(float(want_loss), rel=rtol)
