"""Ops that move no data: reshape and transpose (views where the layout allows)."""
import numpy as np

from ..errors import ShapeError
from .core import Aval, Op, aval_of, register


def _reshape_rule(x, shape):
    if int(np.prod(x.shape)) != int(np.prod(shape)):
        raise ShapeError(f"reshape: cannot reshape {x} to {tuple(shape)}")
    return Aval(tuple(shape), x.dtype)


reshape = register(Op(
    "reshape", _reshape_rule, lambda x, shape: np.reshape(x, shape),
    (lambda dy, y, x, shape: reshape(dy, shape=aval_of(x).shape),), "view"))


def _transpose_rule(x, perm):
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: {perm} is not a permutation of the axes of {x}")
    return Aval(tuple(x.shape[p] for p in perm), x.dtype)


transpose = register(Op(
    "transpose", _transpose_rule, lambda x, perm: np.transpose(x, perm),
    (lambda dy, y, x, perm: transpose(dy, perm=tuple(int(i) for i in np.argsort(perm))),), "view"))


def resolve_shape(size, shape):
    """A numpy-style target shape with at most one -1, resolved against `size` elements."""
    shape = tuple(int(n) for n in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: at most one -1 allowed in {shape}")
    if -1 in shape:
        known = int(np.prod([n for n in shape if n != -1]))
        if known == 0 or size % known:
            raise ShapeError(f"reshape: cannot reshape {size} elements to {shape}")
        shape = tuple(size // known if n == -1 else n for n in shape)
    return shape
