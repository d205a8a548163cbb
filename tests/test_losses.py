"""Activations and losses: relu, sigm, elu, selu, invx, the softmax family, nll, accuracy, bce,
logistic. Float64 numpy references, numerical gradients, the seeds' examples, stability
(scores of 1e4, masked -inf logits), bad input, and compiled (cpu, cuda under the
simulator, PTX for sm_90) equal to eager."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import knetc as kn
from numgrad import assert_close, numgrad
from ptx import compile_ptx_many

SELU_L, SELU_A = 1.0507009873554805, 1.6732632423543778


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def log_softmax_ref(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def nll_ref(scores, labels, axis=-1):
    """(total, count) in float64, labels -1 skipped."""
    logp = np.moveaxis(log_softmax_ref(scores, axis), axis, -1)
    labels = np.asarray(labels).reshape(logp.shape[:-1])
    keep = labels != -1
    picked = np.take_along_axis(logp, np.where(keep, labels, 0)[..., None], axis=-1)[..., 0]
    return -np.sum(picked[keep]), int(keep.sum())


def accuracy_ref(scores, labels, axis=-1):
    predicted = np.argmax(np.moveaxis(scores, axis, -1), axis=-1)
    labels = np.asarray(labels).reshape(predicted.shape)
    keep = labels != -1
    return int(np.sum((predicted == labels) & keep)), int(keep.sum())


def bce_ref(x, labels):
    p = 1 / (1 + np.exp(-x))
    return -np.sum(labels * np.log(p) + (1 - labels) * np.log(1 - p))


# ---------------------------------------------------------------- activations

ACTIVATIONS = {
    "relu": (kn.relu, lambda x: np.maximum(x, 0)),
    "sigm": (kn.sigm, lambda x: 1 / (1 + np.exp(-x))),
    "elu": (kn.elu, lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    "selu": (kn.selu, lambda x: SELU_L * np.where(x > 0, x, SELU_A * (np.exp(x) - 1))),
    "invx": (kn.invx, lambda x: 1 / x),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_value_and_gradient(name):
    fn, ref = ACTIVATIONS[name]
    x = np.array([[-2.5, -0.7, -0.1], [0.2, 0.9, 3.0]])  # away from the kinks at 0
    assert_close(fn(x), ref(x), rtol=1e-14)
    assert_close(kn.grad(lambda x: kn.sum(fn(x) * x))(x), numgrad(lambda x: np.sum(ref(x) * x), x))


@pytest.mark.parametrize("name", ["elu", "selu", "invx", "sigm"])
def test_activation_second_derivative(name):
    fn, ref = ACTIVATIONS[name]
    x = np.array([-1.3, -0.4, 0.6, 1.7])
    second = kn.grad(lambda x: kn.sum(kn.grad(lambda x: kn.sum(fn(x)))(x)))(x)
    first_ref = lambda x: numgrad(lambda x: np.sum(ref(x)), x, eps=1e-5)  # noqa: E731
    assert_close(second, numgrad(lambda x: np.sum(first_ref(x)), x, eps=1e-4), rtol=1e-4, atol=1e-5)


def test_elu_and_selu_do_not_overflow_and_reject_integers():
    with np.errstate(over="raise"):
        assert_close(kn.elu(np.array([-1e4, 1e4])), [-1.0, 1e4], rtol=1e-15)
        assert_close(kn.selu(np.array([-1e4, 1e4])), [-SELU_L * SELU_A, SELU_L * 1e4], rtol=1e-15)
    with pytest.raises(kn.ShapeError, match="floating"):
        kn.elu(np.array([1, 2]))


# ---------------------------------------------------------------- softmax family

def _axes(dims, ndim):
    return tuple(range(ndim)) if dims is None else tuple(d % ndim for d in np.atleast_1d(dims))


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data())
def test_softmax_family_over_any_dims(shape, data):
    ndim = len(shape)
    dims = data.draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                               st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)))
    x = normal(shape, seed=len(shape)) * 3
    axes = _axes(dims, ndim)
    lse = np.log(np.sum(np.exp(x), axis=axes, keepdims=True))
    kw = {} if dims is None else {"dims": dims}
    assert_close(kn.logsumexp(x, **kw), lse.reshape(()) if dims is None else lse, rtol=1e-12)
    assert_close(kn.logsoftmax(x, **kw), x - lse, rtol=1e-12, atol=1e-12)
    assert_close(kn.logp(x, **kw), x - lse, rtol=1e-12, atol=1e-12)
    assert_close(kn.softmax(x, **kw), np.exp(x) / np.sum(np.exp(x), axis=axes, keepdims=True), rtol=1e-12)
    assert_close(np.sum(kn.softmax(x, **kw), axis=axes), np.ones([n for i, n in enumerate(shape) if i not in axes]),
                 rtol=1e-12)


@pytest.mark.parametrize("dims", [None, 0, 1, (0, 1)], ids=str)
def test_softmax_family_gradients(dims):
    x, v = normal((3, 4), 1), normal((3, 4), 2)
    axes = _axes(dims, 2)
    kw = {} if dims is None else {"dims": dims}
    ref = lambda x: np.sum((x - np.log(np.sum(np.exp(x), axis=axes, keepdims=True))) * v)  # noqa: E731
    assert_close(kn.grad(lambda x: kn.sum(kn.logsoftmax(x, **kw) * v))(x), numgrad(ref, x))
    assert_close(kn.grad(lambda x: kn.sum(kn.softmax(x, **kw) * v))(x),
                 numgrad(lambda x: np.sum(np.exp(x) / np.sum(np.exp(x), axis=axes, keepdims=True) * v), x))


def test_softmax_family_rejects_integer_arrays_and_bad_dims():
    with pytest.raises(kn.ShapeError, match="floating"):
        kn.softmax(np.arange(4))
    with pytest.raises(kn.ShapeError, match="dims"):
        kn.logsumexp(np.ones((2, 3)), dims=2)


# ---------------------------------------------------------------- nll

def test_nll_of_the_seeds_example():
    # Knet's docs print 2.1657e-5, a misprint: the float64 value is 2.11002523e-5.
    scores = np.array([[12.2, 2.0, 0.0], [0.3, 21.5, -21.0]])  # (instances, classes)
    labels = np.array([0, 1])  # cat, dog (Knet's 1, 2)
    probabilities = np.exp(scores) / np.sum(np.exp(scores), axis=1, keepdims=True)
    expected = -(np.log(probabilities[0, 0]) + np.log(probabilities[1, 1])) / 2
    assert abs(expected - 2.1100252335593e-5) < 1e-15
    assert_close(kn.nll(scores, labels), expected, rtol=1e-9)
    assert_close(kn.nll(scores.T, labels, dims=0), expected, rtol=1e-9)  # Knet's (classes, instances)
    total, count = kn.nll(scores, labels, average=False)
    assert_close(total, 2 * expected, rtol=1e-9)
    assert float(count) == 2


NLL_CASES = {  # shape, labels, dims
    "rows": ((5, 4), [0, 3, -1, 2, 1], -1),
    "columns": ((4, 5), [0, 3, -1, 2, 1], 0),
    "kept_axis": ((5, 4), [[0], [3], [-1], [2], [1]], 1),
    "3d_middle": ((2, 3, 4), [[0, 1, 2, 0], [2, -1, 0, 1]], 1),
}


@pytest.mark.parametrize("name", NLL_CASES)
def test_nll_and_accuracy_against_references(name):
    shape, labels, dims = NLL_CASES[name]
    scores, labels = normal(shape, 3), np.array(labels)
    total, count = nll_ref(scores, labels, dims)
    assert_close(kn.nll(scores, labels, dims=dims), total / count, rtol=1e-12)
    expected = numgrad(lambda s: np.divide(*nll_ref(s, labels, dims)), scores)
    assert_close(kn.grad(lambda s: kn.nll(s, labels, dims=dims))(scores), expected, atol=1e-9)
    correct, n = accuracy_ref(scores, labels, dims)
    assert_close(kn.accuracy(scores, labels, dims=dims), correct / n, rtol=1e-15)
    c, m = kn.accuracy(scores, labels, dims=dims, average=False)
    assert (float(c), float(m)) == (correct, n)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data())
def test_nll_and_accuracy_with_classes_on_any_axis(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    scores = normal(shape, seed=sum(shape)) * 2
    instances = [n for i, n in enumerate(shape) if i != axis % len(shape)]
    labels = np.array(data.draw(st.lists(st.integers(-1, shape[axis] - 1), min_size=int(np.prod(instances)),
                                         max_size=int(np.prod(instances))))).reshape(instances)
    total, count = kn.nll(scores, labels, dims=axis, average=False)
    expected_total, expected_count = nll_ref(scores, labels, axis)
    assert_close(total, expected_total, rtol=1e-12, atol=1e-12)
    assert float(count) == expected_count
    correct, n = kn.accuracy(scores, labels, dims=axis, average=False)
    assert (float(correct), float(n)) == accuracy_ref(scores, labels, axis)


def test_accuracy_skips_minus_one_labels():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert kn.accuracy(scores, np.array([1, 1, -1, 0])) == pytest.approx(2 / 3)  # 2 right of 3 counted
    correct, count = kn.accuracy(scores, np.array([-1, -1, 1, -1]), average=False)
    assert (float(correct), float(count)) == (1.0, 1.0)
    assert kn.accuracy(scores.T, np.array([1, 0, 1, 0]), dims=0) == 1.0


def test_accuracy_predicts_the_first_of_tied_scores():
    assert kn.accuracy(np.zeros((3, 3)), np.array([0, 1, 2])) == pytest.approx(1 / 3)  # Knet: findmax's index
    correct, count = kn.accuracy(np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]]), np.array([1, 2]), average=False)
    assert (float(correct), count) == (0.0, 2)
    scores = np.array([[3.0, 3.0], [1.0, 1.0]], np.float32)
    assert kn.accuracy(scores.T, np.array([0, 1]), dims=0) == 0.5


def test_nll_and_accuracy_over_a_dataset_with_a_model():
    w = normal((3, 4), 4)
    data = [(normal((5, 3), 5), np.array([0, 3, -1, 2, 1])), (normal((2, 3), 6), np.array([1, -1]))]

    def model(x, scale=1.0):
        return (x @ w) * scale
    totals = [nll_ref(x @ w * 2, y) for x, y in data]
    total, count = sum(t for t, _ in totals), sum(c for _, c in totals)
    assert_close(kn.nll(model, data=data, scale=2.0), total / count, rtol=1e-12)
    assert_close(kn.nll(model, data, scale=2.0), total / count, rtol=1e-12)
    t, c = kn.nll(model, data=data, average=False, scale=2.0)
    assert_close(t, total, rtol=1e-12)
    assert c == count == 5
    right = [accuracy_ref(x @ w, y) for x, y in data]
    assert kn.accuracy(model, data=data) == pytest.approx(sum(r for r, _ in right) / 5)
    assert kn.accuracy(model, data=data, average=False) == (sum(r for r, _ in right), 5)
    with pytest.raises(TypeError, match="data"):
        kn.nll(model)
    x, y = data[0]
    assert_close(kn.nll(model, x, y, scale=2.0), np.divide(*nll_ref(x @ w * 2, y)), rtol=1e-12)  # Knet's nll(model, x, y)
    assert kn.accuracy(model, x, y) == pytest.approx(np.divide(*accuracy_ref(x @ w, y)))
    with pytest.raises(TypeError, match="unexpected"):
        kn.nll(x @ w, y, 0)  # dims is a keyword


# ---------------------------------------------------------------- bce and logistic

def test_bce_and_logistic_against_references():
    x, labels = normal((3, 4), 7) * 3, (normal((3, 4), 8) > 0).astype(np.int64)
    assert_close(kn.bce(x, labels), bce_ref(x, labels) / 12, rtol=1e-12)
    assert_close(kn.logistic(x, 2 * labels - 1), bce_ref(x, labels) / 12, rtol=1e-12)  # the same loss
    total, count = kn.bce(x, labels, average=False)
    assert_close(total, bce_ref(x, labels), rtol=1e-12)
    assert count == 12
    ref = lambda x: np.sum(np.log1p(np.exp(-(2 * labels - 1) * x)))  # noqa: E731
    assert_close(kn.grad(lambda x: kn.logistic(x, 2 * labels - 1, average=False)[0])(x), numgrad(ref, x))
    assert_close(kn.grad(lambda x: kn.bce(x, labels.astype(float)))(x), numgrad(lambda x: bce_ref(x, labels) / 12, x))


# ---------------------------------------------------------------- numerical stability

def test_losses_do_not_overflow_at_1e4():
    scores = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]])
    with np.errstate(over="raise"):
        assert_close(kn.nll(scores, np.array([0, 2])), (0.0 + 1e4 + np.log(2)) / 2, rtol=1e-15)
        g = kn.grad(lambda s: kn.nll(s, np.array([0, 2])))(scores)
        assert np.all(np.isfinite(g))
        assert_close(g, [[0, 0, 0], [0.25, 0.25, -0.5]], atol=1e-300)
        x = np.array([1e4, -1e4, 1e4, -1e4])
        assert_close(kn.bce(x, np.array([1, 0, 0, 1]), average=False)[0], 2e4, rtol=1e-15)
        assert_close(kn.logistic(x, np.array([1, -1, -1, 1]), average=False)[0], 2e4, rtol=1e-15)
        gb = kn.grad(lambda x: kn.bce(x, np.array([1, 0, 0, 1])))(x)
        assert_close(gb, [0, 0, 0.25, -0.25], atol=1e-300)


def test_masked_minus_infinity_logits_give_no_nan():
    masked = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, -np.inf]])
    labels = np.array([2, 1])
    finite = np.where(np.isinf(masked), -1e30, masked)  # the same distribution, finite
    with np.errstate(invalid="raise"):
        assert_close(kn.nll(masked, labels), np.divide(*nll_ref(finite, labels)), rtol=1e-12)
        g = kn.grad(lambda s: kn.nll(s, labels))(masked)
        assert_close(kn.softmax(masked, dims=1), np.exp(log_softmax_ref(finite, 1)), atol=1e-300)
        assert kn.accuracy(masked, labels) == 0.5
        gs = kn.grad(lambda s: kn.sum(kn.softmax(s, dims=1) * s.shape[1]))(masked)
    assert not np.any(np.isnan(g)) and g[0, 1] == 0 and g[1, 0] == 0 and g[1, 1] == 0
    assert not np.any(np.isnan(gs))


# ---------------------------------------------------------------- bad input

BAD_INPUT = {
    "nll_label_too_large": (lambda: kn.nll(np.ones((3, 4)), np.array([0, 4, 1])), ValueError, "out of range"),
    "nll_label_below_minus_one": (lambda: kn.nll(np.ones((3, 4)), np.array([0, -2, 1])), ValueError, "out of range"),
    "accuracy_label_too_large": (lambda: kn.accuracy(np.ones((3, 4)), np.array([9, 0, 1])), ValueError, "out of range"),
    "nll_float_labels": (lambda: kn.nll(np.ones((3, 4)), np.array([0.0, 1.0, 2.0])), kn.ShapeError, "integer"),
    "accuracy_float_labels": (lambda: kn.accuracy(np.ones((3, 4)), np.zeros(3)), kn.ShapeError, "integer"),
    "nll_label_shape": (lambda: kn.nll(np.ones((3, 4)), np.zeros(4, np.int64)), kn.ShapeError, "labels"),
    "nll_two_dims": (lambda: kn.nll(np.ones((3, 4)), np.zeros(3, np.int64), dims=(0, 1)), kn.ShapeError, "one axis"),
    "nll_integer_scores": (lambda: kn.nll(np.ones((3, 4), np.int64), np.zeros(3, np.int64)), kn.ShapeError, "floating"),
    "bce_shape": (lambda: kn.bce(np.ones((3, 4)), np.ones(4)), kn.ShapeError, "labels"),
    "logistic_shape": (lambda: kn.logistic(np.ones(3), np.ones((3, 1))), kn.ShapeError, "labels"),
}


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_raises_a_clear_error(name):
    fn, error, message = BAD_INPUT[name]
    with pytest.raises(error, match=message):
        fn()


# ---------------------------------------------------------------- compiled equals eager

def all_losses(x, labels, binary, t):
    """Every loss and activation of this module in one program (tiny: the simulator is slow)."""
    h = kn.elu(x) + kn.selu(x) * 0.5 + kn.invx(kn.abs(x) + 1) + kn.relu(x) * kn.sigm(x)
    total, count = kn.nll(h, labels, average=False)
    return (total / count + kn.nll(h * 2, labels, dims=-1) + kn.accuracy(x, labels) + kn.bce(x, binary)
            + kn.logistic(x, binary * 2 - 1) + kn.sum(kn.softmax(x, dims=0) * t) + kn.logsumexp(x)
            + kn.sum(kn.logp(x, dims=1) * t))


def all_losses_args(dtype=np.float64):
    x = normal((3, 4), 9).astype(dtype)
    return x, np.array([1, -1, 3]), (normal((3, 4), 10) > 0).astype(np.int64), normal((3, 4), 11).astype(dtype)


def masked_nll(x, labels):
    return kn.nll(x, labels) + kn.accuracy(x, labels) + kn.sum(kn.logsumexp(x, dims=1)) + kn.sum(kn.softmax(x, dims=1))


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_losses_equal_eager(target):
    compiled = kn.compile(all_losses, target=target)
    args = all_losses_args()
    g, loss = kn.gradloss(compiled)(*args)
    assert_close(loss, all_losses(*args), rtol=1e-10)
    assert_close(g, kn.grad(all_losses)(*args), rtol=1e-9, atol=1e-12)
    if target == "cuda":  # float32 too (the simulator compiles nothing), and PTX for sm_90
        args32 = all_losses_args(np.float32)
        assert_close(compiled(*args32), all_losses(*args32), rtol=1e-4)
        modules = {m.__knetc_path__: m for m in compiled.generated_modules()}
        reports = compile_ptx_many([(path, m.PTX_SIGNATURES) for path, m in modules.items() if hasattr(m, "PTX_SIGNATURES")])
        assert all(entry["target"] and entry["entry"] for report in reports for entry in report.values())
        assert sum(len(report) for report in reports) >= 4


def test_compiled_nll_with_masked_logits_has_no_nan():
    compiled = kn.compile(masked_nll, target="cpu")
    masked = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, -np.inf]])
    labels = np.array([2, 1])
    g, loss = kn.gradloss(compiled)(masked, labels)
    assert np.isfinite(loss)
    assert_close(loss, masked_nll(masked, labels), rtol=1e-12)
    assert not np.any(np.isnan(g))
    assert_close(g, kn.grad(masked_nll)(masked, labels), rtol=1e-12, atol=1e-15)


def _softmax_family(x):
    return kn.softmax(x, dims=1), kn.logsoftmax(x, dims=1), kn.logsumexp(x, dims=1)


def test_softmax_family_on_infinite_and_nan_rows_agree_eager_compiled_and_pytorch():
    """A row with +inf, a row of -inf or a NaN: softmax and logsoftmax are NaN on the whole
    row (inf - inf), logsumexp is inf, -inf or NaN; eager, compiled and PyTorch alike. A row
    with some -inf (masked logits) and a finite max is finite where the entry is."""
    x = np.array([[np.inf, 0, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0, 1], [np.inf, np.inf, 0],
                  [-np.inf, 2.0, 1.0]])
    eager = _softmax_family(x)
    compiled = kn.compile(_softmax_family, target="cpu")(x)
    for e, c in zip(eager, compiled):
        np.testing.assert_array_equal(e, c)
    assert np.isnan(eager[0][:4]).all() and np.isnan(eager[1][:4]).all()
    np.testing.assert_array_equal(eager[2].ravel()[:4], [np.inf, -np.inf, np.nan, np.inf])
    np.testing.assert_allclose(eager[0][4], [0, 1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))], rtol=1e-15)
    torch = pytest.importorskip("torch")
    t = torch.tensor(x)
    for e, want in zip(eager, (torch.softmax(t, 1), torch.log_softmax(t, 1), torch.logsumexp(t, 1, keepdim=True))):
        np.testing.assert_allclose(e, want.numpy(), rtol=1e-15)


def test_activation_slopes_at_zero_are_knets():
    """Knet's reluback, eluback, seluback at y = 0: relu 0, elu 1, selu lambda (not lambda * alpha)."""
    x = kn.Param(np.zeros(1))
    for f, slope in ((kn.relu, 0.0), (kn.elu, 1.0), (kn.selu, 1.0507009873554805)):
        y = kn.diff(lambda: kn.sum(f(x)))
        np.testing.assert_allclose(kn.grad(y, x), [slope], rtol=1e-15)
        np.testing.assert_allclose(kn.grad(kn.compile(lambda v: kn.sum(f(v)), target="cpu"))(np.zeros(1)), [slope],
                                   rtol=1e-15)


def test_labels_of_many_classes_are_compared_as_integers_in_any_float_type():
    """float16 holds integers exactly only to 2048: classes 2048 and 2049 must stay apart
    (they did not when labels were compared in the scores' type)."""
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 5000))
    labels = np.array([2049, 4001, 10])
    scores[0, 2048] = scores[1, 4000] = scores[2, 10] = 30.0  # predictions 2048, 4000, 10
    s16 = scores.astype(np.float16)
    s64 = s16.astype(np.float64)
    logp = s64 - s64.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert float(kn.nll(s16, labels)) == pytest.approx(-logp[np.arange(3), labels].mean(), rel=2e-3)
    assert float(kn.accuracy(s16, labels)) == pytest.approx(1 / 3, rel=1e-3)  # in float16
    onehot = np.zeros_like(s64)
    onehot[np.arange(3), labels] = 1
    grad = kn.grad(lambda s: kn.nll(s, labels))(kn.Param(s16))
    assert np.abs(np.asarray(grad, np.float64) - (np.exp(logp) - onehot) / 3).max() < 2e-3
    f32 = kn.compile(lambda s, y: kn.accuracy(s, y))
    assert float(f32(scores.astype(np.float32), labels)) == pytest.approx(1 / 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_are_in_the_scores_type_eager_and_compiled(dtype):
    scores, labels = np.random.default_rng(1).standard_normal((4, 3)).astype(dtype), np.array([0, 1, 2, -1])
    for loss in (kn.nll, kn.accuracy):
        compiled = kn.compile(lambda s, y, loss=loss: loss(s, y))
        eager = np.asarray(loss(scores, labels))
        assert eager.dtype == np.asarray(compiled(scores, labels)).dtype == dtype
        total, count = loss(scores, labels, average=False)
        assert np.asarray(total).dtype == dtype and int(count) == 3


def test_labels_may_be_python_ints_and_lists():
    # nll(scores, 1) said "labels must be an integer array ..., got weak[]".
    scores = np.array([[0.1, 0.9], [2.0, 0.3]])
    want = kn.nll(scores, np.array([1, 0]))
    assert kn.nll(scores, [1, 0]) == pytest.approx(want) and kn.nll(scores, (1, 0)) == pytest.approx(want)
    assert kn.nll(scores[0], 1) == pytest.approx(kn.nll(scores[:1], np.array([1])))
    assert kn.accuracy(scores, [0, 0]) == 0.5 and kn.accuracy(scores[1], 0) == 1.0
    w = kn.Param(scores.copy())
    np.testing.assert_allclose(kn.grad(kn.diff(lambda: kn.nll(w, [1, 0])), w),
                               kn.grad(kn.diff(lambda: kn.nll(w, np.array([1, 0]))), w))
    with pytest.raises(TypeError):
        kn.nll(scores, [0.5, 1.0])  # not integers


def test_accuracy_without_average_gives_numbers_as_nll_does():
    # The correct count came back as a 0-d array, nll's total as a numpy number.
    scores, labels = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, -1])
    correct, count = kn.accuracy(scores, labels, average=False)
    total, _ = kn.nll(scores, labels, average=False)
    assert type(correct) is type(total) is np.float64 and correct == 1.0 and count == 2


def test_the_loss_over_a_dataset_has_a_gradient_inside_diff():
    # Knet's nll(model, data) sums z; knetc's took float() of each batch's total, which
    # inside kn.diff raised ("cannot become a numpy array").
    rng = np.random.default_rng(0)
    w = kn.Param(rng.standard_normal((4, 3)))
    data = [(rng.random((5, 4)), np.array([0, 1, 2, 1, 0])), (rng.random((3, 4)), np.array([2, -1, 1]))]
    whole = (np.concatenate([x for x, _ in data]), np.concatenate([y for _, y in data]))
    for average in (True, False):
        pick = (lambda r: r) if average else (lambda r: r[0])
        y = kn.diff(lambda: pick(kn.nll(lambda x: x @ w, data=data, average=average)))
        expected = kn.diff(lambda: pick(kn.nll(whole[0] @ w, whole[1], average=average)))
        assert kn.value(y) == pytest.approx(kn.value(expected), rel=1e-12)
        np.testing.assert_allclose(kn.grad(y, w), kn.grad(expected, w), rtol=1e-12, atol=1e-15)
    assert kn.nll(lambda x: x @ w, data=data, average=False)[1] == 7


@pytest.mark.parametrize("loss", [kn.nll, kn.accuracy])
def test_the_count_is_an_integer_eager_and_compiled(loss):
    # Knet's (total, count) has an integer count; compiled it was the scores' float type.
    scores = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, -1, 1])
    compiled = kn.compile(lambda s, y: loss(s, y, average=False))
    for total, count in (loss(scores, labels, average=False), compiled(scores, labels)):
        assert count == 3 and np.asarray(count).dtype.kind == "i"
        assert np.asarray(total).dtype == np.float32
    assert np.asarray(kn.compile(lambda s, y: loss(s, y))(scores, labels)).dtype == np.float32


@pytest.mark.parametrize("loss, labels", [(kn.nll, np.zeros(70_000, int)), (kn.accuracy, np.zeros(70_000, int)),
                                          (kn.bce, np.ones((70_000, 2), int)), (kn.logistic, np.ones((70_000, 2), int))])
def test_float16_losses_count_and_sum_in_float32(loss, labels):
    # over 65,504 instances the count (and soon the total) is inf in float16: torch sums in float32
    scores = np.zeros((70_000, 2), np.float16)
    got = loss(scores, labels)
    assert kn.value(got).dtype == np.float16
    assert float(got) == pytest.approx(float(loss(scores.astype(np.float32), labels)), rel=1e-3)
    (total, count), (total32, count32) = loss(scores, labels, average=False), loss(scores.astype(np.float32), labels, average=False)
    assert count == count32 and float(total) == pytest.approx(float(np.float16(total32)), rel=1e-3)  # (inf above 65,504)
