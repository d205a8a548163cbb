"""The eager path's shortcuts (issue 18) give what the general path gives.

- bind evaluates plain arrays at once and hands Params and taped values to the tape's
  dispatcher (autograd._dispatch) instead of asking every trace on the stack;
- evaluate remembers shape checks that passed, keyed by shapes, dtypes and typed params;
- a recorded op on numpy values is evaluated directly, below the tape's level;
- nll computes its label side (one-hot, count) with numpy for numpy labels;
- eager pooling runs the CPU routines of compiled code for float32/float64.
"""
import numpy as np
import pytest

import knetc as kn
from knetc import autograd, context
from knetc.errors import ShapeError
from knetc.ops import core, nn, pooling
from knetc.ops.elementwise import polygamma


# ----------------------------------------------------------------------------- shape checks

def test_a_failing_shape_check_raises_every_time():
    a, b = np.ones((2, 3)), np.ones((4,))
    for _ in range(3):
        with pytest.raises(ShapeError, match="do not broadcast"):
            kn.add(a, b)
    kn.add(a, np.ones(3))  # passes, and is remembered
    with pytest.raises(ShapeError, match="do not broadcast"):
        kn.add(a, b)


def test_checks_are_keyed_by_param_types():
    x = np.array([0.5, 1.5])
    polygamma(x, n=1)  # n=1 passes ...
    with pytest.raises(ShapeError, match="order n"):
        polygamma(x, n=True)  # ... True == 1 as a dict key, but the rule refuses a bool
    with pytest.raises(ShapeError, match="order n"):
        polygamma(x, n=1.0)


def test_numpy_scalars_and_zero_d_arrays_are_told_apart():
    # np.float64 is a Python float but typed as numpy types it (NEP 50), as a 0-d float64 array; a Python float is weak
    assert core.aval_of(np.float64(2.0)) == core.aval_of(np.array(2.0)) == core.Aval((), np.dtype(np.float64))
    assert core.rule_key((np.float64(2.0),), {}) != core.rule_key((2.0,), {})
    assert core.aval_of(np.float32(2.0)) == core.Aval((), np.dtype(np.float32))
    f32 = np.ones(3, np.float32)
    for other in (np.float64(2.0), np.array(2.0), np.float32(2.0), 2.0):
        assert kn.add(f32, other).dtype == np.add(f32, other).dtype


def test_rule_key():
    x = np.ones((2, 3), np.float32)
    assert core.rule_key((x, 1), {}) == core.rule_key((np.zeros((2, 3), np.float32), 2.5), {})
    assert core.rule_key((x,), {"axes": (1,)}) != core.rule_key((x,), {"axes": (True,)})
    assert core.rule_key((x,), {"shape": [2, 3]}) is None  # a list may change: not remembered
    assert core.rule_key((x,), {"f": object()}) is None
    assert core.rule_key(([1, 2],), {}) is None


def test_remembered_checks_are_bounded():
    op = core.OPS["neg"]
    for n in range(core._CHECKED_MAX + 10):
        op(np.ones(n + 1))
    assert len(op.checked) <= core._CHECKED_MAX


# ----------------------------------------------------------------------------- dtypes

def test_python_numbers_promote_as_numpy():
    assert kn.add(np.array([True, False]), 1).dtype == np.int64
    assert kn.mul(np.arange(3), 2.5).dtype == np.float64
    assert kn.add(np.arange(3, dtype=np.int32), 1).dtype == np.int32
    np.testing.assert_array_equal(kn.mul(np.arange(3), 2.5), np.arange(3) * 2.5)


def test_float32_stays_float32():
    w = kn.Param(np.ones((2, 3), np.float32))
    x64 = np.full((2, 3), 2.0)
    g = kn.grad(kn.diff(lambda: kn.sum(w * x64 + 1.5 * w + kn.exp(w) / 2)), w)
    assert g.dtype == np.float32
    y = kn.diff(lambda: kn.sum(kn.relu(w) * 3))
    assert kn.grad(y, w).dtype == np.float32 and kn.value(y).dtype == np.float32


def test_integer_and_bool_inputs():
    w = kn.Param(np.array([1.0, -2.0, 3.0]))
    xi, xb = np.array([1, 2, 3]), np.array([True, False, True])
    g = kn.grad(kn.diff(lambda: kn.sum(w * xi + w * xb + (xi > 1) * w)), w)
    np.testing.assert_array_equal(g, xi + xb + (xi > 1))
    pi = kn.Param(np.arange(3))  # an integer Param: its gradient is not truncated
    np.testing.assert_array_equal(kn.grad(kn.diff(lambda: kn.sum(pi * 2.5)), pi), [2.5, 2.5, 2.5])


def test_comparisons_keep_the_inputs_float_type():
    a = np.array([1.0, 2.0, 3.0], np.float32)
    assert kn.le(a, 2).dtype == np.float32 and kn.eq(a, a).dtype == np.float32
    assert kn.gt(a, np.array([2.0])).dtype == np.float64  # promoted as numpy
    assert kn.ne(np.arange(3), 1).dtype == bool  # integers give bools, as numpy
    np.testing.assert_array_equal(kn.lt(np.arange(3), 1.5), [1, 1, 0])


# ----------------------------------------------------------------------------- gradients

def test_broadcast_gradients_are_summed_back():
    w = kn.Param(np.array([[1.0], [2.0]]))  # (2, 1) against (2, 3)
    b = kn.Param(np.array([0.5, 0.25, 1.0]))  # (3,)
    x = np.arange(6.0).reshape(2, 3)
    y = kn.diff(lambda: kn.sum(w * x + b))
    np.testing.assert_array_equal(kn.grad(y, w), x.sum(1, keepdims=True))
    np.testing.assert_array_equal(kn.grad(y, b), [2.0, 2.0, 2.0])


def test_gradients_do_not_alias_the_users_arrays():
    x = np.arange(6.0).reshape(2, 3)
    c = np.arange(6.0).reshape(2, 3) + 1
    for f in (lambda w: kn.sum(w * c), lambda w: kn.sum(w + c), lambda w: kn.sum(kn.reshape(w * 1, (3, 2))),
              lambda w: kn.sum(w), lambda w: kn.sum(w * 2) + kn.sum(w)):
        g = kn.grad(f)(x)
        assert not np.shares_memory(g, x) and not np.shares_memory(g, c)
        before = (x.copy(), c.copy())
        g += 1  # changing a gradient changes nothing of the user's
        np.testing.assert_array_equal(x, before[0])
        np.testing.assert_array_equal(c, before[1])


def test_a_value_used_twice_accumulates():
    u = kn.Param(np.array([1.0, 2.0]))
    g = kn.grad(kn.diff(lambda: kn.sum(u * u) + kn.sum(u)), u)
    np.testing.assert_array_equal(g, [3.0, 5.0])
    assert kn.value(u).tolist() == [1.0, 2.0]


def test_second_order_through_the_dispatcher():
    z = kn.Param(np.array([1.0, 2.0, 3.0]))
    y = kn.diff(lambda: kn.sum(kn.grad(kn.diff(lambda: kn.sum(z * z * z)), z)))
    np.testing.assert_array_equal(kn.grad(y, z), 6 * z.value)


def test_values_of_finished_tapes_and_untaped_params_are_constants():
    w = kn.Param(np.array([1.0, 2.0]))
    old = kn.diff(lambda: w * 3)  # finished: a constant from now on
    assert isinstance(w * 2, np.ndarray)  # no tape: a Param is its value
    y = kn.diff(lambda: kn.sum(old * w))
    np.testing.assert_array_equal(kn.grad(y, w), [3.0, 6.0])
    assert isinstance(kn.sum(old), np.ndarray) or np.isscalar(kn.sum(old))


def test_hidden_tapes_do_not_record():
    w = kn.Param(np.array([1.0, 2.0]))

    def f():
        with context.without(autograd.Tape):
            c = w * 5  # not recorded: a constant
        return kn.sum(c * w)
    np.testing.assert_array_equal(kn.grad(kn.diff(f), w), [5.0, 10.0])


def test_a_primitive_body_is_not_recorded_on_the_tape():
    p = kn.Param(np.array([2.0]))

    @kn.primitive(lambda dy, y, a: dy * 10)
    def scaled(a):
        return a * kn.value(p) + p  # p inside the body: below the tape's level

    y = kn.diff(lambda: kn.sum(scaled(p)))
    np.testing.assert_array_equal(kn.grad(y, p), [10.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fused_relu_gradient_is_the_rules(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 6)).astype(dtype)
    x[0, :4] = [np.nan, 0.0, -0.0, np.inf]
    dy = rng.standard_normal((20, 6)).astype(dtype)
    dy[1, :3] = [np.inf, -np.inf, np.nan]
    dy[2] = -1.0  # -1 * 0 is -0: the sign of zero is kept too
    y = kn.relu(x)
    with np.errstate(invalid="ignore"):
        fused, rule = kn.relu.eager_grad(dy, y, x), kn.relu.grads[0](dy, y, x)
    assert fused.dtype == rule.dtype == dtype
    np.testing.assert_array_equal(fused, rule)
    np.testing.assert_array_equal(np.signbit(fused), np.signbit(rule))
    assert kn.relu.eager_grad(dy.astype(np.float16), y, x) is None  # mixed dtypes: the rule


def test_relu_gradients_of_higher_order_use_the_rules():
    w = kn.Param(np.array([-1.0, 0.5, 2.0]))
    inner = lambda: kn.sum(kn.relu(w) * w)  # noqa: E731  d/dw = relu'(w) w + relu(w)
    g1 = kn.grad(kn.diff(inner), w)
    np.testing.assert_array_equal(g1, [0.0, 1.0, 4.0])
    y = kn.diff(lambda: kn.sum(kn.grad(kn.diff(inner), w)))  # the inner backward is recorded
    np.testing.assert_array_equal(kn.grad(y, w), [0.0, 2.0, 2.0])


# ----------------------------------------------------------------------------- nll

def _nll(*args, **kwargs):
    return kn.nll(*args, **kwargs)  # (one line: errors name it)


def _general_nll(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(nn, "_plain_labels", lambda *a: None)
        return _nll(*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims", [-1, 0])
def test_nll_label_side_equals_the_ops(monkeypatch, dtype, dims):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((7, 4)).astype(dtype)
    labels = np.array([0, 3, -1, 2, 1, 1, -1])
    if dims == 0:
        scores = scores.T.copy()
    for average in (True, False):
        fast, slow = kn.nll(scores, labels, dims=dims, average=average), \
            _general_nll(monkeypatch, scores, labels, dims=dims, average=average)
        for a, b in zip(np.atleast_1d(fast) if average else fast, np.atleast_1d(slow) if average else slow):
            assert np.asarray(a).dtype == np.asarray(b).dtype and type(a) is type(b)
            np.testing.assert_array_equal(a, b)
    g = kn.grad(lambda s: kn.nll(s, labels, dims=dims))(scores)
    with monkeypatch.context() as m:
        m.setattr(nn, "_plain_labels", lambda *a: None)
        g_slow = kn.grad(lambda s: kn.nll(s, labels, dims=dims))(scores)
    assert g.dtype == g_slow.dtype == dtype
    np.testing.assert_array_equal(g, g_slow)


def test_nll_labels_of_shape_with_the_class_axis(monkeypatch):
    scores, labels = np.arange(12.0).reshape(3, 4) / 7, np.array([[1], [0], [3]])
    np.testing.assert_array_equal(kn.nll(scores, labels), _general_nll(monkeypatch, scores, labels))


def test_nll_bad_labels_raise_the_same(monkeypatch):
    scores = np.zeros((2, 3))
    for labels in (np.array([0, 3]), np.array([-2, 0]), np.array([0.0, 1.0]), np.array([0, 1, 2])):
        with pytest.raises((ValueError, ShapeError)) as fast:
            _nll(scores, labels)
        with pytest.raises(type(fast.value)) as slow:
            _general_nll(monkeypatch, scores, labels)
        assert str(fast.value) == str(slow.value)


def test_nll_compiled_keeps_the_ops():
    @kn.compile(target="cpu")
    def loss(s, y):
        return kn.nll(s, y)
    s, y = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32), np.array([0, 1, 2, -1, 1])
    np.testing.assert_allclose(loss(s, y), kn.nll(s, y), rtol=1e-6)
    np.testing.assert_allclose(kn.grad(loss)(s, y), kn.grad(loss.fn)(s, y), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- pooling

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window,padding,stride,mode", [(2, 0, None, 0), (3, 1, 2, 0), (2, 0, None, 1),
                                                        (3, 1, 2, 2), (2, 1, 1, 3)])
def test_eager_pooling_routines_match_the_references(dtype, window, padding, stride, mode):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    x[0, 0, 1, 1] = np.nan
    params = dict(zip(("window", "padding", "stride"), pooling._keywords("pool", core.aval_of(x), window, padding,
                                                                           stride, mode)))
    params.update(mode=mode, nan_opt=1, alpha=0.5)
    y = pooling._pool_eager(x, **params)
    y_ref = pooling._pool_impl(x, **params)
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-7)
    dy = rng.standard_normal(y.shape).astype(dtype)
    if mode in (0, 3):
        np.testing.assert_allclose(pooling._grad_max_eager(x, y, dy, **params),
                                   pooling._grad_max_impl(x, y, dy, **params), rtol=1e-6)
        g = rng.standard_normal(x.shape).astype(dtype)
        np.testing.assert_allclose(pooling._gather_eager(x, y, g, **params),
                                   pooling._gather_impl(x, y, g, **params), rtol=1e-6)
    else:
        p = {k: v for k, v in params.items() if k != "nan_opt"}
        np.testing.assert_allclose(pooling._grad_avg_eager(dy, x.shape, **p),
                                   pooling._grad_avg_impl(dy, x.shape, **p), rtol=1e-6, atol=1e-7)


def test_eager_pooling_other_dtypes_use_the_references():
    x = np.arange(32, dtype=np.float16).reshape(1, 2, 4, 4)
    np.testing.assert_array_equal(kn.pool(x), pooling._pool_impl(x, (1, 2, 2), (0, 0, 0), (1, 2, 2), 0, 1, 1.0))
    assert kn.pool(x).dtype == np.float16
    # mixed dtypes (a float64 dy for a float32 x) run the reference too
    x32 = np.random.default_rng(1).standard_normal((1, 1, 4, 4)).astype(np.float32)
    y = kn.pool(x32)
    dy = np.ones(y.shape)
    params = dict(window=(1, 2, 2), padding=(0, 0, 0), stride=(1, 2, 2), mode=0, nan_opt=1, alpha=1.0)
    np.testing.assert_array_equal(pooling._grad_max_eager(x32, y, dy, **params),
                                  pooling._grad_max_impl(x32, y, dy, **params))


def test_eager_pooling_gradients():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 6, 6))
    for mode in (0, 1):
        g = kn.grad(lambda x: kn.sum(kn.pool(x, mode=mode) ** 2))(x)
        eps, i = 1e-6, (1, 0, 3, 2)
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        numeric = (np.sum(kn.pool(xp, mode=mode) ** 2) - np.sum(kn.pool(xm, mode=mode) ** 2)) / (2 * eps)
        assert abs(g[i] - numeric) < 1e-5
