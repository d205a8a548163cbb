"""Activations, normalisation and losses.

logsumexp, logsoftmax and softmax are primitives (their gradients are short and stable);
for code generation they decompose into max/sum reductions and elementwise ops, which then
fuse. elu, selu, invx and the private softplus are elementwise ops with scalar templates.
nll, accuracy, bce and logistic are written with ops, so they run eagerly, on the tape and
compiled.

Translation from Knet: classes lie on axis `dims` (default -1, the last axis: scores are
(instances, classes)); labels are 0..C-1 and -1 skips an instance.
"""
import math

import numpy as np

from .. import context
from ..context import value_of
from ..errors import ShapeError, format_error, user_frame
from .broadcast import reduce_sum
from .core import Aval, Op, astype, aval_of, check_float, normalize_axes, register
from .elementwise import abs as abs_, add, div, eq, exp, full, iota, le, log, lt, masked, mul, ne, neg, relu_scalar, sigm, sub
from .reduce import argmax_, float16_in_float32, reduce_max, sum
from .shape import reshape


def _keepdims_rule(x, axes):
    return Aval(tuple(1 if i in axes else n for i, n in enumerate(x.shape)), x.dtype)


def _same_rule(x, axes):
    return x


def _minus_max(x, axes, finite=False):
    """(x - max, max); finite: the max of a row with no finite maximum taken as 0 (logsumexp:
    rows of -inf give -inf, rows with +inf inf). Otherwise such rows give NaN (inf - inf, or
    -inf - -inf) in softmax and logsoftmax, as compiled code, PyTorch and SciPy give."""
    x = np.asarray(x)
    m = np.maximum.reduce(x, axis=axes, keepdims=True)  # (np.max and np.sum on an array)
    m = np.where(np.isfinite(m), m, 0) if finite else m
    with np.errstate(invalid="ignore"):
        return x - m, m


def _shifted(x, axes, finite=False):
    """(x - max, log(sum(exp(x - max)))): x - max is exact near the maximum, so logsoftmax
    formed as (x - max) - log(sum) keeps float32 precision at large scores, where
    x - logsumexp(x) loses the bits of logsumexp's large magnitude (spacing 1e-3 at 1e4)."""
    shifted, m = _minus_max(x, axes, finite)
    total = np.add.reduce(np.exp(shifted), axis=axes, keepdims=True)
    if total.all():
        return shifted, m, np.log(total)
    with np.errstate(divide="ignore"):  # log(0) of such rows is -inf, as it should be
        return shifted, m, np.log(total)


def _lse_impl(x, axes):
    _, m, log_sum = _shifted(x, axes, finite=True)
    return m + log_sum


def _logsoftmax_impl(x, axes):
    shifted, _, log_sum = _shifted(x, axes)
    return shifted - log_sum


def _lse_decompose(x, axes):
    m = reduce_max(x, axes=axes)
    m = masked(m, lt(abs_(m), math.inf))  # an infinite maximum shifts by 0: rows of -inf give -inf, +inf gives inf
    return add(log(reduce_sum(exp(sub(x, m)), axes=axes)), m)


def _logsoftmax_decompose(x, axes):
    shifted = sub(x, reduce_max(x, axes=axes))
    return sub(shifted, log(reduce_sum(exp(shifted), axes=axes)))


# logsumexp's gradient is softmax(x), computed stably (not exp(x - y) at large y).
logsumexp_ = register(Op(
    "logsumexp", _keepdims_rule, _lse_impl, (lambda dy, y, x, axes: mul(dy, softmax_(x, axes=axes)),),
    "composite", decompose=_lse_decompose))

logsoftmax_ = register(Op(
    "logsoftmax", _same_rule, _logsoftmax_impl,
    (lambda dy, y, x, axes: sub(dy, mul(exp(y), reduce_sum(dy, axes=axes))),),
    "composite", decompose=_logsoftmax_decompose))

def _softmax_impl(x, axes):
    e = np.exp(_minus_max(x, axes)[0])
    with np.errstate(invalid="ignore"):  # a row of -inf (0 / 0) or with +inf (inf / inf): NaN
        return e / np.add.reduce(e, axis=axes, keepdims=True)


def _softmax_decompose(x, axes):
    """e / sum(e), e = exp(x - max(x)), as eagerly: one exp per entry and no log (the max's
    kernel stores e, the sum's divides it)."""
    e = exp(sub(x, reduce_max(x, axes=axes)))
    return div(e, reduce_sum(e, axes=axes))


softmax_ = register(Op(
    "softmax", _same_rule, _softmax_impl,
    (lambda dy, y, x, axes: mul(y, sub(dy, reduce_sum(mul(dy, y), axes=axes))),),
    "composite", decompose=_softmax_decompose))


def logsumexp(x, dims=None):
    """log(sum(exp(x), dims)) computed stably; reduced axes are kept, without dims a scalar.

    >>> kn.logsumexp(np.array([[1e4, 1e4]]), dims=1)  # [[1e4 + log 2]], no overflow
    array([[10000.69314718]])
    """
    xa = aval_of(x)
    check_float("logsumexp", xa)
    axes = normalize_axes("logsumexp", dims, xa.ndim)
    if any(xa.shape[a] == 0 for a in axes):  # the log of an empty sum (scipy's and torch's -inf)
        out = full(shape=tuple(1 if a in axes else n for a, n in enumerate(xa.shape)), value=-np.inf,
                   dtype=xa.dtype or np.float64)
    else:
        out = logsumexp_(x, axes=axes)
    return reshape(out, shape=()) if dims is None else out


def logsoftmax(x, dims=None):
    """x - logsumexp(x, dims): normalised log probabilities (over the whole array without dims).

    >>> scores = np.array([[0.0, np.log(3)], [1.0, 1.0]])
    >>> np.exp(kn.logsoftmax(scores, dims=-1))  # each row (instance) normalised over its classes
    array([[0.25, 0.75],
           [0.5 , 0.5 ]])
    """
    check_float("logsoftmax", aval_of(x))
    return logsoftmax_(x, axes=normalize_axes("logsoftmax", dims, aval_of(x).ndim))


def softmax(x, dims=None):
    """exp(logsoftmax(x, dims)): probabilities summing to 1 over `dims` (all axes without dims).

    >>> kn.softmax(np.array([0.0, np.log(3)]))
    array([0.25, 0.75])
    """
    check_float("softmax", aval_of(x))
    return softmax_(x, axes=normalize_axes("softmax", dims, aval_of(x).ndim))


logp = logsoftmax


# ----------------------------------------------------------------------------- activations

def _unary(name, impl, scalar, grad):
    def rule(x):
        check_float(name, x)
        return x
    return register(Op(name, rule, impl, (grad,), "elementwise", scalar))


def _elu_impl(x):
    x = np.asarray(x)
    return np.where(x >= 0, x, np.expm1(np.minimum(x, 0)))  # minimum: no overflow warning for x >> 0


elu = _unary("elu", _elu_impl, lambda k, x: f"({x} if {x} >= {k.const(0)} else math.expm1({x}))",
             # d/dx: exp(x) = y + 1 for x <= 0 (masked: at x = inf, 0 * inf would be NaN), else 1 (NaN too, as torch)
             lambda dy, y, x: mul(dy, add(sub(1, le(x, 0)), masked(add(y, 1), le(x, 0)))))
elu.__doc__ = "elu(x) = x if x >= 0 else exp(x) - 1 (Clevert et al. 2015; Knet's, so elu(-0.0) is -0.0)."

SELU_LAMBDA, SELU_ALPHA = 1.0507009873554805, 1.6732632423543778


def _selu_impl(x):
    x = np.asarray(x)
    return SELU_LAMBDA * np.where(x >= 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))


selu = _unary("selu", _selu_impl,
              lambda k, x: f"{k.const(SELU_LAMBDA)} * ({x} if {x} >= {k.const(0)} else {k.const(SELU_ALPHA)} * math.expm1({x}))",
              # d/dx: lambda for x >= 0 (Knet's seluback at 0), lambda*alpha*exp(x) = y + lambda*alpha below
              lambda dy, y, x: mul(dy, add(mul(sub(1, lt(x, 0)), SELU_LAMBDA), masked(add(y, SELU_LAMBDA * SELU_ALPHA), lt(x, 0)))))
selu.__doc__ = "selu(x) = 1.0507 * (x if x >= 0 else 1.6733 * (exp(x) - 1)) (Klambauer et al. 2017; as Knet)."

invx = _unary("invx", lambda x: 1 / np.asarray(x), lambda k, x: f"{k.const(1)} / {x}",
              lambda dy, y, x: neg(mul(dy, mul(y, y))))
invx.__doc__ = "invx(x) = 1 / x."


def _softplus_impl(x):
    x = np.asarray(x)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


# log(1 + exp(x)) without overflow; the binary losses are written with it.
softplus = _unary("softplus", _softplus_impl,
                  lambda k, x: f"({relu_scalar(k, x)} + math.log1p(math.exp(-abs({x}))))",
                  lambda dy, y, x: mul(dy, sigm(x)))


# ----------------------------------------------------------------------------- losses

# Class labels and class indices are compared as integers: in the scores' float type,
# float16 would make classes 2048 and 2049 equal.
LABEL_DTYPE = np.dtype(np.int64)


def _class_labels(name, scores, labels, dims):
    """Check scores/labels; return (axis, labels as LABEL_DTYPE shaped with the class axis kept)."""
    axis, kept, sa = _checked_shapes(name, scores, labels, dims)
    labels = checked_labels(labels, name=name, classes=sa.shape[axis], axis=axis)
    return axis, reshape(astype(labels, dtype=LABEL_DTYPE), shape=kept)


def _plain_labels(name, scores, labels, dims):
    """nll's label side computed with numpy where the labels are a numpy array and the scores
    hold one (eagerly, recorded or not): (axis, onehot, count), what the ops in nll give,
    without an op per step on constants; None elsewhere (compiled code keeps the ops)."""
    if type(labels) is not np.ndarray or type(value_of(scores)) is not np.ndarray:
        return None
    if context.compiling():
        return None
    axis, kept, sa = _checked_shapes(name, scores, labels, dims)
    check_label_values(labels, name, sa.shape[axis], axis)  # checked_labels
    dtype = sa.dtype
    labels = labels.astype(LABEL_DTYPE).reshape(kept)  # astype, reshape
    index = np.arange(sa.shape[axis], dtype=LABEL_DTYPE).reshape([-1 if i == axis else 1 for i in range(len(kept))])
    onehot = np.equal(index, labels).astype(dtype)  # eq(iota(scores), labels): scores' shape
    count = np.add.reduce(np.not_equal(labels, -1).astype(dtype), axis=tuple(range(len(kept))), keepdims=True)
    return axis, onehot, int(count.reshape(()))  # _count: sum(ne(labels, -1))


def _label_array(labels):
    """Python ints and lists of them as label arrays (`nll(scores, 3)`, `nll(scores, [0, 2])`);
    anything else as given (checked by _checked_shapes)."""
    if isinstance(labels, (int, np.integer, list, tuple)) and not isinstance(labels, bool):
        array = np.asarray(labels)
        return array.astype(LABEL_DTYPE) if array.dtype.kind in "iu" or array.size == 0 else labels
    return labels


def _checked_shapes(name, scores, labels, dims):
    """_class_labels' checks: (axis, the labels' shape with the class axis kept, scores' aval)."""
    sa, la = aval_of(scores), aval_of(labels)
    check_float(name, sa)
    axes = normalize_axes(name, dims, sa.ndim)
    if len(axes) != 1:
        raise ShapeError(f"{name}: dims={dims} must name one axis (the classes)")
    axis = axes[0]
    kept = tuple(1 if i == axis else n for i, n in enumerate(sa.shape))
    if la.shape not in (kept, kept[:axis] + kept[axis + 1:]):
        raise ShapeError(f"{name}: labels of shape {la.shape} do not match scores {sa.shape} with classes on axis {axis}")
    if la.dtype is None or not np.issubdtype(la.dtype, np.integer):
        raise ShapeError(f"{name}: labels must be an integer array (0..C-1, -1 to skip), got {la}")
    return axis, kept, sa


def check_label_values(values, name, classes, axis, where=None):
    """Raise ValueError unless every label is in -1..classes-1 (eagerly, and in compiled code
    on the labels input before any kernel runs: Op.input_check), naming where (file, line),
    else the caller's line."""
    values = np.asarray(values)
    if values.dtype.kind in "iu" and (not values.size or (values.min() >= -1 and values.max() < classes)):
        return  # integers in range (two reductions instead of masks)
    bad = values[(values < -1) | (values >= classes)]
    if bad.size:
        raise ValueError(format_error(f"{name}: label {int(bad.flat[0])} is out of range: labels must be in "
                                      f"0..{classes - 1} (classes on axis {axis}) or -1 to skip",
                                      *(where or user_frame())))


class _LabelRange:
    """checked_labels' input check (Op.input_check)."""

    def __call__(self, values, where, name, classes, axis):
        check_label_values(values, name, classes, axis, where)

    def refusal(self, target, name, classes, axis):
        return f"{name}: labels computed inside a compiled function cannot be range-checked before the kernels run"


def _checked_labels_impl(labels, name, classes, axis):
    check_label_values(labels, name, classes, axis)
    return np.asarray(labels)


# The labels unchanged (a view: no copy), once their range is checked: eagerly by the numpy
# reference; a compiled program checks the input array they come from before it runs (a
# kernel cannot raise), so a bad label raises the same ValueError and nothing has run.
checked_labels = register(Op(
    "checked_labels", lambda labels, name, classes, axis: labels, _checked_labels_impl, (None,), "view",
    input_check=_LabelRange()))


def _count(labels):
    """The number of labels that are not -1; a Python int when the labels are known now
    (constant labels in compiled code then stay a number, not an array constant), else an
    int64 value (Knet's count is an integer, with average=False too)."""
    count = sum(ne(labels, -1))
    return int(count) if isinstance(count, np.ndarray) else count


def _average(total, count, average):
    """total/count in total's dtype (an int64 count would make float32 scores' average
    float64), or the pair (total, count)."""
    if not average:
        return total, count
    return div(total, count if isinstance(count, int) else astype(count, dtype=aval_of(total).dtype))


def _over_data(loss, model, data, dims, average, kwargs):
    """Knet's `loss(model; data)`: sum (total, count) of loss(model(x), y) over the (x, y) in data."""
    if data is None:
        raise TypeError(f"{loss.__name__}(model, data=...): data (an iterable of (x, y) pairs) is missing")
    total, count = 0.0, 0
    for x, y in data:
        t, c = loss(model(x, **kwargs), y, dims=dims, average=False)
        total = add(total, t)  # (recorded inside kn.diff: the loss over a dataset has a gradient, as Knet's)
        c = value_of(c)  # (compiled, with labels computed or passed in: an integer array value)
        count = add(count, c) if context.is_symbolic(c) else count + int(c)
    if context.is_symbolic(total) or context.is_symbolic(count):
        return _average(total, count, average)
    if not context.is_boxed(total):
        total = float(np.asarray(total))
    if not average:
        return total, count
    return div(total, count) if count else float("nan")


def _model_form(loss, model, labels, more, dims, average, data, kwargs):
    """loss(model, x, y) (one batch) or loss(model, data) / loss(model, data=data)."""
    if more:
        if len(more) != 1 or data is not None:
            raise TypeError(f"{loss.__name__}(model, x, y): expected one x and one y")
        return loss(model(labels, **kwargs), more[0], dims=dims, average=average)
    return _over_data(loss, model, labels if data is None else data, dims, average, kwargs)


@float16_in_float32
def nll(scores, labels=None, *more, dims=-1, average=True, data=None, **kwargs):
    """Negative log likelihood of integer `labels` (0-based, -1 = skip) under unnormalised `scores`.

    Classes lie on axis `dims` (default the last: scores are (instances, classes)). Returns
    total/count, or the pair (total, count) with average=False, count being the instances
    not skipped. With a model: `nll(model, data=batches)` (or `nll(model, batches)`) sums
    over the (x, y) pairs of `data` calling `model(x, **kwargs)`; `nll(model, x, y)` is
    `nll(model(x), y)`.

    >>> float(kn.nll(np.array([[12.2, 2.0, 0.0], [0.3, 21.5, -21.0]]), np.array([0, 1])))  # doctest: +ELLIPSIS
    2.11002...e-05
    """
    if callable(scores):
        return _model_form(nll, scores, labels, more, dims, average, data, kwargs)
    if kwargs or more:
        raise TypeError(f"nll(scores, labels): unexpected arguments {list(more)} {sorted(kwargs)}")
    labels = _label_array(labels)
    plain = _plain_labels("nll", scores, labels, dims)
    if plain is not None:
        axis, onehot, count = plain
    else:
        axis, labels = _class_labels("nll", scores, labels, dims)
        onehot = eq(iota(scores, axis=axis, dtype=LABEL_DTYPE), labels)  # label -1 matches no class
        count = _count(labels)
    total = neg(sum(masked(logsoftmax_(scores, axes=(axis,)), onehot)))
    return _average(total, count, average)


@float16_in_float32
def accuracy(scores, labels=None, *more, dims=-1, average=True, data=None, **kwargs):
    """The fraction of instances whose labelled class has the highest score (labels 0-based,
    -1 = skip); (ncorrect, count) with average=False. Among tied scores the first class is
    the prediction (Knet's findmax), so constant scores are right only for label 0. With a
    model, as nll: `accuracy(model, data=batches)` sums over the
    (x, y) in data, `accuracy(model, x, y)` is `accuracy(model(x), y)`.

    >>> float(kn.accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, -1])))
    0.5
    """
    if callable(scores):
        return _model_form(accuracy, scores, labels, more, dims, average, data, kwargs)
    if kwargs or more:
        raise TypeError(f"accuracy(scores, labels): unexpected arguments {list(more)} {sorted(kwargs)}")
    axis, labels = _class_labels("accuracy", scores, _label_array(labels), dims)
    predicted = astype(argmax_(scores, axes=(axis,)), dtype=LABEL_DTYPE)
    correct = astype(sum(mul(eq(predicted, labels), ne(labels, -1))), dtype=aval_of(scores).dtype)
    correct = correct[()] if type(correct) is np.ndarray else correct  # (a numpy number, as nll's total)
    count = _count(labels)
    return _average(correct, count, average)


def _binary_labels(name, scores, labels):
    sa, la = aval_of(scores), aval_of(labels)
    check_float(name, sa)
    if la.shape != sa.shape:
        raise ShapeError(f"{name}: labels of shape {la.shape} do not match scores of shape {sa.shape}")
    if la.dtype is not None and not (np.issubdtype(la.dtype, np.number) or la.dtype == np.bool_):
        raise ShapeError(f"{name}: labels must be numeric, got {la}")
    return astype(labels, dtype=sa.dtype)


def _binary_loss(losses, scores, average):
    total = sum(losses)
    count = int(np.prod(aval_of(scores).shape))
    return div(total, count) if average else (total, count)


@float16_in_float32
def bce(scores, labels, average=True):
    """Binary cross entropy of labels in {0, 1} under unnormalised scores (probabilities are
    sigm(scores)), computed stably as softplus(x) - label*x. Returns total/count, or
    (total, count) with average=False.

    >>> round(float(kn.bce(np.array([2.0, -1.0]), np.array([1, 0]))), 6)  # mean(-log sigm(2), -log(1 - sigm(-1)))
    0.220095
    """
    labels = _binary_labels("bce", scores, labels)
    return _binary_loss(sub(softplus(scores), mul(labels, scores)), scores, average)


@float16_in_float32
def logistic(scores, labels, average=True):
    """Logistic loss log(1 + exp(-label*score)) of labels in {-1, 1}: the same loss as bce
    with {0, 1} labels. Returns total/count, or (total, count) with average=False.

    >>> round(float(kn.logistic(np.array([2.0, -1.0]), np.array([1, -1]))), 6)  # bce's with labels [1, 0]
    0.220095
    """
    labels = _binary_labels("logistic", scores, labels)
    return _binary_loss(softplus(neg(mul(labels, scores))), scores, average)
