"""A value per row fused into the kernel that reads it (ir/fuse.py's `rows`).

A row's maximum, sum or mean read back along the row (softmax, log-softmax, layer
normalisation, nll) is computed in the consumer's loop over the rows, before its loop
along the row, instead of in a kernel of its own and a stored (n, 1) array. These tests
compare values and gradients with float64 numpy and the eager path, at shapes that take
the size-1, 3-D and threaded (rows split across threads) paths, and check that values
that vary along an inner axis (a column mean) are still stored, not recomputed per element.
On CUDA (under the simulator, and compiled to PTX for sm_90) a group of threads shares a
row's reductions and then strides along the row.
"""
import sys

import numpy as np
import pytest

import knetc as kn
from knetc.runtime import threads

from ptx import assert_modules_compile_to_ptx, kernel_modules

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
        assert 5000 * 64 * 64 >= threads.PARALLEL_MIN_WORK
    if 1 not in shape:
        assert _kernels(f) == 2  # max+sub+exp, sum+div
        texts = [k.text for spec in f.specializations() for k in spec.executables()[0].generated.kernels.values()]
        assert sum(text.count("math.exp(") for text in texts) == 1  # one exp per entry: e / sum(e)


def library_softmax(x):
    return kn.softmax(x, dims=1)


def test_kn_softmax_takes_one_exp_per_entry_in_two_kernels():
    """kn.softmax decomposes to e / sum(e), e = exp(x - max): e is stored by the max's
    kernel and divided by the sum's (exp(x - logsumexp) took one exp more and a log a row)."""
    x = RNG.standard_normal((9, 40)) * 3
    f = kn.compile(library_softmax, target="cpu")
    np.testing.assert_allclose(f(x), _softmax(x, 1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(kn.grad(lambda x: kn.sum(f(x) * x))(x), kn.grad(lambda x: kn.sum(library_softmax(x) * x))(x),
                               rtol=1e-10, atol=1e-13)
    texts = [k.text for spec in f.specializations()[:1] for k in spec.executables()[0].generated.kernels.values()]
    assert _kernels(f) >= 2 and sum(text.count("math.exp(") for text in texts) == 1 and "math.log(" not in "".join(texts)


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


def _stored_ops(compiled):
    """The op names of the values a compiled function's kernels store."""
    return [k.eqn.op.name for spec in compiled.specializations() for k in spec.executables()[0].schedule.kernels()]


def test_nll_recomputes_its_one_hot_labels_in_each_reader():
    # The one-hot (iota == label) is read by the loss's sum and by the gradient: each
    # computes it from the labels (a comparison per entry) instead of a kernel storing it.
    w, x, y = RNG.standard_normal((12, 6)), RNG.standard_normal((40, 12)), RNG.integers(0, 6, 40)
    compiled = kn.compile(nll_loss, target="cpu")
    grad, loss = kn.gradloss(compiled)(w, x, y)
    want_grad, want_loss = kn.gradloss(nll_loss)(w, x, y)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-11, atol=1e-13)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-12)
    assert "eq" not in _stored_ops(compiled)


def logsoftmax_rows(x):
    z = x - kn.maximum(x, dims=1)
    return z - kn.log(kn.sum(kn.exp(z), dims=1))


@pytest.mark.parametrize("shape", [(7, 33), (5000, 64)])
def test_logsoftmax_over_rows_in_one_kernel(shape):
    # z = x - max is a cheap op's value with a value per row in it: computed where the row
    # sum's exp reads it and again where the result does, with the row's max once per row
    # (no stored z, no second kernel), and one exp per entry.
    x = RNG.standard_normal(shape) * 3
    f = kn.compile(logsoftmax_rows, target="cpu")
    z = x - x.max(axis=1, keepdims=True)
    np.testing.assert_allclose(f(x), z - np.log(np.exp(z).sum(axis=1, keepdims=True)), rtol=1e-12, atol=1e-13)
    assert _kernels(f) == 1
    texts = [k.text for spec in f.specializations() for k in spec.executables()[0].generated.kernels.values()]
    assert sum(text.count("math.exp(") for text in texts) == 1 and sum(text.count("math.log(") for text in texts) == 1
    c = np.cos(np.arange(shape[1]))
    np.testing.assert_allclose(kn.grad(lambda x: kn.sum(f(x) * c))(x), kn.grad(lambda x: kn.sum(logsoftmax_rows(x) * c))(x),
                               rtol=1e-10, atol=1e-12)


def test_nll_checks_its_labels_without_copying_them():
    # The range-checked labels are a view of the labels given (the check runs before any
    # kernel): no kernel copies them, and a bad label is still refused before anything runs.
    w, x, y = RNG.standard_normal((12, 6)), RNG.standard_normal((40, 12)), RNG.integers(0, 6, 40)
    compiled = kn.compile(nll_loss, target="cpu")
    grad, loss = kn.gradloss(compiled)(w, x, y)
    np.testing.assert_allclose(grad, kn.grad(nll_loss)(w, x, y), rtol=1e-11, atol=1e-13)
    assert "checked_labels" not in _stored_ops(compiled)
    assert _kernels(compiled) <= 6
    y[3] = 6
    with pytest.raises(ValueError, match="label 6 is out of range"):
        compiled(w, x, y)


def positive_minus_column_mean(x):
    m = kn.gt(x, 0.0)  # cheap: a comparison reading as many entries as it has
    return m - kn.mean(m, dims=0)


def exp_minus_column_mean(x):
    e = kn.exp(x)  # not cheap: stored once, not recomputed by both readers
    return e - kn.mean(e, dims=0)


def test_only_cheap_values_are_recomputed_in_several_kernels():
    x = RNG.standard_normal((9, 7))
    cheap = kn.compile(positive_minus_column_mean, target="cpu")
    m = (x > 0).astype(np.float64)
    np.testing.assert_allclose(cheap(x), m - m.mean(axis=0, keepdims=True), rtol=1e-13, atol=1e-14)
    assert _kernels(cheap) == 2 and "gt" not in _stored_ops(cheap)  # the column mean, then the difference
    costly = kn.compile(exp_minus_column_mean, target="cpu")
    e = np.exp(x)
    np.testing.assert_allclose(costly(x), e - e.mean(axis=0, keepdims=True), rtol=1e-13, atol=1e-14)
    assert _kernels(costly) == 3 and "exp" in _stored_ops(costly)


# ------------------------------------------------------------------ CUDA: a group of threads per row

@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 32 threads (as tests/test_cuda_reductions.py): small rows then take the
    several-rows-per-block, several-blocks and rows-longer-than-the-group paths."""
    from knetc.backend import cuda as cuda_backend
    monkeypatch.setattr(cuda_backend, "THREADS", 32)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the simulator's barriers wait on Python threads
    yield
    sys.setswitchinterval(interval)


CUDA_SOFTMAX = kn.compile(softmax_last, target="cuda")
CUDA_LAYERNORM = kn.compile(layernorm, target="cuda")
CUDA_NLL = kn.compile(nll_loss, target="cuda")


@pytest.mark.parametrize("shape", [(37, 70), (50, 5), (3, 4, 9), (1, 40)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_softmax_in_one_row_kernel(small_blocks, shape, dtype):
    # (37, 70): rows longer than the group (32 threads stride); (50, 5): 4 rows per block,
    # 13 blocks, the last one part empty; (3, 4, 9): rows of a 3-d array; (1, 40): one row.
    x = (RNG.standard_normal(shape) * 3).astype(dtype)
    got = np.asarray(CUDA_SOFTMAX(x))
    np.testing.assert_allclose(got, _softmax(x.astype(np.float64), -1), rtol=2e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-7 if dtype == np.float32 else 1e-15)
    spec = CUDA_SOFTMAX.specializations()[-1]
    kernels = spec.executables()[0].schedule.kernels()
    assert len(kernels) == 1 and all(k.per_row for k in kernels)  # e = exp(x - max) computed at each read


def test_cuda_layernorm_and_nll_gradients_match_eager(small_blocks):
    x = RNG.standard_normal((4, 3, 9))
    g, b = RNG.standard_normal(9), RNG.standard_normal(9)
    for argnum in (0, 1):
        got = np.asarray(kn.grad(CUDA_LAYERNORM, argnum)(x, g, b))
        np.testing.assert_allclose(got, kn.grad(layernorm, argnum)(x, g, b), rtol=1e-10, atol=1e-12)
    w, x2, y = RNG.standard_normal((12, 6)), RNG.standard_normal((40, 12)), RNG.integers(0, 6, 40)
    got = np.asarray(kn.grad(CUDA_NLL)(w, x2, y))
    np.testing.assert_allclose(got, kn.grad(nll_loss)(w, x2, y), rtol=1e-10, atol=1e-13)


def test_cuda_row_kernels_compile_to_ptx(small_blocks):
    CUDA_SOFTMAX(np.ones((2, 3), np.float32))
    CUDA_SOFTMAX(np.ones((2, 3)))
    kn.grad(CUDA_LAYERNORM)(np.ones((2, 2, 3)), np.ones(3), np.ones(3))
    kn.grad(CUDA_NLL)(np.ones((3, 2)), np.ones((4, 3)), np.zeros(4, np.int64))
    modules = {m.__knetc_path__: m for f in (CUDA_SOFTMAX, CUDA_LAYERNORM, CUDA_NLL)
               for m in kernel_modules(f.generated_modules())}
    rows = [m for m in modules.values() if "for i" in open(m.__knetc_path__).read()
            and "in range(lane, n" in open(m.__knetc_path__).read()]
    assert len(rows) >= 4  # softmax f32/f64, layernorm, nll
    assert_modules_compile_to_ptx(list(modules.values()))


# ------------------------------------------------------------------ many shapes and axes

def centred(x, d):
    return x - kn.mean(x, dims=d)


def normalised(x, d):
    c = x - kn.mean(x, dims=d)
    return c / kn.sqrt(kn.mean(c * c, dims=d) + 1e-3)


def softmax_dims(x, d):
    e = kn.exp(x - kn.maximum(x, dims=d))
    return e / kn.sum(e, dims=d)


def scaled_by_total(x, d):
    return x * kn.sum(x, dims=d) + kn.mean(x) * x


def nested(x, d):
    return kn.sum(x * kn.maximum(x, dims=d), dims=0) - kn.sum(x)


def _numpy(name, x, d):
    mean = lambda a: a.mean(axis=d, keepdims=True)  # noqa: E731
    if name == "centred":
        return x - mean(x)
    if name == "normalised":
        c = x - mean(x)
        return c / np.sqrt(mean(c * c) + 1e-3)
    if name == "softmax_dims":
        return _softmax(x, d)
    if name == "scaled_by_total":
        return x * x.sum(axis=d, keepdims=True) + x.mean() * x
    return (x * x.max(axis=d, keepdims=True)).sum(axis=0, keepdims=True) - x.sum()


FUNCTIONS = {f.__name__: f for f in (centred, normalised, softmax_dims, scaled_by_total, nested)}
SHAPES = [((6, 5), 0), ((6, 5), 1), ((1, 7), 1), ((6, 1), 0), ((4, 3, 5), 2), ((4, 3, 5), 1), ((4, 3, 5), 0),
          ((4, 1, 5), 2), ((2, 3, 1), 1)]
CUDA_SHAPES = [((6, 5), 0), ((6, 5), 1), ((4, 3, 5), 2), ((4, 1, 5), 2)]  # (the simulator is slow)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_values_per_row_at_many_shapes_and_axes(name, target, small_blocks):
    f = kn.compile(lambda x, d: FUNCTIONS[name](x, d), target=target)
    for shape, d in SHAPES if target == "cpu" else CUDA_SHAPES:
        x = RNG.standard_normal(shape) + 0.5
        got = np.asarray(f(x, d))
        np.testing.assert_allclose(got, _numpy(name, x, d), rtol=1e-11, atol=1e-12, err_msg=f"{shape} dims={d}")
        loss = kn.compile(lambda x, d: kn.sum(FUNCTIONS[name](x, d) ** 2), target=target)
        want = kn.grad(lambda x, d: kn.sum(FUNCTIONS[name](x, d) ** 2))(x, d)  # eager
        np.testing.assert_allclose(np.asarray(kn.grad(loss)(x, d)), want, rtol=1e-9, atol=1e-11,
                                   err_msg=f"gradient at {shape} dims={d}")
