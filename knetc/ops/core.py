"""The op table's machinery: an `Op` is defined once and dispatched three ways.

`bind(op, *args)` looks at the arguments: symbolic IR values emit an equation into the
program being built (front end and symbolic AD), values recorded on an autograd tape are
recorded (eager AD), and plain arrays are evaluated with the op's numpy reference.
Adjoint rules are written with ops, so the same rule runs on arrays, on taped values
(higher-order gradients) and on IR values (compiled gradients).
"""
from typing import NamedTuple

import numpy as np

from .. import pytree
from ..errors import ShapeError, user_frame
from ..runtime import threads


class Aval(NamedTuple):
    """Abstract value: shape and dtype. dtype None marks a weakly typed Python scalar."""
    shape: tuple
    dtype: object

    @property
    def ndim(self):
        return len(self.shape)

    def __str__(self):
        return f"{dtype_name(self.dtype)}[{','.join(map(str, self.shape))}]"


_DTYPE_NAMES = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64",
                "int32": "i32", "bool": "bool", "int8": "i8", "uint8": "u8"}


def dtype_name(dtype):
    return "weak" if dtype is None else _DTYPE_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)


def aval_of(x):
    """The Aval of any value knetc handles (IR value, Param, taped value, array, scalar)."""
    aval = getattr(x, "aval", None)
    if aval is not None:
        return aval
    if isinstance(x, (bool, int, float)):
        return Aval((), None)
    return Aval(tuple(x.shape), np.dtype(x.dtype))


@pytree.register_leaf_type  # a function, not a container of arrays
class Op:
    """One primitive: shape rule, numpy reference, adjoints (one per input), lowering.

    kind: how it lowers. "elementwise" (a scalar expression `scalar(k, *names)` fused into
    generated loops), "reduce", "matmul", "view" (reshape/transpose: no data movement), or
    "composite" (after differentiation, `decompose(*args, **params)` rewrites it with
    other ops before fusion), or "call" (a library routine: conv, pooling, RNN, gathers).
    A "call" op names its routine per target in `lowering`, e.g.
    {"cpu": "knetc.kernels.conv:conv4_cpu", "cuda": "knetc.kernels.conv:conv4_cuda"}; the
    generated driver calls it as `routine(*inputs, out, **params)` with `out` preallocated
    (C-contiguous, 0-d values stored as shape (1,)). The CPU routine must be Numba-njit
    compiled (the CPU driver is njit); the CUDA routine is a Python function that launches
    kernels or calls cuDNN on device arrays.
    A call op whose CPU routine calls BLAS from inside its own `prange` loops says
    `blas_in_prange=True`: programs with it, and its eager calls, keep BLAS on one thread
    (runtime/threads.py).
    grads: a tuple with, for each input, `g(dy, y, *xs, **params)` returning that
    input's gradient contribution, or None where the input is not differentiable.
    """

    def __init__(self, name, rule, impl, grads, kind, scalar=None, decompose=None, lowering=None,
                 blas_in_prange=False):
        self.name, self.rule, self.impl = name, rule, impl
        self.grads = tuple(None if g is None else _in_input_dtype(g, i) for i, g in enumerate(grads))
        self.kind, self.scalar, self.decompose, self.lowering = kind, scalar, decompose, lowering or {}
        self.blas_in_prange = blas_in_prange
        if kind == "call" and not {"cpu", "cuda"} <= set(self.lowering):
            raise ValueError(f"call op {name!r} needs a 'cpu' and a 'cuda' routine in lowering")

    def __call__(self, *args, **params):
        return bind(self, *args, **params)

    def __repr__(self):
        return f"<op {self.name}>"


def _in_input_dtype(rule, i):
    """A gradient rule whose result has its input's float dtype (as torch's .grad): a float32
    input promoted by numpy's rules (x32 * x64) gets a float32 gradient, not a float64 one."""
    def gradient(dy, y, *xs, **params):
        g = rule(dy, y, *xs, **params)
        want = aval_of(xs[i]).dtype if i < len(xs) and g is not None else None
        have = aval_of(g).dtype if want is not None else None
        if want is not None and have is not None and want != have and np.issubdtype(want, np.floating) \
                and np.issubdtype(have, np.floating):
            from .elementwise import astype
            g = astype(g, dtype=want)
        return g
    gradient.rule = rule
    return gradient


OPS = {}  # name -> Op: the op table


def register(op):
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is defined twice")
    OPS[op.name] = op
    return op


# Dispatch by the highest priority among the arguments' types: IR values (2) over taped
# values (1) over KnetArrays (0.5, device arrays) over arrays (0). ir.core, autograd and
# knetarray register their handlers here.
HANDLERS = {}


def priority(x):
    return getattr(type(x), "_knetc_priority", 0)


def bind(op, *args, **params):
    if op.kind == "elementwise" and any(type(a) is float for a in args):
        args = _promote_for_float_scalars(args)
    elif op.kind == "elementwise" and any(type(a) is int for a in args):
        args = _promote_bools_for_int_scalars(args)
    top = max(map(priority, args), default=0)
    if top:
        return HANDLERS[top](op, args, params)
    return evaluate(op, args, params)


def _promote_for_float_scalars(args):
    """numpy's rule: an integer or bool array meets a Python float in float64. (Weak scalars
    otherwise take the array's dtype, and a kernel would truncate 2.5 to 2.)"""
    from .elementwise import astype

    def promoted(a):
        dtype = aval_of(a).dtype
        if dtype is not None and not np.issubdtype(dtype, np.floating):
            return astype(a, dtype=np.dtype(np.float64))
        return a
    return tuple(a if type(a) is float else promoted(a) for a in args)


def _promote_bools_for_int_scalars(args):
    """numpy's rule: a bool array meets a Python int in int64 (`b + 1` is 2 where b is True)."""
    from .elementwise import astype

    dtypes = [aval_of(a).dtype for a in args]
    if any(d is not None and d != np.bool_ for d in dtypes) or all(d is None for d in dtypes):
        return args  # (np.dtype(float) == None holds: no `in` tests on dtypes)
    return tuple(a if aval_of(a).dtype is None else astype(a, dtype=np.dtype(np.int64)) for a in args)


def evaluate(op, args, params):
    """Run the numpy reference after checking the shape rule (errors name the user's line)."""
    try:
        op.rule(*map(aval_of, args), **params)
    except ShapeError as error:
        raise error.located(*user_frame()) from None
    if op.kind == "call":  # the library routine may call BLAS: the thread count compiled code would use
        threads.use_threads(threads.threads_for(op.blas_in_prange))
    return op.impl(*args, **params)


# ----------------------------------------------------------------------------- rules

def result_dtype(*avals):
    """numpy promotion where Python scalars are weak (they take the array's dtype)."""
    strong = [a.dtype for a in avals if a.dtype is not None]
    return np.result_type(*strong) if strong else None


def broadcast_shapes(name, *shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(f"{name}: shapes {' and '.join(map(str, shapes))} do not broadcast") from None


def check_float(name, aval):
    if aval.dtype is not None and not np.issubdtype(aval.dtype, np.floating):
        raise ShapeError(f"{name}: expected a floating-point array, got {aval}")


def normalize_axes(name, dims, ndim):
    """Knet's `dims` as a sorted tuple of non-negative axes; None means all axes."""
    if dims is None:
        return tuple(range(ndim))
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    axes = []
    for d in dims:
        if not -ndim <= d < ndim:
            raise ShapeError(f"{name}: dims={d} is out of range for a {ndim}-d array")
        axes.append(d % ndim)
    return tuple(sorted(set(axes)))
