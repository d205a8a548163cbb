"""Reductions and statistics (sum, prod, maximum, minimum, mean, std, stdm, var, varm, norm,
argmax, argmin, findmax, findmin): float64 numpy references over shapes and `dims`,
numerical gradients, compiled CPU and CUDA (simulator) against eager, PTX for sm_90."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import knetc as kn
from numgrad import assert_close, numgrad
from ptx import compile_ptx_many


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def np_axes(dims, ndim):
    return tuple(range(ndim)) if dims is None else tuple(sorted({d % ndim for d in np.atleast_1d(dims)}))


def knet_ref(fn):
    """A numpy reduction with Knet's shape convention: dims kept, no dims a scalar."""
    def ref(x, dims=None, **kw):
        out = fn(x, axis=np_axes(dims, x.ndim), keepdims=True, **kw)
        return out.reshape(()) if dims is None else out
    return ref


REDUCTIONS = {
    "sum": (kn.sum, knet_ref(np.sum)),
    "prod": (kn.prod, knet_ref(np.prod)),
    "maximum": (kn.maximum, knet_ref(np.max)),
    "minimum": (kn.minimum, knet_ref(np.min)),
    "mean": (kn.mean, knet_ref(np.mean)),
    "var": (kn.var, knet_ref(lambda x, axis, keepdims: np.var(x, axis=axis, keepdims=keepdims, ddof=1))),
    "std": (kn.std, knet_ref(lambda x, axis, keepdims: np.std(x, axis=axis, keepdims=keepdims, ddof=1))),
}


# ----------------------------------------------------------------------------- values

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@st.composite
def shape_and_dims(draw):
    shape = draw(shapes)
    ndim = len(shape)
    dims = draw(st.one_of(
        st.none(), st.integers(-ndim, ndim - 1),
        st.lists(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim).map(tuple)))
    return shape, dims


@settings(max_examples=60, deadline=None)
@given(shape_and_dims(), st.sampled_from(sorted(REDUCTIONS)))
def test_reductions_match_numpy_over_shapes_and_dims(case, name):
    shape, dims = case
    x = normal(shape, seed=len(shape))
    fn, ref = REDUCTIONS[name]
    n = int(np.prod([shape[a] for a in np_axes(dims, len(shape))]))
    if name in ("var", "std") and n < 2:
        return  # corrected statistics of one value are undefined (Julia gives NaN)
    assert_close(fn(x, dims=dims), ref(x, dims), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape_and_dims())
def test_argmax_argmin_findmax_match_numpy(case):
    shape, dims = case
    x = np.round(normal(shape, seed=3), 1)  # rounding makes ties: the first position wins
    axes = np_axes(dims, len(shape))
    rest = [a for a in range(len(shape)) if a not in axes]
    block = np.transpose(x, rest + list(axes)).reshape([shape[a] for a in rest] + [-1])
    keep = tuple(1 if a in axes else n for a, n in enumerate(shape))
    for kn_arg, kn_find, np_arg, np_ext in ((kn.argmax, kn.findmax, np.argmax, np.max),
                                            (kn.argmin, kn.findmin, np.argmin, np.min)):
        expected = np_arg(block, axis=-1).reshape(() if dims is None else keep)
        got = kn_arg(x, dims=dims)
        assert got.dtype == np.int64 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        values, indices = kn_find(x, dims=dims)
        np.testing.assert_array_equal(indices, expected)
        assert_close(values, knet_ref(np_ext)(x, dims), rtol=0, atol=0)


def test_argmax_index_forms():
    x = np.array([[1.0, 9.0, 3.0], [7.0, 2.0, 7.0]])
    assert kn.argmax(x) == 1 and kn.argmin(x) == 0  # flat C-order positions
    np.testing.assert_array_equal(kn.argmax(x, dims=1), [[1], [0]])  # along the axis, kept
    i = kn.argmax(x, dims=0)
    np.testing.assert_array_equal(np.take_along_axis(x, i, axis=0), kn.maximum(x, dims=0))


def test_statistics_keywords_and_means():
    x = normal((4, 3), seed=1)
    m = x.mean(axis=0, keepdims=True)
    assert_close(kn.var(x, dims=0, corrected=False), np.var(x, axis=0, keepdims=True), rtol=1e-12)
    assert_close(kn.var(x, dims=0, mean=m), np.var(x, axis=0, keepdims=True, ddof=1), rtol=1e-12)
    assert_close(kn.varm(x, 0.5, dims=1), ((x - 0.5) ** 2).sum(1, keepdims=True) / 2, rtol=1e-12)
    assert_close(kn.stdm(x, 0.5), np.sqrt(((x - 0.5) ** 2).sum() / 11), rtol=1e-12)
    assert_close(kn.std(x, corrected=False), np.std(x), rtol=1e-12)
    assert_close(kn.mean(x, dims=(0, 1)), x.mean(keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("name, numpy", [("sum", np.sum), ("prod", np.prod), ("maximum", np.max),
                                         ("minimum", np.min), ("mean", np.mean)])
def test_julias_function_form_reduces_the_function_of_x(name, numpy):
    x, reduction = normal((3, 4), seed=3), getattr(kn, name)
    assert_close(reduction(kn.abs2, x), numpy(x * x), rtol=1e-12)
    assert_close(reduction(kn.abs, x, 1), numpy(np.abs(x), axis=1, keepdims=True), rtol=1e-12)
    assert_close(reduction(np.abs, x, dims=0), numpy(np.abs(x), axis=0, keepdims=True), rtol=1e-12)
    assert_close(kn.grad(lambda a: reduction(kn.abs2, a))(x), numgrad(lambda a: numpy(a * a), x), rtol=1e-6, atol=1e-8)
    assert_close(kn.compile(lambda a: reduction(kn.abs2, a, 0))(x), numpy(x * x, axis=0, keepdims=True), rtol=1e-12)
    with pytest.raises(TypeError, match="give dims once"):
        reduction(kn.abs, x, 1, dims=0)


@pytest.mark.parametrize("p", [2, 1, np.inf, -np.inf, 0, 3, 0.5])
def test_norm_is_the_vector_norm_of_all_entries(p):
    x = normal((3, 4), seed=2)
    x[0, 0] = 0.0
    assert_close(kn.norm(x, p), np.linalg.norm(x.reshape(-1), p), rtol=1e-12)
    assert_close(kn.norm(x), np.sqrt(np.sum(x * x)), rtol=1e-12)


def test_numpy_functions_on_params_keep_numpy_semantics():
    x = normal((3, 4), seed=4)
    w = kn.Param(x)
    assert_close(np.prod(w, axis=1), np.prod(x, axis=1), rtol=1e-12)
    assert_close(np.min(w), np.min(x))
    assert_close(np.std(w, axis=0), np.std(x, axis=0), rtol=1e-12)
    assert_close(np.var(w, axis=1, ddof=1, keepdims=True), np.var(x, axis=1, ddof=1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(np.argmax(w, axis=1), np.argmax(x, axis=1))
    assert int(np.argmin(w)) == int(np.argmin(x))
    y = kn.diff(lambda: np.sum(np.std(w, axis=0)))
    assert_close(kn.grad(y, w), numgrad(lambda v: np.sum(np.std(v, axis=0)), x), rtol=1e-6)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("dims", [None, 0, (0, 2), -1])
def test_reduction_gradients_match_numerical(name, dims):
    x = normal((2, 3, 2), seed=5)
    fn, ref = REDUCTIONS[name]
    c = normal(np.shape(ref(x, dims)), seed=6)
    got = kn.grad(lambda x: kn.sum(fn(x, dims=dims) * c))(x)
    assert_close(got, numgrad(lambda x: np.sum(ref(x, dims) * c), x), rtol=1e-6, atol=1e-8)


def test_statistics_and_norm_gradients_match_numerical():
    x, m = normal((3, 4), seed=7), normal((1, 4), seed=8)
    cases = [
        (lambda x: kn.stdm(x, m, dims=0), lambda x: np.sqrt(((x - m) ** 2).sum(0) / 2)),
        (lambda x: kn.varm(x, m, corrected=False), lambda x: ((x - m) ** 2).mean()),
        (lambda x: kn.std(x, dims=1, mean=0.0), lambda x: np.sqrt((x ** 2).sum(1) / 3)),
    ] + [(lambda x, p=p: kn.norm(x, p), lambda x, p=p: np.linalg.norm(x.reshape(-1), p))
         for p in (2, 1, np.inf, 3)]
    for fn, ref in cases:
        assert_close(kn.grad(lambda x: kn.sum(fn(x)))(x), numgrad(lambda x: np.sum(ref(x)), x), rtol=1e-6, atol=1e-8)


def test_prod_gradient_with_zeros_has_no_nan():
    x = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0], [1.5, 2.0, -1.0]])
    g = kn.grad(lambda x: kn.sum(kn.prod(x, dims=1)))(x)
    # one zero: only it gets the product of the others; two zeros: all zero; none: y/x.
    np.testing.assert_allclose(g, [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [-2.0, -1.5, 3.0]], rtol=1e-12)
    assert_close(g, numgrad(lambda x: np.sum(np.prod(x, axis=1)), x), rtol=1e-6, atol=1e-8)
    g = kn.grad(lambda x: kn.prod(x))(np.array([0.0, 0.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_max_and_min_ties_share_the_gradient():
    # as torch.amax/amin: tied entries split it equally, so it sums to the upstream gradient
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.5]])
    np.testing.assert_array_equal(kn.grad(lambda x: kn.sum(kn.maximum(x, dims=1)))(x), [[0, 0.5, 0.5], [0.5, 0.5, 0]])
    np.testing.assert_array_equal(kn.grad(lambda x: kn.minimum(x))(x), [[0, 0, 0], [0, 0, 1]])


def test_higher_order_gradient_through_prod():
    x = np.array([1.5, -2.0, 0.5])
    hess_diag_sum = kn.grad(lambda x: kn.sum(kn.grad(lambda y: kn.prod(y))(x)))(x)
    # d/dx_j sum_i prod_{k != i} x_k = sum_{i != j} prod_{k != i, j} x_k
    expected = [x[2] + x[1], x[2] + x[0], x[1] + x[0]]
    np.testing.assert_allclose(hess_diag_sum, expected, rtol=1e-12)


# ----------------------------------------------------------------------------- errors

def test_bad_dims_raise_shape_errors():
    x = normal((2, 3))
    for fn in (kn.sum, kn.prod, kn.maximum, kn.minimum, kn.mean, kn.var, kn.std, kn.argmax, kn.findmin):
        with pytest.raises(kn.ShapeError, match="out of range"):
            fn(x, dims=2)
    with pytest.raises(kn.ShapeError, match="out of range"):
        kn.argmin(x, dims=(0, -3))


# ----------------------------------------------------------------------------- compiled

def stats_loss(x, m):
    return (kn.sum(kn.prod(x, dims=1) * kn.minimum(x, dims=1)) + kn.sum(kn.std(x, dims=0))
            + kn.varm(x, m) + kn.norm(x, 1) + kn.norm(x) + kn.norm(x, np.inf) + kn.maximum(x)
            + kn.sum(kn.mean(x, dims=(0, 1)) * kn.var(x, dims=1, corrected=False)))


def positions(x):
    v, i = kn.findmax(x, dims=(0, 2))
    return v, i, kn.argmin(x, dims=1), kn.argmax(x), kn.findmin(x)[1]


COMPILED = {}


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_reductions_equal_eager(target):
    x, m = normal((3, 4), seed=9), 0.25
    x[1, 2] = 0.0  # a zero in a product row
    f = COMPILED.setdefault(("stats", target), kn.compile(stats_loss, target=target))
    assert_close(f(x, m), stats_loss(x, m), rtol=1e-12)
    g, v = kn.gradloss(f)(x, m)
    assert_close(g, kn.grad(stats_loss)(x, m), rtol=1e-10, atol=1e-12)
    assert not np.isnan(g).any()
    x3 = np.round(normal((3, 2, 4), seed=10), 1)
    x3[0, 1, 2] = x3[2, 1, 3] = 9.0  # a tie: the first wins
    p = COMPILED.setdefault(("positions", target), kn.compile(positions, target=target))
    for got, want in zip(p(x3), positions(x3)):
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)


def test_cuda_reduction_kernels_compile_to_ptx_for_sm90():
    x = normal((3, 4), seed=9)
    x3 = normal((3, 2, 4), seed=10)
    stats = COMPILED.setdefault(("stats", "cuda"), kn.compile(stats_loss, target="cuda"))
    pos = COMPILED.setdefault(("positions", "cuda"), kn.compile(positions, target="cuda"))
    kn.gradloss(stats)(x, 0.25)
    pos(x3)
    modules = {m.__knetc_path__: m for f in (stats, pos) for m in f.generated_modules()}
    reports = compile_ptx_many([(path, m.PTX_SIGNATURES) for path, m in modules.items() if hasattr(m, "PTX_SIGNATURES")])
    sources = "".join(open(path).read() for path in modules)
    assert "min(" in sources and "*=" in sources  # reduce_min (argmin/minimum) and reduce_prod
    for report in reports:
        for name, entry in report.items():
            assert entry["target"] and entry["entry"], name
    assert sum(len(r) for r in reports) >= 6


def test_compiled_float32_sums_of_many_entries_keep_their_digits():
    """A float32 sum added one entry after another in float32 loses digits as it grows (a
    million entries near 1000: 1% off, a variance 1000x off); compiled CPU sums add blocks of
    WIDE_BLOCK entries in float32 and the blocks in float64 (Monoid.wide), as close to the
    float64 sum as numpy's pairwise sum. All axes, one row of many, and two axes."""
    rng = np.random.default_rng(11)
    x = (rng.random(1_000_000) + 1000).astype(np.float32)
    x64 = x.astype(np.float64)
    mean, var = kn.compile(lambda v: kn.mean(v), target="cpu"), kn.compile(lambda v: kn.var(v), target="cpu")
    assert float(mean(x)) == pytest.approx(x64.mean(), rel=1e-7)
    assert float(var(x)) == pytest.approx(x64.var(), rel=1e-4)  # (x - mean rounds to float32 first)
    rows = x.reshape(4, 250_000)
    std = kn.compile(lambda v: kn.std(v, dims=1), target="cpu")(rows)
    np.testing.assert_allclose(std.ravel(), rows.astype(np.float64).std(axis=1), rtol=1e-4)
    both = kn.compile(lambda v: kn.sum(v, dims=(1, 2)), target="cpu")(x.reshape(2, 1000, 500))
    np.testing.assert_allclose(both.ravel(), x64.reshape(2, -1).sum(axis=1), rtol=1e-7)
    for n in (1, 127, 128, 129, 1000):  # a block's edges, and sums that are one block
        s = kn.compile(lambda v: kn.sum(v, dims=1), target="cpu")(x[:2 * n].reshape(2, n))
        np.testing.assert_allclose(s.ravel(), x64[:2 * n].reshape(2, n).sum(axis=1), rtol=2e-6)


def test_dims_takes_numpy_integers_and_names_itself_when_wrong():
    # numpy takes axis=np.int64(1) (a shape's entry, an argmax); knetc's reductions, softmax and
    # nll raised "'numpy.int64' object is not iterable".
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(kn.sum(x, dims=np.int64(1)), kn.sum(x, dims=1))
    np.testing.assert_array_equal(kn.softmax(x, dims=np.int32(0)), kn.softmax(x, dims=0))
    assert kn.nll(x, np.array([0, 2]), dims=np.int64(1)) == kn.nll(x, np.array([0, 2]), dims=1)
    np.testing.assert_array_equal(kn.polygamma(np.int64(1), np.array([1.0])), kn.polygamma(1, np.array([1.0])))
    for bad in (1.0, "a", (0, 1.5)):
        with pytest.raises(kn.ShapeError, match="dims must be None, an axis or a tuple of axes"):
            kn.sum(x, dims=bad)


def logsumexps(x):
    return kn.logsumexp(x, dims=0), kn.logsumexp(x)


@pytest.mark.parametrize("run", ["eager", "compiled"])
def test_logsumexp_over_an_empty_axis_is_minus_inf(run):
    # log(sum of nothing): scipy and torch give -inf; eagerly numpy's "zero-size array to
    # reduction operation maximum" was raised, compiled a ShapeError naming maximum.
    fn = logsumexps if run == "eager" else kn.compile(logsumexps, target="cpu", cache=False)
    by_axis, whole = fn(np.zeros((0, 3), np.float32))
    assert by_axis.shape == (1, 3) and by_axis.dtype == np.float32 and np.all(by_axis == -np.inf)
    assert whole.shape == () and whole == -np.inf


def test_float16_means_and_variances_sum_in_float32_as_numpy():
    # a count above 65,504, or a sum above it, is inf in float16: numpy's mean sums in float32
    many, large = np.full(100_000, 0.001, np.float16), np.full((1000, 3), 100.0, np.float16)
    for x in (many, large):
        for got in (kn.mean(x), np.mean(kn.Param(x)), kn.mean(x, dims=0)):
            assert kn.value(got).dtype == np.float16
            np.testing.assert_allclose(kn.value(got).ravel(), np.mean(x.astype(np.float32)), rtol=1e-3)
        assert kn.value(kn.var(x)).dtype == np.float16 and float(kn.var(x)) == pytest.approx(
            np.var(x.astype(np.float32), ddof=1), abs=1e-6)
    p = kn.Param(many)
    g = kn.grad(kn.diff(lambda: np.mean(p)), p)
    assert g.dtype == np.float16 and np.allclose(g, 1e-5, rtol=1e-2)
