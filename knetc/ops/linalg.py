"""Matrix product. The primitive is 2-D; `matmul` folds leading axes and vectors into it."""
import numpy as np

from ..errors import ShapeError
from .core import Aval, Op, aval_of, register, result_dtype
from .shape import reshape, transpose


def _matmul_rule(a, b):
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ShapeError(f"matmul: {a} @ {b}: inner dimensions {a.shape[-1:]} and {b.shape[:1]} differ")
    return Aval((a.shape[0], b.shape[1]), result_dtype(a, b))


def _t(x):
    return transpose(x, perm=(1, 0))


matmul2d = register(Op(
    "matmul", _matmul_rule, np.matmul,
    (lambda dy, y, a, b: matmul2d(dy, _t(b)), lambda dy, y, a, b: matmul2d(_t(a), dy)), "matmul"))


def matmul(a, b):
    """`a @ b` with numpy semantics for 1-D operands and an N-D `a` against a 2-D `b`."""
    sa, sb = aval_of(a).shape, aval_of(b).shape
    if len(sa) == 0 or len(sb) == 0 or len(sb) > 2:
        raise ShapeError(f"matmul: {sa} @ {sb} is not supported (use bmm for batched products)")
    if sa[-1] != sb[0]:
        raise ShapeError(f"matmul: {sa} @ {sb}: inner dimensions {sa[-1]} and {sb[0]} differ")
    a2 = _reshaped(a, (1, sa[0]) if len(sa) == 1 else (int(np.prod(sa[:-1])), sa[-1]))
    out = matmul2d(a2, _reshaped(b, (sb[0], 1) if len(sb) == 1 else sb))
    return _reshaped(out, sa[:-1] + sb[1:])


def _reshaped(x, shape):
    return x if aval_of(x).shape == tuple(shape) else reshape(x, shape=tuple(shape))
