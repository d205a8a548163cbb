"""Indexing: `x[idx]` and the functional `setindex(x, idx, v)`, with numpy's semantics.

Basic indices (ints, negative allowed, slices, Python ranges, None, Ellipsis, tuples of
them: Knet's CartesianIndex is a tuple of ints) become `index_static`, an index remapping
that compiled code fuses into kernels. Advanced indices (integer arrays, with repeats,
boolean masks, mixtures) known when the function runs or is compiled become a gather
(`take`) from the flattened array; its adjoint is a scatter-add. In compiled code an
integer-array *value* is supported as the one non-`:` index (`x[idx]`, `x[:, idx]`);
a boolean mask that is a compiled value would give a data-dependent shape and is refused.
Concatenation (`concat`, the op of kn.cat) is built from the same static slices.

    x[1:3, -1]      x[..., None]      x[np.array([0, 0, 2])]      x[x_np > 0]
"""
import numpy as np

from ..context import is_boxed, is_symbolic, kind, training, value_of
from ..errors import CompileError, ShapeError, format_error
from .broadcast import broadcast_to
from .core import Aval, Op, astype, aval_of, register
from .elementwise import add, full, masked
from .shape import reshape


# ----------------------------------------------------------------------------- static indexing
#
# Basic indexing with indices known at compile time (ints, slices, None) is one op,
# `index_static`, whose `spec` has one entry per input axis and per new axis:
#   ("s", start, step, count)  a slice: output positions j read start + step * j
#   ("i", k)                   an integer: the axis is dropped
#   ("n",)                     None/newaxis: a new output axis of size 1
# It lowers as an index remapping fused into its consumer's kernel (like transpose), and
# its adjoint `pad_static` writes dy into those positions with zeros elsewhere, also fused.

def _spec_shape(spec):
    return tuple(1 if e[0] == "n" else e[3] for e in spec if e[0] != "i")


def _spec_numpy_index(spec):
    index = []
    for e in spec:
        if e[0] == "s":
            _, start, step, count = e
            stop = start + step * count
            index.append(slice(start, None if stop < 0 else stop, step))
        else:
            index.append(e[1] if e[0] == "i" else None)
    return tuple(index)


def _index_static_rule(x, spec):
    axes = [e for e in spec if e[0] != "n"]
    if len(axes) != x.ndim:
        raise ShapeError(f"index: {len(axes)} indexed axes for {x}")
    for e, n in zip(axes, x.shape):
        if e[0] == "i" and not 0 <= e[1] < n or e[0] == "s" and e[3] and not (
                0 <= e[1] < n and 0 <= e[1] + e[2] * (e[3] - 1) < n):
            raise ShapeError(f"index: {e} is out of bounds for {x}")
    return Aval(_spec_shape(spec), x.dtype)


def _affine(start, step, j):
    if j == "0":
        return str(start)
    term = j if step == 1 else f"{step} * {j}"
    return term if start == 0 else f"({start} + {term})"


def _index_static_map(index, shape, spec):
    source, j = [], 0
    for e in spec:
        if e[0] == "s":
            source.append(_affine(e[1], e[2], index[j]))
            j += 1
        elif e[0] == "i":
            source.append(str(e[1]))
        else:
            j += 1
    return tuple(source), None


def _index_static_view(shape, spec):
    """Leading integers, then at most one step-1 slice, then whole axes: a contiguous block."""
    entries, k = list(spec), 0
    while k < len(entries) and entries[k][0] == "i":
        k += 1
    index = [str(e[1]) for e in entries[:k]]
    if k < len(entries) and entries[k][0] == "s" and entries[k][2] == 1:
        _, start, _, count = entries[k]
        if (start, count) != (0, shape[k]):  # (a whole axis needs no slice)
            index.append(f"{start}:{start + count}")
        k += 1
    whole = all(e[0] == "s" and e[1] == 0 and e[2] == 1 and e[3] == n for e, n in zip(entries[k:], shape[k:]))
    if not index or not whole or len(entries) != len(shape) or all(e[0] == "i" for e in entries):
        return None  # a strided, reordered or 0-d result: computed by a kernel
    return ", ".join(index)


def _index_static_grad(dy, y, x, spec):
    if 0 in aval_of(dy).shape:
        return full(shape=aval_of(x).shape, value=0.0, dtype=aval_of(x).dtype)
    return pad_static(dy, spec=spec, shape=aval_of(x).shape)


index_static = register(Op(
    "index_static", _index_static_rule, lambda x, spec: np.array(np.asarray(x)[_spec_numpy_index(spec)]),
    (_index_static_grad,), "elementwise", index_map=_index_static_map, entries_of_input=True, inline_input="always",
    view_index=_index_static_view))


def _pad_static_rule(dy, spec, shape):
    if dy.shape != _spec_shape(spec):
        raise ShapeError(f"pad_static: {dy} does not fit the index {spec}")
    return Aval(tuple(shape), dy.dtype)


def _pad_static_impl(dy, spec, shape):
    out = np.zeros(shape, np.asarray(dy).dtype)
    kept = [n for e, n in zip([e for e in spec if e[0] != "i"], np.shape(dy)) if e[0] != "n"]
    out[tuple(e for e, s in zip(_spec_numpy_index(spec), spec) if s[0] != "n")] = np.reshape(dy, kept)
    return out


def _pad_static_map(index, dy_shape, spec, shape):
    """x's index -> dy's index (clamped) and the condition that x's entry was selected."""
    source, conditions, p = [], [], 0  # p: the axis of x (the output)
    for e in spec:
        if e[0] == "n":
            source.append("0")
            continue
        i, n = index[p], shape[p]
        p += 1
        if e[0] == "i":
            conditions.append(f"{i} == {e[1]}")
            continue
        _, start, step, count = e
        if step == 1 and start == 0 and count == n:
            source.append(i)  # the whole axis
            continue
        lo, stride = min(start, start + step * (count - 1)), abs(step)
        hi = lo + stride * (count - 1)
        offset = i if lo == 0 else f"({i} - {lo})"
        q = offset if stride == 1 else f"{offset} // {stride}"
        q = q if step > 0 else f"{count - 1} - {q}"
        # clamped into 0..count-1 by selects: Numba would compile min() and max() again in each process
        source.append(f"(0 if {q} < 0 else {count - 1} if {q} > {count - 1} else {q})")
        conditions += ([f"{i} >= {lo}"] if lo > 0 else []) + ([f"{i} <= {hi}"] if hi < n - 1 else [])
        if stride != 1:
            conditions.append(f"{offset} % {stride} == 0")
    return tuple(source), " and ".join(conditions) or None


pad_static = register(Op(
    "pad_static", _pad_static_rule, _pad_static_impl,
    (lambda dz, z, dy, spec, shape: index_static(dz, spec=spec),), "elementwise", index_map=_pad_static_map,
    inline_input="cheap"))

# ----------------------------------------------------------------------------- concatenation

def _concat_rule(*xs, axis):
    first = xs[0]
    if not 0 <= axis < first.ndim:
        raise ShapeError(f"cat: dims={axis} is out of range for {first}")
    for x in xs[1:]:
        if x.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis):
            raise ShapeError(f"cat: shapes {' and '.join(str(x.shape) for x in xs)} differ outside axis {axis}")
    dtypes = [x.dtype for x in xs if x.dtype is not None]
    return Aval(first.shape[:axis] + (sum(x.shape[axis] for x in xs),) + first.shape[axis + 1:],
                np.result_type(*dtypes) if dtypes else None)


def _concat_part(i, xs, axis):
    """The index_static spec selecting input i's block of the concatenation."""
    shapes = [aval_of(x).shape for x in xs]
    start = sum(s[axis] for s in shapes[:i])
    total = sum(s[axis] for s in shapes)
    return tuple(("s", start, 1, shapes[i][axis]) if a == axis else ("s", 0, 1, n)
                 for a, n in enumerate(shapes[0][:axis] + (total,) + shapes[0][axis + 1:]))


def _concat_grad(i):
    return lambda dy, y, *xs, axis: index_static(dy, spec=_concat_part(i, xs, axis))


def _concat_decompose(*xs, axis):
    # Each input padded with zeros to the result's shape, summed: one fused kernel that
    # reads the right input per output index.
    result = _concat_rule(*map(aval_of, xs), axis=axis)
    out = None
    for i, x in enumerate(xs):
        if aval_of(x).shape[axis] == 0:
            continue
        part = pad_static(x, spec=_concat_part(i, xs, axis), shape=result.shape)
        out = part if out is None else add(out, part)
    return full(shape=result.shape, value=0, dtype=result.dtype) if out is None else out  # (all parts empty)


concat = register(Op(
    "concat", _concat_rule, lambda *xs, axis: np.concatenate([np.asarray(x) for x in xs], axis=axis),
    tuple(_concat_grad(i) for i in range(256)), "composite", decompose=_concat_decompose))


# ----------------------------------------------------------------------------- gather / scatter

def _check_indices(name, idx):
    if idx.dtype is None or not np.issubdtype(idx.dtype, np.integer):
        raise ShapeError(f"{name}: indices must be an integer array, got {idx}")


def _take_rule(x, idx, axis):
    _check_indices("take", idx)
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"take: axis {axis} out of range for {x}")
    return Aval(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)


def _take_impl(x, idx, axis):
    return np.take(np.asarray(x), np.asarray(idx), axis=axis)  # raises IndexError when out of range


class _IndexRange:
    """checked_indices' input check (Op.input_check): every index in -size..size-1, as numpy
    requires. Indices computed inside a compiled function: the CPU's gather raises in its
    kernel; a CUDA kernel cannot raise (it would read 0), so there they are refused."""

    def __call__(self, values, where, size, axis):
        values = np.asarray(values)
        out = (values < -size) | (values >= size)
        if out.any():
            raise IndexError(format_error(f"index {int(values[out].flat[0])} is out of bounds for axis {axis} "
                                          f"with size {size}", *(where or (None, None))))

    def refusal(self, target, size, axis):
        return None if target == "cpu" else (
            "indices computed inside a compiled function cannot be range-checked before the CUDA kernels run")


_INDEX_RANGE = _IndexRange()


def _checked_indices_impl(idx, size, axis):
    _INDEX_RANGE(idx, None, size, axis)
    return np.asarray(idx)


# A gather's indices unchanged (a view: no copy), once their range is checked: a compiled
# program checks the input array they come from before it runs, so an index out of range
# raises numpy's IndexError on every target and nothing has run.
checked_indices = register(Op(
    "checked_indices", lambda idx, size, axis: idx, _checked_indices_impl, (None,), "view",
    input_check=_INDEX_RANGE))


take = register(Op(
    "take", _take_rule, _take_impl,
    (lambda dy, y, x, idx, axis: scatter_add(dy, idx, axis=axis, size=aval_of(x).shape[axis]), None),
    "call", lowering={"cpu": "knetc.kernels.indexing:take_cpu", "cuda": "knetc.kernels.indexing:take_cuda"}))


def _scatter_add_rule(dy, idx, axis, size):
    _check_indices("scatter_add", idx)
    if dy.shape[axis:axis + idx.ndim] != idx.shape:
        raise ShapeError(f"scatter_add: {dy} does not hold indices {idx} at axis {axis}")
    return Aval(dy.shape[:axis] + (size,) + dy.shape[axis + idx.ndim:], dy.dtype)


def _scatter_add_impl(dy, idx, axis, size):
    dy, idx = np.asarray(dy), np.asarray(idx)
    pre, post = dy.shape[:axis], dy.shape[axis + idx.ndim:]
    out = np.zeros((int(np.prod(pre)), size, int(np.prod(post))), dy.dtype)
    flat = np.where(idx < 0, idx + size, idx).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= size):
        raise IndexError(f"scatter_add: an index is out of range for size {size}")
    np.add.at(out, (slice(None), flat), dy.reshape(out.shape[0], flat.size, out.shape[2]))
    return out.reshape(pre + (size,) + post)


scatter_add = register(Op(
    "scatter_add", _scatter_add_rule, _scatter_add_impl,
    (lambda dz, z, dy, idx, axis, size: take(dz, idx, axis=axis), None),
    "call", lowering={"cpu": "knetc.kernels.indexing:scatter_add_cpu",
                      "cuda": "knetc.kernels.indexing:scatter_add_cuda"}))


# ----------------------------------------------------------------------------- index analysis

def _is_symbolic(i):
    return is_symbolic(i)  # an IR value (compiled code)


def _concrete(i):
    """Index arrays as numpy: lists, ranges, Params/taped values (their values)."""
    if isinstance(i, (list, range)):  # (an empty list selects nothing, as numpy's: an integer index)
        return np.asarray(list(i) if isinstance(i, range) else i, dtype=None if len(i) else np.intp)
    if kind(i) == "boxed":  # Params, taped values: their values (an index carries no gradient)
        i = np.asarray(value_of(i))
    elif kind(i) == "device":  # KnetArrays: copied to the host
        i = np.asarray(i)
    if isinstance(i, np.ndarray) and np.issubdtype(i.dtype, np.floating):
        # Knet's comparisons give 0/1 floats; as an index such an array is a boolean mask.
        if not np.all((i == 0) | (i == 1)):
            raise IndexError("index: a float array can only be a 0/1 mask; use integer arrays for positions")
        return i.astype(bool)
    return i


def host_index(index):
    """index as numpy takes it on the host: Knet's 0/1 float masks as booleans, Params and
    KnetArrays as their values (for an assignment made on a host copy)."""
    return tuple(map(_concrete, index)) if isinstance(index, tuple) else _concrete(index)


def _is_advanced(i):
    if isinstance(i, np.ndarray):
        return i.ndim > 0 or i.dtype == np.bool_
    return isinstance(i, list) or kind(i) is not None


def _has_ellipsis(items):
    return any(i is Ellipsis for i in items)  # not `in`: that compares arrays with ==


def _ellipsis_at(items):
    return next(k for k, i in enumerate(items) if i is Ellipsis)


def _basic_spec(index, shape):
    """The index_static spec of a basic index, or None when it has advanced parts."""
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (bool, np.bool_)) for i in items):
        raise IndexError("index: a bool is not an index (use a boolean array as a mask)")
    if any(_is_advanced(i) for i in items):
        return None
    # numpy indexes with a range's values as an array, ints beside it too: as a slice unless
    # another range pairs up with it, or a slice or None splits it from an int (its axis first).
    paired = [k for k, i in enumerate(items) if isinstance(i, (range, int, np.integer))]
    if any(isinstance(i, range) for i in items) and (sum(isinstance(i, range) for i in items) > 1
                                                     or paired[-1] - paired[0] >= len(paired)):
        return None
    if sum(i is Ellipsis for i in items) > 1:
        raise IndexError("index: at most one Ellipsis (...)")
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if consumed > len(shape):
        raise IndexError(f"index: {consumed} indices for an array of {len(shape)} dimensions {shape}")
    if _has_ellipsis(items):
        k = _ellipsis_at(items)
        items = items[:k] + (slice(None),) * (len(shape) - consumed) + items[k + 1:]
    else:
        items = items + (slice(None),) * (len(shape) - consumed)
    spec, axis = [], 0
    for i in items:
        if i is None:
            spec.append(("n",))
            continue
        n = shape[axis]
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            count = len(range(start, stop, step))
            spec.append(("s", start if count else 0, step, count))
        elif isinstance(i, range):
            entry = _range_entry(i, n, axis)
            if entry is None:
                return None  # not an arithmetic progression once wrapped: gather it
            spec.append(entry)
        elif isinstance(i, (int, np.integer)) or (isinstance(i, np.ndarray) and i.ndim == 0):
            k = int(i)
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
            spec.append(("i", k % n))
        else:
            raise IndexError(f"index: {type(i).__name__} is not a valid index "
                             "(ints, slices, ranges, None, ..., integer or boolean arrays)")
        axis += 1
    return tuple(spec)


def _range_entry(r, n, axis):
    """A Python range as a slice entry: its values are indices (negative from the end)."""
    values = list(r)
    for v in values:
        if not -n <= v < n:
            raise IndexError(f"index {v} is out of bounds for axis {axis} with size {n}")
    values = [v % n for v in values]
    if len(values) < 2:
        return ("s", values[0], 1, 1) if values else ("s", 0, 1, 0)
    step = values[1] - values[0]
    if step == 0 or any(b - a != step for a, b in zip(values, values[1:])):
        return None
    return ("s", values[0], step, len(values))


def _axis_gather(index, shape):
    """(axis, idx) when `index` is one integer array (or IR value) among full slices and
    Ellipsis: x[idx], x[:, idx], x[..., idx]. That is a gather along one axis."""
    items = index if isinstance(index, tuple) else (index,)
    arrays = [k for k, i in enumerate(items) if _is_advanced(i)]
    if len(arrays) != 1:
        return None
    k = arrays[0]
    idx = items[k] if _is_symbolic(items[k]) else _concrete(items[k])
    if not _is_symbolic(idx) and (idx.dtype == np.bool_ or idx.size == 0):
        return None  # masks and empty lists: the general path
    full = lambda i: isinstance(i, slice) and i == slice(None)  # noqa: E731
    if not all(full(i) for j, i in enumerate(items) if j != k and i is not Ellipsis):
        return None
    if sum(i is not Ellipsis for i in items) > len(shape):
        raise IndexError(f"index: {len(items)} indices for an array of {len(shape)} dimensions {shape}")
    axis = k
    if _has_ellipsis(items) and _ellipsis_at(items) < k:
        axis = len(shape) - (len(items) - k)
    if not _is_symbolic(idx):
        _INDEX_RANGE(idx, None, shape[axis], axis)
        idx = idx.astype(np.int64)
    return axis, idx


def _scalar_value_index(index):
    """(items, k) when item k of a tuple index is a 0-d integer array value (a numpy integer
    argument, say) and no other item is an array or Ellipsis: taking that axis first, then
    the rest, is numpy's result (a 0-d index adds no axes wherever it stands)."""
    items = index if isinstance(index, tuple) else (index,)
    arrays = [k for k, i in enumerate(items) if _is_advanced(i)]
    if len(items) < 2 or _has_ellipsis(items) or not arrays or any(not _is_symbolic(items[k]) for k in arrays):
        return None
    scalar = next((k for k in arrays if aval_of(items[k]).ndim == 0
                   and np.issubdtype(aval_of(items[k]).dtype or np.float64, np.integer)), None)
    return None if scalar is None else (items, scalar)


def _linear_positions(index, shape):
    """The flat positions numpy's x[index] reads (concrete indices only)."""
    items = index if isinstance(index, tuple) else (index,)
    if any(_is_symbolic(i) for i in items):
        raise CompileError(
            "in compiled code an integer-array index that is an argument or computed inside (not a "
            "constant) must be the only non-':' index: x[idx], x[:, idx]; this index combines it with others",
            hint="index one axis at a time (x[i][:, j] takes rows then columns), index a flattened view "
                 "(kn.reshape(x, -1)[i * x.shape[1] + j] reads x[i, j] pairwise), or multiply by a mask")
    items = tuple(_concrete(i) for i in items)
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)[items]


# ----------------------------------------------------------------------------- public

def getindex(x, index):
    """x[index] with numpy semantics, differentiable (Knet's getindex; 0-based).

    >>> x = np.arange(8.0).reshape(2, 4)
    >>> kn.getindex(x, (0, slice(1, 3)))      # x[0, 1:3]
    array([1., 2.])
    """
    shape = aval_of(x).shape
    spec = _basic_spec(index, shape)
    if spec is not None:
        if all(e == ("s", 0, 1, n) for e, n in zip(spec, shape)) and len(spec) == len(shape):
            return x  # x[:] / x[...]: the same value
        return index_static(x, spec=spec)
    gathered = _axis_gather(index, shape)
    if gathered is not None:
        axis, idx = gathered
        ia = aval_of(idx)
        if ia.dtype is None or not np.issubdtype(ia.dtype, np.integer):
            raise CompileError("a boolean mask that is an array value (an argument, or computed inside) would give "
                               "a data-dependent shape: compiled code indexes with masks known while tracing and "
                               "with integer arrays", hint="multiply by the mask instead (x * mask), pass the "
                               "positions (np.flatnonzero(mask)) as an integer array, or index outside kn.compile")
        idx = checked_indices(idx, size=shape[axis], axis=axis)
        if ia.ndim == 0:
            return reshape(take(x, reshape(idx, shape=(1,)), axis=axis), shape=shape[:axis] + shape[axis + 1:])
        return take(x, idx, axis=axis)
    scalar = _scalar_value_index(index)
    if scalar is not None:  # x[i, 1:3] with i a 0-d integer array value: numpy's result is x[i][1:3]'s
        items, k = scalar
        axis = sum(i is not None for i in items[:k])  # (the axes the items before it index)
        return getindex(getindex(x, (slice(None),) * axis + (items[k],)), items[:k] + items[k + 1:])
    positions = _linear_positions(index, shape)
    flat = reshape(x, shape=(int(np.prod(shape)),))
    return reshape(take(flat, positions.reshape(-1), axis=0), shape=positions.shape)


def setindex(x, index, v):
    """A copy of x with x[index] = v (numpy semantics; v broadcasts); differentiable in x and v.

    The functional form of `x[index] = v` for use inside `diff` and compiled code:
    >>> x = np.arange(8.0).reshape(2, 4)
    >>> kn.setindex(x, (slice(None), 0), 0.0)    # y = x.copy(); y[:, 0] = 0
    array([[0., 1., 2., 3.],
           [0., 5., 6., 7.]])
    """
    xa = aval_of(x)
    shape = xa.shape
    if any(_is_symbolic(i) for i in (index if isinstance(index, tuple) else (index,))):
        raise CompileError("setindex: the index must be known when compiling (not an array computed in "
                           "compiled code)", hint="pass index arrays as constants (globals), or blend with a "
                           "0/1 mask: x * (1 - m) + v * m")
    spec = _basic_spec(index, shape)
    if spec is not None:
        keep = np.ones(shape, xa.dtype)
        keep[_numpy_index(spec)] = 0
        target = _spec_shape(spec)
        v = _as_dtype(v, xa.dtype)
        # masked, not x * keep: an inf or NaN overwritten would leave NaN (inf * 0)
        return add(masked(x, keep), pad_static(broadcast_to(v, shape=target), spec=spec, shape=shape))
    positions = _linear_positions(index, shape)
    size = int(np.prod(shape))
    # Repeated positions: numpy keeps the last assignment, so only that one is written.
    flat_positions = positions.reshape(-1)
    last = {int(p): k for k, p in enumerate(flat_positions)}
    chosen = np.array(sorted(last.values()), dtype=np.int64)
    keep = np.ones(size, xa.dtype)
    keep[flat_positions] = 0
    v = broadcast_to(_as_dtype(v, xa.dtype), shape=positions.shape)
    values = take(reshape(v, shape=(flat_positions.size,)), chosen if chosen.size else np.zeros(0, np.int64), axis=0)
    written = scatter_add(values, flat_positions[chosen], axis=0, size=size)
    return reshape(add(masked(reshape(x, shape=(size,)), keep), written), shape=shape)


def _as_dtype(v, dtype):
    if isinstance(v, (int, float)):
        return np.asarray(v, dtype)
    va = aval_of(v)
    return v if va.dtype == dtype else astype(v, dtype=dtype)


def _numpy_index(spec):
    return tuple(i for i, e in zip(_spec_numpy_index(spec), spec) if e[0] != "n")


def setindex_(x, index, v):
    """In place: x[index] = v on a numpy array or a Param's value (outside `diff`).

    Example:
        >>> import numpy as np, knetc as kn
        >>> x = np.zeros(4)
        >>> kn.setindex_(x, slice(1, 3), 1.0)
        array([0., 1., 1., 0.])
        >>> x
        array([0., 1., 1., 0.])
    """
    if is_symbolic(x):
        raise CompileError("assigning into an array is not supported in compiled code",
                           hint="use y = kn.setindex(x, index, v), which returns a new array")
    if is_boxed(x):
        if not hasattr(x, "opt"):  # a value recorded on a tape
            raise TypeError("x[index] = v on a value recorded inside diff would not be differentiated; "
                            "use y = kn.setindex(x, index, v), which returns a new array")
        if training():
            raise TypeError("x[index] = v on a Param inside diff would not be differentiated; "
                            "use y = kn.setindex(x, index, v), which returns a new array")
        target = x.value
    else:
        target = x
    items = index if isinstance(index, tuple) else (index,)
    target[tuple(_concrete(i) if not isinstance(i, range) else np.asarray(list(i)) for i in items)] = np.asarray(v)
    return x
