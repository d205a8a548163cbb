"""The op table, eagerly: each op's value against a float64 numpy reference and its gradient
(`kn.grad`) against central differences of that reference."""
import numpy as np
import pytest

import knetc as kn
from numgrad import assert_close, numgrad, numgrads


def rng(seed=0):
    return np.random.default_rng(seed)


def normal(shape, seed=0):
    return rng(seed).standard_normal(shape)


def positive(shape, seed=0):
    return rng(seed).uniform(0.5, 2.0, shape)


def away_from_zero(shape, seed=0):
    """Values with |x| >= 0.2: abs and relu are differentiable there."""
    r = rng(seed)
    return r.choice([-1.0, 1.0], shape) * r.uniform(0.2, 2.0, shape)


def check_gradient(kn_fn, np_fn, *xs, argnum=0, rtol=1e-6, atol=1e-8):
    """kn.grad of sum(fn(...) * c) against numgrad of the numpy reference, for a fixed
    random c (so every output entry gets a different cotangent)."""
    c = normal(np.shape(np_fn(*xs)), seed=99)
    actual = kn.grad(lambda *a: kn.sum(kn_fn(*a) * c), argnum)(*xs)
    expected = numgrads(lambda *a: np.sum(np_fn(*a) * c), *xs)[argnum]
    assert_close(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- elementwise, one input

UNARY = {
    "neg": (lambda x: -x, np.negative, normal),
    "exp": (kn.exp, np.exp, normal),
    "log": (kn.log, np.log, positive),
    "tanh": (kn.tanh, np.tanh, normal),
    "sqrt": (kn.sqrt, np.sqrt, positive),
    "abs": (kn.abs, np.abs, away_from_zero),
    "relu": (kn.relu, lambda x: np.maximum(x, 0), away_from_zero),
    "sigm": (kn.sigm, lambda x: 1 / (1 + np.exp(-x)), normal),
    "pow2": (lambda x: x ** 2, lambda x: x ** 2, normal),
    "pow3": (lambda x: x ** 3, lambda x: x ** 3, normal),
    "pow_half": (lambda x: x ** 0.5, np.sqrt, positive),
    "pow_minus1": (lambda x: x ** -1, lambda x: 1 / x, positive),
    "pow_1.5": (lambda x: x ** 1.5, lambda x: x ** 1.5, positive),
}


@pytest.mark.parametrize("name", UNARY)
def test_unary_value_matches_numpy(name):
    kn_fn, np_fn, domain = UNARY[name]
    x = domain((3, 4))
    y = kn_fn(x)
    assert np.asarray(y).dtype == np.float64
    assert_close(y, np_fn(x), rtol=1e-12)


@pytest.mark.parametrize("name", UNARY)
def test_unary_gradient_matches_numerical(name):
    kn_fn, np_fn, domain = UNARY[name]
    check_gradient(kn_fn, np_fn, domain((3, 4)))


@pytest.mark.parametrize("name", ["exp", "tanh", "sigm", "relu", "pow2"])
def test_unary_keeps_float32(name):
    kn_fn, np_fn, domain = UNARY[name]
    x = domain((5,)).astype(np.float32)
    y = kn_fn(x)
    assert np.asarray(y).dtype == np.float32
    assert_close(y, np_fn(x.astype(np.float64)), rtol=1e-6, atol=1e-7)


def test_power_with_an_array_exponent_broadcasts_and_checks_shapes():
    x = kn.Param(np.full(3, 2.0))
    np.testing.assert_array_equal(kn.value(x ** np.array([1.0, 2.0, 3.0])), [2.0, 4.0, 8.0])
    with pytest.raises(kn.ShapeError, match="broadcast"):
        x ** np.ones(4)


def test_step_functions_have_zero_gradient():
    x = away_from_zero((4,))
    assert_close(kn.grad(lambda x: kn.sum(kn.sign(x) * 3.0 + x))(x), np.ones(4))


# ---------------------------------------------------------------- elementwise, two inputs

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.true_divide),
}
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)),
                    ((), (2, 3)), ((4,), (2, 1, 4))]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary_value_and_gradients_with_broadcasting(name, shapes):
    kn_fn, np_fn = BINARY[name]
    a, b = normal(shapes[0], seed=1), positive(shapes[1], seed=2)
    assert_close(kn_fn(a, b), np_fn(a, b), rtol=1e-12)
    for argnum in (0, 1):
        check_gradient(kn_fn, np_fn, a, b, argnum=argnum)


@pytest.mark.parametrize("name", BINARY)
def test_binary_with_python_scalars(name):
    kn_fn, np_fn = BINARY[name]
    x = positive((2, 3))
    for left, right in ((x, 2.5), (2.5, x), (x, 3), (-1, x)):
        assert_close(kn_fn(left, right), np_fn(left, right), rtol=1e-12)
    check_gradient(lambda x: kn_fn(x, 2.5), lambda x: np_fn(x, 2.5), x)
    check_gradient(lambda x: kn_fn(2.5, x), lambda x: np_fn(2.5, x), x)


def test_python_scalar_keeps_float32():
    x = kn.Param(np.ones(3, np.float32))
    assert (x * 2.5).dtype == np.float32
    assert (1 / x).dtype == np.float32


def test_broadcast_adjoint_sums_over_broadcast_axes():
    x, b = normal((3, 4)), normal((4,))
    db = kn.grad(lambda b: kn.sum(x + b), 0)(b)
    assert_close(db, np.full(4, 3.0))
    dcol = kn.grad(lambda c: kn.sum(x * c))(np.ones((3, 1)))
    assert_close(dcol, x.sum(axis=1, keepdims=True))


def test_comparisons_return_the_floating_type():
    a, b = normal((5,), 1), normal((5,), 2)
    for fn, ref in ((kn.lt, np.less), (kn.le, np.less_equal), (kn.gt, np.greater), (kn.ge, np.greater_equal),
                    (kn.eq, np.equal), (kn.ne, np.not_equal)):
        y = fn(a, b)
        assert y.dtype == np.float64
        assert_close(y, ref(a, b).astype(np.float64))


# ---------------------------------------------------------------- matmul

MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_value_and_gradients(shapes):
    a, b = normal(shapes[0], 1), normal(shapes[1], 2)
    y = kn.Param(a) @ b
    assert_close(y, np.matmul(a, b), rtol=1e-12)
    assert_close(kn.matmul(a, b), np.matmul(a, b), rtol=1e-12)
    for argnum in (0, 1):
        check_gradient(lambda a, b: a @ b, np.matmul, a, b, argnum=argnum)


def test_matmul_of_two_params_records_both():
    a, b = kn.Param(normal((2, 3), 1)), kn.Param(normal((3, 4), 2))
    y = kn.diff(lambda: kn.sum(a @ b))
    assert_close(kn.grad(y, a), np.ones((2, 4)) @ b.value.T)
    assert_close(kn.grad(y, b), a.value.T @ np.ones((2, 4)))


# ---------------------------------------------------------------- reductions

REDUCTIONS = {"sum": (kn.sum, np.sum), "mean": (kn.mean, np.mean), "maximum": (kn.maximum, np.max)}
DIMS = [((4, 5), None), ((4, 5), 0), ((4, 5), 1), ((4, 5), -1), ((2, 3, 4), (0, 2)), ((2, 3, 4), -2),
        ((2, 3, 4), (-1, 0)), ((2, 3, 4), (0, 1, 2))]


def _axes(dims, ndim):
    return tuple(range(ndim)) if dims is None else tuple(d % ndim for d in np.atleast_1d(dims))


@pytest.mark.parametrize("shape_dims", DIMS, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_keeps_reduced_axes_like_knet(name, shape_dims):
    shape, dims = shape_dims
    kn_fn, np_fn = REDUCTIONS[name]
    x = normal(shape)
    y = kn_fn(x) if dims is None else kn_fn(x, dims=dims)
    expected = np_fn(x) if dims is None else np_fn(x, axis=_axes(dims, x.ndim), keepdims=True)
    assert np.shape(y) == np.shape(expected)
    assert_close(y, expected, rtol=1e-12)


@pytest.mark.parametrize("shape_dims", DIMS, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_gradient_matches_numerical(name, shape_dims):
    shape, dims = shape_dims
    kn_fn, np_fn = REDUCTIONS[name]
    x = normal(shape)  # distinct entries: maximum is differentiable
    if dims is None:
        check_gradient(kn_fn, np_fn, x)
    else:
        axes = _axes(dims, x.ndim)
        check_gradient(lambda x: kn_fn(x, dims=dims), lambda x: np_fn(x, axis=axes, keepdims=True), x)


def test_sum_with_dims_of_4x5_is_4x1():  # the API contract's example
    assert kn.sum(np.ones((4, 5)), dims=1).shape == (4, 1)
    assert kn.sum(np.ones((4, 5))).shape == ()


def test_maximum_gradient_is_shared_by_tied_entries():  # as torch.amax: it sums to the upstream gradient
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    assert_close(kn.grad(lambda x: kn.sum(kn.maximum(x, dims=1)))(x), [[0, 0.5, 0.5], [1, 0, 0]])


def test_reduction_dims_out_of_range_is_a_shape_error():
    with pytest.raises(kn.ShapeError, match="dims=2"):
        kn.sum(np.ones((4, 5)), dims=2)
    with pytest.raises(kn.ShapeError, match="dims=-3"):
        kn.mean(np.ones((4, 5)), dims=-3)


# ---------------------------------------------------------------- reshape and transpose

VIEWS = {
    "reshape_tuple": (lambda x: kn.reshape(x, (4, -1)), lambda x: x.reshape(4, -1)),
    "reshape_varargs": (lambda x: kn.reshape(x, 6, 2, 2), lambda x: x.reshape(6, 2, 2)),
    "reshape_method": (lambda x: x.reshape(-1), lambda x: x.reshape(-1)),
    "transpose_reverses_axes": (kn.transpose, np.transpose),
    "transpose_perm": (lambda x: kn.transpose(x, (1, 0, 2)), lambda x: np.transpose(x, (1, 0, 2))),
    "T": (lambda x: x.T, lambda x: x.T),
    "reshape_then_transpose": (lambda x: kn.transpose(kn.reshape(x, (6, 4))), lambda x: x.reshape(6, 4).T),
}


@pytest.mark.parametrize("name", VIEWS)
def test_view_value_and_gradient(name):
    kn_fn, np_fn = VIEWS[name]
    x = normal((2, 3, 4))
    y = kn_fn(kn.Param(x))
    assert_close(y, np_fn(x), rtol=0, atol=0)
    check_gradient(kn_fn, np_fn, x)


def test_reshape_rejects_a_wrong_size():
    with pytest.raises(kn.ShapeError, match="reshape"):
        kn.reshape(np.ones((2, 3)), (4, 2))


# ---------------------------------------------------------------- logsumexp, logsoftmax, softmax

def logsumexp_ref(x, axes):
    return np.log(np.sum(np.exp(x), axis=axes, keepdims=True))  # naive: fine for small x in float64


SOFTMAX_FAMILY = {
    "logsumexp": (kn.logsumexp, lambda x, axes: logsumexp_ref(x, axes)),
    "logsoftmax": (kn.logsoftmax, lambda x, axes: x - logsumexp_ref(x, axes)),
    "softmax": (kn.softmax, lambda x, axes: np.exp(x) / np.sum(np.exp(x), axis=axes, keepdims=True)),
}
SOFTMAX_DIMS = [None, 0, 1, -1, (0, 2)]


@pytest.mark.parametrize("dims", SOFTMAX_DIMS, ids=str)
@pytest.mark.parametrize("name", SOFTMAX_FAMILY)
def test_softmax_family_value_and_gradient(name, dims):
    kn_fn, np_fn = SOFTMAX_FAMILY[name]
    x = normal((2, 3, 4))
    axes = _axes(dims, x.ndim)
    expected = np_fn(x, axes)
    if name == "logsumexp" and dims is None:
        expected = expected.reshape(())  # no dims: a scalar
    y = kn_fn(x) if dims is None else kn_fn(x, dims=dims)
    assert_close(y, expected, rtol=1e-12)
    kn_call = (lambda x: kn_fn(x)) if dims is None else (lambda x: kn_fn(x, dims=dims))
    check_gradient(kn_call, lambda x: np_fn(x, axes).reshape(np.shape(expected)), x)


def test_logp_is_logsoftmax():
    x = normal((3, 4))
    assert_close(kn.logp(x, dims=1), kn.logsoftmax(x, dims=1), rtol=0, atol=0)


def test_softmax_rows_sum_to_one():
    assert_close(np.sum(kn.softmax(normal((5, 7)), dims=-1), axis=-1), np.ones(5), rtol=1e-12)


# ---------------------------------------------------------------- nll

def nll_ref(scores, labels, axis=-1):
    """(total, count) in float64: -log softmax of the labelled class, labels -1 skipped."""
    logp = scores - np.log(np.sum(np.exp(scores), axis=axis, keepdims=True))
    logp = np.moveaxis(logp, axis, -1)
    labels = np.asarray(labels).reshape(logp.shape[:-1])
    keep = labels != -1
    picked = np.take_along_axis(logp, np.where(keep, labels, 0)[..., None], axis=-1)[..., 0]
    return -np.sum(picked[keep]), int(keep.sum())


NLL_CASES = {  # scores shape, labels, dims (None: the default, classes last)
    "instances_x_classes": ((5, 4), [0, 3, -1, 2, 1], None),
    "classes_first": ((4, 5), [0, 3, -1, 2, 1], 0),
    "labels_with_kept_axis": ((5, 4), [[0], [3], [-1], [2], [1]], -1),
    "three_d_classes_last": ((2, 3, 4), [[0, 1, 2], [3, -1, 0]], -1),
    "three_d_classes_middle": ((2, 3, 4), [[0, 1, 2, 0], [2, -1, 0, 1]], 1),
}


@pytest.mark.parametrize("name", NLL_CASES)
def test_nll_value_and_gradient(name):
    shape, labels, dims = NLL_CASES[name]
    scores, labels = normal(shape), np.array(labels)
    axis = -1 if dims is None else dims
    kw = {} if dims is None else {"dims": dims}
    total, count = nll_ref(scores, labels, axis)
    assert_close(kn.nll(scores, labels, **kw), total / count, rtol=1e-12)
    actual = kn.grad(lambda s: kn.nll(s, labels, **kw))(scores)
    expected = numgrad(lambda s: np.divide(*nll_ref(s, labels, axis)), scores)
    assert_close(actual, expected, rtol=1e-6, atol=1e-9)


def test_nll_average_false_returns_total_and_count():
    scores, labels = normal((5, 4)), np.array([0, 3, -1, 2, -1])
    total, count = kn.nll(scores, labels, average=False)
    expected_total, expected_count = nll_ref(scores, labels)
    assert_close(total, expected_total, rtol=1e-12)
    assert float(count) == expected_count == 3


def test_nll_skipped_instances_get_no_gradient():
    scores, labels = normal((3, 4)), np.array([1, -1, 2])
    g = kn.grad(lambda s: kn.nll(s, labels))(scores)
    assert_close(g[1], np.zeros(4), atol=0)
    assert np.all(g[0] != 0)


def test_nll_of_the_knet_docs_example():
    # Knet's docs print 2.1657e-5, a misprint: the float64 value is about 2.1100e-5.
    scores, labels = np.array([[12.2, 2.0, 0.0], [0.3, 21.5, -21.0]]), np.array([0, 1])
    total, count = nll_ref(scores, labels)
    assert abs(total / count - 2.1100e-5) < 1e-9
    assert_close(kn.nll(scores, labels), total / count, rtol=1e-9)
    assert_close(kn.nll(scores.T, labels, dims=0), total / count, rtol=1e-9)  # Knet's own layout


def test_nll_rejects_labels_of_the_wrong_shape_or_type():
    with pytest.raises(kn.ShapeError, match="labels"):
        kn.nll(np.ones((3, 4)), np.zeros(4, dtype=np.int64))
    with pytest.raises(kn.ShapeError, match="integer"):
        kn.nll(np.ones((3, 4)), np.zeros(3))


# ---------------------------------------------------------------- numerical stability

def test_softmax_family_does_not_overflow_at_1e4():
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]])
    assert_close(kn.softmax(x, dims=1), [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-300)
    assert_close(kn.logsumexp(x, dims=1), [[1e4], [1e4 + np.log(2)]], rtol=1e-15)
    assert_close(kn.logsoftmax(x, dims=1), [[0, -1e4, -2e4], [-np.log(2), -np.log(2), -1e4 - np.log(2)]],
                 rtol=1e-15)
    g = kn.grad(lambda x: kn.sum(kn.logsumexp(x, dims=1)))(x)
    assert np.all(np.isfinite(g))
    assert_close(g, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-300)  # the gradient of logsumexp is softmax


def test_softmax_family_does_not_overflow_in_float32():
    x = np.array([1e4, 0.0, -1e4], np.float32)
    assert np.all(np.isfinite(kn.softmax(x)))
    assert np.isfinite(kn.logsumexp(x)) and kn.logsumexp(x) == np.float32(1e4)


def test_nll_does_not_overflow_at_1e4():
    scores, labels = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]]), np.array([0, 1])
    assert_close(kn.nll(scores, labels), (0.0 + 1e4) / 2, rtol=1e-15)
    g = kn.grad(lambda s: kn.nll(s, labels))(scores)
    assert np.all(np.isfinite(g))
    assert_close(g, [[0, 0, 0], [0.5, -0.5, 0]], atol=1e-300)


def test_sigm_saturates_without_overflow():
    with np.errstate(over="raise"):
        y = kn.sigm(np.array([-1000.0, 1000.0]))
        g = kn.grad(lambda x: kn.sum(kn.sigm(x)))(np.array([-1000.0, 1000.0]))
    assert_close(y, [0.0, 1.0], atol=0)
    assert np.all(np.isfinite(g))


# ---------------------------------------------------------------- shape errors name the caller

_X = kn.Param(np.ones((3, 4)))
SHAPE_ERRORS = {  # each on its own line: the error must name that line
    "broadcast": lambda: _X + np.ones(5),
    "matmul_inner_dimension": lambda: _X @ np.ones((5, 2)),
    "reshape_size": lambda: kn.reshape(_X, (5, -1)),
    "dims_out_of_range": lambda: kn.sum(_X, dims=2),
    "nll_labels": lambda: kn.nll(_X, np.zeros(4, dtype=np.int64)),
    "recorded_broadcast": lambda: kn.diff(lambda: kn.sum(_X * np.ones((2, 4)))),
    "recorded_matmul": lambda: kn.diff(lambda: kn.sum(_X @ np.ones(3))),
}


@pytest.mark.parametrize("name", SHAPE_ERRORS)
def test_shape_error_is_a_value_error_naming_the_calling_line(name):
    fn = SHAPE_ERRORS[name]
    with pytest.raises(ValueError) as info:
        fn()
    assert isinstance(info.value, kn.ShapeError)
    message = str(info.value)
    assert "test_ops.py" in message
    assert f"line {fn.__code__.co_firstlineno}" in message
