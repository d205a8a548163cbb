"""Broadcasting and its adjoint: `broadcast_to`, `reduce_sum` and `unbroadcast`.

Each is the other's gradient, and every broadcasting op's gradient sums back to its input's
shape with `unbroadcast`; so these sit below the elementwise ops (ops/elementwise.py) and
the other reductions (ops/reduce.py), which import them.
"""
import numpy as np

from ..errors import ShapeError
from .core import Aval, Monoid, Op, aval_of, broadcast_shapes, input_if_unchanged, reduce_rule, register
from .shape import reshape


def _broadcast_to_rule(x, shape):
    if broadcast_shapes("broadcast_to", x.shape, shape) != tuple(shape):
        raise ShapeError(f"broadcast_to: cannot broadcast {x.shape} to {shape}")
    return Aval(tuple(shape), x.dtype)


def _broadcast_to_impl(x, shape):
    if type(x) is np.ndarray:
        out = np.empty(shape, x.dtype)
        out[...] = x
        return out
    return np.broadcast_to(x, shape).copy()


def _sum_impl(x, axes):
    if type(x) is np.ndarray:  # what np.sum does for an array, without its Python wrapper
        return np.add.reduce(x, axis=axes, keepdims=True)
    return np.sum(x, axis=axes, keepdims=True)


broadcast_to = register(Op(
    "broadcast_to", _broadcast_to_rule, _broadcast_to_impl,
    (lambda dy, y, x, shape: unbroadcast(dy, aval_of(x).shape),), "elementwise", lambda k, x, shape: x,
    simplify=input_if_unchanged, entries_of_input=True))

# Simplified away where the summed axes have size 1, unless the sum widens the dtype
# (bools and small integers to int64).
reduce_sum = register(Op(
    "reduce_sum", reduce_rule("sum", accumulate=True), _sum_impl,
    (lambda dy, y, x, axes: broadcast_to(dy, shape=aval_of(x).shape),), "reduce",
    monoid=Monoid(lambda dtype: 0, "{acc} += {v}", wide=True), simplify=input_if_unchanged, online="row_sum"))


def unbroadcast(dy, shape):
    """The adjoint of broadcasting: sum `dy` over the axes that were broadcast to reach it."""
    dshape = aval_of(dy).shape
    if dshape == tuple(shape):
        return dy
    lead = len(dshape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and dshape[lead + i] != 1)
    summed = reduce_sum(dy, axes=axes) if axes else dy
    return reshape(summed, shape=tuple(shape))
