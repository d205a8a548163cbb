"""Knet's unary and binary broadcasting functions as `kn.<name>`.

Every function works on numpy arrays (evaluated with numpy/scipy), on Params inside
`kn.diff` (recorded, with gradients) and inside `@kn.compile` (fused into the generated CPU
and CUDA kernels; the special functions run knetc.kernels.special there).

    >>> kn.digamma(np.array([1.0, 2.0]))   # [-0.5772, 0.4228]
    >>> kn.max(x, 0.0)                      # elementwise, broadcasting (Julia's max.(x, 0))

Float functions give float64 for integer inputs and keep float32. The step functions (ceil,
floor, round, trunc, sign, one, zero) have zero gradient. `round` rounds halves to even.
`kn.max(a, b)` / `kn.min(a, b)` are elementwise (the reductions are kn.maximum/kn.minimum);
where a == b both inputs receive the gradient (AutoGrad.jl's rule); a NaN wins. Comparisons
(kn.eq, kn.ne, kn.lt, kn.le, kn.gt, kn.ge, and the operators) return 1/0 in the inputs' float type,
bools for integers and bools (numpy's: x[x > 0] is a mask; an integer array against a Python
float is compared in float64, as numpy does, and gives bools too).
"""
import operator

from .elementwise import (abs, abs2, acos, acosh, add, asin, asinh, atan, atanh, cbrt, ceil, cos, cosh,  # noqa: F401
                          cospi, digamma, div, eq, erf, erfc, erfcinv, erfcx, erfinv, exp, exp2, exp10, expm1,
                          floor, gamma, ge, gt, le, lgamma, log, log1p, log2, log10, loggamma, lt, mul, ne,
                          neg, one, polygamma as _polygamma, power_any as power, round, sign, sin, sinh, sinpi, sqrt,
                          sub, tan, tanh, trigamma, trunc, zero)


from . import elementwise as _ew


def max(a, *others):
    """max(a, b, ...): the elementwise maximum with broadcasting (Julia's max.(a, b)); NaN wins.

    Where inputs tie, each receives the gradient. The reduction is kn.maximum(x, dims).
    >>> kn.max(np.array([1.0, 5.0]), 2.0)
    array([2., 5.])
    """
    if not others:
        raise TypeError("kn.max(a, b) is elementwise; for the largest entry use kn.maximum(x) "
                        "or kn.maximum(x, dims=...)")
    for b in others:
        a = _ew.max(a, b)
    return a


def min(a, *others):
    """min(a, b, ...): the elementwise minimum with broadcasting (Julia's min.(a, b)); NaN wins.

    Where inputs tie, each receives the gradient. The reduction is kn.minimum(x, dims).
    >>> kn.min(np.array([1.0, 5.0]), 2.0)
    array([1., 2.])
    """
    if not others:
        raise TypeError("kn.min(a, b) is elementwise; for the smallest entry use kn.minimum(x) "
                        "or kn.minimum(x, dims=...)")
    for b in others:
        a = _ew.min(a, b)
    return a


def polygamma(n, x):
    """polygamma(n, x): the n-th derivative of digamma (n >= 1; polygamma(1, x) is trigamma).

    >>> kn.polygamma(2, np.array([1.0]))   # -2 zeta(3)
    array([-2.40411381])
    """
    return _polygamma(x, n=operator.index(n) if hasattr(n, "__index__") and not isinstance(n, bool) else n)


__all__ = ["abs", "abs2", "acos", "acosh", "add", "asin", "asinh", "atan", "atanh", "cbrt", "ceil", "cos", "cosh",
           "cospi", "digamma", "div", "eq", "erf", "erfc", "erfcinv", "erfcx", "erfinv", "exp", "exp10", "exp2",
           "expm1", "floor", "gamma", "ge", "gt", "le", "lgamma", "log", "log10", "log1p", "log2", "loggamma", "lt",
           "max", "min", "mul", "ne", "neg", "one", "polygamma", "power", "round", "sign", "sin", "sinh", "sinpi",
           "sqrt", "sub", "tan", "tanh", "trigamma", "trunc", "zero"]
