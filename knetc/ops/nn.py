"""Normalisation and losses. logsumexp, logsoftmax and softmax are primitives (their
gradients are short and stable); for code generation they decompose into max/sum
reductions and elementwise ops, which then fuse. nll is written with ops."""
import numpy as np

from ..errors import ShapeError
from .core import Aval, Op, aval_of, normalize_axes, register
from .elementwise import add, astype, div, eq, exp, iota, log, mul, ne, neg, sub
from .reduce import reduce_max, reduce_sum, sum
from .shape import reshape


def _keepdims_rule(x, axes):
    return Aval(tuple(1 if i in axes else n for i, n in enumerate(x.shape)), x.dtype)


def _same_rule(x, axes):
    return x


def _lse_impl(x, axes):
    x = np.asarray(x)
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # rows of -inf stay -inf instead of NaN
    return m + np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True))


def _lse_decompose(x, axes):
    m = reduce_max(x, axes=axes)
    return add(log(reduce_sum(exp(sub(x, m)), axes=axes)), m)


logsumexp_ = register(Op(
    "logsumexp", _keepdims_rule, _lse_impl, (lambda dy, y, x, axes: mul(dy, exp(sub(x, y))),),
    "composite", decompose=_lse_decompose))

logsoftmax_ = register(Op(
    "logsoftmax", _same_rule, lambda x, axes: np.asarray(x) - _lse_impl(x, axes),
    (lambda dy, y, x, axes: sub(dy, mul(exp(y), reduce_sum(dy, axes=axes))),),
    "composite", decompose=lambda x, axes: sub(x, logsumexp_(x, axes=axes))))

softmax_ = register(Op(
    "softmax", _same_rule, lambda x, axes: np.exp(np.asarray(x) - _lse_impl(x, axes)),
    (lambda dy, y, x, axes: mul(y, sub(dy, reduce_sum(mul(dy, y), axes=axes))),),
    "composite", decompose=lambda x, axes: exp(sub(x, logsumexp_(x, axes=axes)))))


def logsumexp(x, dims=None):
    """log(sum(exp(x), dims)) computed stably; without dims the result is a scalar."""
    out = logsumexp_(x, axes=normalize_axes("logsumexp", dims, aval_of(x).ndim))
    return reshape(out, shape=()) if dims is None else out


def logsoftmax(x, dims=None):
    """x - logsumexp(x, dims): normalised log probabilities (over the whole array without dims)."""
    return logsoftmax_(x, axes=normalize_axes("logsoftmax", dims, aval_of(x).ndim))


def softmax(x, dims=None):
    """exp(logsoftmax(x, dims))."""
    return softmax_(x, axes=normalize_axes("softmax", dims, aval_of(x).ndim))


logp = logsoftmax


def nll(scores, labels, dims=-1, average=True):
    """Negative log likelihood of integer `labels` (0-based, -1 = skip) under `scores`.

    Classes lie on axis `dims` (default the last: scores are (instances, classes)).
    Returns total/count, or the pair (total, count) with average=False.

    >>> kn.nll(np.array([[12.2, 2.0, 0.0], [0.3, 21.5, -21.0]]), np.array([0, 1]))
    """
    sa, la = aval_of(scores), aval_of(labels)
    axes = normalize_axes("nll", dims, sa.ndim)
    if len(axes) != 1:
        raise ShapeError(f"nll: dims={dims} must name one axis (the classes)")
    axis = axes[0]
    kept = tuple(1 if i == axis else n for i, n in enumerate(sa.shape))
    if la.shape not in (kept, kept[:axis] + kept[axis + 1:]):
        raise ShapeError(f"nll: labels of shape {la.shape} do not match scores {sa.shape} with classes on axis {axis}")
    if la.dtype is None or not np.issubdtype(la.dtype, np.integer):
        raise ShapeError(f"nll: labels must be an integer array, got {la}")
    labels = reshape(astype(labels, dtype=sa.dtype), shape=kept)
    onehot = eq(iota(scores, axis=axis, dtype=sa.dtype), labels)  # label -1 matches no class
    total = neg(sum(mul(logsoftmax_(scores, axes=(axis,)), onehot)))
    count = sum(ne(labels, -1))
    return div(total, count) if average else (total, count)
