"""Elementwise ops with numpy broadcasting. Each lowers to a scalar expression that the
code generators fuse into loops; `scalar(k, *names)` gets variable names and a kernel
context `k` (`k.const(v)` renders a constant in the kernel's dtype)."""
import math

import numpy as np

from .. import context
from ..errors import CompileError, ShapeError
from .broadcast import unbroadcast
from .core import (Aval, Op, astype, aval_of, broadcast_shapes, has_integer_dtype, register, result_dtype,
                   unchanged)


def _rule(name, dtype_rule=None):
    def rule(*avals, **params):
        shape = broadcast_shapes(name, *(a.shape for a in avals))
        return Aval(shape, (dtype_rule or result_dtype)(*avals))
    return rule


def elementwise(name, impl, scalar, grads, dtype_rule=None, **fields):
    return register(Op(name, _rule(name, dtype_rule), impl, grads, "elementwise", _wrapping(scalar), **fields))


def _wrapping(scalar):
    """The op's template, cast to its result's dtype where that is an integer narrower than 64
    bits: Numba computes int8 * int8 in int64, numpy wraps it in int8 (so does the cast)."""
    def wrapped(k, *names, **params):
        text, dtype = scalar(k, *names, **params), np.dtype(k.dtype)
        return k.cast(text, dtype) if dtype.kind in "iu" and dtype.itemsize < 8 else text
    return wrapped


def _float_result(*avals):
    """numpy's dtype for a float function of these inputs (np.exp's): floats keep theirs;
    int32/int64 (and Python numbers) give float64, int16 float32, bool and int8 float16."""
    dtype = result_dtype(*avals)
    if dtype is None:
        return np.dtype("float64")
    return dtype if np.issubdtype(dtype, np.floating) else np.promote_types(dtype, np.float16)


def _true_divide_result(*avals):
    # numpy's true division: integers and bools divide in float64
    dtype = result_dtype(*avals)
    return dtype if dtype is not None and np.issubdtype(dtype, np.floating) else np.dtype("float64")


# Simplification rules (Op.simplify; ir/passes.py runs them): identities the adjoint rules leave behind.

def _unit(value, *positions):
    """x op value -> x, where the input at one of `positions` is the constant `value` (x*1, x+0)."""
    def rule(eqn, constant, producer):
        for i in positions:
            other = eqn.inputs[1 - i]
            if constant(eqn.inputs[i]) == value and unchanged(other, eqn):
                return other
        return None
    return rule


def _double_negation(eqn, constant, producer):
    inner = producer(eqn.inputs[0])
    return inner.inputs[0] if inner is not None and inner.op is neg else None


def _no_bool(name, what):
    # numpy refuses `-` on booleans (TypeError); knetc refuses it too, eagerly and compiled
    def dtype_rule(*avals):
        if all(a.dtype == np.bool_ for a in avals):  # a Python int with a bool array makes int64 (ops/core.py)
            raise ShapeError(f"{name}: numpy does not {what} booleans; use `^` or `~`, or convert "
                             f"with .astype(np.int64) first")
        return result_dtype(*avals)
    return dtype_rule


def _grads(*rules):
    """Gradient rules of a broadcasting op: each result is summed back to its input's shape."""
    def summed(g, i):
        return lambda dy, y, *xs, **p: unbroadcast(g(dy, y, *xs, **p), aval_of(xs[i]).shape)
    return tuple(None if g is None else summed(g, i) for i, g in enumerate(rules))


def _plus_zero(eqn, constant, producer):
    """x + 0 -> x; for a float x only x + (-0.0): x + 0.0 turns -0.0 into 0.0 (numpy's, IEEE's)."""
    for i in (0, 1):
        c, other = constant(eqn.inputs[i]), eqn.inputs[1 - i]
        if c == 0 and unchanged(other, eqn) and (math.copysign(1, c) < 0 or aval_of(other).dtype.kind != "f"):
            return other
    return None


add = elementwise("add", np.add, lambda k, a, b: f"{a} + {b}",
                  _grads(lambda dy, y, a, b: dy, lambda dy, y, a, b: dy), simplify=_plus_zero, cheap=True)
sub = elementwise("sub", np.subtract, lambda k, a, b: f"{a} - {b}",
                  _grads(lambda dy, y, a, b: dy, lambda dy, y, a, b: neg(dy)), _no_bool("sub", "subtract"),
                  simplify=_unit(0, 1), cheap=True, online="shift")
mul = elementwise("mul", np.multiply, lambda k, a, b: f"{a} * {b}",
                  _grads(lambda dy, y, a, b: mul(dy, b), lambda dy, y, a, b: mul(dy, a)), simplify=_unit(1, 1, 0),
                  cheap=True)
div = elementwise("div", np.true_divide, lambda k, a, b: f"{a} / {b}",
                  _grads(lambda dy, y, a, b: div(dy, b), lambda dy, y, a, b: neg(div(mul(dy, y), b))),
                  _true_divide_result, float_valued=True, simplify=_unit(1, 1))
neg = elementwise("neg", np.negative, lambda k, a: f"-{a}", (lambda dy, y, a: neg(dy),), _no_bool("neg", "negate"),
                  simplify=_double_negation, cheap=True)


def _power_rule(x, exponent):
    # numpy's dtype for x ** exponent (an int array ** 0.5 is float64, ** 2 stays int); numpy
    # refuses integers to negative integer powers, and so does knetc (eager and compiled).
    if x.dtype is None or np.issubdtype(x.dtype, np.floating):
        return _rule("power")(x)
    if isinstance(exponent, int) and exponent < 0:
        raise ShapeError(f"power: integers to negative integer powers are not allowed (numpy raises too): "
                         f"{x} ** {exponent}; use a float array or a float exponent")
    return Aval(x.shape, np.power(np.ones(1, x.dtype), exponent).dtype)


def _power_scalar(k, x, exponent):
    if float(exponent).is_integer() and 0 <= exponent <= 4:
        return f"{x} ** {int(exponent)}"  # Numba lowers small integer powers to multiplies
    if float(exponent).is_integer() and -4 <= exponent < 0:  # (Numba's x ** -2 raises at 0: numpy's is inf)
        return f"{k.const(1)} / {x} ** {-int(exponent)}"
    return f"{x} ** {k.const(exponent)}"


def _power_grad(dy, y, x, exponent):
    if exponent == 0:  # x ** 0 is constant: 0, also at x = 0 (where 0 * x ** -1 is NaN)
        return mul(dy, 0)
    return mul(dy, mul(power(x, exponent=exponent - 1), exponent))


power = register(Op(
    "power", _power_rule, lambda x, exponent: np.power(x, exponent),
    (_power_grad,), "elementwise", _wrapping(_power_scalar), float_valued=True))


# Unary float functions: integer inputs give float64 (as numpy); float32 stays float32.
# Their scalar code guards the domain so that every target returns numpy's NaN/inf: the
# CUDA simulator runs kernels as Python, whose math module raises instead.
def _float_impl(fn):
    def impl(x):
        if type(x) is np.ndarray and x.dtype.kind == "f":  # float arrays keep their dtype
            out = fn(x)
            if type(out) is np.ndarray and out.dtype == x.dtype:
                return out
        dtype = _float_result(aval_of(x))
        x = np.asarray(x)
        out = np.asarray(fn(x if x.dtype == dtype else x.astype(dtype)))  # in numpy's dtype, as np.exp does
        return out if out.dtype == dtype else out.astype(dtype)
    return impl


def unary(name, impl, scalar, grad, **fields):
    """A float-valued unary op: numpy reference `impl`, template `scalar(k, x)`, one grad rule."""
    return elementwise(name, _float_impl(impl), scalar, (grad,), _float_result, float_valued=True, **fields)


def _overflow_guarded(function, limit):
    # exp-like: inf above `limit` (where Python's math raises OverflowError)
    return lambda k, x: f"({k.const(math.inf)} if {x} > {k.const(limit)} else math.{function}({x}))"


def _log_guarded(function, zero=0):
    # log-like: -inf at `zero`, NaN below it (and for NaN)
    return lambda k, x: (f"(math.{function}({x}) if {x} > {k.const(zero)} else "
                         f"({k.const(-math.inf)} if {x} == {k.const(zero)} else {k.const(math.nan)}))")


def _domain(function, condition):
    # math.<function> where `condition` holds, NaN elsewhere (NaN fails every comparison)
    def scalar(k, x):
        test = condition.format(x=x, zero=k.const(0), one=k.const(1))
        return f"(math.{function}({x}) if {test} else {k.const(math.nan)})"
    return scalar


def _periodic(function):
    # sin/cos/tan: NaN at +-inf (Python's math raises there)
    return lambda k, x: f"({k.const(math.nan)} if abs({x}) == {k.const(math.inf)} else math.{function}({x}))"


def _fast_float32(name, template):
    """`template`, but float32 values in loops that vectorize call kernels/fastmath.py's
    `name`: arithmetic LLVM runs in vector lanes, where the C library's expf, tanhf and erff
    are one call per element (and faster than it in a loop that does not vectorize)."""
    fast = f"knetc.kernels.fastmath:{name}"
    return lambda k, x: k.vector_call(fast, x) if k.vectorizes and np.dtype(k.dtype) == np.float32 else template(k, x)


EXP_MAX = 709.782712893384  # log of the largest float64
SINH_MAX = 710.4758600739439  # cosh and sinh overflow beyond this
TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)

exp = unary("exp", np.exp, _fast_float32("exp32", _overflow_guarded("exp", EXP_MAX)), lambda dy, y, x: mul(dy, y),
            online="exponential")
log = unary("log", np.log, _log_guarded("log"), lambda dy, y, x: div(dy, x))
tanh = unary("tanh", np.tanh, _fast_float32("tanh32", lambda k, x: f"math.tanh({x})"),
             lambda dy, y, x: mul(dy, sub(1, mul(y, y))))
sqrt = unary("sqrt", np.sqrt, _domain("sqrt", "{x} >= {zero}"), lambda dy, y, x: div(dy, mul(y, 2)))

# Step functions have zero gradient (Knet's zerograd): no rule, nothing flows back.
# sign keeps the input's dtype and passes 0, -0 and NaN through (numpy: sign(nan) is nan).
sign = elementwise("sign", np.sign, lambda k, x: f"({k.const(1)} if {x} > 0 else ({k.const(-1)} if {x} < 0 else {x} + {k.const(0)}))",
                   (None,))  # (x + 0: NaN stays NaN, -0.0 gives 0.0 as numpy's)
abs = elementwise("abs", np.abs, lambda k, x: f"abs({x})", (lambda dy, y, x: mul(dy, sign(x)),))
def _relu_eager_grad(dy, y, x):
    """relu's rule, mul(dy, sub(1, le(y, 0))), in one pass where dy and y are float arrays of
    one dtype: dy times the 0/1 mask, as the rule's float mask gives it (dy * 1.0 is dy,
    dy * 0.0 is +-0 or NaN), without its two float temporaries. None elsewhere."""
    if type(dy) is not np.ndarray or type(y) is not np.ndarray or dy.dtype is not y.dtype \
            or dy.dtype.kind != "f" or dy.shape != y.shape:
        return None
    return np.multiply(dy, np.logical_not(np.less_equal(y, 0)))


def relu_scalar(k, x):
    """max(x, 0) as a select, NaN kept (softplus uses it too): Numba would compile its max()
    again in every new process."""
    return f"({k.const(0)} if {x} <= {k.const(0)} else {x})"  # (-0.0 gives 0.0, as Julia's max(0, x))


relu = elementwise("relu", lambda x: np.maximum(x, 0), relu_scalar,
                   (lambda dy, y, x: mul(dy, sub(1, le(y, 0))),),  # 0 where y <= 0; dy at NaN, as torch
                   lambda x: None if x.dtype is None else np.result_type(x.dtype, 0),  # np.maximum(x, 0): bool: int64
                   eager_grad=_relu_eager_grad)


def _sigm(x):
    e = np.exp(-np.abs(x))  # never overflows: the stable form for either sign
    return np.where(np.asarray(x) >= 0, 1 / (1 + e), e / (1 + e))


sigm = unary("sigm", _sigm, _fast_float32("sigm32", lambda k, x: (
    f"({k.const(1)} / ({k.const(1)} + math.exp(-{x})) if {x} >= 0 else math.exp({x}) / ({k.const(1)} + math.exp({x})))")),
             lambda dy, y, x: mul(dy, mul(y, sub(1, y))))


_NUMBERS = (int, float)


def _comparison_dtype(*avals):
    # Knet: comparisons of floats return 1 or 0 in the inputs' type (float32 stays float32),
    # not booleans; two Python numbers give float64. Integers and bools give bools, as numpy:
    # 1/0 in an integer type would index as positions (x[x > 0] must be a mask).
    if all(a.dtype is None or a.dtype.kind in "biu" for a in avals) and any(a.dtype is not None for a in avals):
        return np.dtype(bool)
    dtype = result_dtype(*avals)
    return np.dtype("float64") if dtype is None else dtype


def _comparison(name, fn, symbol):
    def impl(a, b):
        if type(a) is np.ndarray:  # the result's dtype without building avals
            if type(b) in _NUMBERS or type(b) is np.ndarray and b.dtype is a.dtype:
                return fn(a, b) if a.dtype.kind in "biu" else fn(a, b).astype(a.dtype)  # (a Python number is weak)
        return fn(a, b).astype(_comparison_dtype(aval_of(a), aval_of(b)))
    op = elementwise(name, impl, lambda k, a, b: f"({k.const(1)} if {a} {symbol} {b} else {k.const(0)})",
                     (None, None), _comparison_dtype, cheap=True)

    def compare(a, b):
        if any(type(x) is float for x in (a, b)) and any(has_integer_dtype(x) for x in (a, b)):
            # bind compares an integer array with 2.5 in float64 (numpy's promotion), then 1/0 in
            # float64 would come out: bools, as numpy gives and as integer comparisons do
            return astype(op(a, b), dtype=np.dtype(bool))
        return op(a, b)
    compare.__name__ = compare.__qualname__ = name
    compare.__doc__ = (f"{name}(a, b): 1 where a {symbol} b else 0, in the inputs' float type (bools for integers "
                       f"and bools), with broadcasting.\n\n"
                       f"Example:\n    >>> import numpy as np, knetc as kn\n"
                       f"    >>> kn.{name}(np.array([1.0, 2.0, 3.0]), 2.0)\n"
                       f"    {fn(np.array([1.0, 2.0, 3.0]), 2.0).astype(np.float64)!r}\n")
    compare.op = op
    return compare


lt = _comparison("lt", np.less, "<")
le = _comparison("le", np.less_equal, "<=")
gt = _comparison("gt", np.greater, ">")
ge = _comparison("ge", np.greater_equal, ">=")
eq = _comparison("eq", np.equal, "==")
ne = _comparison("ne", np.not_equal, "!=")


# ----------------------------------------------------------------------------- the Knet unary vocabulary

def _special(function, *params):
    """Template calling knetc.kernels.special.<function> (float64 in and out) in the kernel's dtype."""
    def scalar(k, x, **p):
        call = k.call(f"knetc.kernels.special:{function}", *[repr(p[name]) for name in params], k.cast(x, "float64"))
        return call if np.dtype(k.dtype) == np.float64 else k.cast(call, k.dtype)
    return scalar


acos = unary("acos", np.arccos, _domain("acos", "abs({x}) <= {one}"),
             lambda dy, y, x: neg(div(dy, sqrt(sub(1, mul(x, x))))))
asin = unary("asin", np.arcsin, _domain("asin", "abs({x}) <= {one}"),
             lambda dy, y, x: div(dy, sqrt(sub(1, mul(x, x)))))
atan = unary("atan", np.arctan, lambda k, x: f"math.atan({x})", lambda dy, y, x: div(dy, add(1, mul(x, x))))
acosh = unary("acosh", np.arccosh, _domain("acosh", "{x} >= {one}"),
              lambda dy, y, x: div(dy, sqrt(sub(mul(x, x), 1))))
asinh = unary("asinh", np.arcsinh, lambda k, x: f"math.asinh({x})", lambda dy, y, x: div(dy, sqrt(add(mul(x, x), 1))))
atanh = unary("atanh", np.arctanh,
              lambda k, x: (f"(math.atanh({x}) if abs({x}) < {k.const(1)} else (math.copysign({k.const(math.inf)}, "
                            f"{k.cast(x, k.dtype)}) if abs({x}) == {k.const(1)} else {k.const(math.nan)}))"),
              lambda dy, y, x: div(dy, sub(1, mul(x, x))))
sin = unary("sin", np.sin, _periodic("sin"), lambda dy, y, x: mul(dy, cos(x)))
cos = unary("cos", np.cos, _periodic("cos"), lambda dy, y, x: neg(mul(dy, sin(x))))
tan = unary("tan", np.tan, _periodic("tan"), lambda dy, y, x: mul(dy, add(1, mul(y, y))))
sinh = unary("sinh", np.sinh,
             lambda k, x: (f"(math.copysign({k.const(math.inf)}, {k.cast(x, k.dtype)}) "
                           f"if abs({x}) > {k.const(SINH_MAX)} else math.sinh({x}))"),
             lambda dy, y, x: mul(dy, cosh(x)))
cosh = unary("cosh", np.cosh,
             lambda k, x: f"({k.const(math.inf)} if abs({x}) > {k.const(SINH_MAX)} else math.cosh({x}))",
             lambda dy, y, x: mul(dy, sinh(x)))
cbrt = unary("cbrt", np.cbrt,
             lambda k, x: f"math.copysign(abs({k.cast(x, k.dtype)}) ** {k.const(1 / 3)}, {k.cast(x, k.dtype)})",
             lambda dy, y, x: div(dy, mul(3, mul(y, y))))
exp2 = unary("exp2", np.exp2, lambda k, x: f"({k.const(math.inf)} if {x} >= {k.const(1024)} else math.exp2({x}))",
             lambda dy, y, x: mul(dy, mul(y, math.log(2))))
exp10 = unary("exp10", lambda x: np.power(10.0, x),
              lambda k, x: f"({k.const(math.inf)} if {x} > {k.const(308.25471555991675)} else {k.const(10)} ** {x})",
              lambda dy, y, x: mul(dy, mul(y, math.log(10))))
expm1 = unary("expm1", np.expm1, _overflow_guarded("expm1", EXP_MAX), lambda dy, y, x: mul(dy, add(y, 1)))
log2 = unary("log2", np.log2, _log_guarded("log2"), lambda dy, y, x: div(dy, mul(x, math.log(2))))
log10 = unary("log10", np.log10, _log_guarded("log10"), lambda dy, y, x: div(dy, mul(x, math.log(10))))
log1p = unary("log1p", np.log1p, _log_guarded("log1p", -1), lambda dy, y, x: div(dy, add(x, 1)))
erf = unary("erf", lambda x: _scipy().erf(x), _fast_float32("erf32", lambda k, x: f"math.erf({x})"),
            lambda dy, y, x: mul(dy, mul(exp(neg(mul(x, x))), TWO_OVER_SQRT_PI)))
erfc = unary("erfc", lambda x: _scipy().erfc(x), lambda k, x: f"math.erfc({x})",
             lambda dy, y, x: mul(dy, mul(exp(neg(mul(x, x))), -TWO_OVER_SQRT_PI)))
# d/dy erfinv(y) = sqrt(pi)/2 exp(erfinv(y)^2); erfcx' = 2x erfcx(x) - 2/sqrt(pi)
erfinv = unary("erfinv", lambda x: _scipy().erfinv(x), _special("erfinv"),
               lambda dy, y, x: mul(dy, mul(exp(mul(y, y)), 1 / TWO_OVER_SQRT_PI)))
erfcinv = unary("erfcinv", lambda x: _scipy().erfcinv(x), _special("erfcinv"),
                lambda dy, y, x: mul(dy, mul(exp(mul(y, y)), -1 / TWO_OVER_SQRT_PI)))
erfcx = unary("erfcx", lambda x: _scipy().erfcx(x), _special("erfcx"),
              lambda dy, y, x: mul(dy, sub(mul(mul(x, y), 2), TWO_OVER_SQRT_PI)))
sinpi = unary("sinpi", lambda x: _numpy_sinpi(x), _special("sinpi"), lambda dy, y, x: mul(dy, mul(cospi(x), math.pi)))
cospi = unary("cospi", lambda x: _numpy_cospi(x),
              _special("cospi"), lambda dy, y, x: mul(dy, mul(sinpi(x), -math.pi)))
gamma = unary("gamma", lambda x: _scipy().gamma(x), _special("gamma"), lambda dy, y, x: mul(dy, mul(y, digamma(x))))
lgamma = unary("lgamma", lambda x: _numpy_lgamma(x), _special("lgamma"), lambda dy, y, x: mul(dy, digamma(x)))
loggamma = unary("loggamma", lambda x: _numpy_loggamma(x), _special("loggamma"), lambda dy, y, x: mul(dy, digamma(x)))
digamma = unary("digamma", lambda x: _scipy().digamma(x), _special("digamma"), lambda dy, y, x: mul(dy, trigamma(x)))
trigamma = unary("trigamma", lambda x: _numpy_polygamma(1, x), _special("trigamma"),
                 lambda dy, y, x: mul(dy, polygamma(x, n=2)))


def _polygamma_rule(x, n):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ShapeError(f"polygamma: the order n must be an integer >= 1 (0 is digamma), got {n!r}")
    return Aval(x.shape, _float_result(x))


polygamma = register(Op("polygamma", _polygamma_rule, lambda x, n: _float_impl(lambda v: _numpy_polygamma(n, v))(x),
                        (lambda dy, y, x, n: mul(dy, polygamma(x, n=n + 1)),), "elementwise",
                        _special("polygamma", "n"), float_valued=True))

abs2 = elementwise("abs2", np.square, lambda k, x: f"{x} * {x}", (lambda dy, y, x: mul(dy, mul(x, 2)),))


def _rounding(name, function, numpy_fn):
    # Integers pass through unchanged (Julia's floor(3) is 3); floats round in float64
    # helpers (math.floor returns an integer in Numba) and come back in their dtype.
    special = _special(function)

    def scalar(k, x):
        return x if not np.issubdtype(np.dtype(k.dtype), np.floating) else special(k, x)

    def impl(x):
        return np.array(x) if has_integer_dtype(x) else numpy_fn(x)
    return elementwise(name, impl, scalar, (None,))


floor = _rounding("floor", "floor", np.floor)
ceil = _rounding("ceil", "ceil", np.ceil)
trunc = _rounding("trunc", "trunc", np.trunc)
round = _rounding("round", "rint", np.rint)  # halves to even, as numpy and Julia
one = elementwise("one", np.ones_like, lambda k, x: k.const(1), (None,))
zero = elementwise("zero", np.zeros_like, lambda k, x: k.const(0), (None,))


def _scipy():
    import scipy.special  # imported on first use: the numpy references of the special functions
    return scipy.special


def _numpy_sinpi(x):
    # exact at integers and halves, like the kernels (np.sin(np.pi * x) is not)
    x = np.asarray(x, dtype=_float_result(aval_of(x)))
    r = np.fmod(np.abs(x), 2.0)
    s = np.select([r <= 0.25, r <= 0.75, r <= 1.25, r <= 1.75],
                  [np.sin(np.pi * r), np.cos(np.pi * (r - 0.5)), np.sin(np.pi * (1 - r)), -np.cos(np.pi * (r - 1.5))],
                  np.sin(np.pi * (r - 2)))
    return np.where(np.isfinite(x), np.where(x < 0, -s, s), np.nan).astype(x.dtype)[()]


def _numpy_cospi(x):
    x = np.asarray(x, dtype=_float_result(aval_of(x)))
    r = np.fmod(np.abs(x), 2.0)
    c = np.select([r <= 0.25, r <= 0.75, r <= 1.25, r <= 1.75],
                  [np.cos(np.pi * r), -np.sin(np.pi * (r - 0.5)), -np.cos(np.pi * (r - 1)), np.sin(np.pi * (r - 1.5))],
                  np.cos(np.pi * (r - 2)))
    return np.where(np.isfinite(x), c, np.nan).astype(x.dtype)[()]


def _numpy_polygamma(n, x):
    sp = _scipy()
    x = np.asarray(x, dtype=_float_result(aval_of(x)))
    out = sp.polygamma(n, x.astype(np.float64))
    pole = (x <= 0) & (np.floor(x) == x)  # (-1)^(n+1) inf at 0, -1, ..., as at 0
    return np.where(pole, np.inf if n % 2 else -np.inf, out).astype(x.dtype)[()]


def _numpy_lgamma(x):
    return np.where(np.asarray(x) == -np.inf, np.inf, _scipy().gammaln(x))[()]  # log|gamma(-inf)|: inf


def _numpy_loggamma(x):
    # Julia's loggamma on reals: log(gamma(x)), NaN where gamma(x) < 0
    sp = _scipy()
    x = np.asarray(x, dtype=_float_result(aval_of(x)))
    negative = (x < 0) & (np.floor(x) != x) & (np.fmod(np.floor(x), 2) != 0)
    return np.where(negative | (x == -np.inf), np.nan, sp.gammaln(x)).astype(x.dtype)[()]


# ----------------------------------------------------------------------------- binary

def _max_scalar(symbol):
    # NaN wins, as numpy.maximum/minimum
    return lambda k, a, b: f"({a} if ({a} {symbol} {b} or {a} != {a}) else {b})"


def _select_grads(wins):
    # dy goes to the input that wins; a tie (a == b) splits it in half, as torch.maximum
    # does, so that the two parts sum to dy. NaN wins the value but gets no gradient.
    def share(first, second):
        return add(wins(first, second), mul(eq(first, second), 0.5))
    return _grads(lambda dy, y, a, b: mul(dy, share(a, b)), lambda dy, y, a, b: mul(dy, share(b, a)))


def _binary_float(name, impl, grads):
    """A float-valued op of two inputs, numpy's `impl` and math's function of the same name."""
    def float_impl(a, b):
        dtype = _float_result(aval_of(a), aval_of(b))
        return np.asarray(impl(np.asarray(a, dtype), np.asarray(b, dtype)), dtype)[()]
    return elementwise(name, float_impl, lambda k, a, b: f"math.{name}({a}, {b})", _grads(*grads), _float_result,
                       float_valued=True)


# d atan2(a, b) = (b da - a db) / (a^2 + b^2); d hypot(a, b) = (a da + b db) / hypot(a, b)
atan2 = _binary_float("atan2", np.arctan2, (lambda dy, y, a, b: div(mul(dy, b), add(mul(a, a), mul(b, b))),
                                            lambda dy, y, a, b: neg(div(mul(dy, a), add(mul(a, a), mul(b, b))))))
hypot = _binary_float("hypot", np.hypot, (lambda dy, y, a, b: div(mul(dy, a), y), lambda dy, y, a, b: div(mul(dy, b), y)))


def _remainder_template(name, float_name=None):
    """numpy's `%`, `//` or fmod: kernels/special.py's float64 helper of floats, its integer
    helper (Python's floor semantics) of integers; 0 for an integer zero divisor, as numpy."""
    def scalar(k, a, b):
        dtype = np.dtype(k.dtype)
        if dtype.kind in "iu":
            return k.call(f"knetc.kernels.special:int_{name}", k.cast(a, dtype.name), k.cast(b, dtype.name))
        call = k.call(f"knetc.kernels.special:{float_name or name}", k.cast(a, "float64"), k.cast(b, "float64"))
        return call if dtype == np.float64 else k.cast(call, k.dtype)
    return scalar


def _no_bool_result(*avals):
    # numpy's remainders of booleans are int8
    dtype = result_dtype(*avals)
    return np.dtype(np.int8) if dtype == np.bool_ else dtype


# d(a % b) = da - floor(a / b) db; d fmod(a, b) = da - trunc(a / b) db (PyTorch's); `//` is flat
mod = elementwise("mod", np.remainder, _remainder_template("remainder"),
                  _grads(lambda dy, y, a, b: dy, lambda dy, y, a, b: neg(mul(dy, floordiv(a, b)))), _no_bool_result)
floordiv = elementwise("floordiv", np.floor_divide, _remainder_template("floor_divide"), (None, None),
                       _no_bool_result)
fmod = elementwise("fmod", np.fmod, _remainder_template("fmod", "fmod_float"),
                   _grads(lambda dy, y, a, b: dy, lambda dy, y, a, b: neg(mul(dy, trunc(div(a, b))))), _no_bool_result)

max = elementwise("max", np.maximum, _max_scalar(">"), _select_grads(gt))
min = elementwise("min", np.minimum, _max_scalar("<"), _select_grads(lt))


def _masked_rule(x, mask):
    return Aval(broadcast_shapes("masked", x.shape, mask.shape), x.dtype if x.dtype is not None else mask.dtype)


def _masked_impl(x, mask):
    if type(x) is np.ndarray and type(mask) is np.ndarray and x.dtype.kind == "f":
        out = np.where(mask != 0, x, 0)  # a new array in x's dtype (0 is weak)
        if out.dtype == x.dtype:
            return out
    dtype = _masked_rule(aval_of(x), aval_of(mask)).dtype or np.float64
    return np.where(np.asarray(mask) != 0, x, 0).astype(dtype)


# x where mask != 0, else 0. Unlike x * mask it gives 0 (not NaN) for x = -inf outside the
# mask: nll and accuracy pick the labelled scores with it, so masked -inf logits are harmless.
masked = register(Op(
    "masked", _masked_rule, _masked_impl,
    (lambda dy, y, x, mask: unbroadcast(masked(dy, mask), aval_of(x).shape), None), "elementwise",
    lambda k, x, mask: f"({x} if {mask} != {k.const(0)} else {k.const(0)})"))


def _power_grad_base(dy, y, a, b):
    # b * a ** (b - 1); at a == b == 0 that is 0 * 0 ** -1 = NaN, but a ** 0 is constant: 0
    base = add(a, mul(eq(a, 0), eq(b, 0)))
    return mul(dy, mul(b, power_array(base, sub(b, 1))))


def _power_grad_exponent(dy, y, a, b):
    # a ** b * log(a); at a == 0 and b >= 0, 0 ** b is constant in b: 0, not 0 * -inf = NaN
    # (log(1) replaces log(0) there; b < 0 keeps torch's -inf)
    return mul(dy, mul(y, log(add(a, mul(eq(a, 0), ge(b, 0))))))


def _power_array_result(base, exponent):
    """numpy's dtype; integers to integer array powers are refused in compiled code: numpy
    raises where an exponent is negative, and a kernel cannot (eagerly numpy raises)."""
    dtype = result_dtype(base, exponent)
    if context.compiling() and dtype is not None and dtype.kind in "iu" and exponent.dtype.kind == "i":
        raise CompileError(f"power: integers to the powers of an integer array {exponent}: numpy raises where an "
                           f"exponent is negative, which a compiled kernel cannot",
                           hint="use a float base or exponent, e.g. x ** y.astype(np.float64)")
    return dtype


power_array = elementwise("power_array", np.power, lambda k, a, b: f"{a} ** {b}",
                          _grads(_power_grad_base, _power_grad_exponent), _power_array_result)


def power_any(x, p):
    """x ** p with broadcasting: a Python number p is a constant exponent, an array p an operand.

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.power(np.array([2.0, 3.0]), 2)
        array([4., 9.])
    """
    if type(p) in (int, float):  # a weak Python number (np.float64, a float too, has its dtype: an operand)
        return power(x, exponent=p)  # an int stays an int: numpy's x ** 2 of integers is an integer
    return power_array(x, p)


def _iota_impl(x, axis, dtype):
    shape = np.shape(x)
    index = np.arange(shape[axis], dtype=dtype).reshape([-1 if i == axis else 1 for i in range(len(shape))])
    out = np.empty(shape, index.dtype)
    out[...] = index
    return out


# The position along `axis` of each entry of x (x only gives the shape): with `eq` it
# builds the one-hot masks with which nll picks the labelled scores.
iota = register(Op("iota", lambda x, axis, dtype: Aval(x.shape, np.dtype(dtype)), _iota_impl, (None,),
                   "elementwise", lambda k, x, axis, dtype: k.cast(k.index(axis), dtype), input_gives_shape=True,
                   cheap=True))

# A constant array (the seed of reverse mode, zeros): no inputs, so it is emitted directly.
full = register(Op("full", lambda shape, value, dtype: Aval(tuple(shape), np.dtype(dtype)),
                   lambda shape, value, dtype: np.full(shape, value, dtype), (), "elementwise",
                   lambda k, shape, value, dtype: k.const(value),
                   constant=lambda shape, value, dtype: value if int(np.prod(shape)) == 1 else None))
