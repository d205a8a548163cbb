"""No silent wrong answers (eager AD): control flow on recorded values, the gradient of a
result that is its own input, numpy turning recorded values into plain arrays, ties in
max/min, power at 0, std of one value, numpy's dot, and float32 logsoftmax/nll at large
scores. Every case is checked against float64 numpy, numerical gradients and PyTorch, and
the changed gradient rules also compiled (`kn.compile(target="cpu")`)."""
import operator
import os
import warnings

import re

import numpy as np
import pytest

import knetc as kn
from knetc.ir.core import Builder, Var
from knetc.ops.core import Aval
from numgrad import assert_close, numgrad


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def torch_grad(f, *xs):
    """Gradients of the scalar f(*tensors) by PyTorch, in float64, for each argument."""
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in xs]
    f(torch, *ts).backward()
    return [t.grad.numpy() for t in ts]


# ----------------------------------------------------------------------------- 1. control flow

def branchy(a):
    return a * a if a > 0 else a ** 3


def branchy_ref(a):  # d/da: 2a or 3a^2
    return np.where(a > 0, 2 * a, 3 * a * a)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
@pytest.mark.parametrize("a", [-1.5, 0.7])
def test_if_on_a_recorded_value_uses_its_value(shape, a):
    x = np.full(shape, a)
    g = kn.grad(lambda v: kn.sum(branchy(v)))(x)
    assert_close(np.asarray(g), branchy_ref(x))
    assert_close(np.asarray(g), numgrad(lambda v: np.sum(branchy(v)), x), rtol=1e-5)
    p = kn.Param(x.copy())  # the same through diff, with a Param
    assert_close(np.asarray(kn.grad(kn.diff(lambda: kn.sum(branchy(p))), p)), branchy_ref(x))


def halve_until_small(a):
    steps = 0
    while a > 1:  # a condition on a recorded value: must stop
        a = a / 2
        steps += 1
    return a * steps


@pytest.mark.parametrize("a", [10.0, 3.0, 0.5])
def test_while_on_a_recorded_value_stops_and_differentiates(a):
    for x in (np.array(a), np.array([a])):
        g = kn.grad(halve_until_small)(x) if x.ndim == 0 else kn.grad(lambda v: kn.sum(halve_until_small(v)))(x)
        expected = numgrad(lambda v: np.sum(halve_until_small(v)), x)
        assert_close(np.asarray(g), expected, rtol=1e-6)


def logic(a):
    if a > 0 and a < 1:
        return a * a
    if not a > -1 or a > 5:
        return -a
    return a ** 3


@pytest.mark.parametrize("a", [0.5, -2.0, 6.0, 2.0])
def test_and_or_not_on_recorded_values(a):
    g = kn.grad(logic)(np.array(a))
    assert_close(np.asarray(g), numgrad(logic, np.array(a)), rtol=1e-6)


def test_truth_and_conversions_follow_numpy():
    cases = [np.array(0.0), np.array(-2.5), np.array([3.0]), np.array([[0.0]]), np.array([1.0, 2.0]),
             np.array(2), np.array([1]), np.zeros((0,))]
    for x in cases:
        for convert in (bool, float, int, operator.index):
            try:
                expected = convert(x)
            except Exception as error:  # the same kind of error as numpy's
                with pytest.raises(type(error)):
                    convert(kn.Param(x))
                with pytest.raises(type(error)):
                    kn.diff(lambda: convert(kn.Param(x) * 1))
                continue
            assert convert(kn.Param(x)) == expected and type(convert(kn.Param(x))) is type(expected)
            seen = []
            kn.diff(lambda: seen.append(convert(kn.Param(x) + 0)))  # a Tracked, on an active tape
            assert seen == [convert(x + 0)]


def test_truth_of_several_entries_is_numpys_error():
    with pytest.raises(ValueError, match="ambiguous"):
        kn.grad(lambda v: kn.sum(v) if v > 0 else -kn.sum(v))(np.array([1.0, -1.0]))


def test_truth_of_an_ir_value_is_a_compile_error():
    with Builder():
        v = Var(Aval((), np.dtype(np.float64)))
        with pytest.raises(kn.CompileError, match="condition depends on array data"):
            bool(v > 0)
        with pytest.raises(TypeError):
            float(v)  # unknown until the kernels run: not a number


# ----------------------------------------------------------------------------- 2. result = input

def test_gradient_of_the_identity_is_one():
    g = kn.grad(lambda a: a)(0.5)
    assert g == 1.0 and np.asarray(g).dtype == np.float64
    g = kn.grad(lambda a: a)(np.float32(2.0))
    assert g == 1.0 and np.asarray(g).dtype == np.float32  # the input's dtype
    p = kn.Param(np.array([1.5], dtype=np.float32))
    y = kn.diff(lambda: p)
    g = kn.grad(y, p)
    assert g.shape == (1,) and g.dtype == np.float32 and g[0] == 1.0
    np.testing.assert_array_equal(np.asarray(y), [1.5])
    q = kn.Param(normal((2, 3)))
    g = kn.grad(kn.diff(lambda: q[0, 0]), q)  # an entry picked from a Param: a recorded op, as before
    np.testing.assert_array_equal(g, np.eye(1, 6).reshape(2, 3))


def test_gradient_of_an_argument_picked_out_of_a_tuple():
    g = kn.grad(lambda t: t[0])((0.5, 2.0))
    assert g[0] == 1.0 and g[1] is None  # None: zero, as for any unused input
    gx, gy = kn.grad(lambda t: t[1])((np.array(0.5), np.array(2.0)))
    assert gx is None and gy == 1.0


def test_gcheck_of_a_one_entry_result_of_any_shape():
    p = kn.Param(np.array([0.3]))
    assert kn.gcheck(lambda: p)  # the Param itself, shape (1,)
    assert kn.gcheck(lambda: kn.sum(p * p, dims=0) * 2.0)
    assert kn.gradcheck(lambda w: w * w, np.array([[2.0]]))


def test_gradloss_of_the_identity_returns_the_value():
    g, loss = kn.gradloss(lambda a: a)(0.25)
    assert g == 1.0 and loss == 0.25 and not isinstance(loss, (kn.Param,))


def test_second_derivative_through_an_identity():
    # d/da (d/da a*a) = 2; d/da of the first derivative of the identity (1) is zero (None)
    assert kn.grad(kn.grad(lambda a: a * a))(3.0) == 2.0
    assert kn.grad(lambda a: a * kn.grad(lambda b: b)(a))(3.0) == 1.0


# ----------------------------------------------------------------------------- 3. numpy making plain arrays

HERE = os.path.basename(__file__)


@pytest.mark.parametrize("dropping", [
    lambda a: np.sum([1.0, a * a, 2.0]),
    lambda a: kn.sum(np.array([a * a, a])),
    lambda a: np.sum([x * x for x in a]),
    lambda a: np.mean([x * x for x in a]),
    lambda a: kn.sum(np.asarray(a) * a),
], ids=["sum-list", "array-list", "sum-comprehension", "mean-comprehension", "asarray-param"])
def test_numpy_arrays_from_recorded_values_are_refused(dropping):
    x = np.array([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="gradient would be lost") as error:
        kn.grad(dropping)(x)
    assert "kn.cat" in str(error.value) and HERE in str(error.value)  # what to do, and where


def _store_entry(a):
    h = np.zeros(3)
    h[0] = kn.sum(a * 2)  # numpy converts the value with float(): its gradient would be dropped
    return kn.sum(h * a)


def _store_entry_added(a):
    h = np.zeros(3)
    h[1] += a[0] * a[1]
    return kn.sum(h * a)


@pytest.mark.parametrize("dropping", [_store_entry, _store_entry_added])
def test_storing_a_recorded_value_into_a_numpy_entry_is_refused(dropping):
    # It gave the gradient of sum(h * a) with h constant: [6, 0, 0] for a = 1 (true: [8, 2, 2]).
    with pytest.raises(ValueError) as error:
        kn.grad(dropping)(np.ones(3))
    cause = str(error.value.__cause__ or error.value)  # (numpy raises its own, from knetc's)
    assert "would lose its" in cause and "kn.value(y)" in cause and HERE in cause


def test_a_number_taken_explicitly_inside_diff_is_a_number():
    # float(y) and kn.value(y) are the user's numbers (no gradient through them), as outside diff.
    def f(a):
        s = kn.sum(a * 2)
        h = np.zeros(3)
        h[0], h[1] = float(s), kn.value(s)
        return kn.sum(h * a) / float(s)
    np.testing.assert_allclose(kn.grad(f)(np.ones(3)), [1.0, 1.0, 0.0])
    w = kn.Param(np.ones(3))
    y = kn.diff(lambda: kn.sum(w))
    h = np.zeros(2)
    h[0] = y  # after diff: its value
    assert h[0] == 3.0


def test_stack_and_concatenate_of_recorded_values_are_recorded():
    x = normal((3,), seed=1)
    cases = [
        (lambda a: np.sum(np.stack([x * x for x in a]) * np.arange(3.0)),
         lambda a: np.sum(np.stack([x * x for x in a]) * np.arange(3.0))),
        (lambda a: np.mean(np.stack([a, a * a], axis=1) ** 2),
         lambda a: np.mean(np.stack([a, a * a], axis=1) ** 2)),
        (lambda a: np.sum(np.concatenate([a, a[:2] * 3]) ** 2),
         lambda a: np.sum(np.concatenate([a, a[:2] * 3]) ** 2)),
    ]
    for f, ref in cases:
        assert_close(kn.grad(f)(x), numgrad(ref, x), rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        kn.grad(lambda a: np.sum(np.stack([a, a[:2]])))(x)


def test_plain_arrays_outside_recording_still_convert():
    p = kn.Param(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(p), [1.0, 2.0])  # no tape
    y = kn.diff(lambda: p * p)
    np.testing.assert_array_equal(np.asarray(y), [1.0, 4.0])  # a finished tape
    np.testing.assert_array_equal(np.array([p, p]), [[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_array_equal(kn.diff(lambda: kn.sum(p * kn.value(p))), 5.0)  # the value as a constant


# ----------------------------------------------------------------------------- 4. ties, power, std, dot

def tied():
    # ties along both axes, and a row without one
    return np.array([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, 2.0, 0.0], [0.5, -1.0, 4.0, 1.0]])


REDUCTION_TIES = [  # (knetc, torch): a weighted sum of the reduction, so each slot differs
    (lambda a: kn.sum(kn.maximum(a, dims=1) * np.array([[1.0], [2.0], [3.0]])),
     lambda t, a: (t.amax(a, dim=1, keepdim=True) * t.tensor([[1.0], [2.0], [3.0]], dtype=t.float64)).sum()),
    (lambda a: kn.sum(kn.minimum(a, dims=0) * np.arange(1.0, 5.0)),
     lambda t, a: (t.amin(a, dim=0, keepdim=True) * t.arange(1.0, 5.0, dtype=t.float64)).sum()),
    (lambda a: kn.maximum(a), lambda t, a: t.amax(a)),
    (lambda a: np.max(a), lambda t, a: t.amax(a)),
    (lambda a: np.sum(np.min(a, axis=1) ** 2), lambda t, a: (t.amin(a, dim=1) ** 2).sum()),
]


@pytest.mark.parametrize("case", range(len(REDUCTION_TIES)))
def test_reduction_ties_share_the_gradient_as_torch(case):
    f, tf = REDUCTION_TIES[case]
    x = tied()
    g = kn.grad(f)(x)
    assert_close(g, torch_grad(tf, x)[0], rtol=1e-12)


def test_elementwise_max_min_ties_split_the_gradient_as_torch():
    a = np.array([1.0, 2.0, 3.0, -1.0, 0.0])
    b = np.array([1.0, 5.0, 3.0, -2.0, 0.0])
    w = np.arange(1.0, 6.0)
    for np_fn, torch_name in ((np.maximum, "maximum"), (np.minimum, "minimum")):
        ga, gb = kn.grad(lambda t: kn.sum(np_fn(t[0], t[1]) * w))((a, b))
        ta, tb = torch_grad(lambda t, x, y: (getattr(t, torch_name)(x, y) * t.tensor(w)).sum(), a, b)
        assert_close(ga, ta, rtol=1e-12)
        assert_close(gb, tb, rtol=1e-12)
        assert_close(ga + gb, w)  # the shares add up to the upstream gradient
    # against a broadcast constant: the array entry keeps half of a tie, as in torch
    x = np.array([1.0, 2.0, 3.0])
    g = kn.grad(lambda t: kn.sum(np.maximum(t, 2.0)))(x)
    assert_close(g, torch_grad(lambda t, v: t.maximum(v, t.tensor(2.0, dtype=t.float64)).sum(), x)[0])


def test_max_min_gradients_without_ties_pass_gcheck():
    x = kn.Param(normal((3, 4), seed=2))
    y = normal((3, 4), seed=3)
    assert kn.gcheck(lambda: kn.sum(kn.maximum(x, dims=1) ** 2) + kn.sum(kn.minimum(x, dims=0) * 3.0))
    assert kn.gcheck(lambda: kn.sum(np.maximum(x, y) * y) + kn.sum(np.minimum(x, 0.1) ** 2))


def test_power_at_zero_base():
    base = np.array([0.0, 0.0, 0.0, 2.0, 0.5])
    exponent = np.array([2.0, 0.0, 0.5, 3.0, 1.5])
    ga, gb = kn.grad(lambda t: kn.sum(t[0] ** t[1]))((base, exponent))
    ta, tb = torch_grad(lambda t, x, y: (x ** y).sum(), base, exponent)
    assert_close(gb, tb, rtol=1e-12)  # d/dy 0 ** y is 0 (not NaN); elsewhere x**y log x
    assert_close(ga, ta, rtol=1e-12)  # d/dx x ** 0 is 0 at x = 0 too
    assert np.all(np.isfinite(gb)) and gb[0] == 0.0
    # a constant exponent 0: the gradient is 0 at 0 (torch agrees)
    x = np.array([0.0, 1.5])
    assert_close(kn.grad(lambda t: kn.sum(t ** 0))(x), torch_grad(lambda t, v: (v ** 0).sum(), x)[0])
    # away from zero the rules pass the numerical check
    p, q = kn.Param(np.abs(normal((3,), 4)) + 0.5), kn.Param(normal((3,), 5))
    assert kn.gcheck(lambda: kn.sum(p ** q) + kn.sum(2.0 ** q) + kn.sum(p ** 0))


def test_std_of_one_value_has_zero_gradient():
    x = normal((3, 1), seed=6)
    for f in (lambda a: kn.sum(np.std(a, axis=1)), lambda a: kn.sum(kn.std(a, dims=1, corrected=False)),
              lambda a: kn.sum(kn.std(a, dims=1, corrected=False) + kn.var(a, dims=1, corrected=False))):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no 0 * inf on the way
            g = kn.grad(f)(x)
        np.testing.assert_array_equal(g, np.zeros_like(x))
    np.testing.assert_array_equal(np.std(kn.Param(x), axis=1), np.std(x, axis=1))
    # all-equal entries: std 0, subgradient 0 as well
    np.testing.assert_array_equal(kn.grad(lambda a: kn.std(a))(np.full(4, 0.5)), np.zeros(4))
    # elsewhere std's gradient is unchanged: torch and numerical
    y = normal((3, 4), seed=7)
    assert_close(kn.grad(lambda a: kn.sum(np.std(a, axis=1)))(y),
                 torch_grad(lambda t, a: a.std(dim=1, correction=0).sum(), y)[0], rtol=1e-10)
    assert kn.gcheck(lambda a: kn.sum(kn.std(a, dims=0)) + np.std(a), kn.Param(y))


def test_variance_with_no_degrees_of_freedom_is_numpys_nan():
    x = np.array([[2.0], [3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.var(x, axis=1, ddof=1)
        got = np.var(kn.Param(x), axis=1, ddof=1)
        np.testing.assert_array_equal(np.asarray(got), expected)  # nan, as numpy (and Julia's var)
        assert np.all(np.isnan(np.asarray(kn.var(x, dims=1))))
        assert np.asarray(np.var(kn.Param(np.array([1.0, 2.0])), ddof=3)) == np.var([1.0, 2.0], ddof=3)  # inf


@pytest.mark.parametrize("sa, sb", [((), (3,)), ((2, 3), ()), ((), ()), ((3,), (3,)), ((2, 3), (3,)),
                                    ((4, 2, 3), (3, 5)), ((2, 3), (4, 3, 5)), ((2, 2, 3), (4, 3, 5)), ((3,), (2, 3, 4))])
def test_np_dot_follows_numpy(sa, sb):
    a, b = normal(sa, 8), normal(sb, 9)
    expected = np.dot(a, b)
    got = np.dot(kn.Param(a), kn.Param(b))
    assert np.shape(got) == expected.shape
    assert_close(np.asarray(got), expected, rtol=1e-12)
    w = normal(expected.shape, 10)
    ga, gb = kn.grad(lambda t: kn.sum(np.dot(t[0], t[1]) * w))((a, b))
    assert_close(np.asarray(ga), numgrad(lambda v: np.sum(np.dot(v, b) * w), a), rtol=1e-6, atol=1e-8)
    assert_close(np.asarray(gb), numgrad(lambda v: np.sum(np.dot(a, v) * w), b), rtol=1e-6, atol=1e-8)


def test_np_dot_misaligned_is_a_clear_error():
    with pytest.raises(kn.ShapeError, match="not aligned") as error:
        np.dot(kn.Param(np.ones((2, 3))), np.ones((4, 4, 5)))
    assert HERE in str(error.value)


# ----------------------------------------------------------------------------- 5. logsoftmax at large scores

def large_scores(seed=0):
    rng = np.random.default_rng(seed)
    return (1e4 + rng.standard_normal((64, 10))).astype(np.float32), rng.integers(0, 10, 64)


def logsoftmax_ref(x):
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def logsoftmax_rows(x):
    return kn.logsoftmax(x, dims=1)


def nll_mean(x, labels):
    return kn.nll(x, labels)


def softmax_rows(x):
    return kn.softmax(x, dims=1)


def lse_total(x):
    return kn.sum(kn.logsumexp(x, dims=1))


def test_float32_logsoftmax_and_nll_at_large_scores():
    torch = pytest.importorskip("torch")
    x, labels = large_scores()
    ref = logsoftmax_ref(x)
    nll_ref = -ref[np.arange(len(labels)), labels].mean()
    torch_error = np.abs(torch.log_softmax(torch.tensor(x), dim=1).numpy() - ref).max()
    compiled = {name: kn.compile(f, target="cpu") for name, f in
                (("lsm", logsoftmax_rows), ("nll", nll_mean), ("softmax", softmax_rows))}
    for lsm, nll, softmax in ((logsoftmax_rows, nll_mean, softmax_rows),
                              (compiled["lsm"], compiled["nll"], compiled["softmax"])):
        out = lsm(x)
        assert out.dtype == np.float32
        assert np.abs(out - ref).max() <= max(2e-5, torch_error)
        assert abs(float(nll(x, labels)) - nll_ref) <= 2e-5
        assert np.abs(softmax(x) - np.exp(ref)).max() <= 2e-6


def test_float32_logsoftmax_gradients_at_large_scores():
    x, labels = large_scores(1)
    ref = logsoftmax_ref(x)
    onehot = np.eye(10)[labels]
    nll_grad = (np.exp(ref) - onehot) / len(labels)  # d mean nll / d scores
    for grad in (kn.grad(nll_mean), kn.grad(kn.compile(nll_mean, target="cpu"))):
        assert np.abs(grad(x, labels) - nll_grad).max() <= 1e-6
    for grad in (kn.grad(lse_total), kn.grad(kn.compile(lse_total, target="cpu"))):
        assert np.abs(grad(x) - np.exp(ref)).max() <= 2e-6  # softmax, not exp(x - 1e4...)
    assert kn.gcheck(lambda a: kn.sum(kn.logsoftmax(a, dims=1) * np.arange(4.0)) + kn.logsumexp(a),
                     kn.Param(normal((3, 4), 11) * 3))


# ----------------------------------------------------------------------------- compiled rules = eager rules

def tie_losses(x, y):
    return (kn.sum(kn.maximum(x, dims=1) * 2.0) + kn.sum(kn.minimum(x, dims=0))
            + kn.sum(np.maximum(x, y) * 3.0) + kn.sum(np.minimum(x, y)))


def power_losses(x, y):
    return kn.sum(x ** y) + kn.sum(x ** 0)


def std_losses(x, y):
    return kn.sum(np.std(x[:, :1], axis=1)) + kn.sum(kn.std(y, dims=1, corrected=False)) + kn.sum(np.std(y, axis=0))


@pytest.mark.parametrize("loss, x, y", [
    (tie_losses, tied(), np.where(normal((3, 4), 12) > 0, tied(), normal((3, 4), 13))),
    (power_losses, np.array([[0.0, 0.0, 2.0], [0.0, 1.5, 0.5]]), np.array([[2.0, 0.0, 3.0], [1.0, 1.0, 2.0]])),
    (std_losses, normal((3, 2), 14), np.array([[1.0], [2.0], [-3.0]])),
])
def test_changed_rules_compiled_equal_eager(loss, x, y):
    eager = kn.grad(loss)(x, y)
    compiled = kn.grad(kn.compile(loss, target="cpu"))(x, y)
    assert np.all(np.isfinite(eager))
    assert_close(compiled, eager, rtol=1e-12, atol=1e-14)
    for argnum, other in ((0, y), (1, x)):
        e = kn.grad(loss, argnum=argnum)(x, y)
        c = kn.grad(kn.compile(loss, target="cpu"), argnum=argnum)(x, y)
        if e is None:
            assert c is None or not np.any(c)
        else:
            assert_close(c, e, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- 2. hardening pass: norms,
# activations at inf/NaN, NaN extremes, gradient dtypes, more numpy functions on Params

def torch_grad_dtype_kept(f, *xs):
    """PyTorch's gradients (float64) of the scalar f(torch, *tensors), None-free."""
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in xs]
    f(torch, *ts).backward()
    return [np.zeros(t.shape) if t.grad is None else t.grad.numpy() for t in ts]


def norms(x):
    return kn.norm(x) + kn.norm(x, 3) + kn.norm(x, 0.5) + kn.norm(x, 1) + np.linalg.norm(x)


def norms_ref(t, x):
    v = t.linalg.vector_norm
    return v(x) + v(x, 3) + v(x, 0.5) + v(x, 1) + v(x)


@pytest.mark.parametrize("x", [np.zeros(4), np.array([0.0, 1.5, -2.0, 0.0]), np.zeros((2, 3))])
def test_norms_at_zero_entries_have_torchs_zero_subgradient(x):
    expected, = torch_grad_dtype_kept(norms_ref, x)
    for grad in (kn.grad(norms), kn.grad(kn.compile(norms, target="cpu"))):
        g = grad(x)
        assert np.all(np.isfinite(g))
        assert_close(g, expected, rtol=1e-10, atol=1e-12)
    y = x + np.linspace(0.3, 1.1, x.size).reshape(x.shape)  # away from zero: numerical gradients
    assert_close(kn.grad(norms)(y), numgrad(lambda a: float(norms(a)), y), rtol=1e-5, atol=1e-6)


def activations(x):
    return kn.sum(kn.elu(x) * 1.5) + kn.sum(kn.selu(x) * 0.5) + kn.sum(kn.relu(x) * 2.0)


def activations_ref(t, x):
    f = __import__("torch").nn.functional
    return (f.elu(x) * 1.5).sum() + (f.selu(x) * 0.5).sum() + (f.relu(x) * 2.0).sum()


def test_activation_gradients_at_infinities_and_nan_follow_torch():
    x = np.array([-np.inf, -1e4, -1.0, -1e-30, 0.0, 1e-30, 2.0, 1e4, np.inf, np.nan])
    expected, = torch_grad_dtype_kept(activations_ref, x)
    # at exactly 0 selu's slope is Knet's lambda (seluback: y >= 0), PyTorch's lambda * alpha
    expected[x == 0] += 0.5 * (1.0507009873554805 - 1.0507009873554805 * 1.6732632423543778)
    for grad in (kn.grad(activations), kn.grad(kn.compile(activations, target="cpu"))):
        assert_close(grad(x), expected, rtol=1e-12, atol=1e-14)


def nan_extremes(x):
    return kn.sum(kn.maximum(x, dims=1) * 2.0) + kn.sum(np.min(x, axis=1)) + kn.maximum(x[1])


def nan_extremes_ref(t, x):
    return (x.amax(dim=1, keepdim=True) * 2.0).sum() + x.amin(dim=1).sum() + x[1].amax()


def test_a_nan_extreme_gives_nan_gradients_as_torch():
    x = np.array([[1.0, np.nan, 2.0], [3.0, 3.0, 1.0]])
    expected, = torch_grad_dtype_kept(nan_extremes_ref, x)
    g = kn.grad(nan_extremes)(x)
    assert_close(g, expected, rtol=1e-12, atol=1e-14)
    assert np.all(np.isnan(g[0])) and np.all(np.isfinite(g[1]))
    y = np.array([[1.0, 0.5, 2.0], [3.0, 2.5, 1.0]])  # no NaN, no ties: numerical gradients
    assert_close(kn.grad(nan_extremes)(y), numgrad(lambda a: float(nan_extremes(a)), y), rtol=1e-6, atol=1e-8)


def mixed_dtypes(a, b):
    return (kn.sum(a * b) + kn.sum(a @ b.T) + kn.sum(np.concatenate([a, b])) + kn.sum(kn.max(a, b))
            + kn.sum(a * np.float64(2.5)) + kn.sum(b / a))


def mixed_dtypes_ref(t, a, b):
    return (a * b).sum() + (a @ b.T).sum() + t.cat([a, b]).sum() + t.maximum(a, b).sum() + (a * 2.5).sum() + (b / a).sum()


def test_gradients_keep_each_inputs_float_dtype():
    a = (normal((2, 3), 20) + 3).astype(np.float32)
    b = normal((2, 3), 21)
    assert np.asarray(mixed_dtypes(a, b)).dtype == np.float64  # the value follows numpy's promotion
    ga_ref, gb_ref = torch_grad_dtype_kept(mixed_dtypes_ref, a, b)
    for grad in (kn.grad, lambda f, argnum=0: kn.grad(kn.compile(f, target="cpu"), argnum=argnum)):
        ga, gb = grad(mixed_dtypes, argnum=0)(a, b), grad(mixed_dtypes, argnum=1)(a, b)
        assert ga.dtype == np.float32 and gb.dtype == np.float64  # as torch's .grad: the input's dtype
        assert_close(ga, ga_ref.astype(np.float32), rtol=1e-5, atol=1e-5)
        assert_close(gb, gb_ref, rtol=1e-6, atol=1e-6)
    # second derivatives through the cast
    h = kn.grad(lambda x: kn.sum(kn.grad(lambda y: kn.sum(y * y * b[0]))(x)))(a[0])
    assert h.dtype == np.float32
    assert_close(h, (2 * b[0]).astype(np.float32), rtol=1e-6)


def numpy_calls(a):
    return (kn.sum(np.where(a > 0, a * a, 0.5 * a)) + kn.sum(np.clip(a, -1.0, 1.0) * 3.0)
            + kn.sum(np.squeeze(np.expand_dims(a, 0)) * np.reciprocal(a + 4.0)) + kn.sum(np.ravel(a) * 2.0)
            + kn.sum(np.swapaxes(a, 0, 1)[0]) + a.max() + a.min(axis=0).sum() + a.prod() + a.var(ddof=1)
            + a.std() + kn.sum(a.dot(a.T)) + kn.sum(a.clip(0.0, None)) + kn.sum(a.T.ravel() * np.arange(6.0))
            + kn.sum(a.transpose(1, 0)[0] * 2.0) + kn.sum(np.positive(np.fabs(a))))


def numpy_calls_ref(t, a):
    return ((t.where(a > 0, a * a, 0.5 * a)).sum() + (t.clamp(a, -1.0, 1.0) * 3.0).sum()
            + (a * t.reciprocal(a + 4.0)).sum() + (a.reshape(-1) * 2.0).sum()
            + a.T[0].sum() + a.max() + a.amin(dim=0).sum() + a.prod() + a.var(correction=1)
            + a.std(correction=0) + (a @ a.T).sum() + t.clamp(a, min=0.0).sum() + (a.T.reshape(-1) * t.arange(6.0)).sum()
            + (a.T[0] * 2.0).sum() + a.abs().sum())


def test_more_numpy_functions_and_methods_on_params_follow_torch():
    a = np.array([[-2.0, -0.5, 0.3], [0.7, 1.5, 3.0]])
    value = numpy_calls(a)
    torch = pytest.importorskip("torch")
    assert_close(value, numpy_calls_ref(torch, torch.tensor(a)).numpy(), rtol=1e-12)
    expected, = torch_grad_dtype_kept(numpy_calls_ref, a)
    assert_close(kn.grad(numpy_calls)(a), expected, rtol=1e-10, atol=1e-12)
    assert_close(kn.grad(kn.compile(numpy_calls, target="cpu"))(a), expected, rtol=1e-10, atol=1e-12)
    # the values and dtypes of plain numpy
    x32 = a.astype(np.float32)
    p = kn.Param(x32)
    assert np.where(x32 > 0, p, 2.5).dtype == np.float32
    assert_close(np.where(x32 > 0, p, 2.5), np.where(x32 > 0, x32, np.float32(2.5)))
    assert np.clip(p, 0, 1).dtype == np.float32 and np.reciprocal(p).dtype == np.float32
    assert np.squeeze(np.expand_dims(p, (0, 2))).shape == x32.shape
    assert np.expand_dims(p, -1).shape == x32.shape + (1,)


@pytest.mark.parametrize("call, name", [
    (lambda p: np.nextafter(p, 2.0), "np.nextafter"), (lambda p: np.gradient(p), "np.gradient"),
    (lambda p: np.add.reduceat(p, [0, 2]), "np.add.reduceat"), (lambda p: np.exp(p, where=True), r"np.exp(..., where=...)"),
    (lambda p: np.linalg.lstsq(p[:, None] * p + np.eye(3), p)[0], "np.linalg.lstsq"),
    (lambda p: np.exp(p, out=np.empty(3)), r"np.exp(..., out=...)"),
    (lambda p: np.sum(p, where=np.array([True, False, True])), r"np.sum on Params and recorded values takes np.sum(x, axis=None"),
])
def test_unsupported_numpy_calls_name_the_function(call, name):
    p = kn.Param(np.ones(3))
    with pytest.raises(TypeError, match=re.escape(name) + ".* (not supported on|not these arguments)"):
        kn.diff(lambda: kn.sum(call(p)))
    np.testing.assert_array_equal(call(p), call(np.ones(3)))  # nothing records: numpy's, on the value


def test_numpy_layout_orders_other_than_c_are_refused_not_ignored():
    p = kn.Param(np.arange(6.0).reshape(2, 3))
    for call in (lambda: p.flatten("F"), lambda: p.reshape(3, 2, order="F"), lambda: np.reshape(p, (3, 2), order="F")):
        with pytest.raises(NotImplementedError, match="only C order"):
            kn.diff(lambda: kn.sum(call()))
    assert p.flatten("C").shape == (6,) and np.reshape(p, (3, 2), order="C").shape == (3, 2)


def test_numpy_functions_methods_and_operators_act_on_a_param_outside_diff():
    a = np.arange(6.0).reshape(2, 3)
    p = kn.Param(a.copy())
    np.testing.assert_array_equal(np.vstack([p, p]), np.vstack([a, a]))
    np.testing.assert_array_equal(np.pad(p, 1), np.pad(a, 1))
    np.testing.assert_array_equal(np.round(p / 4), np.round(a / 4))
    assert p.astype(np.float32).dtype == np.float32
    c = p.copy()
    c[0, 0] = 99
    assert p.value[0, 0] == 0
    np.testing.assert_array_equal(p % 4, a % 4)
    np.testing.assert_array_equal(7 // (p + 1), 7 // (a + 1))
    np.testing.assert_array_equal(kn.grad(kn.diff(lambda: kn.sum(p % 2 + p // 2)), p), np.ones((2, 3)))
    g = kn.grad(lambda x: kn.sum(x.astype(np.float32) * 2.0))(np.ones(2))  # astype is recorded
    np.testing.assert_array_equal(g, [2.0, 2.0])


# ----------------------------------------------------------------------------- == and in-place on Params

def test_equality_on_params_and_recorded_values_is_elementwise():
    w = kn.Param(np.array([0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(w == 0, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(w != 0, [0.0, 1.0, 0.0])
    assert kn.sum(w == 0) == 2
    assert {w: 1}[w] == 1 and w in {w}  # still hashed by identity: Params stay dict keys

    def f(x):
        return kn.sum((x * 1.0 == 0) * 5.0 + x * x)

    x = np.array([0.0, 1.0, 0.0])
    g, loss = kn.gradloss(f)(x)
    assert float(loss) == 11.0  # numpy's value of the same expression
    np.testing.assert_array_equal(g, 2 * x)
    c = kn.compile(f, target="cpu")
    assert float(c(x)) == 11.0


def test_in_place_updates_of_a_param_change_its_value():
    w = kn.Param(np.ones(3, np.float32))
    same = w
    w -= 0.5 * np.ones(3)
    assert w is same and w.value.dtype == np.float32
    np.testing.assert_array_equal(w.value, [0.5, 0.5, 0.5])
    w += 1
    w *= 2
    w /= 3
    np.testing.assert_allclose(w.value, [1.0, 1.0, 1.0])
    s = kn.Param(np.array(2.0))  # 0-d
    s -= 1
    assert isinstance(s, kn.Param) and float(s.value) == 1.0


def test_in_place_update_of_a_recorded_param_is_refused():
    w = kn.Param(np.ones(3))

    def f():
        nonlocal w
        y = kn.sum(w * w)
        w -= 1  # would make the recorded gradient wrong
        return y

    with pytest.raises(TypeError, match="in place while kn.diff records it"):
        kn.diff(f)
    np.testing.assert_array_equal(w.value, np.ones(3))


def test_seed_makes_dropout_masks_reproducible():
    x = np.ones(64)
    kn.seed_(3)
    a = kn.dropout(x, 0.5, drop=True)
    kn.seed_(3)
    b = kn.dropout(x, 0.5, drop=True)
    kn.seed_(4)
    c = kn.dropout(x, 0.5, drop=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lists_and_none_given_for_arrays_are_clear_type_errors():
    for call in (lambda: kn.sum([1.0, 2.0]), lambda: kn.relu((1.0, -1.0)),
                 lambda: kn.nll([[0.0, 1.0, 2.0]], np.array([0])), lambda: kn.sum(None)):  # (labels may be a list)
        with pytest.raises(TypeError, match="expected an array") as error:
            call()
        assert "test_eager_correctness.py" in str(error.value)  # points at the user's line


def test_grad_argnum_past_the_positional_arguments_is_a_clear_error():
    for gradient in (kn.grad(lambda a, b: kn.sum(a * b), argnum=2),
                     kn.grad(kn.compile(lambda_free_product, target="cpu"), argnum=2)):
        with pytest.raises(TypeError, match="argnum=2, but the function was called with 2 positional"):
            gradient(np.ones(2), np.ones(2))


def lambda_free_product(a, b):
    return kn.sum(a * b)


def test_params_are_found_in_slots():
    class Dense:
        __slots__ = ("w", "b", "name")

        def __init__(self):
            self.w, self.b, self.name = kn.param(2, 3), kn.param0(3), "dense"

    class Deeper(Dense):
        __slots__ = ("extra",)

    layer = Deeper()
    layer.extra = [kn.Param(np.ones(1))]
    found = kn.params(layer)
    assert len(found) == 3 and {id(p) for p in found} == {id(layer.w), id(layer.b), id(layer.extra[0])}


def test_an_in_place_ufunc_into_a_numpy_array_says_what_to_write():
    def f(a):
        h = np.zeros(3)
        h += a * 2  # numpy's in-place add into a plain array cannot hold the recorded value
        return kn.sum(h)
    with pytest.raises(TypeError, match=r"in-place np.add \(such as h \+= w\).*write h = h \+ w"):
        kn.grad(f)(np.ones(3))
