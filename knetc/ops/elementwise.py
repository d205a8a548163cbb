"""Elementwise ops with numpy broadcasting. Each lowers to a scalar expression that the
code generators fuse into loops; `scalar(k, *names)` gets variable names and a kernel
context `k` (`k.const(v)` renders a constant in the kernel's dtype)."""
import numpy as np

from .core import Aval, Op, aval_of, broadcast_shapes, register, result_dtype


def _rule(name, dtype_rule=None):
    def rule(*avals, **params):
        shape = broadcast_shapes(name, *(a.shape for a in avals))
        return Aval(shape, (dtype_rule or result_dtype)(*avals))
    return rule


def elementwise(name, impl, scalar, grads, dtype_rule=None):
    return register(Op(name, _rule(name, dtype_rule), impl, grads, "elementwise", scalar))


def unbroadcast(dy, shape):
    """The adjoint of broadcasting: sum `dy` over the axes that were broadcast to reach it."""
    dshape = aval_of(dy).shape
    if dshape == tuple(shape):
        return dy
    lead = len(dshape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and dshape[lead + i] != 1)
    summed = reduce_sum(dy, axes=axes) if axes else dy
    return reshape(summed, shape=tuple(shape))


def _float_result(*avals):
    dtype = result_dtype(*avals)
    return dtype if dtype is not None and np.issubdtype(dtype, np.floating) else np.dtype("float64")


def _grads(*rules):
    """Gradient rules of a broadcasting op: each result is summed back to its input's shape."""
    def summed(g, i):
        return lambda dy, y, *xs, **p: unbroadcast(g(dy, y, *xs, **p), aval_of(xs[i]).shape)
    return tuple(None if g is None else summed(g, i) for i, g in enumerate(rules))


add = elementwise("add", np.add, lambda k, a, b: f"{a} + {b}",
                  _grads(lambda dy, y, a, b: dy, lambda dy, y, a, b: dy))
sub = elementwise("sub", np.subtract, lambda k, a, b: f"{a} - {b}",
                  _grads(lambda dy, y, a, b: dy, lambda dy, y, a, b: neg(dy)))
mul = elementwise("mul", np.multiply, lambda k, a, b: f"{a} * {b}",
                  _grads(lambda dy, y, a, b: mul(dy, b), lambda dy, y, a, b: mul(dy, a)))
div = elementwise("div", np.true_divide, lambda k, a, b: f"{a} / {b}",
                  _grads(lambda dy, y, a, b: div(dy, b), lambda dy, y, a, b: neg(div(mul(dy, y), b))))
neg = elementwise("neg", np.negative, lambda k, a: f"-{a}", (lambda dy, y, a: neg(dy),))


def _power_rule(x, exponent):
    return _rule("power")(x)


def _power_scalar(k, x, exponent):
    if float(exponent).is_integer() and abs(exponent) <= 4:
        return f"{x} ** {int(exponent)}"  # Numba lowers small integer powers to multiplies
    return f"{x} ** {k.const(exponent)}"


power = register(Op(
    "power", _power_rule, lambda x, exponent: np.power(x, exponent),
    (lambda dy, y, x, exponent: mul(dy, mul(power(x, exponent=exponent - 1), exponent)),),
    "elementwise", _power_scalar))

exp = elementwise("exp", np.exp, lambda k, x: f"math.exp({x})", (lambda dy, y, x: mul(dy, y),))
log = elementwise("log", np.log, lambda k, x: f"math.log({x})", (lambda dy, y, x: div(dy, x),))
tanh = elementwise("tanh", np.tanh, lambda k, x: f"math.tanh({x})",
                   (lambda dy, y, x: mul(dy, sub(1, mul(y, y))),))
sqrt = elementwise("sqrt", np.sqrt, lambda k, x: f"math.sqrt({x})",
                   (lambda dy, y, x: div(dy, mul(y, 2)),))

# Step functions have zero gradient (Knet's zerograd): no rule, nothing flows back.
sign = elementwise("sign", np.sign, lambda k, x: f"({k.const(1)} if {x} > 0 else ({k.const(-1)} if {x} < 0 else {k.const(0)}))", (None,))
abs = elementwise("abs", np.abs, lambda k, x: f"abs({x})", (lambda dy, y, x: mul(dy, sign(x)),))
relu = elementwise("relu", lambda x: np.maximum(x, 0), lambda k, x: f"max({x}, {k.const(0)})",
                   (lambda dy, y, x: mul(dy, gt(y, 0)),))


def _sigm(x):
    e = np.exp(-np.abs(x))  # never overflows: the stable form for either sign
    return np.where(np.asarray(x) >= 0, 1 / (1 + e), e / (1 + e))


sigm = elementwise("sigm", _sigm,
                   lambda k, x: f"({k.const(1)} / ({k.const(1)} + math.exp(-{x})) if {x} >= 0 else math.exp({x}) / ({k.const(1)} + math.exp({x})))",
                   (lambda dy, y, x: mul(dy, mul(y, sub(1, y))),))


def _comparison(name, fn, symbol):
    # Knet: comparisons return the inputs' floating type (1 or 0), not booleans.
    def impl(a, b):
        return fn(a, b).astype(_float_result(aval_of(a), aval_of(b)))
    return elementwise(name, impl, lambda k, a, b: f"({k.const(1)} if {a} {symbol} {b} else {k.const(0)})",
                       (None, None), _float_result)


lt = _comparison("lt", np.less, "<")
le = _comparison("le", np.less_equal, "<=")
gt = _comparison("gt", np.greater, ">")
ge = _comparison("ge", np.greater_equal, ">=")
eq = _comparison("eq", np.equal, "==")
ne = _comparison("ne", np.not_equal, "!=")


def _astype_rule(x, dtype):
    return Aval(x.shape, np.dtype(dtype))


def _astype_grad(dy, y, x, dtype):
    return astype(dy, dtype=aval_of(x).dtype)


astype = register(Op("astype", _astype_rule, lambda x, dtype: np.asarray(x).astype(dtype),
                     (_astype_grad,), "elementwise", lambda k, x, dtype: k.cast(x, dtype)))


def _broadcast_to_rule(x, shape):
    if broadcast_shapes("broadcast_to", x.shape, shape) != tuple(shape):
        from ..errors import ShapeError
        raise ShapeError(f"broadcast_to: cannot broadcast {x.shape} to {shape}")
    return Aval(tuple(shape), x.dtype)


broadcast_to = register(Op(
    "broadcast_to", _broadcast_to_rule, lambda x, shape: np.broadcast_to(x, shape).copy(),
    (lambda dy, y, x, shape: unbroadcast(dy, aval_of(x).shape),), "elementwise", lambda k, x, shape: x))


def _iota_impl(x, axis, dtype):
    shape = np.shape(x)
    index = np.arange(shape[axis], dtype=dtype).reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return np.broadcast_to(index, shape).copy()


# The position along `axis` of each entry of x (x only gives the shape): with `eq` it
# builds the one-hot masks with which nll picks the labelled scores.
iota = register(Op("iota", lambda x, axis, dtype: Aval(x.shape, np.dtype(dtype)), _iota_impl, (None,),
                   "elementwise", lambda k, x, axis, dtype: k.cast(k.index(axis), dtype)))

# A constant array (the seed of reverse mode, zeros): no inputs, so it is emitted directly.
full = register(Op("full", lambda shape, value, dtype: Aval(tuple(shape), np.dtype(dtype)),
                   lambda shape, value, dtype: np.full(shape, value, dtype), (), "elementwise",
                   lambda k, shape, value, dtype: k.const(value)))

from .reduce import reduce_sum  # noqa: E402  (unbroadcast needs it; reduce needs us)
from .shape import reshape  # noqa: E402
