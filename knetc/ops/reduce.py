"""Reductions. The primitives keep reduced axes (size 1); the public functions follow Knet:
with `dims` the reduced axes stay, without it the result is a scalar."""
import builtins

import numpy as np

from ..errors import ShapeError
from .core import Aval, Op, aval_of, normalize_axes, register


def _reduce_rule(name):
    def rule(x, axes):
        if any(not 0 <= a < x.ndim for a in axes):
            raise ShapeError(f"{name}: axes {axes} out of range for {x}")
        return Aval(tuple(1 if i in axes else n for i, n in enumerate(x.shape)), x.dtype)
    return rule


reduce_sum = register(Op(
    "reduce_sum", _reduce_rule("sum"), lambda x, axes: np.sum(x, axis=axes, keepdims=True),
    (lambda dy, y, x, axes: broadcast_to(dy, shape=aval_of(x).shape),), "reduce"))

# AutoGrad.jl's rule: every entry equal to the maximum receives the gradient.
reduce_max = register(Op(
    "reduce_max", _reduce_rule("maximum"), lambda x, axes: np.max(x, axis=axes, keepdims=True),
    (lambda dy, y, x, axes: mul(dy, eq(x, y)),), "reduce"))


def _public(name, primitive):
    def reduction(x, dims=None):
        aval = aval_of(x)
        reduced = primitive(x, axes=normalize_axes(name, dims, aval.ndim))
        return reshape(reduced, shape=()) if dims is None else reduced
    reduction.__name__ = name
    return reduction


sum = _public("sum", reduce_sum)
maximum = _public("maximum", reduce_max)
sum.__doc__ = """sum(x, dims=None): Knet's sum. `kn.sum(x, dims=1)` of a (4,5) array is (4,1); no dims: a scalar."""
maximum.__doc__ = """maximum(x, dims=None): the largest entry (over `dims`, kept as size 1), as Knet's maximum."""


def mean(x, dims=None):
    """mean(x, dims=None): Knet's mean; reduced axes are kept when `dims` is given."""
    aval = aval_of(x)
    count = int(np.prod([aval.shape[a] for a in normalize_axes("mean", dims, aval.ndim)]))
    return div(sum(x, dims), builtins.max(count, 1))


from .elementwise import broadcast_to, div, eq, mul  # noqa: E402
from .shape import reshape  # noqa: E402
