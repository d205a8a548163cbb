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
    "reshape", _reshape_rule, lambda x, shape: np.reshape(x, shape),
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
    "transpose", _transpose_rule, lambda x, perm: np.transpose(x, perm),
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


def _index_static_grad(dy, y, x, spec):
    if 0 in aval_of(dy).shape:
        return full(shape=aval_of(x).shape, value=0.0, dtype=aval_of(x).dtype)
    return pad_static(dy, spec=spec, shape=aval_of(x).shape)


index_static = register(Op(
    "index_static", _index_static_rule, lambda x, spec: np.array(np.asarray(x)[_spec_numpy_index(spec)]),
    (_index_static_grad,), "elementwise", index_map=_index_static_map, entries_of_input=True, inline_input="always"))


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
        source.append(f"min(max({q if step > 0 else f'{count - 1} - {q}'}, 0), {count - 1})")
        conditions += ([f"{i} >= {lo}"] if lo > 0 else []) + ([f"{i} <= {hi}"] if hi < n - 1 else [])
        if stride != 1:
            conditions.append(f"{offset} % {stride} == 0")
    return tuple(source), " and ".join(conditions) or None


pad_static = register(Op(
    "pad_static", _pad_static_rule, _pad_static_impl,
    (lambda dz, z, dy, spec, shape: index_static(dz, spec=spec),), "elementwise", index_map=_pad_static_map,
    inline_input="cheap"))

from .elementwise import full  # noqa: E402


# ----------------------------------------------------------------------------- concatenation

def _concat_rule(*xs, axis):
    first = xs[0]
    if not 0 <= axis < first.ndim:
        raise ShapeError(f"cat: dims={axis} is out of range for {first}")
    for x in xs[1:]:
        if x.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis):
            raise ShapeError(f"cat: shapes {' and '.join(str(x.shape) for x in xs)} differ outside axis {axis}")
    dtypes = [x.dtype for x in xs if x.dtype is not None]
    return Aval(first.shape[:axis] + (builtins.sum(x.shape[axis] for x in xs),) + first.shape[axis + 1:],
                np.result_type(*dtypes) if dtypes else None)


def _concat_part(i, xs, axis):
    """The index_static spec selecting input i's block of the concatenation."""
    shapes = [aval_of(x).shape for x in xs]
    start = builtins.sum(s[axis] for s in shapes[:i])
    total = builtins.sum(s[axis] for s in shapes)
    return tuple(("s", start, 1, shapes[i][axis]) if a == axis else ("s", 0, 1, n)
                 for a, n in enumerate(shapes[0][:axis] + (total,) + shapes[0][axis + 1:]))


def _concat_grad(i):
    return lambda dy, y, *xs, axis: index_static(dy, spec=_concat_part(i, xs, axis))


def _concat_decompose(*xs, axis):
    # Each input padded with zeros to the result's shape, summed: one fused kernel that
    # reads the right input per output index.
    shape = _concat_rule(*map(aval_of, xs), axis=axis).shape
    out = None
    for i, x in enumerate(xs):
        if aval_of(x).shape[axis] == 0:
            continue
        part = pad_static(x, spec=_concat_part(i, xs, axis), shape=shape)
        out = part if out is None else add(out, part)
    return out


concat = register(Op(
    "concat", _concat_rule, lambda *xs, axis: np.concatenate([np.asarray(x) for x in xs], axis=axis),
    tuple(_concat_grad(i) for i in range(256)), "composite", decompose=_concat_decompose))

import builtins  # noqa: E402
from .elementwise import add  # noqa: E402
