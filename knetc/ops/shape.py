"""Ops that move no data: reshape and transpose (views where the layout allows)."""
import numpy as np

from ..errors import ShapeError
from .core import Aval, Op, aval_of, register, unchanged


def _reshape_rule(x, shape):
    if int(np.prod(x.shape)) != int(np.prod(shape)):
        raise ShapeError(f"reshape: cannot reshape {x} to {tuple(shape)}")
    return Aval(tuple(shape), x.dtype)


def _simplify_reshape(eqn, constant, producer):
    x = eqn.inputs[0]
    if unchanged(x, eqn):
        return x
    inner = producer(x)
    return reshape(inner.inputs[0], **eqn.params) if inner is not None and inner.op is reshape else None


reshape = register(Op(
    "reshape", _reshape_rule, lambda x, shape: x.reshape(shape) if type(x) is np.ndarray else np.reshape(x, shape),
    (lambda dy, y, x, shape: reshape(dy, shape=aval_of(x).shape),), "view",
    simplify=_simplify_reshape, entries_of_input=True))


def _transpose_rule(x, perm):
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: {perm} is not a permutation of the axes of {x}")
    return Aval(tuple(x.shape[p] for p in perm), x.dtype)


def _simplify_transpose(eqn, constant, producer):
    x, perm = eqn.inputs[0], eqn.params["perm"]
    inner = producer(x)
    if inner is not None and inner.op is transpose:  # two transposes: one, or none
        perm = tuple(inner.params["perm"][i] for i in perm)
        return inner.inputs[0] if perm == tuple(range(len(perm))) else transpose(inner.inputs[0], perm=perm)
    return x if perm == tuple(range(len(perm))) else None


def _transpose_map(index, shape, perm):
    source = [None] * len(perm)
    for j, p in enumerate(perm):
        source[p] = index[j]
    return tuple(source), None


# Fused into kernels as an index permutation; a matmul reads a 2-d one through a GEMM flag.
transpose = register(Op(
    "transpose", _transpose_rule,
    lambda x, perm: x.transpose(perm) if type(x) is np.ndarray else np.transpose(x, perm),
    (lambda dy, y, x, perm: transpose(dy, perm=tuple(int(i) for i in np.argsort(perm))),), "view",
    index_map=_transpose_map, simplify=_simplify_transpose, entries_of_input=True, matrix_transpose=True))


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
