"""numpy's API on Params and recorded values (API.md: a Param acts like its value): masks
from integer comparisons, casts to integers, numpy's positional dtype, in-place operators,
argmax's keepdims. Each case once gave a silently different answer (audit 8)."""
import operator

import numpy as np
import pytest

import knetc as kn


def test_a_comparison_of_integers_is_a_mask_not_positions():
    x = np.array([5, -3, 7, -1])
    assert np.array_equal(kn.Param(x)[kn.Param(x) > 0], x[x > 0])
    assert np.array_equal(kn.cpucopy(kn.KnetArray(x)[kn.KnetArray(x) > 0]), x[x > 0])
    w, i = kn.Param(np.array([1.0, 5.0, 7.0, 2.0])), np.array([0, 2, 3, 1])
    y = kn.diff(lambda: kn.sum(w[kn.Param(i) > 1]))
    assert float(y) == 12.0 and np.array_equal(kn.grad(y, w), [0.0, 1.0, 1.0, 0.0])
    assert (kn.Param(x) > 0).dtype == bool and (kn.Param(x * 1.0) > 0).dtype == np.float64  # Knet's 1/0 for floats


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_a_float_cast_to_integers_has_no_gradient(dtype):
    """A step function, as floor: central differences give 0; the gradient is None."""
    x = np.array([-1.5, 0.5, 2.5])
    loss = lambda p: kn.sum(p.astype(dtype) * 1.0)
    assert kn.grad(loss)(kn.Param(x)) is None
    assert kn.grad(kn.compile(loss))(x) is None
    both = lambda p: kn.sum(p.astype(dtype) * 1.0 + p.astype(np.float32))  # the float cast keeps its gradient
    assert np.array_equal(kn.grad(both)(kn.Param(x)), np.ones(3))


def test_numpys_positional_dtype_is_the_dtype_not_keepdims():
    x = np.arange(6.0).reshape(2, 3)
    p = kn.Param(x)
    for got, want in [(np.sum(p, 0, np.float32), np.sum(x, 0, np.float32)), (p.sum(1, np.float32), x.sum(1, np.float32)),
                      (np.mean(p, 0, np.float32), np.mean(x, 0, np.float32)), (p.mean(1, np.float32), x.mean(1, np.float32)),
                      (np.var(p, 1, np.float32), np.var(x, 1, np.float32)), (p.std(0, None, None, 1), x.std(0, None, None, 1)),
                      (p.max(0, None, True), x.max(0, None, True)), (np.prod(p, 1, None, None, True), np.prod(x, 1, None, None, True))]:
        got = kn.value(got)
        assert got.shape == want.shape and got.dtype == want.dtype and np.allclose(got, want)
    y = kn.diff(lambda: kn.sum(p.sum(1, np.float32) * np.ones(2)))
    assert float(y) == 15.0 and np.array_equal(kn.grad(y, p), np.ones((2, 3)))
    with pytest.raises(TypeError, match="out="):
        p.sum(0, None, np.empty(3))


def test_argmax_with_keepdims_and_no_axis_keeps_every_axis():
    x = np.array([[1.0, 5.0], [7.0, 2.0]])
    for f in (np.argmax, np.argmin):
        got = f(kn.Param(x), keepdims=True)
        assert np.shape(kn.value(got)) == f(x, keepdims=True).shape == (1, 1) and kn.value(got).item() == f(x)


@pytest.mark.parametrize("update, other", [(operator.ipow, 2), (operator.imatmul, np.eye(2) * 3),
                                           (operator.ifloordiv, 2), (operator.imod, 3), (operator.imul, 2)])
def test_in_place_operators_update_the_param_everyone_holds(update, other):
    """`w **= 2` (update(w, 2)) as on the array a Param acts like: the model's Param changes."""
    model = {"w": kn.Param(np.array([[4.0, 5.0], [6.0, 7.0]]))}
    expected = np.array([[4.0, 5.0], [6.0, 7.0]])
    assert update(model["w"], other) is model["w"]
    assert np.array_equal(model["w"].value, update(expected, other))
