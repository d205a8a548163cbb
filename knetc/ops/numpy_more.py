"""More of numpy's array functions on Params, taped values and compiled values.

Each is composed from knetc's ops (indexing, transpose, reshape, concatenation, products,
masks), so it is recorded, differentiated (to any order) and compiled as those are, with
numpy's semantics: np.flip, np.roll, np.tile, np.repeat, np.moveaxis, np.broadcast_to,
np.atleast_1d/2d/3d, np.vstack/hstack/dstack/column_stack, np.split/array_split, np.take,
np.take_along_axis, np.diagonal, np.trace, np.diag, np.triu/tril, np.outer, np.inner,
np.tensordot, np.einsum, np.pad (constant), np.linalg (ops/linalg.py), np.cumsum, np.cumprod, np.sort (np.argsort gives
no gradient), np.diff, np.round/around, np.arctan2/hypot (ops), np.logaddexp/logaddexp2/fmax/fmin/deg2rad/radians/
rad2deg/degrees; np.shape/ndim/size and np.zeros_like/ones_like/
full_like read only the shape and dtype; np.isnan/isinf/isfinite, np.logical_and/or/xor/not,
np.any/all/count_nonzero, and `&`, `|`, `^`, `~` of masks (ArrayMethods) give no gradient.

    >>> import numpy as np, knetc as kn
    >>> w = kn.Param(np.array([1.0, 2.0, 3.0]))
    >>> kn.grad(kn.diff(lambda: np.sum(np.cumsum(w) * np.array([1.0, 0.0, 2.0]))), w)
    array([3., 2., 2.])
"""
import math
import numbers

import numpy as np

from ..errors import ShapeError
from . import elementwise as ew
from .arrays import cat
from .broadcast import broadcast_to
from .core import Aval, Op, astype, aval_of, listed, register
from .indexing import checked_indices, getindex, take
from .linalg import bmm, cholesky, det, eigh, eigvalsh, inv, matmul, norm, pinv, qr, slogdet, solve, svd
from .methods import FUNCTIONS, UFUNCS, ArrayMethods, _axes_arg, _no_out, _numpy_ravel
from .shape import reshape, transpose


def _shape(x):
    return aval_of(x).shape


def _axis(axis, ndim):
    return _axes_arg(axis, ndim)[0]


def _along(axis, index):
    """The numpy index applying `index` to `axis` and taking every other axis whole."""
    return (slice(None),) * axis + (index,)


def _moveaxis(a, source, destination):
    ndim = len(_shape(a))
    source, destination = np.atleast_1d(source).tolist(), np.atleast_1d(destination).tolist()
    if len(source) != len(destination):
        raise ValueError("moveaxis: `source` and `destination` arguments must have the same number of elements")
    source, destination = [_axis(s, ndim) for s in source], [_axis(d, ndim) for d in destination]
    if len(set(source)) != len(source) or len(set(destination)) != len(destination):
        raise ShapeError("moveaxis: repeated axis")
    order = [n for n in range(ndim) if n not in source]
    for d, s in sorted(zip(destination, source)):
        order.insert(d, s)
    return transpose(a, perm=tuple(order))


def _flip(m, axis=None):
    ndim = len(_shape(m))
    axes = range(ndim) if axis is None else _axes_arg(axis, ndim)
    return getindex(m, tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(ndim)))


def _roll(a, shift, axis=None):
    if axis is None:
        return reshape(_roll(_numpy_ravel(a), shift, 0), shape=_shape(a))
    shape = _shape(a)
    for s, ax in zip(*np.broadcast_arrays(np.atleast_1d(shift), np.atleast_1d(axis))):
        ax = _axis(int(ax), len(shape))
        k = int(s) % shape[ax] if shape[ax] else 0
        if k:
            a = cat(getindex(a, _along(ax, slice(shape[ax] - k, None))), getindex(a, _along(ax, slice(0, shape[ax] - k))),
                    dims=ax)
    return a


def _gather_along(a, axis, positions):
    return getindex(a, _along(axis, np.asarray(positions, dtype=np.int64)))


def _tile(a, reps):
    reps = tuple(np.atleast_1d(reps).tolist())
    shape = _shape(a)
    ndim = max(len(reps), len(shape))
    a = reshape(a, shape=(1,) * (ndim - len(shape)) + shape)
    reps = (1,) * (ndim - len(reps)) + reps
    for axis, (n, r) in enumerate(zip(_shape(a), reps)):
        if r != 1:
            a = _gather_along(a, axis, np.tile(np.arange(n), r))
    return a


def _repeat(a, repeats, axis=None):
    if axis is None:
        a, axis = _numpy_ravel(a), 0
    axis = _axis(axis, len(_shape(a)))
    return _gather_along(a, axis, np.repeat(np.arange(_shape(a)[axis]), repeats))


def _at_least(ndim):
    def at_least(*arys):
        out = []
        for a in arys:
            shape = _shape(a)
            if len(shape) < ndim:
                shape = {0: (1,) * ndim, 1: (1,) + shape + (1,) * (ndim - 2)}.get(len(shape), shape + (1,))
            out.append(reshape(a, shape=shape) if shape != _shape(a) else a)
        return out[0] if len(out) == 1 else out
    return at_least


_atleast_1d, _atleast_2d, _atleast_3d = _at_least(1), _at_least(2), _at_least(3)


def _stacked(ndim_of, axis_of):
    def stack(tup, *, dtype=None, casting="same_kind"):
        if dtype is not None:
            raise TypeError("dtype= is not supported on Params and recorded values: cast the result")
        arrays = [ndim_of(listed(a)) for a in tup]
        return cat(*arrays, dims=axis_of(arrays))
    return stack


def _column(a):
    return reshape(a, shape=(_shape(a)[0], 1)) if len(_shape(a)) == 1 else _atleast_2d(a)


def _split(ary, indices_or_sections, axis=0, equal=True):
    axis = _axis(axis, len(_shape(ary)))
    n = _shape(ary)[axis]
    if isinstance(indices_or_sections, numbers.Integral):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise ValueError("number sections must be larger than 0.")
        if equal and n % sections:
            raise ValueError("array split does not result in an equal division")
        sizes = [n // sections + (1 if i < n % sections else 0) for i in range(sections)]
        bounds = np.cumsum([0] + sizes).tolist()
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [n]
    return [getindex(ary, _along(axis, slice(lo, hi))) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _take(a, indices, axis=None, out=None, mode="raise"):
    if out is not None or mode != "raise":
        raise TypeError("np.take on Params and recorded values takes (a, indices, axis) only (no out=, mode=)")
    if axis is None:
        return getindex(_numpy_ravel(a), indices)
    return getindex(a, _along(_axis(axis, len(_shape(a))), indices))


def _take_along_axis(arr, indices, axis):
    shape = _shape(arr)
    if axis is None:
        return getindex(_numpy_ravel(arr), indices)
    axis = _axis(axis, len(shape))
    if len(_shape(indices)) != len(shape):
        raise ValueError("`indices` and `arr` must have the same number of dimensions")
    grid = [np.arange(n).reshape([-1 if i == d else 1 for i in range(len(shape))]) for d, n in enumerate(shape)]
    if isinstance(indices, np.ndarray):
        return getindex(arr, tuple(indices if d == axis else g for d, g in enumerate(grid)))
    # An index array value (an argument): range-checked before anything runs, negative ones from the end
    idx = checked_indices(indices, size=shape[axis], axis=axis)
    return _gathered_along(arr, ew.add(idx, ew.mul(ew.lt(idx, 0), shape[axis])), axis)


def _gathered_along(arr, idx, axis):
    """np.take_along_axis(arr, idx, axis) for indices in 0..n-1 that may be an array value (an
    argument, np.argsort's): one gather of the flattened array, at the positions the indices
    and the other axes' positions make (getindex takes an index array value alone)."""
    shape = _shape(arr)
    out = np.broadcast_shapes(_shape(idx), shape[:axis] + (_shape(idx)[axis],) + shape[axis + 1:])
    strides = np.cumprod((shape + (1,))[:0:-1])[::-1]
    flat = ew.mul(idx, int(strides[axis])) if strides[axis] != 1 else idx
    for d, n in enumerate(shape):
        if d != axis and n > 1:
            flat = ew.add(flat, np.arange(n).reshape([-1 if i == d else 1 for i in range(len(shape))]) * int(strides[d]))
    return reshape(take(_numpy_ravel(arr), _numpy_ravel(broadcast_to(flat, shape=out)), axis=0), shape=out)


def _diagonal_positions(rows, cols, offset):
    n = max(0, min(rows, cols - offset) if offset >= 0 else min(rows + offset, cols))
    i = np.arange(n) + max(0, -offset)
    return i, i + offset


def _diagonal(a, offset=0, axis1=0, axis2=1):
    ndim = len(_shape(a))
    axis1, axis2 = _axis(axis1, ndim), _axis(axis2, ndim)
    if axis1 == axis2:
        raise ValueError("axis1 and axis2 cannot be the same")
    rest = [d for d in range(ndim) if d not in (axis1, axis2)]
    a = transpose(a, perm=tuple(rest) + (axis1, axis2))
    i, j = _diagonal_positions(*_shape(a)[-2:], int(offset))
    return getindex(a, (Ellipsis, i, j))


def _trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    return FUNCTIONS[np.sum](_diagonal(a, offset, axis1, axis2), -1, dtype, out)


def _diag(v, k=0):
    shape = _shape(v)
    if len(shape) == 2:
        return _diagonal(v, k)
    if len(shape) != 1:
        raise ValueError("Input must be 1- or 2-d.")
    n = shape[0] + abs(k)
    i, j = _diagonal_positions(n, n, k)
    rows = np.full(n, shape[0], np.int64)  # a row off the diagonal reads the extra 0 at the end
    rows[i] = np.arange(shape[0])
    column = getindex(cat(v, np.zeros(1, aval_of(v).dtype), dims=0), rows)
    return ew.masked(reshape(column, shape=(n, 1)), np.eye(n, k=k, dtype=bool))


def _triangle(upper):
    def triangle(m, k=0):
        shape = _shape(m)
        if len(shape) < 2:
            raise ValueError("triu/tril of a 1-d array: numpy makes it 2-d first; use a 2-d array")
        lower = np.tri(*shape[-2:], k=k - 1 if upper else k, dtype=bool)
        return ew.masked(m, ~lower if upper else lower)
    return triangle


def _outer(a, b, out=None):
    a, b = _numpy_ravel(_no_out(out, a)), _numpy_ravel(b)
    return ew.mul(reshape(a, shape=(_shape(a)[0], 1)), reshape(b, shape=(1, _shape(b)[0])))


def _tensordot(a, b, axes=2):
    sa, sb = _shape(a), _shape(b)
    if isinstance(axes, numbers.Integral):
        axes_a, axes_b = list(range(len(sa) - axes, len(sa))), list(range(axes))
    else:
        axes_a, axes_b = [np.atleast_1d(x).tolist() for x in axes]
    axes_a, axes_b = [_axis(x, len(sa)) for x in axes_a], [_axis(x, len(sb)) for x in axes_b]
    if len(axes_a) != len(axes_b) or any(sa[i] != sb[j] for i, j in zip(axes_a, axes_b)):
        raise ShapeError(f"tensordot: shape-mismatch for sum ({sa} on axes {axes_a}, {sb} on axes {axes_b})")
    free_a, free_b = [d for d in range(len(sa)) if d not in axes_a], [d for d in range(len(sb)) if d not in axes_b]
    summed = int(np.prod([sa[i] for i in axes_a]))
    a2 = reshape(transpose(a, perm=tuple(free_a + axes_a)), shape=(int(np.prod([sa[d] for d in free_a])), summed))
    b2 = reshape(transpose(b, perm=tuple(axes_b + free_b)), shape=(summed, int(np.prod([sb[d] for d in free_b]))))
    return reshape(matmul(a2, b2), shape=tuple(sa[d] for d in free_a) + tuple(sb[d] for d in free_b))


def _inner(a, b):
    if not _shape(a) or not _shape(b):
        return FUNCTIONS[np.dot](a, b)  # (numpy's product with a 0-d operand: a Python number as an array)
    return _tensordot(a, b, ([-1], [-1]))


_COPYING_PADS = ("edge", "reflect", "symmetric", "wrap")


def _pad(array, pad_width, mode="constant", constant_values=0, reflect_type="even"):
    """np.pad: constant, or a mode that copies entries (edge, reflect, symmetric, wrap): a
    gather along each axis at the positions numpy's np.pad of the axis's positions gives."""
    if mode not in ("constant",) + _COPYING_PADS or reflect_type != "even":
        raise TypeError(f"np.pad on Params and recorded values: modes 'constant' and {', '.join(map(repr, _COPYING_PADS))} "
                        f"(reflect_type='even'), got mode={mode!r}")
    shape = _shape(array)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (len(shape), 2))
    if mode != "constant":
        for axis, (before, after) in enumerate(widths.tolist()):
            if before or after:
                array = getindex(array, _along(axis, np.pad(np.arange(shape[axis]), (before, after), mode=mode)))
        return array
    values = np.broadcast_to(np.asarray(constant_values), (len(shape), 2))
    dtype = aval_of(array).dtype
    for axis, ((before, after), (v_before, v_after)) in enumerate(zip(widths.tolist(), values.tolist())):
        if before < 0 or after < 0:
            raise ValueError("index can't contain negative values")
        around = lambda width, value: np.full(_shape(array)[:axis] + (width,) + _shape(array)[axis + 1:], value, dtype)
        parts = ([around(before, v_before)] if before else []) + [array] + ([around(after, v_after)] if after else [])
        array = cat(*parts, dims=axis) if len(parts) > 1 else array
    return array


# np.cumsum: numpy's sums in order eagerly; compiled, ceil(log2 n) shifted additions (each
# entry the sum of its predecessors in a different order: the same value up to rounding).
def _cumsum_rule(x, axis):
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"cumsum: axis {axis} out of range for {x}")
    dtype = x.dtype if x.dtype is None or np.issubdtype(x.dtype, np.floating) else np.add.reduce(np.ones(1, x.dtype)).dtype
    return Aval(x.shape, dtype)


def _cumsum_decompose(x, axis):
    n, step = _shape(x)[axis], 1
    dtype = _cumsum_rule(aval_of(x), axis).dtype
    x = astype(x, dtype=dtype) if aval_of(x).dtype != dtype else x
    while step < n:
        zeros = np.zeros(_shape(x)[:axis] + (step,) + _shape(x)[axis + 1:], aval_of(x).dtype)
        x = ew.add(x, cat(zeros, getindex(x, _along(axis, slice(0, n - step))), dims=axis))
        step *= 2
    return x


cumsum_op = register(Op(
    "cumsum", _cumsum_rule, lambda x, axis: np.cumsum(x, axis=axis),
    (lambda dy, y, x, axis: _flip(cumsum_op(_flip(dy, axis), axis=axis), axis),), "composite",
    decompose=_cumsum_decompose))


def _cumsum(a, axis=None, dtype=None, out=None):
    a = _no_out(out, a)
    if axis is None:
        a, axis = _numpy_ravel(a), 0
    a = a if dtype is None else astype(a, dtype=np.dtype(dtype))
    out = cumsum_op(a, axis=_axis(axis, len(_shape(a))))
    return out if dtype is None or aval_of(out).dtype == np.dtype(dtype) else astype(out, dtype=np.dtype(dtype))


def _cumprod(a, axis=None, dtype=None, out=None):
    """np.cumprod as ceil(log2 n) shifted products, eagerly and compiled (the same value as
    numpy's product in order up to rounding), so that its gradient is right at zeros too."""
    a = _no_out(out, a)
    if axis is None:
        a, axis = _numpy_ravel(a), 0
    axis = _axis(axis, len(_shape(a)))
    dtype = np.dtype(dtype) if dtype is not None else np.multiply.reduce(np.ones(1, aval_of(a).dtype)).dtype
    a, n, step = astype(a, dtype=dtype) if aval_of(a).dtype != dtype else a, _shape(a)[axis], 1
    while step < n:
        ones = np.ones(_shape(a)[:axis] + (step,) + _shape(a)[axis + 1:], dtype)
        a, step = ew.mul(a, cat(ones, getindex(a, _along(axis, slice(0, n - step))), dims=axis)), step * 2
    return a


# np.einsum: repeated letters of one operand become its diagonal, letters no one else needs are
# summed at once, then the operands are contracted left to right, each pair one batched GEMM
# (bmm): letters both hold and need later are its batch, the ones they share otherwise its sum.
_EINSUM_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # numpy's axis ids 0..51


def _einsum_id(a):
    if not isinstance(a, (int, np.integer)) or not 0 <= a < len(_EINSUM_LETTERS):
        raise ValueError(f"einsum: subscript {a!r} is not in range [0, 52)")
    return a


def _einsum_terms(subscripts, operands):
    if not isinstance(subscripts, str):  # einsum(a, [0, 1], b, [1, 2], [0, 2]): the interleaved form
        items = (subscripts, *operands)
        letters = lambda axes: "".join("..." if a is Ellipsis else _EINSUM_LETTERS[_einsum_id(a)] for a in axes)  # noqa: E731
        subscripts = ",".join(letters(axes) for axes in items[1::2]) + ("->" + letters(items[-1])) * (len(items) % 2)
        operands = items[0::2][:len(items) // 2]
    inputs, arrow, output = subscripts.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: {len(terms)} operand subscripts for {len(operands)} operands")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in subscripts]  # letters for the axes of `...`
    ellipsis = max((len(_shape(x)) - len(t.replace("...", "")) for t, x in zip(terms, operands) if "..." in t), default=0)
    terms = [t.replace("...", "".join(spare[ellipsis - (len(_shape(x)) - len(t) + 3):ellipsis])) for t, x in zip(terms, operands)]
    if not arrow:  # numpy's implicit output: the axes of `...`, then the letters used once, in order
        letters = "".join(terms)
        output = "".join(spare[:ellipsis]) + "".join(sorted(c for c in set(letters) if letters.count(c) == 1
                                                             and c not in spare[:ellipsis]))
    if arrow and ellipsis and "..." not in output:
        raise ValueError("einsum: output has more dimensions than subscripts given in einstein sum, but no '...' "
                         "ellipsis provided to broadcast the extra dimensions")
    output = output.replace("...", "".join(spare[:ellipsis]))
    for t, x in zip(terms, operands):
        if len(t) != len(_shape(x)) or t and not t.isalpha():
            raise ValueError(f"einsum: subscripts {t!r} for an operand of shape {_shape(x)}")
    if len(set(output)) != len(output) or not set(output) <= set("".join(terms)):
        raise ValueError(f"einsum: output subscripts {output!r} must be distinct letters of the inputs")
    return terms, output, list(operands)


def _einsum(subscripts, *operands, out=None, optimize=False, **kwargs):
    terms, output, operands = _einsum_terms(subscripts, operands)
    if kwargs or out is not None:
        raise TypeError(f"np.einsum on Params and recorded values: {sorted(kwargs) or ['out']} not supported")
    sizes = {}
    for t, x in zip(terms, operands):
        for c, n in zip(t, _shape(x)):
            if sizes.setdefault(c, n) != n and 1 not in (n, sizes[c]):
                raise ShapeError(f"einsum: axis {c!r} has sizes {sizes[c]} and {n}")
            sizes[c] = max(sizes[c], n)
    for i, (t, x) in enumerate(zip(terms, operands)):
        while (c := next((c for c in t if t.count(c) > 1), None)) is not None:  # a diagonal (moved last)
            i, j = t.index(c), t.index(c, t.index(c) + 1)
            x, t = _diagonal(x, 0, i, j), t[:i] + t[i + 1:j] + t[j + 1:] + c
        if _shape(x) != tuple(sizes[c] for c in t):  # (an axis of length 1 broadcasts)
            x = broadcast_to(x, shape=tuple(sizes[c] for c in t))
        later = set(output).union(*terms[:i], *terms[i + 1:])
        alone = [n for n, c in enumerate(t) if c not in later]
        x = FUNCTIONS[np.sum](x, tuple(alone)) if alone else x
        terms[i], operands[i] = "".join(c for c in t if c in later), x
    a, ta = operands[0], terms[0]
    for n in range(1, len(terms)):
        b, tb, later = operands[n], terms[n], set(output).union(*terms[n + 1:])
        batch = [c for c in ta if c in tb and c in later]
        summed = [c for c in ta if c in tb and c not in later]
        free_a, free_b = [c for c in ta if c not in tb], [c for c in tb if c not in ta]
        size = lambda letters: int(np.prod([sizes[c] for c in letters]))  # noqa: E731
        a = reshape(transpose(a, perm=tuple(ta.index(c) for c in batch + free_a + summed)),
                    shape=(size(batch), size(free_a), size(summed)))
        b = reshape(transpose(b, perm=tuple(tb.index(c) for c in batch + summed + free_b)),
                    shape=(size(batch), size(summed), size(free_b)))
        a, ta = reshape(bmm(a, b), shape=tuple(sizes[c] for c in batch + free_a + free_b)), "".join(batch + free_a + free_b)
    return transpose(a, perm=tuple(ta.index(c) for c in output)) if ta != output else a


# np.argsort (a library routine: numpy's stable order, NaNs last) and np.sort, a gather of
# the entries by it, through which the gradient flows back to where each entry came from.
def _argsort_rule(x):
    if not x.shape:
        raise ShapeError("argsort of a 0-d array")
    return Aval(x.shape, np.dtype(np.int64))


argsort_last = register(Op(
    "argsort", _argsort_rule, lambda x: np.argsort(x, axis=-1, kind="stable"), (None,), "call",
    lowering={"cpu": "knetc.kernels.indexing:argsort_cpu", "cuda": "knetc.kernels.indexing:argsort_cuda"}))


def _argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    if order is not None:
        raise TypeError("np.argsort/np.sort on Params and recorded values: no `order` (structured arrays)")
    if axis is None:
        a, axis = _numpy_ravel(a), 0
    axis = _axis(axis, len(_shape(a)))
    return _moveaxis(argsort_last(_moveaxis(a, axis, -1)), -1, axis)


def _sort(a, axis=-1, kind=None, order=None, *, stable=None):
    a, axis = (_numpy_ravel(a), 0) if axis is None else (a, _axis(axis, len(_shape(a))))
    return _gathered_along(a, _argsort(a, axis, kind, order), axis)  # (its positions in range by construction)


def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    """numpy's full_like (zeros_like, ones_like): a constant array of a's shape and dtype."""
    target = aval_of(a)
    return np.full(target.shape if shape is None else shape, fill_value, target.dtype if dtype is None else dtype)


FUNCTIONS.update({
    np.moveaxis: _moveaxis, np.flip: _flip, np.fliplr: lambda m: _flip(m, 1), np.flipud: lambda m: _flip(m, 0),
    np.roll: _roll, np.tile: _tile, np.repeat: _repeat,
    np.broadcast_to: lambda array, shape, subok=False: broadcast_to(array, shape=tuple(np.atleast_1d(shape).tolist())),
    np.atleast_1d: _atleast_1d, np.atleast_2d: _atleast_2d, np.atleast_3d: _atleast_3d,
    np.vstack: _stacked(_atleast_2d, lambda arrays: 0),
    np.hstack: _stacked(_atleast_1d, lambda arrays: 0 if len(_shape(arrays[0])) == 1 else 1),
    np.dstack: _stacked(_atleast_3d, lambda arrays: 2), np.column_stack: _stacked(_column, lambda arrays: 1),
    np.split: _split, np.array_split: lambda ary, indices_or_sections, axis=0: _split(ary, indices_or_sections, axis, False),
    np.take: _take, np.take_along_axis: _take_along_axis,
    np.diagonal: _diagonal, np.trace: _trace, np.diag: _diag, np.triu: _triangle(True), np.tril: _triangle(False),
    np.outer: _outer, np.inner: _inner, np.tensordot: _tensordot, np.pad: _pad, np.cumsum: _cumsum, np.cumprod: _cumprod, np.einsum: _einsum,
    np.sort: _sort, np.argsort: _argsort,
    np.shape: lambda a: aval_of(a).shape, np.ndim: lambda a: len(aval_of(a).shape),
    np.size: lambda a, axis=None: int(np.prod(aval_of(a).shape)) if axis is None else aval_of(a).shape[axis],
    np.zeros_like: lambda a, *args, **kw: _full_like(a, 0, *args, **kw),
    np.ones_like: lambda a, *args, **kw: _full_like(a, 1, *args, **kw), np.full_like: _full_like,
})


# More of numpy's ufuncs: arctan2 and hypot are ops (math's functions in kernels); the others
# are composed. logaddexp is max(a, b) + log1p(exp(-|a - b|)), with |a - b| read as 0 where
# a == b (two equal infinities: numpy's inf or -inf, not NaN); fmax and fmin skip a NaN.
def _logaddexp(a, b):
    gap = ew.masked(ew.abs(ew.sub(a, b)), ew.ne(a, b))
    return ew.add(ew.max(a, b), ew.log1p(ew.exp(ew.neg(gap))))


def _logaddexp2(a, b):
    ln2 = math.log(2)  # (a Python number: it keeps float32 inputs float32)
    return ew.div(_logaddexp(ew.mul(a, ln2), ew.mul(b, ln2)), ln2)


def _nan_skipping(pick):
    def fmax(a, b):
        where = FUNCTIONS[np.where]
        return where(ew.ne(b, b), a, where(ew.ne(a, a), b, pick(a, b)))
    return fmax


def _round(a, decimals=0, out=None):
    """np.round: halves to even, at `decimals` digits as numpy (x * 10**d rounded, divided back)."""
    a = _no_out(out, a)
    if not isinstance(decimals, (int, np.integer)):
        raise TypeError(f"np.round: decimals must be an integer, got {decimals!r}")
    if np.dtype(aval_of(a).dtype).kind in "iub":
        if decimals < 0:
            raise TypeError("np.round of integers to negative decimals is not supported on Params and recorded values")
        return a
    scale = 10.0 ** abs(decimals)
    if decimals >= 0:
        return ew.div(ew.round(ew.mul(a, scale)), scale) if decimals else ew.round(a)
    return ew.mul(ew.round(ew.div(a, scale)), scale)


def _linalg_norm(x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm: vector norms along one axis, matrix norms (Frobenius, 1, inf, 2, nuclear
    and their negatives) over two, the 2-norm of all entries without axis and ord."""
    ndim = len(_shape(x))
    axes = tuple(range(ndim)) if axis is None and ord is not None else None if axis is None else \
        tuple(_axis(a, ndim) for a in np.atleast_1d(axis).tolist())
    if axes is None or len(axes) == 1:
        if isinstance(ord, str):
            raise ValueError(f"Invalid norm order {ord!r} for vectors")
        result = norm(x, 2 if ord is None else ord, axes)
    elif len(axes) == 2 and ord in (None, "fro"):
        result = norm(x, 2, axes)
    elif len(axes) == 2 and ord in (1, -1, np.inf, -np.inf):
        summed, across = (axes[0], axes[1]) if ord in (1, -1) else (axes[1], axes[0])
        x = astype(x, dtype=np.dtype(np.float64)) if np.dtype(aval_of(x).dtype).kind in "biu" else x
        sums = FUNCTIONS[np.sum](ew.abs(x), summed, None, None, True)
        result = FUNCTIONS[np.max if ord > 0 else np.min](sums, across, None, True)
    elif len(axes) == 2 and ord in (2, -2, "nuc"):  # the singular values' largest, smallest, sum
        values = svd(_moveaxis(x, list(axes), [-2, -1]), compute_uv=False)
        result = reshape({2: FUNCTIONS[np.max], -2: FUNCTIONS[np.min], "nuc": FUNCTIONS[np.sum]}[ord](values, -1),
                         shape=tuple(1 if i in axes else n for i, n in enumerate(_shape(x))))
    else:
        raise ValueError("Improper number of dimensions to norm." if len(axes) > 2 else "Invalid norm order for matrices.")
    kept = tuple(1 if axes is None or d in axes else n for d, n in enumerate(_shape(x)))
    return reshape(result, shape=kept if keepdims else tuple(n for d, n in enumerate(_shape(x)) if axes is not None and d not in axes))


def _vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
    """np.linalg.vector_norm: the norm of the entries along axis (all of them by default)."""
    ndim = len(_shape(x))
    axes = tuple(range(ndim)) if axis is None else _axes_arg(axis, ndim)
    result = norm(x, 2 if ord is None else ord, axes)
    return result if keepdims else reshape(result, shape=tuple(n for i, n in enumerate(_shape(x)) if i not in axes))


def _matrix_power(a, n):
    """np.linalg.matrix_power: a @ a @ ... (n times; n < 0: of inv(a); 0: the identity)."""
    if not isinstance(n, (int, np.integer)):
        raise TypeError("exponent must be an integer")
    if len(_shape(a)) < 2 or _shape(a)[-1] != _shape(a)[-2]:
        raise ShapeError(f"np.linalg.matrix_power: the last 2 dimensions of the array must be square, got {_shape(a)}")
    if n == 0:
        return np.broadcast_to(np.eye(_shape(a)[-1], dtype=aval_of(a).dtype), _shape(a)).copy()
    a, power, result = inv(a) if n < 0 else a, abs(int(n)), None
    while power:  # (by squaring: powers of a commute)
        if power & 1:
            result = a if result is None else matmul(result, a)
        power >>= 1
        a = matmul(a, a) if power else a
    return result


def _multi_dot(arrays, *, out=None):
    """np.linalg.multi_dot: the product of the arrays, left to right (a 1-D first or last one a
    row or column vector); the same value as numpy's chosen order, up to rounding."""
    _no_out(out, None)
    result = arrays[0]
    for a in arrays[1:]:
        result = matmul(result, a)
    return result


_UNGIVEN = object()


def _diff(a, n=1, axis=-1, prepend=_UNGIVEN, append=_UNGIVEN):
    if n < 0:
        raise ValueError(f"order must be non-negative but got {n!r}")
    axis = _axis(axis, len(_shape(a)))
    def edge(v):  # (a number: one entry along the axis, numpy's)
        v = v if hasattr(v, "shape") else np.asarray(v)
        return np.broadcast_to(v, _shape(a)[:axis] + (1,) + _shape(a)[axis + 1:]) if not _shape(v) else v
    parts = [edge(prepend)] * (prepend is not _UNGIVEN) + [a] + [edge(append)] * (append is not _UNGIVEN)
    a = cat(*parts, dims=axis) if len(parts) > 1 else a
    for _ in range(n):
        k = _shape(a)[axis]
        later, earlier = getindex(a, _along(axis, slice(1, None))), getindex(a, _along(axis, slice(0, max(k - 1, 0))))
        a = _as_bool(ew.ne(later, earlier)) if aval_of(a).dtype == np.bool_ else ew.sub(later, earlier)
    return a


UFUNCS.update({np.arctan2: ew.atan2, np.hypot: ew.hypot, np.logaddexp: _logaddexp, np.logaddexp2: _logaddexp2,
               np.fmax: _nan_skipping(ew.max), np.fmin: _nan_skipping(ew.min),
               np.deg2rad: lambda x: ew.mul(x, np.pi / 180), np.radians: lambda x: ew.mul(x, np.pi / 180),
               np.rad2deg: lambda x: ew.mul(x, 180 / np.pi), np.degrees: lambda x: ew.mul(x, 180 / np.pi)})
FUNCTIONS.update({np.linalg.norm: _linalg_norm, np.diff: _diff, np.round: _round, np.around: _round, np.linalg.inv: inv, np.linalg.solve: solve,
                  np.linalg.slogdet: slogdet, np.linalg.det: det, np.linalg.cholesky: cholesky, np.linalg.eigh: eigh,
                  np.linalg.eigvalsh: eigvalsh, np.linalg.vector_norm: _vector_norm,
                  np.linalg.matrix_norm: lambda x, /, *, keepdims=False, ord="fro": _linalg_norm(x, ord, (-2, -1), keepdims),
                  np.linalg.matrix_power: _matrix_power, np.linalg.multi_dot: _multi_dot, np.linalg.svd: svd,
                  np.linalg.svdvals: lambda x, /: svd(x, compute_uv=False), np.linalg.pinv: pinv, np.linalg.qr: qr})


# Predicates and logic: bools, as numpy's (comparisons of floats are Knet's 0/1 floats, so a
# mask made of them is combined by its nonzero entries). Nothing here has a gradient.
def _truth(x):
    return ew.ne(x, 0)


def _as_bool(x):
    return astype(x, dtype=np.dtype(bool))


def _count_nonzero(a, axis=None, *, keepdims=False):
    return FUNCTIONS[np.sum](astype(_truth(a), dtype=np.dtype(np.int64)), axis, None, None, keepdims)


def _any(a, axis=None, out=None, keepdims=False):
    return _as_bool(ew.gt(_count_nonzero(_no_out(out, a), axis, keepdims=keepdims), 0))


def _all(a, axis=None, out=None, keepdims=False):
    return _as_bool(ew.eq(_count_nonzero(ew.eq(_truth(_no_out(out, a)), 0), axis, keepdims=keepdims), 0))


def _float_or_bool(name, x):
    kind = np.dtype(aval_of(x).dtype).kind
    if kind not in "fb":
        raise TypeError(f"{name} of integer arrays is bitwise in numpy; knetc's {name} combines masks (bools, or "
                        "Knet's 0/1 float comparisons): compare first (x != 0), or do bit operations on plain arrays")
    return x


def logical_and(a, b): return _as_bool(ew.mul(_truth(a), _truth(b)))
def logical_or(a, b): return _as_bool(_truth(ew.add(_truth(a), _truth(b))))
def logical_xor(a, b): return _as_bool(ew.ne(_truth(a), _truth(b)))
def logical_not(a): return _as_bool(ew.eq(a, 0))


def _mask_operator(symbol, logic):
    """`a & b` (`|`, `^`, `~`) of masks: logical for bools and for Knet's 0/1 float comparisons
    (which stay 0/1 floats of their type)."""
    return lambda *operands: _same_kind(logic(*(_float_or_bool(symbol, x) for x in operands)), *operands)


mask_and, mask_or = _mask_operator("&", logical_and), _mask_operator("|", logical_or)
mask_xor, mask_not = _mask_operator("^", logical_xor), _mask_operator("~", logical_not)


def _same_kind(result, *operands):
    """A mask of floats stays 0/1 floats (of the operands' float type): Knet's comparisons."""
    dtypes = [aval_of(x).dtype for x in operands if not isinstance(x, (bool, int, float))]
    floats = [d for d in dtypes if np.dtype(d).kind == "f"]
    return astype(result, dtype=np.result_type(*floats)) if floats else result


def _isnan(x): return _as_bool(ew.ne(x, x))
def _isinf(x): return _as_bool(ew.eq(ew.abs(x), np.inf))
def _isfinite(x): return _as_bool(ew.lt(ew.abs(x), np.inf))


FUNCTIONS.update({np.count_nonzero: _count_nonzero, np.any: _any, np.all: _all})
UFUNCS.update({np.isnan: _isnan, np.isinf: _isinf, np.isfinite: _isfinite, np.logical_and: logical_and,
               np.logical_or: logical_or, np.logical_xor: logical_xor, np.logical_not: logical_not})
UFUNCS.update({np.bitwise_and: mask_and, np.bitwise_or: mask_or, np.bitwise_xor: mask_xor, np.invert: mask_not})

# The mask operators of every knetc array-like type (ArrayMethods), with the logic above.
ArrayMethods.__and__, ArrayMethods.__rand__ = mask_and, lambda self, other: mask_and(other, self)
ArrayMethods.__or__, ArrayMethods.__ror__ = mask_or, lambda self, other: mask_or(other, self)
ArrayMethods.__xor__, ArrayMethods.__rxor__ = mask_xor, lambda self, other: mask_xor(other, self)
ArrayMethods.__invert__ = mask_not
ArrayMethods.any = lambda self, axis=None, out=None, keepdims=False: _any(self, axis, out, keepdims)
ArrayMethods.all = lambda self, axis=None, out=None, keepdims=False: _all(self, axis, out, keepdims)

# ndarray's methods of the functions above (x.cumsum(), x.argmax(axis), x.repeat(2), ...)
ArrayMethods.argmax = lambda self, axis=None, out=None, keepdims=False: FUNCTIONS[np.argmax](self, axis, out, keepdims)
ArrayMethods.argmin = lambda self, axis=None, out=None, keepdims=False: FUNCTIONS[np.argmin](self, axis, out, keepdims)
ArrayMethods.cumsum = lambda self, axis=None, dtype=None, out=None: _cumsum(self, axis, dtype, out)
ArrayMethods.cumprod = lambda self, axis=None, dtype=None, out=None: _cumprod(self, axis, dtype, out)
ArrayMethods.argsort = lambda self, axis=-1, kind=None, order=None, *, stable=None: _argsort(self, axis, kind, order)
ArrayMethods.round = lambda self, decimals=0, out=None: _round(self, decimals, out)
ArrayMethods.repeat = lambda self, repeats, axis=None: _repeat(self, repeats, axis)
ArrayMethods.take = lambda self, indices, axis=None, out=None, mode="raise": _take(self, indices, axis, out, mode)
ArrayMethods.trace = lambda self, offset=0, axis1=0, axis2=1, dtype=None, out=None: _trace(self, offset, axis1, axis2, dtype, out)
ArrayMethods.diagonal = lambda self, offset=0, axis1=0, axis2=1: _diagonal(self, offset, axis1, axis2)

# Real values' complex parts (knetc refuses complex values): x itself, and constant zeros.
ArrayMethods.real = property(lambda self: self)
ArrayMethods.imag = property(lambda self: np.zeros(_shape(self), aval_of(self).dtype))
ArrayMethods.conj = ArrayMethods.conjugate = lambda self: self
FUNCTIONS.update({np.real: lambda val: val.real, np.imag: lambda val: val.imag})
UFUNCS.update({np.conjugate: lambda x: x})
