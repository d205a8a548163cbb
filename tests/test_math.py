"""Knet's unary and binary broadcasting functions (knetc/ops/math.py): numpy/scipy float64
references, numerical gradients, compiled CPU and CUDA (simulator) equal to eager, PTX for
sm_90, float32 preserved, numpy's NaN/inf on domain errors, second derivatives."""
import math
import re

import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import knetc as kn
from numgrad import assert_close, numgrad
from ptx import assert_modules_compile_to_ptx, compile_ptx_many, kernel_modules

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's domain warnings are expected here


mpmath = pytest.importorskip("mpmath")  # exact references for sinpi and cospi (np.sin(np.pi * x) is not)
_sinpi = np.vectorize(lambda v: float(mpmath.sinpi(v)), otypes=[np.float64])
_cospi = np.vectorize(lambda v: float(mpmath.cospi(v)), otypes=[np.float64])


def _loggamma(x):
    return np.where(sp.gammasgn(x) > 0, sp.gammaln(x), np.nan)


# name -> (float64 reference, a sample of the function's domain (-1..1 mapped), has a gradient)
UNARY = {
    "neg": (np.negative, lambda u: 3 * u, True),
    "abs": (np.abs, lambda u: 3 * u + 0.1, True),
    "abs2": (np.square, lambda u: 3 * u, True),
    "acos": (np.arccos, lambda u: 0.9 * u, True),
    "acosh": (np.arccosh, lambda u: 2.5 + u, True),
    "asin": (np.arcsin, lambda u: 0.9 * u, True),
    "asinh": (np.arcsinh, lambda u: 3 * u, True),
    "atan": (np.arctan, lambda u: 3 * u, True),
    "atanh": (np.arctanh, lambda u: 0.9 * u, True),
    "cbrt": (np.cbrt, lambda u: 3 * u + 4, True),
    "ceil": (np.ceil, lambda u: 3 * u + 0.01, False),
    "cos": (np.cos, lambda u: 3 * u, True),
    "cosh": (np.cosh, lambda u: 3 * u, True),
    "cospi": (_cospi, lambda u: 3 * u, True),
    "digamma": (sp.digamma, lambda u: 3 * u + 0.05, True),
    "erf": (sp.erf, lambda u: 2 * u, True),
    "erfc": (sp.erfc, lambda u: 2 * u, True),
    "erfcinv": (sp.erfcinv, lambda u: 1 + 0.95 * u, True),
    "erfcx": (sp.erfcx, lambda u: 4 * u + 2, True),
    "erfinv": (sp.erfinv, lambda u: 0.95 * u, True),
    "exp": (np.exp, lambda u: 3 * u, True),
    "exp10": (lambda x: 10.0 ** x, lambda u: 2 * u, True),
    "exp2": (np.exp2, lambda u: 3 * u, True),
    "expm1": (np.expm1, lambda u: 3 * u, True),
    "floor": (np.floor, lambda u: 3 * u + 0.01, False),
    "gamma": (sp.gamma, lambda u: 3 * u + 0.05, True),
    "lgamma": (lambda x: np.where(x == -np.inf, np.inf, sp.gammaln(x)), lambda u: 3 * u + 0.05, True),
    "log": (np.log, lambda u: 2 + 1.9 * u, True),
    "log10": (np.log10, lambda u: 2 + 1.9 * u, True),
    "log1p": (np.log1p, lambda u: 0.5 + 1.4 * u, True),
    "log2": (np.log2, lambda u: 2 + 1.9 * u, True),
    "loggamma": (_loggamma, lambda u: 2.9 * u + 3, True),
    "one": (np.ones_like, lambda u: u, False),
    "round": (np.round, lambda u: 3 * u + 0.01, False),
    "sign": (np.sign, lambda u: u + 0.01, False),
    "sin": (np.sin, lambda u: 3 * u, True),
    "sinh": (np.sinh, lambda u: 3 * u, True),
    "sinpi": (_sinpi, lambda u: 3 * u, True),
    "sqrt": (np.sqrt, lambda u: 2 + 1.9 * u, True),
    "tan": (np.tan, lambda u: 1.4 * u, True),
    "tanh": (np.tanh, lambda u: 3 * u, True),
    "trigamma": (lambda x: sp.polygamma(1, x), lambda u: 3 * u + 0.05, True),
    "trunc": (np.trunc, lambda u: 3 * u + 0.01, False),
    "zero": (np.zeros_like, lambda u: u, False),
}
DIFFERENTIABLE = [name for name, (_, _, d) in UNARY.items() if d]
STEPS = [name for name, (_, _, d) in UNARY.items() if not d]

BINARY = {  # name -> (knetc function, numpy reference)
    "add": (lambda a, b: a + b, np.add), "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply), "div": (lambda a, b: a / b, np.divide),
    "power": (kn.power, np.power), "max": (kn.max, np.maximum), "min": (kn.min, np.minimum),
    "lt": (kn.lt, np.less), "le": (kn.le, np.less_equal), "gt": (kn.gt, np.greater),
    "ge": (kn.ge, np.greater_equal), "eq": (kn.eq, np.equal), "ne": (kn.ne, np.not_equal),
    "mod": (lambda a, b: a % b, np.remainder), "floordiv": (lambda a, b: a // b, np.floor_divide),
    "fmod": (np.fmod, np.fmod),
}

RNG = np.random.default_rng(0)
U = RNG.uniform(-1, 1, (3, 4))  # domain samples are functions of U
SAMPLE = {name: dom(U) for name, (_, dom, _) in UNARY.items()}
# values outside most domains, at poles, infinities and NaN: numpy answers NaN/inf, never raises
EDGES = np.array([-np.inf, -1e300, -800.0, -3.0, -2.5, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 800.0,
                  1e300, np.inf, np.nan])


def unary(name):
    return kn.neg if name == "neg" else getattr(kn, name)


# ----------------------------------------------------------------------------- references

@pytest.mark.parametrize("name", UNARY)
def test_unary_matches_float64_reference(name):
    reference = UNARY[name][0]
    x = SAMPLE[name]
    assert_close(unary(name)(x), reference(x), rtol=1e-12, atol=1e-13)


def test_unary_edge_values_like_numpy():
    special = {"digamma": sp.digamma, "trigamma": lambda x: sp.polygamma(1, x)}
    for name, (reference, _, _) in UNARY.items():
        got = unary(name)(EDGES)
        want = reference(EDGES)
        if name in special:  # poles: scipy gives +-inf at 0 only; knetc continues the sign there to -1, -2, ...
            pole = (EDGES <= 0) & (np.floor(EDGES) == EDGES) & (EDGES != 0)
            want = np.where(pole, -np.inf if name == "digamma" else np.inf, want)
            want = np.where(pole & (name == "digamma"), np.nan, want)
        if name == "loggamma":  # a pole is a pole whatever the sign; scipy's gammasgn says nan there
            want = np.where((EDGES <= 0) & (np.floor(EDGES) == EDGES) & np.isfinite(EDGES), np.inf, want)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True, err_msg=name)


def test_round_halves_to_even_and_sinpi_exact():
    halves = np.arange(-4, 4) + 0.5
    assert_close(kn.round(halves), np.round(halves), rtol=0, atol=0)
    ints = np.arange(-5.0, 6.0)
    assert np.all(kn.sinpi(ints) == 0) and np.all(kn.cospi(ints + 0.5) == 0)
    assert_close(kn.cospi(ints), (-1.0) ** np.abs(ints), rtol=0, atol=0)


def test_polygamma_and_integer_inputs():
    x = SAMPLE["digamma"]
    for n in (1, 2, 3):
        assert_close(kn.polygamma(n, x), sp.polygamma(n, x), rtol=1e-10, atol=1e-12)
    with pytest.raises(kn.ShapeError, match="order n"):
        kn.polygamma(0, x)
    ints = np.array([1, 2, 3])
    assert kn.sin(ints).dtype == np.float64 and kn.digamma(ints).dtype == np.float64
    assert_close(kn.sin(ints), np.sin(ints.astype(float)))
    assert kn.floor(ints).dtype == ints.dtype and kn.abs(-ints).dtype == ints.dtype


@pytest.mark.parametrize("name", BINARY)
def test_binary_broadcasting_matches_numpy(name):
    fn, reference = BINARY[name]
    a = RNG.uniform(0.5, 2, (3, 1, 4))
    b = np.round(RNG.uniform(0.5, 2, (5, 1)), 1)  # rounded: some ties for the comparisons and max/min
    b[0, 0] = a[0, 0, 0]
    got = fn(a, b)
    assert got.dtype == np.float64
    assert_close(got, reference(a, b).astype(np.float64), rtol=1e-14)


def test_comparisons_keep_the_float_type_and_give_bools_for_integers():
    ints = np.array([1, 2, 3])
    assert kn.lt(ints, 2).dtype == bool and list(kn.lt(ints, 2)) == [1, 0, 0]  # numpy's: x[x > 0] is a mask
    assert list(kn.le(ints, 2.5)) == [1, 1, 0]  # a fractional constant is not truncated
    x32 = np.array([1.0, 2.0], np.float32)
    assert kn.eq(x32, 2).dtype == np.float32 and kn.max(x32, 1.5).dtype == np.float32


def test_max_min_nan_and_ties():
    a, b = np.array([1.0, np.nan, 2.0, 3.0]), np.array([np.nan, 1.0, 2.0, 0.0])
    np.testing.assert_array_equal(kn.max(a, b), np.maximum(a, b))
    np.testing.assert_array_equal(kn.min(a, b), np.minimum(a, b))
    pa, pb = kn.Param(np.array([2.0, 1.0])), kn.Param(np.array([2.0, 3.0]))
    y = kn.diff(lambda: kn.sum(kn.max(pa, pb)))
    assert list(kn.grad(y, pa)) == [0.5, 0.0] and list(kn.grad(y, pb)) == [0.5, 1.0]  # a tie: halves, as torch
    assert_close(kn.max(np.array([1.0, 5.0]), 2.0, np.array([[0.0], [7.0]])), np.array([[2.0, 5.0], [7.0, 7.0]]))
    with pytest.raises(TypeError, match="kn.maximum"):
        kn.max(a)


REMAINDER_EDGES = (np.array([5.5, -5.5, 5.5, -5.5, 0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1.0, 3.0, 1e-300, 7.0]),
                   np.array([2.0, 2.0, -2.0, -2.0, 3.0, 3.0, np.inf, np.inf, 2.0, 2.0, 2.0, 0.0, -0.0, 1.0, 0.5]))
INTEGER_EDGES = (np.array([5, -5, 5, -5, 3, 0, 7, -7, 0]), np.array([2, 2, -2, -2, 0, 0, 3, 3, -4]))


def remainders(a, b):
    return a % b, a // b, np.fmod(a, b), np.remainder(a, b), np.floor_divide(a, b), divmod(a, b)[1]


@pytest.mark.parametrize("target", ["eager", "cpu", "cuda"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int32, np.int8, np.uint8, np.bool_])
def test_remainders_are_numpys_at_zeros_signs_and_infinities(target, dtype):
    # the divisor's sign for %, the dividend's for fmod, a zero divisor NaN or inf for floats
    # and 0 for integers, -0.0 where numpy gives it; booleans give int8, as numpy
    a, b = REMAINDER_EDGES if np.dtype(dtype).kind == "f" else INTEGER_EDGES
    a, b = a.astype(dtype), (np.abs(b) if dtype == np.uint8 else b).astype(dtype)
    f = (lambda a, b: remainders(kn.Param(a), b)) if target == "eager" else kn.compile(remainders, target=target)
    with np.errstate(all="ignore"):
        want = remainders(a, b)
        got = [kn.value(g) for g in f(a, b)]
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype, (i, g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
        assert np.array_equal(np.signbit(g[w == 0]), np.signbit(w[w == 0])), f"output {i}: the sign of zero"


def test_integer_remainder_kernels_compile_to_ptx_for_sm90():
    """The integer helpers' flavours, typed by the real numba.cuda (the simulator does no typing)."""
    f = kn.compile(remainders, target="cuda")
    for dtype in (np.int64, np.int32, np.uint8, np.bool_):
        f(*(a.astype(dtype) for a in INTEGER_EDGES))
    assert_modules_compile_to_ptx(f.generated_modules())


def test_remainder_gradients_are_pytorchs():
    # d(a % b)/db = -floor(a / b), d fmod(a, b)/db = -trunc(a / b), `//` has none
    a, b = np.array([5.5, -5.5, 2.3, -0.7]), np.array([2.0, 2.0, -1.5, 0.3])
    loss = lambda a, b: kn.sum((a % b) * 3 + np.fmod(a, b) * 2 + a // b + 2.5 % a)  # noqa: E731
    for grad in (kn.grad, lambda f, argnum: kn.grad(kn.compile(f), argnum)):
        assert_close(grad(loss, 0)(a, b), 5 - np.floor_divide(2.5, a))
        assert_close(grad(loss, 1)(a, b), -3 * np.floor_divide(a, b) - 2 * np.trunc(a / b))


def test_bad_shapes_raise_shape_error():
    with pytest.raises(kn.ShapeError):
        kn.max(np.ones((2, 3)), np.ones((4,)))
    with pytest.raises(kn.ShapeError):
        kn.power(np.ones((2, 3)), np.ones((2,)))


# ----------------------------------------------------------------------------- gradients

def _sum_of(fn):
    return lambda x: kn.sum(fn(x))


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_unary_gradient_matches_numerical(name):
    x = SAMPLE[name][:2, :3]
    fn = unary(name)
    expected = numgrad(lambda v: np.sum(fn(v)), x)
    assert_close(kn.grad(_sum_of(fn))(x), expected, rtol=1e-5, atol=1e-6)


def test_step_functions_have_zero_gradient():
    for name in STEPS:
        p = kn.Param(SAMPLE[name])
        y = kn.diff(lambda: kn.sum(unary(name)(p) * p))
        assert_close(kn.grad(y, p), unary(name)(SAMPLE[name]))  # only the product's other factor


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "power", "max", "min", "mod", "fmod"])
def test_binary_gradients_unbroadcast(name):
    fn = BINARY[name][0]
    a, b = RNG.uniform(0.5, 2, (2, 3)), RNG.uniform(0.5, 2, (3,))
    ga, gb = kn.grad(lambda a, b: kn.sum(fn(a, b) * np.arange(6.0).reshape(2, 3)), argnum=0), \
        kn.grad(lambda a, b: kn.sum(fn(a, b) * np.arange(6.0).reshape(2, 3)), argnum=1)
    weights = np.arange(6.0).reshape(2, 3)
    assert_close(ga(a, b), numgrad(lambda v: np.sum(fn(v, b) * weights), a), rtol=1e-5, atol=1e-6)
    assert_close(gb(a, b), numgrad(lambda v: np.sum(fn(a, v) * weights), b), rtol=1e-5, atol=1e-6)


def test_second_derivatives():
    x = np.array([0.3, 1.2, 2.5])
    second = lambda f: kn.grad(lambda v: kn.sum(kn.grad(lambda w: kn.sum(f(w)))(v)))  # noqa: E731
    t = np.tanh(x)
    assert_close(second(kn.tanh)(x), -2 * t * (1 - t * t), rtol=1e-10)
    assert_close(second(kn.digamma)(x), sp.polygamma(2, x), rtol=1e-10)
    assert_close(second(kn.erf)(x), -2 * x * 2 / np.sqrt(np.pi) * np.exp(-x * x), rtol=1e-10)
    assert_close(second(kn.trigamma)(x), sp.polygamma(3, x), rtol=1e-9)


# ----------------------------------------------------------------------------- compiled

def all_unary(x, y, z):
    """Every unary function, each on an input in its domain (x in (-1, 1), y in (0.5, 3), z wide)."""
    return [kn.neg(z), kn.abs(z), kn.abs2(z), kn.acos(x), kn.acosh(y + 1), kn.asin(x), kn.asinh(z), kn.atan(z),
            kn.atanh(x), kn.cbrt(z), kn.ceil(z), kn.cos(z), kn.cosh(z), kn.cospi(z), kn.digamma(z), kn.erf(z),
            kn.erfc(z), kn.erfcinv(x + 1), kn.erfcx(z), kn.erfinv(x), kn.exp(z), kn.exp10(x), kn.exp2(z),
            kn.expm1(z), kn.floor(z), kn.gamma(z), kn.lgamma(z), kn.log(y), kn.log10(y), kn.log1p(x), kn.log2(y),
            kn.loggamma(z), kn.one(z), kn.round(z), kn.sign(z), kn.sin(z), kn.sinh(z), kn.sinpi(z), kn.sqrt(y),
            kn.tan(x), kn.tanh(z), kn.trigamma(z), kn.trunc(z), kn.zero(z), kn.polygamma(2, y)]


def all_binary(a, b):
    return [a + b, a - b, a * b, a / b, kn.power(a, b), a ** 3, kn.max(a, b), kn.min(a, b), kn.lt(a, b),
            kn.le(a, b), kn.gt(a, b), kn.ge(a, b), kn.eq(a, b), kn.ne(a, b), kn.max(a, 0.5), np.arctan2(a, b),
            np.hypot(a, b), np.arctan2(-a, b - 2.0), a % b, (-a) // b, np.fmod(-a, b), 2.5 % a, divmod(a, -b)[1]]


def comparison_operators(a, b):
    """Python's operators in compiled code are Knet's comparisons (1/0 in the input's type)."""
    return [a < b, a <= b, a > b, a >= b, a == b, a != b]


def smooth_loss(x, y, z):
    """A scalar of the differentiable functions, for compiled gradients: one sum, so the
    forward pass and each input's gradient are a single fused kernel."""
    return kn.sum(kn.acos(x) + kn.asin(x) + kn.atanh(x) + kn.erfinv(x) + kn.erfcinv(x + 1) + kn.log1p(x) + kn.exp10(x)
                  + kn.tan(x) + kn.acosh(y + 1) + kn.log(y) + kn.log2(y) + kn.log10(y) + kn.sqrt(y) + kn.digamma(y)
                  + kn.trigamma(y) + kn.gamma(y) + kn.lgamma(y) + kn.loggamma(y) + kn.cbrt(y) + kn.erfcx(z)
                  + kn.sinpi(z) + kn.cospi(z) + kn.erf(z) + kn.erfc(z) + kn.sinh(z) + kn.cosh(z) + kn.asinh(z)
                  + kn.atan(z) + kn.exp2(z) + kn.expm1(z) + kn.abs2(z) + kn.sin(z) + kn.cos(z) + kn.tanh(z)
                  + kn.exp(z) + kn.abs(z) - z + kn.max(z, y) + kn.min(x, z) + kn.power(y, z) + z ** 3
                  + z / y + z * x + kn.polygamma(2, y))


def float32_subset(x, y, z):
    """Float32 in kernels: the helper calls (computed in float64, cast back) and the guards."""
    return [kn.digamma(z), kn.erfinv(x), kn.round(z), kn.sinpi(z), kn.lgamma(y), kn.exp(z), kn.log(y),
            kn.sqrt(y), kn.cbrt(z), kn.atanh(x), kn.sinh(z), kn.max(x, z), kn.power(y, z), kn.lt(z, y),
            np.arctan2(z, x), np.hypot(x, z), z % y, z // x, np.fmod(z, x)]


def _inputs(dtype=np.float64):
    x = np.array([[-0.7, 0.2, 0.9, -0.95, 0.4, 0.01], [0.05, -0.3, 0.6, 0.75, -0.1, -0.5]])
    y = np.array([[0.6, 1.7, 2.9, 0.55, 1.3, 2.0], [1.1, 0.9, 2.2, 2.6, 1.5, 0.7]])
    z = np.array([[-2.5, -0.4, 0.3, -1.7, 0.9, 4.4], [1.5, 2.2, 3.7, -3.3, 0.0, 2.5]])
    return [a.astype(dtype) for a in (x, y, z)]


def _edge_inputs():  # the shape of _inputs: the same compiled specialization
    e = np.concatenate([EDGES[:6], EDGES[-6:]]).reshape(2, 6)
    return [e, e[:, ::-1].copy(), EDGES[3:15].reshape(2, 6)]


COMPILED = {target: {fn.__name__: kn.compile(fn, target=target)
                     for fn in (all_unary, all_binary, smooth_loss, float32_subset, comparison_operators)}
            for target in ("cpu", "cuda")}


def _binary_inputs(dtype=np.float64):
    a = np.array([[0.5, 1.0, 1.5], [2.0, 2.5, 0.7]], dtype)
    b = np.array([[1.0], [2.5]], dtype)
    return [a, b]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_equals_eager(target):
    compiled = COMPILED[target]
    cases = [(all_unary, _inputs(), 1e-12), (all_binary, _binary_inputs(), 1e-12),
             (float32_subset, _inputs(np.float32), 2e-5)]
    for fn, args, rtol in cases:
        got, want = compiled[fn.__name__](*args), fn(*args)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert np.asarray(g).dtype == args[0].dtype == np.asarray(w).dtype, (fn.__name__, i, np.asarray(g).dtype)
            np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=rtol,
                                       atol=rtol, err_msg=f"{target} {fn.__name__} output {i}")
    got = compiled["comparison_operators"](*_binary_inputs())
    assert_close(np.array(got), np.array(all_binary(*_binary_inputs())[8:14]), rtol=0, atol=0)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_domain_errors_give_numpy_nan_inf(target):
    args = _edge_inputs()
    got, want = COMPILED[target]["all_unary"](*args), all_unary(*args)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=0, equal_nan=True, err_msg=f"{target} output {i}")


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_gradient_equals_eager(target):
    args = _inputs()
    for argnum in range(3):
        got = kn.grad(COMPILED[target]["smooth_loss"], argnum=argnum)(*args)
        want = kn.grad(smooth_loss, argnum=argnum)(*args)
        assert_close(got, want, rtol=1e-10, atol=1e-12)
    # and the eager gradient against central differences
    x, y, z = args
    assert_close(kn.grad(smooth_loss, argnum=1)(x, y, z), numgrad(lambda v: smooth_loss(x, v, z), y), rtol=1e-5)


def test_every_cuda_kernel_compiles_to_ptx_for_sm90():
    """Every kernel that calls a special-function helper, in float64 and float32, compiled
    with the real numba.cuda (type inference included). The gradient kernels combine the
    same helpers; they are left out to keep this test short."""
    cuda = COMPILED["cuda"]  # generate the specializations (cheap under the simulator)
    cuda["all_unary"](*_inputs())
    cuda["float32_subset"](*_inputs(np.float32))
    jobs = []
    for name in ("all_unary", "float32_subset"):
        for module in kernel_modules(cuda[name].generated_modules()):
            source = open(module.__knetc_path__).read()
            kernels = {k: sig for k, sig in module.PTX_SIGNATURES.items()
                       if name != "all_unary" or "special_" in _kernel_source(source, k)}
            jobs.append((module.__knetc_path__, kernels))
    helpers = {h for path, kernels in jobs for k in kernels for h in re.findall(r"special_(\w+)\(", _kernel_source(open(path).read(), k))}
    assert {"digamma", "polygamma", "trigamma", "erfinv", "erfcinv", "erfcx", "gamma", "lgamma", "loggamma", "sinpi",
            "cospi", "floor", "ceil", "rint", "trunc", "remainder", "floor_divide", "fmod_float"} <= helpers
    for (path, kernels), report in zip(jobs, compile_ptx_many(jobs)):
        assert set(report) == set(kernels), path
        assert all(r["target"] and r["entry"] for r in report.values()), path


def _kernel_source(module_source, name):
    return re.search(rf"def {name}\(.*?(?=\n\n\n|\Z)", module_source, re.S).group(0)


def test_generated_module_imports_the_helper_flavours():
    for target in ("cpu", "cuda"):  # specialize here: under xdist the other tests may run elsewhere
        COMPILED[target]["all_unary"](*_edge_inputs())
    source = "".join(open(m.__knetc_path__).read() for m in COMPILED["cpu"]["all_unary"].generated_modules())
    assert "from knetc.kernels.special import digamma_cpu as special_digamma" in source
    source = "".join(open(m.__knetc_path__).read() for m in COMPILED["cuda"]["all_unary"].generated_modules())
    assert "from knetc.kernels.special import erfinv_cuda as special_erfinv" in source


# ----------------------------------------------------------------------------- properties

@st.composite
def broadcastable(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    a = draw(hnp.arrays(np.float64, shapes.input_shapes[0], elements=st.floats(-3, 3)))
    b = draw(hnp.arrays(np.float64, shapes.input_shapes[1], elements=st.floats(-3, 3)))
    return a, b, shapes.result_shape


@settings(max_examples=40, deadline=None)
@given(broadcastable(), st.sampled_from(["add", "mul", "max", "min", "lt", "ne", "sub"]))
def test_broadcasting_property(data, name):
    a, b, shape = data
    fn, reference = BINARY[name]
    got = fn(a, b)
    assert np.shape(got) == shape
    assert_close(np.asarray(got, np.float64), np.asarray(reference(a, b), np.float64), rtol=1e-14)
    if name in ("add", "mul", "max", "sub"):  # gradients come back in each input's shape
        ga = kn.grad(lambda u, v: kn.sum(fn(u, v)), argnum=0)(a, b)
        gb = kn.grad(lambda u, v: kn.sum(fn(u, v)), argnum=1)(a, b)
        assert np.shape(ga) == a.shape and np.shape(gb) == b.shape


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), elements=st.floats(-3, 3, width=32)),
       st.sampled_from(sorted(UNARY)))
def test_float32_stays_float32_property(x, name):
    assert np.asarray(unary(name)(x)).dtype == np.float32


def test_special_helpers_cpu_flavour_match_scipy():
    from knetc.kernels import special
    cpu = special.flavour("cpu")
    x = np.concatenate([np.linspace(-5.3, 6.1, 23), [1e-5, 30.0, 250.0]])
    u = np.linspace(-0.999, 0.999, 21)
    for name, reference, data in (("digamma", sp.digamma, x), ("trigamma", lambda v: sp.polygamma(1, v), x),
                                  ("gamma", sp.gamma, x), ("lgamma", sp.gammaln, x), ("erfcx", sp.erfcx, x),
                                  ("erfinv", sp.erfinv, u), ("erfcinv", sp.erfcinv, u + 1)):
        got = np.array([cpu[name](float(v)) for v in data])
        np.testing.assert_allclose(got, reference(data), rtol=1e-12, atol=1e-14, err_msg=name)
    assert cpu["polygamma"](2, 1.0) == pytest.approx(-2 * 1.2020569031595942, rel=1e-14)
    assert math.isnan(cpu["erfinv"](1.5)) and cpu["erfcinv"](0.0) == math.inf


def test_numpy_ufuncs_on_params_are_recorded():
    x = np.array([0.3, 1.7, 2.2])
    p = kn.Param(x)
    y = kn.diff(lambda: np.sum(np.sin(p) * np.maximum(p, 1.0) + np.floor(p) + np.cbrt(p) + np.power(p, p)))
    expected = (np.cos(x) * np.maximum(x, 1.0) + np.sin(x) * (x > 1.0) + x ** (-2 / 3) / 3
                + x ** x * (np.log(x) + 1))
    assert_close(kn.grad(y, p), expected, rtol=1e-10)


def broadcast_program(a, b):
    return kn.max(a, b) * kn.min(a, b) + kn.power(kn.abs2(a) + 1, b) - kn.digamma(kn.abs(b) + 1)


BROADCAST_CPU = kn.compile(broadcast_program, target="cpu")


@settings(max_examples=4, deadline=None)
@given(broadcastable())
def test_compiled_broadcasting_property(data):
    a, b, shape = data
    got = BROADCAST_CPU(a, b)
    assert np.shape(got) == shape
    assert_close(got, broadcast_program(a, b), rtol=1e-12, atol=1e-12)
