"""Compiled code computes what numpy (and the eager path) computes for integer and bool
inputs, or refuses clearly: true division, float functions of integers, sums of bools,
gradients with respect to integers and Python numbers, and nll/accuracy label checks."""
import math

import numpy as np
import pytest

import knetc as kn
from ptx import assert_modules_compile_to_ptx

TARGETS = ["cpu", "cuda"]  # cuda runs under the simulator (tests/conftest.py)


def compiled(fn, target):
    return kn.compile(fn, target=target, cache=False)


# ----------------------------------------------------------------------------- integer arithmetic

def divide_by_two(x):
    return x / 2


def divide_arrays(a, b):
    return a / b


def mean_of(x):
    return kn.mean(x)


def sum_of(x):
    return kn.sum(x)


def sigm_of(x):
    return kn.sigm(x)


def scaled_and_shifted(x):
    return x * 1.5 + 0.25


def bool_plus_one(b):
    return b + 1


def square(x):
    return x ** 2


def root(x):
    return x ** 0.5


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_true_division_of_integers_is_float64_as_numpy(target, dtype):
    a, b = np.arange(-3, 5, dtype=dtype), np.array([2, -3, 4, 5, 7, 1, 3, 2], dtype=dtype)
    for fn, args in [(divide_by_two, (a,)), (divide_arrays, (a, b))]:
        out = compiled(fn, target)(*args)
        expected = fn(*args)  # plain numpy
        assert out.dtype == expected.dtype == np.float64
        np.testing.assert_allclose(out, expected, rtol=1e-15)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("x", [np.arange(4), np.arange(6, dtype=np.int32).reshape(2, 3),
                               np.array([True, False, True])])
def test_mean_and_sum_of_integers_and_bools_follow_numpy(target, x):
    mean, total = compiled(mean_of, target)(x), compiled(sum_of, target)(x)
    assert mean.dtype == np.mean(x).dtype and np.isclose(mean, np.mean(x), rtol=1e-15, atol=0)
    assert total.dtype == np.sum(x).dtype and total == np.sum(x)
    assert mean_of(x) == np.mean(x) and sum_of(x) == np.sum(x)  # eager too


FLOAT_FUNCTIONS = ["exp", "log", "sqrt", "tanh", "sin", "cos", "atan", "expm1", "log1p", "cbrt", "erf"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16])
def test_float_functions_of_integers_have_numpy_dtype_and_values(target, dtype):
    x = np.array([1, 2, 3, 7], dtype=dtype)
    for name in FLOAT_FUNCTIONS:
        reference = getattr(np, name, None)
        expected = reference(x) if reference is not None else None
        fn = compiled(_unary_functions[name], target)
        out = fn(x)
        eager = _unary_functions[name](x)
        assert out.dtype == eager.dtype == np.exp(x).dtype, name  # float64, or float32 for int16
        np.testing.assert_allclose(out, eager, rtol=2e-6 if out.dtype == np.float32 else 1e-14, err_msg=name)
        if expected is not None:
            np.testing.assert_allclose(out, expected, rtol=2e-6 if out.dtype == np.float32 else 1e-14, err_msg=name)


def kn_exp(x):
    return kn.exp(x)


def kn_log(x):
    return kn.log(x)


def kn_sqrt(x):
    return kn.sqrt(x)


def kn_tanh(x):
    return kn.tanh(x)


def kn_sin(x):
    return kn.sin(x)


def kn_cos(x):
    return kn.cos(x)


def kn_atan(x):
    return kn.atan(x)


def kn_expm1(x):
    return kn.expm1(x)


def kn_log1p(x):
    return kn.log1p(x)


def kn_cbrt(x):
    return kn.cbrt(x)


def kn_erf(x):
    return kn.erf(x)


_unary_functions = {"exp": kn_exp, "log": kn_log, "sqrt": kn_sqrt, "tanh": kn_tanh, "sin": kn_sin, "cos": kn_cos,
                    "atan": kn_atan, "expm1": kn_expm1, "log1p": kn_log1p, "cbrt": kn_cbrt, "erf": kn_erf}


@pytest.mark.parametrize("target", TARGETS)
def test_sigm_of_integers_is_float64(target):
    x = np.arange(-3, 4)
    out = compiled(sigm_of, target)(x)
    expected = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    np.testing.assert_allclose(sigm_of(x), expected, rtol=1e-15)


@pytest.mark.parametrize("target", TARGETS)
def test_float_function_of_bools_is_float16_in_numpy_and_refused_compiled(target):
    b = np.array([True, False])
    assert kn_exp(b).dtype == np.exp(b).dtype == np.float16  # eager as numpy
    with pytest.raises(kn.CompileError, match="float16") as info:
        compiled(kn_exp, target)(b)
    assert "test_compiled_semantics.py" in str(info.value)


@pytest.mark.parametrize("target", TARGETS)
def test_integers_with_python_floats_and_bools_with_ints_promote_as_numpy(target):
    x, b = np.arange(-2, 3), np.array([True, False, True])
    for fn, arg in [(scaled_and_shifted, x), (bool_plus_one, b), (square, x), (root, np.arange(4))]:
        out, expected = compiled(fn, target)(arg), fn(arg)
        assert out.dtype == expected.dtype, fn.__name__
        np.testing.assert_allclose(out, expected, rtol=1e-15, err_msg=fn.__name__)


def reciprocal(x):
    return x ** -1


def negate(b):
    return -b


@pytest.mark.parametrize("target", TARGETS)
def test_what_numpy_refuses_is_refused(target):
    x, b = np.arange(1, 4), np.array([True, False])
    with pytest.raises(ValueError):
        reciprocal(x)  # numpy
    with pytest.raises(ValueError, match="negative integer powers") as info:
        compiled(reciprocal, target)(x)
    assert "test_compiled_semantics.py" in str(info.value)
    with pytest.raises(TypeError):
        negate(b)  # numpy
    with pytest.raises(ValueError, match="negate booleans"):
        compiled(negate, target)(b)


# ----------------------------------------------------------------------------- gradients

def squares(x):
    return kn.sum(x * x * 1.5)


def scaled(x):
    return x * x


@pytest.mark.parametrize("target", TARGETS)
def test_gradient_with_respect_to_numbers_and_integer_arrays_matches_eager(target):
    for fn, arg in [(scaled, 0.5), (scaled, 3), (squares, np.arange(3)), (squares, np.arange(3.0))]:
        eager = kn.grad(fn)(arg)
        got = kn.grad(compiled(fn, target))(arg)
        assert got is not None, (fn.__name__, arg)
        expected = 2 * np.asarray(arg, dtype=np.float64) * (1.5 if fn is squares else 1)
        np.testing.assert_allclose(got, expected, rtol=1e-15)
        np.testing.assert_allclose(eager, expected, rtol=1e-15)


def loss_of_param(w, x):
    return kn.sum(w * x)


@pytest.mark.parametrize("compile_it", [False, True])
def test_training_an_integer_param_is_refused_not_skipped(compile_it):
    w = kn.Param(np.arange(3))
    fn = compiled(loss_of_param, "cpu") if compile_it else loss_of_param
    with pytest.raises(TypeError, match="floating point"):
        for _ in kn.sgd(fn, [(w, np.ones(3))]):
            pass
    np.testing.assert_array_equal(w.value, np.arange(3))


# ----------------------------------------------------------------------------- labels

def nll_loss(w, x, y):
    return kn.nll(x @ w, y)


def accuracy_of(w, x, y):
    return kn.accuracy(x @ w, y)


def nll_of_reshaped(w, x, y):
    return kn.nll(x @ w, y.reshape(-1))


def nll_of_shifted(w, x, y):
    return kn.nll(x @ w, y - 1)


@pytest.mark.parametrize("target", TARGETS)
def test_accuracy_predicts_the_first_of_tied_scores_as_eagerly(target):
    w = np.ones((4, 3))  # every class scores the same: the prediction is class 0 (Knet's findmax)
    x = np.random.default_rng(2).standard_normal((5, 4))
    labels = np.array([0, 1, 2, 0, -1])
    assert compiled(accuracy_of, target)(w, x, labels) == pytest.approx(2 / 4)
    assert accuracy_of(w, x, labels) == pytest.approx(2 / 4)


def _problem():
    rng = np.random.default_rng(1)
    return rng.standard_normal((4, 3)), rng.standard_normal((5, 4))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("label", [3, -2, 7])
def test_out_of_range_labels_raise_as_eagerly(target, label):
    w, x = _problem()
    good = np.array([0, 1, 2, -1, 1])
    bad = good.copy()
    bad[1] = label
    for fn, shape in [(nll_loss, (5,)), (accuracy_of, (5,)), (nll_of_reshaped, (5, 1))]:
        c = compiled(fn, target)
        np.testing.assert_allclose(c(w, x, good.reshape(shape)), fn(w, x, good.reshape(shape)), rtol=1e-12)
        with pytest.raises(ValueError) as eager:
            fn(w, x, bad.reshape(shape))
        with pytest.raises(ValueError) as call:
            c(w, x, bad.reshape(shape))
        with pytest.raises(ValueError) as gradient:
            kn.grad(c)(w, x, bad.reshape(shape))
        messages = [str(e.value) for e in (call, gradient, eager)]
        assert len({m.splitlines()[0] for m in messages}) == 1 and f"label {label} is out of range" in messages[0]
        assert all('test_compiled_semantics.py", line' in m for m in messages)  # (the user's line)


@pytest.mark.parametrize("target", TARGETS)
def test_out_of_range_labels_raise_inside_diff_and_leave_params_untouched(target):
    w, x = _problem()
    p = kn.Param(w.copy())
    bad = np.array([0, 5, 2, -1, 1])
    c = compiled(nll_loss, target)
    with pytest.raises(ValueError, match="label 5 is out of range"):
        for _ in kn.adam(c, [(p, x, bad)]):
            pass
    np.testing.assert_array_equal(p.value, w)


@pytest.mark.parametrize("target", TARGETS)
def test_labels_computed_inside_compiled_code_are_refused(target):
    w, x = _problem()
    y = np.array([1, 2, 3, 0, 2])
    with pytest.raises(kn.CompileError, match="labels computed") as info:
        compiled(nll_of_shifted, target)(w, x, y)
    assert "test_compiled_semantics.py" in str(info.value)


# ----------------------------------------------------------------------------- PTX

def integer_program(a, b, flags):
    return kn.sum(a / b) + kn.mean(kn.sigm(a)) + kn.sum(flags) + kn.sum(kn.exp(b) * 0.5)


def test_kernels_with_integer_promotions_compile_to_ptx():
    """The simulator does no type inference: the casts and int64 accumulators the CUDA
    generator writes for integer inputs are typed by compiling them to PTX."""
    a, b = np.arange(1, 7).reshape(2, 3), np.arange(2, 8, dtype=np.int32).reshape(2, 3)
    flags = np.array([True, False, True])
    f = compiled(integer_program, "cuda")
    value = f(a, b, flags)
    np.testing.assert_allclose(value, integer_program(a, b, flags), rtol=1e-14)
    g = kn.grad(f)(a, b, flags)  # the adjoint kernels too (an integer input's gradient is float64 here)
    np.testing.assert_allclose(g, kn.grad(integer_program)(a, b, flags), rtol=1e-14)
    assert_modules_compile_to_ptx(f.generated_modules())


# ----------------------------------------------------------------------------- empty reductions

def largest(x):
    return kn.maximum(x)


def largest_per_column(x):
    return kn.maximum(x, dims=0)


def numpy_smallest_per_row(x):
    return np.min(x, axis=1)


def position_of_largest(x):
    return kn.argmax(x)


def mean_per_column(x):
    return kn.mean(x, dims=0)


@pytest.mark.parametrize("target", TARGETS)
def test_reductions_with_no_identity_over_empty_axes_raise_as_numpy(target):
    """maximum/minimum/argmax over no entries: numpy raises; compiled kernels returned their
    start value (-inf, a sentinel index) instead."""
    for fn in (largest, largest_per_column, position_of_largest):
        x = np.zeros((0, 3))
        with pytest.raises(ValueError):
            np.max(x, axis=0)
        with pytest.raises(ValueError, match="zero-size"):
            fn(x)
        with pytest.raises(ValueError, match="zero-size") as info:
            compiled(fn, target)(x)
        assert "test_compiled_semantics.py" in str(info.value)
    x = np.zeros((3, 0))
    with pytest.raises(ValueError, match="zero-size"):
        compiled(numpy_smallest_per_row, target)(x)
    # Where the reduced axes are not empty, an empty result is fine, as numpy's.
    for fn, expected in [(largest_per_column, np.max(x, axis=0, keepdims=True)),
                         (numpy_smallest_per_row, np.min(np.zeros((0, 3)), axis=1))]:
        arg = x if fn is largest_per_column else np.zeros((0, 3))
        out = compiled(fn, target)(arg)
        assert out.shape == expected.shape and out.dtype == expected.dtype


@pytest.mark.parametrize("target", TARGETS)
def test_mean_over_an_empty_axis_is_nan_as_numpy(target):
    x = np.zeros((0, 3))
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.mean(x, axis=0, keepdims=True)
    with np.errstate(invalid="ignore"):
        eager = mean_per_column(x)
        got = compiled(mean_per_column, target)(x)
    for out in (eager, got):
        assert out.shape == expected.shape and out.dtype == expected.dtype
        np.testing.assert_array_equal(out, expected)  # NaN where numpy has NaN


# ----------------------------------------------------------------------------- refused with the user's line

def floor_divided(x):
    return kn.sum(x // 2)


def remainder(x):
    return kn.sum(x % 2)


def bits(x):
    return x & 1


def inverted(x):
    return ~x


def floor_divided_in_place(x):
    y = x * 1
    y //= 2
    return y


def shape_arithmetic(x):
    n = x.shape[0] // 2 % 5  # on Python ints the operators work as in Python
    return x[:n] * (x.shape[1] & 1) + (~x.shape[1] + 5)


def _as_numpy(x):  # an uncompiled helper using numpy directly on the traced value
    return np.asarray(x) * 2


def through_numpy_helper(x):
    return kn.sum(_as_numpy(x))


def as_float(x):
    return float(kn.sum(x)) * x


def as_item(x):
    return kn.sum(x).item() * x


def numpy_gradient(x):
    return np.gradient(x)


def numpy_scalar_of_value(x):
    return np.float32(kn.sum(x))


def positions_of_a_mask(x):
    return np.where(x > 2)[0] * 1.0


def attribute_with_a_default(x):
    return x * getattr(x, "itemsize", 1)  # (the array has it: the default would be wrong)


TABLE = {2.0: 20.0}


def lookup_by_value(x):
    return x * TABLE.get(np.sum(x), -1.0)  # (a numpy scalar in Python: found by its value)


def index_by_value(x):
    return x * [x, x * 1.0].index(x * 1.0)


def hash_of_value(x):
    return x * (hash(np.sum(x)) % 2)


def math_of_value(x):
    return math.exp(kn.sum(x)) * x


def numpy_constants(x):
    a = np.float32(0.5)
    n = int(np.prod(x.shape))
    return kn.sum(x * a + np.ones(x.shape[-1]) * np.pi) / n + np.float64(x.shape[0])


REFUSED = [(through_numpy_helper, "`np.asarray` of an array value", np.arange(6.0)),
           (as_float, "`float` of an array value", np.arange(6.0)),
           (as_item, "`.item` of an array value", np.arange(6.0)),
           (numpy_gradient, "`np.gradient` is not supported", np.arange(6.0)),
           (numpy_scalar_of_value, "`float32` of an array value", np.arange(6.0)),
           (math_of_value, "`math.exp` of an array value", np.arange(6.0) / 10),
           (positions_of_a_mask, "np.where(condition) alone", np.arange(6.0)),
           (attribute_with_a_default, "`.itemsize` of an array value", np.arange(6.0)),
           (lookup_by_value, "`dict.get` hashes, compares or identifies an array value", np.array([0.5, 1.5])),
           (index_by_value, "`list.index` hashes, compares or identifies an array value", np.array([2.0])),
           (hash_of_value, "`hash` hashes, compares or identifies an array value", np.array([2.0]))]


@pytest.mark.parametrize("fn", [floor_divided, remainder, floor_divided_in_place])
def test_floor_division_and_remainder_of_arrays_compile_as_numpys(fn):
    # (they were refused; tests/test_math.py checks their edges and gradients)
    for x in (np.arange(-3.0, 3.0) * 1.5, np.arange(-3, 3)):
        got, want = compiled(fn, "cpu")(x), fn(x)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fn, message, x", REFUSED, ids=[f.__name__ for f, _, _ in REFUSED])
def test_operators_and_numpy_calls_without_an_op_are_refused_at_the_users_line(fn, message, x):
    fn(x)  # Python runs it on a numpy array
    with pytest.raises(kn.CompileError) as info:
        compiled(fn, "cpu")(x)
    text = str(info.value)
    assert message in text and "test_compiled_semantics.py" in text and "hint:" in text, text
    assert "Var" not in text  # the message speaks of the user's values, not of the IR


@pytest.mark.parametrize("fn, name", [(bits, "&"), (inverted, "~")])
def test_bit_operators_on_integer_arrays_are_refused_at_the_users_line(fn, name):
    # `&`, `|`, `^`, `~` combine masks (tests/test_numpy_more.py); numpy's bitwise integer
    # meaning is refused, not computed as logic.
    with pytest.raises(kn.CompileError) as info:
        compiled(fn, "cpu")(np.arange(6))
    text = str(info.value)
    assert f"{name} of integer arrays is bitwise" in text and "test_compiled_semantics.py" in text, text


def test_python_values_still_use_those_operators_and_numpy_scalars():
    x = np.arange(12.0).reshape(3, 4)
    for fn in (shape_arithmetic, numpy_constants):
        got, expected = compiled(fn, "cpu")(x), fn(x)
        np.testing.assert_allclose(got, expected, rtol=1e-14)
        assert np.asarray(got).dtype == np.asarray(expected).dtype


# ----------------------------------------------------------------------------- deep helpers

def _scaled_once(x):
    return x * 1.01


def _helper_chain(depth):
    chain = [_scaled_once]
    for _ in range(depth):
        def step(x, inner=chain[-1]):
            return inner(x) + 0.0
        chain.append(step)
    return chain[-1]


DEEP_HELPER = _helper_chain(100)


def through_deep_helpers(x):
    return kn.sum(DEEP_HELPER(x))


def _forever(x):
    return _forever(x * 2)


def recursing_forever(x):
    return kn.sum(_forever(x))


def test_a_deep_chain_of_helpers_compiles_and_endless_recursion_is_refused():
    import sys
    limit = sys.getrecursionlimit()
    x = np.arange(3.0)
    f = compiled(through_deep_helpers, "cpu")
    np.testing.assert_allclose(f(x), through_deep_helpers(x), rtol=1e-14)
    np.testing.assert_allclose(kn.grad(f)(x), kn.grad(through_deep_helpers)(x), rtol=1e-14)
    with pytest.raises(kn.CompileError, match="calls itself") as info:
        compiled(recursing_forever, "cpu")(x)
    assert "test_compiled_semantics.py" in str(info.value) and "recursion must end" in str(info.value)
    assert sys.getrecursionlimit() == limit  # raised while inlining, restored after


# ----------------------------------------------------------------------------- numpy scalars, out-of-range ints

def plus_numpy_float64(x):
    return x + np.float64(2.5)


def times_numpy_int64(x):
    return x * np.int64(3)


def mean_by_numpy_count(x):
    return kn.sum(x) / np.prod(x.shape)


def below_minus_one(x):
    return x < -1


def equals_300(x):
    return x == 300


def plus_300(x):
    return x + 300


@pytest.mark.parametrize("target", TARGETS)
def test_numpy_scalars_promote_as_numpy(target):
    """np.float64(2.5) is typed like a 0-d array (NEP 50), not like the weak Python 2.5."""
    for fn, x in [(plus_numpy_float64, np.arange(4, dtype=np.float32)), (times_numpy_int64, np.arange(4, dtype=np.float32)),
                  (mean_by_numpy_count, np.arange(6, dtype=np.float32).reshape(2, 3)),
                  (plus_numpy_float64, np.arange(4, dtype=np.int8))]:
        expected = fn(x)
        got = compiled(fn, target)(x)
        assert got.dtype == np.asarray(expected).dtype, fn.__name__
        np.testing.assert_allclose(got, expected, rtol=1e-15)


def above_half(x):
    return x > 0.5


def count_and_mask(x):
    return kn.sum(x > 1.5), (x > 1.5) * x


@pytest.mark.parametrize("target", TARGETS)
def test_integers_against_a_python_float_give_bools_as_numpy(target):
    """An integer array meets 0.5 in float64, as numpy's promotion has it, and the answer is
    bools (it was 1/0 in float64): a mask, summed as integers."""
    for x in (np.arange(-2, 4), np.array([True, False, True]), np.arange(5, dtype=np.uint8)):
        got, want = compiled(above_half, target)(x), x > 0.5
        assert got.dtype == bool and np.array_equal(got, want)
        for got, want in zip(compiled(count_and_mask, target)(x), (np.sum(x > 1.5), (x > 1.5) * x)):
            assert np.asarray(got).dtype == want.dtype and np.array_equal(got, want), (got, want)
        assert kn.gt(x, 0.5).dtype == bool and kn.lt(0.5, x).dtype == bool  # eagerly too
        np.testing.assert_array_equal(x[kn.gt(x, 1.5)], x[x > 1.5])  # a mask, not positions
    assert np.asarray(kn.gt(kn.Param(np.arange(3)), 0.5)).dtype == bool


@pytest.mark.parametrize("target", TARGETS)
def test_python_ints_out_of_an_integer_dtype_compare_exactly_or_overflow_as_numpy(target):
    for fn, x in [(below_minus_one, np.arange(0, 250, 40, dtype=np.uint8)), (equals_300, np.arange(-4, 4, dtype=np.int8)),
                  (below_minus_one, np.array([0, 2 ** 63 + 5], dtype=np.uint64))]:
        got = compiled(fn, target)(x)
        assert got.dtype == bool  # integer comparisons give bools, as numpy's
        np.testing.assert_array_equal(got, fn(x))  # numpy's answer, not a wrapped literal
    x = np.arange(4, dtype=np.int8)
    with pytest.raises(OverflowError):
        plus_300(x)
    with pytest.raises(kn.CompileError, match="out of bounds for int8") as info:
        compiled(plus_300, target)(x)
    assert "test_compiled_semantics.py" in str(info.value)


# ----------------------------------------------------------------------------- NaN in max/min

def extremes_with_nan(x):
    return (kn.maximum(x, dims=1), kn.minimum(x, dims=1), np.max(x), kn.argmax(x, dims=1), kn.argmin(x),
            kn.maximum(x * 2.0, dims=0))


@pytest.mark.parametrize("target", TARGETS)
def test_max_min_and_argmax_propagate_nan_as_numpy(target):
    """numpy's max/min of a block holding a NaN is NaN, and argmax/argmin point at the first
    NaN; a kernel's max(acc, nan) would silently skip it."""
    x = np.array([[1.0, np.nan, 2.0, np.nan], [3.0, 4.0, -np.inf, 5.0], [np.nan, 0.5, 7.0, 1.0]])
    got = compiled(extremes_with_nan, target)(x)
    expected = (np.max(x, axis=1, keepdims=True), np.min(x, axis=1, keepdims=True), np.max(x),
                np.argmax(x, axis=1)[:, None], np.argmin(x), np.max(x * 2.0, axis=0, keepdims=True))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    for g, e in zip(got, extremes_with_nan(x)):  # the eager path agrees
        np.testing.assert_array_equal(g, e)


def test_nan_propagating_max_compiles_to_ptx():
    f = compiled(extremes_with_nan, "cuda")
    f(np.array([[1.0, np.nan], [2.0, 3.0]], dtype=np.float32))
    assert_modules_compile_to_ptx(f.generated_modules())


def sum_over_unit_axis(b):
    return kn.sum(b, dims=1)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.float32])
def test_sum_over_a_size_one_axis_keeps_numpys_dtype(dtype):
    """The simplification that drops a sum over size-1 axes must not drop the widening of
    bools and small integers to int64."""
    b = np.array([[1], [0], [1]], dtype=dtype)
    got = compiled(sum_over_unit_axis, "cpu")(b)
    want = np.sum(b, axis=1, keepdims=True)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- astype

def masked_by_astype(x):
    return (x > 0.1).astype(np.float32) * x


def astype_chain(x):
    return (x * 3).astype(np.int64) + x.astype(bool) + x.astype(np.int32)


def widened(x):
    return kn.sum(x.astype(np.float64) * x.astype("float64"))


@pytest.mark.parametrize("target", TARGETS)
def test_astype_compiles_to_numpys_conversions(target):
    """.astype on a value inside compiled code converts as numpy does: a 0/1 mask from a
    comparison, truncation toward zero to integers, nonzero (NaN included) to True, -0.0 to
    False; the gradient through a widening goes back in the input's dtype."""
    x = np.array([[0.5, -0.0, 2.5, -2.5, np.nan], [1e-3, -1.7, 3.9, 0.1, 7.0]], np.float32)
    for fn in (masked_by_astype, astype_chain):
        with np.errstate(invalid="ignore"):
            expected = fn(x)
        got = compiled(fn, target)(np.nan_to_num(x) if fn is astype_chain else x)
        if fn is astype_chain:  # (NaN to an integer is undefined in C and numpy alike)
            expected = fn(np.nan_to_num(x))
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    truth = compiled(lambda x: x.astype(bool), target)(x)
    np.testing.assert_array_equal(truth, x.astype(bool))  # NaN is True, -0.0 False
    w = np.array([1.5, -2.0, 3.0], np.float32)
    g = kn.grad(compiled(widened, target))(w)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, 2 * w.astype(np.float64), rtol=1e-7)
    with pytest.raises(kn.CompileError, match="float16"):
        compiled(lambda x: x.astype(np.float16), target)(w)


# ----------------------------------------------------------------------------- found by an audit

def squares_in_int8_reduced(x):
    return kn.sum(x * x, dims=-1), kn.maximum(x * x + x, dims=-1), (x * x).astype(np.float64), -x > 0


def negative_powers(x):
    return x ** -1, x ** -2.0, np.power(x, -3), kn.sum(x ** -4)


def signed_zeros(x):
    return 1.0 / (x + 0.0), 1.0 / (0.0 + x), 1.0 / kn.relu(x), x - 0.0


@pytest.mark.parametrize("target", TARGETS)
def test_narrow_integers_wrap_negative_powers_and_signed_zeros_follow_numpy(target):
    """int8/int32 arithmetic wraps in its own dtype before a reduction, a cast or a
    comparison reads it (Numba computes int8 * int8 in int64); x ** -2 at 0 is inf (Numba's
    integer power raised ZeroDivisionError); x + 0.0 and relu turn -0.0 into 0.0."""
    for x in (np.array([[-128, -3, 0, 3, 127], [100] * 5], np.int8), np.array([-7, 3, 2 ** 31 - 1, -2 ** 31], np.int32)):
        with np.errstate(over="ignore"):
            for got, want in zip(compiled(squares_in_int8_reduced, target)(x), squares_in_int8_reduced(x)):
                np.testing.assert_array_equal(got, want)
    x = np.array([1.0, 0.0, -0.0, 2.0])
    with np.errstate(divide="ignore"):
        for got, want in zip(compiled(negative_powers, target)(x), negative_powers(x)):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(compiled(signed_zeros, target)(x), signed_zeros(x)):
            np.testing.assert_array_equal(got, want)
            assert np.array_equal(np.signbit(got), np.signbit(want))
    np.testing.assert_array_equal(signed_zeros(x)[2], [1.0, np.inf, np.inf, 0.5])  # relu(-0.0) is 0.0, as Julia's max


def test_in_place_add_of_a_recorded_value_into_a_plain_array_is_a_clear_type_error():
    w = kn.Param(np.ones(3))

    def loss(w):
        h = np.zeros(3)
        h += w * 2  # numpy would write into h: nothing to record it
        return kn.sum(h)
    with pytest.raises(TypeError, match=r"in-place np.add .* write h = h \+ w"):
        kn.grad(loss)(w)


def rint_of(x):
    return np.rint(x)


@pytest.mark.parametrize("target", TARGETS)
def test_numpy_rint_of_integers_is_a_float_as_numpy(target):
    for x in (np.array([-7, 3, 2]), np.array([-7, 3, 2], np.int32), np.array([-2.5, 0.5, 1.5])):
        got, want = compiled(rint_of, target)(x), np.rint(x)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- audit 7: numpy's types and results

def times_s_plus_s(x, s):
    return x * s + s


@pytest.mark.parametrize("target", TARGETS)
def test_a_numpy_float64_argument_has_its_type_as_numpy_gives_it(target):
    """NEP 50: float32 * np.float64 is float64 (a Python float is weak: float32 stays)."""
    x = np.array([1.5, 2.5], np.float32)
    f = compiled(times_s_plus_s, target)
    for s in (np.float64(1e300), np.float64(0.1), 0.1, np.float32(0.1)):
        want, got = times_s_plus_s(x, s), np.asarray(f(x, s))
        assert got.dtype == want.dtype, (s, got, want)
        # a GPU contracts x * s + s to one fused multiply-add: one rounding less than numpy's
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(want.dtype).eps)


def where_int(c, x):
    return np.where(c, x, 0), np.where(c, 1, 0), np.where(c, x, 2.5), np.where(c, True, False)


def test_np_where_with_python_numbers_keeps_numpys_dtypes():
    c, x = np.array([True, False, True]), np.array([2 ** 53 + 1, -2, 3])
    for got, want in zip(kn.compile(where_int)(c, x), where_int(c, x)):
        assert np.asarray(got).dtype == want.dtype and np.array_equal(got, want)  # 2**53 + 1 exact
    c32 = kn.compile(lambda c, x: np.where(c, x, 2))(c, np.ones(3, np.float32))
    assert np.asarray(c32).dtype == np.float32


def test_integers_to_integer_array_powers_are_refused_compiled_and_raise_eagerly():
    x, y = np.array([2, 3, 4]), np.array([2, -1, 0])
    with pytest.raises(ValueError, match="negative"):
        x ** y  # numpy
    with pytest.raises(kn.CompileError, match="integer array") as info:
        kn.compile(lambda x, y: x ** y)(x, y)
    assert "test_compiled_semantics.py" in str(info.value)
    assert np.array_equal(kn.compile(lambda x, y: x ** y)(x, y.astype(np.float64)), x ** y.astype(np.float64))
    assert np.array_equal(kn.compile(lambda x: x ** 2)(x), x ** 2)  # a constant exponent is checked when traced


def times_one(x):
    return x * 1, x.astype(x.dtype), -(-x), kn.sum(x, dims=())


def test_results_are_new_arrays_never_the_callers_input():
    """x * 1 simplifies to x; the caller still gets a new array, as from Python."""
    x = np.arange(3.0)
    results = kn.compile(times_one)(x)
    for r in results:
        np.asarray(r)[0] = 99.0
    assert np.array_equal(x, np.arange(3.0))
    g = kn.grad(kn.compile(lambda x, y: kn.sum(x * y)))(x, np.full(3, 2.0))  # the gradient is y itself
    g[0] = 5.0
    assert np.array_equal(kn.grad(kn.compile(lambda x, y: kn.sum(x * y)))(x, np.full(3, 2.0)), np.full(3, 2.0))


def test_gradient_of_an_unused_number_is_none_and_dtypes_can_be_returned():
    def loss(m):
        return kn.sum(m["w"] * 2)
    m = {"w": kn.Param(np.ones(3)), "lr": 0.1}
    got, want = kn.grad(kn.compile(loss))(m), kn.grad(loss)(m)
    assert got["lr"] is None and want["lr"] is None and np.array_equal(got["w"], want["w"])
    assert kn.compile(lambda x: x.dtype)(np.ones(2, np.float32)) == np.float32


def test_relu_of_bools_is_numpys_int64():
    mask = np.array([True, False])
    assert np.asarray(kn.compile(lambda m: kn.relu(m))(mask)).dtype == kn.relu(mask).dtype == np.maximum(mask, 0).dtype


@pytest.mark.parametrize("target", TARGETS)
def test_sign_of_minus_zero_and_nan_as_numpy(target):
    x = np.array([-0.0, 0.0, np.nan, -2.5, 3.0])
    got = np.asarray(compiled(lambda x: kn.sign(x), target)(x))
    want = np.sign(x)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))  # -0.0 gives +0.0


@pytest.mark.parametrize("target", TARGETS)
def test_power_one_half_is_numpys_square_root(target):
    """numpy's `x ** 0.5` computes np.sqrt: NaN at -inf, -0.0 at -0.0 (np.power's pow gives inf, 0.0)."""
    x = np.array([-np.inf, -0.0, 0.0, 2.25, -1.0])
    with np.errstate(invalid="ignore"):
        want = x ** 0.5
        for got in (compiled(lambda x: x ** 0.5, target)(x), kn.value(kn.Param(x) ** 0.5)):
            got = np.asarray(got)
            np.testing.assert_array_equal(got, want)
            assert np.array_equal(np.signbit(got[1:4]), np.signbit(want[1:4]))
    g = kn.grad(compiled(lambda x: kn.sum(x ** 0.5), target))(np.array([4.0, 9.0]))
    np.testing.assert_allclose(g, [0.25, 1 / 6], rtol=1e-15)


def exponential_units(x):
    return kn.elu(x), kn.selu(x)


@pytest.mark.parametrize("target", TARGETS)
def test_elu_and_selu_keep_the_sign_of_zero_as_knet(target):
    # Knet: elu(x) = x >= 0 ? x : exp(x) - 1, so elu(-0.0) is -0.0; eagerly it was 0.0, compiled -0.0.
    x = np.array([-0.0, 0.0, -1.0, 2.0])
    for got, want in zip(compiled(exponential_units, target)(x), exponential_units(x)):
        np.testing.assert_array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want)), (got, want)
    elu, selu = exponential_units(x)
    assert list(np.signbit(elu[:2])) == [True, False] and list(np.signbit(selu[:2])) == [True, False]
    np.testing.assert_allclose(elu[2:], [np.expm1(-1.0), 2.0], rtol=1e-15)


def local_array_changed_after_use(x):
    m = np.ones(3)
    z = x * m
    m[0] = 100.0  # numpy code changes the array after z read it
    return z, x * m


def list_extended_in_place(x):
    hs = []
    alias = hs
    for i in range(3):
        hs += [x * i]  # extends the list both names hold
    return len(alias) * x


def float32_array_plus_float64(x32, x64):
    z = x32 * 1
    z += x64  # numpy writes the float64 sum into the float32 array
    return z


def int_array_plus_a_float(x):
    k = (x * 0).astype(np.int64)
    k += 1.5  # numpy: UFuncTypeError (casting='same_kind')
    return k


def vector_plus_a_matrix(x):
    y = x * 1
    y += x[:, None] * 1  # numpy: non-broadcastable output operand
    return y


def test_a_local_array_is_read_as_it_was_when_used():
    x = np.array([1.0, 2.0, 3.0])
    got, want = kn.compile(local_array_changed_after_use, target="cpu")(x), local_array_changed_after_use(x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)  # the first: [1, 2, 3] (was [100, 2, 3])


def test_augmented_assignment_follows_numpy_in_place_rules():
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(kn.compile(list_extended_in_place, target="cpu")(x), 3 * x)  # (was 0 * x)
    got = kn.compile(float32_array_plus_float64, target="cpu")(x.astype(np.float32), x + 0.1)
    want = float32_array_plus_float64(x.astype(np.float32), x + 0.1)
    assert got.dtype == want.dtype == np.float32  # (was float64)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(kn.ShapeError, match=r"cannot store the f64\[3\] result in the i64\[3\] array"):
        kn.compile(int_array_plus_a_float, target="cpu")(x)
    with pytest.raises(kn.ShapeError, match=r"cannot store the f64\[3,3\] result in the f64\[3\] array"):
        kn.compile(vector_plus_a_matrix, target="cpu")(x)


def scaled_when_positive(x, s):
    if s > 0:  # s used as a Python value: it cannot be an array input of the program
        return kn.sum(x * s)
    return kn.sum(x)


def test_the_gradient_of_a_number_argument_used_as_a_python_value_is_the_eager_one():
    # It was None (the number a compile-time constant), and stayed None for every later call.
    compiled = kn.compile(scaled_when_positive, target="cpu")
    x = np.array([1.0, 2.0, 3.0])
    for s in (2.0, -1.0, 3.0):
        want = kn.grad(scaled_when_positive, 1)(x, s)
        got = kn.grad(compiled, 1)(x, s)
        assert (got is None) == (want is None) and (want is None or float(got) == float(want))
    assert float(kn.grad(compiled, 1)(x, 3.0)) == 6.0
    np.testing.assert_array_equal(kn.grad(compiled, 0)(x, 2.0), [2.0, 2.0, 2.0])  # the array: compiled


def times_a_float32_scalar(x):
    return x * np.float32(2)


def clip_with_numpy_21_names(x):
    return x.clip(min=0) + np.clip(x, min=-0.5, max=0.5)


def concatenated_flat(x):
    return np.concatenate([x, x * 2], axis=None)


def test_numpy_forms_compiled_as_numpy_gives_them():
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    for f in (clip_with_numpy_21_names, concatenated_flat):
        got, want = kn.compile(f, target="cpu")(x), f(x)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(kn.grad(lambda a: kn.sum(kn.compile(f, target="cpu")(a) ** 2))(x),
                                   kn.grad(lambda a: kn.sum(f(a) ** 2))(x))
    # float16 inputs: Numba has no float16 (it failed with a bare NotImplementedError: float16)
    with pytest.raises(kn.CompileError, match="float16 array cannot be a compiled function's input"):
        kn.compile(times_a_float32_scalar, target="cpu")(np.ones(3, np.float16))


def numpy_reciprocal(x):
    return np.reciprocal(x)


def numpy_square(x):
    return np.square(x)


def test_integer_reciprocal_is_refused_and_bool_square_is_numpys_int8():
    # Compiled np.reciprocal of integers gave floats ([1, 0.5]; numpy truncates: [1, 0]) and
    # np.square of bools gave bools (numpy: int8, as `x ** 2`).
    with pytest.raises(kn.CompileError, match=r"np.reciprocal of integers truncates"):
        kn.compile(numpy_reciprocal, target="cpu")(np.array([1, 2]))
    b = np.array([True, False])
    for square in (kn.compile(numpy_square, target="cpu")(b), kn.value(numpy_square(kn.Param(b)))):
        assert square.dtype == np.square(b).dtype == np.int8
        np.testing.assert_array_equal(square, np.square(b))
    x = np.array([1.5, -2.0])
    np.testing.assert_array_equal(kn.compile(numpy_reciprocal, target="cpu")(x), np.reciprocal(x))
    np.testing.assert_array_equal(kn.compile(numpy_square, target="cpu")(np.array([3, -2])), [9, 4])


# Integer types as numpy keeps them (found by an audit: each came back int64 or kept the input's type)
def sum_as_int8(x):
    return np.sum(x, axis=0, dtype=np.int8), x.sum(dtype=np.int16), np.prod(x, dtype=np.int8)


def cumsum_as_int8(x):
    return np.cumsum(x, dtype=np.int8)


def batched_product(a):
    return a @ a, np.matmul(a > 0, a > 0)


def clipped(x):
    return np.clip(x, 0, 2), x.clip(-1)


def absolute_as_float(x):
    return np.fabs(x)


@pytest.mark.parametrize("fn, x", [
    (sum_as_int8, np.array([[100, 100, 3], [100, 1, 1]], np.int32)),
    (cumsum_as_int8, np.array([100, 100, 100], np.int32)),
    (batched_product, np.full((2, 2, 2), 50000, np.int32)),  # int32 products wrap; bool @ bool is bool
    (clipped, np.array([-3, 1, 5], np.int8)),
    (absolute_as_float, np.array([-7, 3], np.int32)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_integer_results_keep_numpys_types_and_wrap_as_numpy(fn, x):
    expected, actual = fn(x), compiled(fn, "cpu")(x)
    for e, a in zip(expected if isinstance(expected, tuple) else (expected,), actual if isinstance(actual, tuple) else (actual,)):
        assert np.asarray(a).dtype == np.asarray(e).dtype, (np.asarray(a).dtype, np.asarray(e).dtype)
        np.testing.assert_array_equal(a, e)


def unsigned_with_signed(u, i):
    return u - i, np.where(u > 1, u, i)


def test_large_unsigned_beside_signed_integers_is_numpys_float64():
    # Numba types uint64 - int8 as int64: 2**63 + 2048 came back negative (numpy: float64).
    u, i = np.array([3, 2 ** 63 + 2048], np.uint64), np.array([1, 1], np.int8)
    for actual, expected in zip(compiled(unsigned_with_signed, "cpu")(u, i), unsigned_with_signed(u, i)):
        assert actual.dtype == expected.dtype == np.float64
        np.testing.assert_array_equal(actual, expected)


def square_root_by_power(x):
    return x ** 0.5


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.bool_])
def test_small_integers_to_the_power_half_are_float64_as_numpy(dtype):
    # numpy's x ** 0.5 is np.sqrt for floats only; of int8 it is np.power's float64 (np.sqrt's
    # float16 was refused)
    x = np.array([4, 9, 1], dtype)
    actual, expected = compiled(square_root_by_power, "cpu")(x), square_root_by_power(x)
    assert actual.dtype == expected.dtype == np.float64
    np.testing.assert_array_equal(actual, expected)
    assert kn.value(square_root_by_power(kn.Param(x))).dtype == np.float64


def refuses_odd_batches(x):
    if x.shape[0] % 2:
        raise ValueError(f"odd batch {x.shape[0]}")
    return kn.sum(x)


def test_the_users_own_exception_keeps_its_type_and_names_its_line():
    # (it had no line of the user's: the last frame was knetc's translator)
    f = compiled(refuses_odd_batches, "cpu")
    assert float(f(np.ones(2))) == 2.0
    with pytest.raises(ValueError, match="odd batch 3") as info:
        f(np.ones(3))
    assert any("test_compiled_semantics.py" in note and "raise ValueError" in note for note in info.value.__notes__)


def allocates_while_tracing(x):
    np.empty(2 ** 50, np.uint8)  # (numpy raises MemoryError: the trace must not turn it into a CompileError)
    return x


def test_an_out_of_memory_while_tracing_stays_a_memory_error():
    with pytest.raises(MemoryError):
        compiled(allocates_while_tracing, "cpu")(np.ones(2))
