"""The op table's machinery: an `Op` is defined once and dispatched three ways.

`bind(op, *args)` asks the context's stack of traces (knetc/context.py) which one owns an
argument: symbolic IR values emit an equation into the program being built (front end and
symbolic AD), values recorded on an autograd tape are recorded (eager AD), KnetArrays run
on the device, and plain arrays are evaluated with the op's numpy reference.
Adjoint rules are written with ops, so the same rule runs on arrays, on taped values
(higher-order gradients) and on IR values (compiled gradients).
"""
import math
from typing import Callable, NamedTuple

import numpy as np

from .. import context, pytree
from ..errors import ShapeError, format_error, user_frame
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


def listed(x):
    """numpy's reading of an operand: a list or tuple (of numbers) is an array; anything else
    as it is (np.concatenate([x, [1.0, 2.0]]), np.trapezoid(y, x=[0, 1, 3]))."""
    return np.asarray(x) if type(x) in (list, tuple) else x


def aval_of(x):
    """The Aval of any value knetc handles (IR value, Param, taped value, array, scalar)."""
    if type(x) is np.ndarray:  # the eager path's common case (a plain array has no .aval)
        return Aval(x.shape, x.dtype)
    if isinstance(x, np.generic):  # a numpy scalar has its dtype (np.float64 too, though a float: NEP 50)
        return Aval((), x.dtype)
    aval = getattr(x, "aval", None)
    if aval is not None:
        return aval
    if isinstance(x, (bool, int, float)):
        return Aval((), None)
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None:
        hint = "convert it first with np.asarray(...)" if isinstance(x, (list, tuple)) else None
        raise TypeError(format_error(f"expected an array (numpy, Param, KnetArray) or a number, got a "
                                     f"{type(x).__name__}", *user_frame(), hint))
    return Aval(tuple(shape), np.dtype(dtype))


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
    (C-contiguous, 0-d values stored as shape (1,)). Both drivers are Python: the CPU routine
    is a Numba-njit function or a Python function calling them (kernels/bmm.py); the CUDA
    routine is a Python function that launches kernels or calls cuBLAS/cuDNN on device arrays.
    A call op whose CPU routine calls BLAS says how (`blas`, runtime/threads.py): "split"
    from several of knetc's threads at once (the convolutions: programs with it, and its
    eager calls, keep BLAS on one thread per call), "threads" from one thread for long,
    wanting BLAS's own threads (the RNN's per-step GEMMs).
    grads: a tuple with, for each input, `g(dy, y, *xs, **params)` returning that
    input's gradient contribution, or None where the input is not differentiable.

    What the passes and code generators need to know, declared here so that none of them
    names an op (tests/test_op_records.py checks):
    float_valued: the result is a float even for integer inputs; kernels convert the inputs
      to the result's dtype first (`a / b` of int64 divides in float64, as numpy does).
    index_map: an index remapping fused into its consumer (transpose, static slicing):
      `index_map(index, input_shape, **params)` gives the input's index expressions and a
      condition (None: always) outside which the result is 0.
    monoid: a reduction's accumulator (`Monoid` below: start value and step).
    state_inputs: positions of inputs the op updates in place (batchnorm's running
      statistics, the dropout counter); on CUDA the compiler refreshes their device copies.
    simplify: `simplify(eqn, constant, producer)` returns what the equation may be replaced
      with (an input, or a new value built with ops), or None; `constant(x)` is the number x
      stands for or None, `producer(x)` the equation computing x or None (ir/passes.py).
    constant: `constant(**params)` is the number every entry of the result is (a 1-element
      `full`), or None; simplification rules read it.
    entries_of_input: each entry of the result is an entry of the first input (reshape,
      transpose, static slices, broadcasts): a range check of the input covers the result.
    matrix_transpose: a 2-d result is the input transposed; a matmul reading only it takes
      the GEMM's transpose flag instead (ir/fuse.py).
    inline_input: whether an index remapping may compute its input inside its kernel
      whatever the sizes: "always" (each input entry is read at most once) or "cheap" (the
      same, for inputs holding no reduction: the load also runs where the result is 0).
    input_gives_shape: the input only gives the result's shape; kernels do not read it, and
      `scalar` reads the loop index instead (iota).
    input_check: `input_check(value, where, **params)` raises if the first input's value is bad
      (nll's labels out of range), naming where: the user's (file, line) of the op, or None
      (eagerly: the caller's line). Kernels cannot raise, so a compiled program runs it on the
      input array the value comes from, before any kernel runs (compiler.InputChecks);
      `input_check.refusal(target, **params)` says why a value computed inside cannot be
      checked for that target, or is None where the target's kernel checks it itself.
    view_index: `view_index(input_shape, **params)` gives the numpy basic index (source text,
      e.g. "3" or "2, 0:5") under which the result is a C-contiguous block of its input, or
      None: a stored result is then a view the driver takes (xs[t]), not a kernel's copy.
    eager_grad: `eager_grad(dy, y, x)` for a one-input op: its rule's gradient computed in
      numpy in one pass, or None where it does not apply; the eager tape uses it when nothing
      records the backward pass (higher orders need the rule's ops).
    cheap: an elementwise op whose scalar costs about what a load does (+, -, *, a cast, a
      comparison, an index): fusion may compute it in each of several kernels that read it
      instead of storing it (nll's one-hot labels), and a split gradient's backward program
      computes it again rather than take it from the forward one (0.5 * x in a GELU), where
      that reads no more entries than storing would.
    online: the op's part in a row's max m and sum of exp(a - shift), which CUDA kernels
      compute in one pass (backend/cuda.py online_pairs): "row_max" (m), "row_sum",
      "exponential" and "shift" (a - shift).
    """

    def __init__(self, name, rule, impl, grads, kind, scalar=None, decompose=None, lowering=None,
                 blas=None, *, float_valued=False, index_map=None, monoid=None, state_inputs=(),
                 simplify=None, constant=None, entries_of_input=False, matrix_transpose=False, inline_input=None,
                 input_gives_shape=False, input_check=None, view_index=None, eager_grad=None, cheap=False,
                 online=None):
        self.name, self.rule, self.impl = name, rule, impl
        self.grads = tuple(None if g is None else _in_input_dtype(g, i) for i, g in enumerate(grads))
        self.kind, self.scalar, self.decompose, self.lowering = kind, scalar, decompose, lowering or {}
        self.blas = blas
        self.float_valued, self.index_map, self.monoid, self.state_inputs = float_valued, index_map, monoid, state_inputs
        self.simplify, self.constant, self.entries_of_input = simplify, constant, entries_of_input
        self.matrix_transpose, self.inline_input, self.input_gives_shape = matrix_transpose, inline_input, input_gives_shape
        self.input_check, self.view_index, self.eager_grad = input_check, view_index, eager_grad
        self.cheap, self.online = cheap, online
        self.checked = set()  # rule_key()s whose shape rule passed (evaluate)
        if kind == "reduce" and monoid is None:
            raise ValueError(f"reduce op {name!r} needs a monoid")
        if kind == "call" and not {"cpu", "cuda"} <= set(self.lowering):
            raise ValueError(f"call op {name!r} needs a 'cpu' and a 'cuda' routine in lowering")

    # op(*args, **params) is bind(op, *args, **params): Op.__call__ is set to bind below.

    def __repr__(self):
        return f"<op {self.name}>"


def _in_input_dtype(rule, i):
    """A gradient rule whose result has its input's float dtype (as torch's .grad): a float32
    input promoted by numpy's rules (x32 * x64) gets a float32 gradient, not a float64 one."""
    def gradient(dy, y, *xs, **params):
        g = rule(dy, y, *xs, **params)
        if g is None or i >= len(xs):
            return g
        x = xs[i]
        if type(x) is np.ndarray and type(g) is np.ndarray and x.dtype == g.dtype:
            return g  # the eager common case: nothing to convert
        want = aval_of(x).dtype
        have = aval_of(g).dtype if want is not None else None
        if want is not None and have is not None and want != have and np.issubdtype(want, np.floating) \
                and np.issubdtype(have, np.floating):
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


_PYTHON_SCALARS = (float, int)


def bind(op, *args, **params):
    """Apply op: the highest trace on the context's stack owning an argument processes it
    (knetc/context.py); plain arrays and numbers are evaluated with the numpy reference."""
    if op.kind == "elementwise":
        for a in args:
            if type(a) in _PYTHON_SCALARS:
                args = _promote_for_python_scalars(args)
                break
    kind = context.kind
    for a in args:
        if kind(a) is not None:
            break
    else:  # plain arrays and numbers
        return evaluate(op, args, params)
    if not context._STACK:
        # No tape or builder: every Param and taped value is its value (none is owned).
        args = tuple(map(context.value_of, args))
        if not any(kind(a) for a in args):
            return evaluate(op, args, params)
    else:
        if context.boxed_dispatch is not None:
            out = context.boxed_dispatch(op, args, params)
            if out is not NotImplemented:
                return out
        args = tuple(map(context.unowned_stripped, args))  # Params with no tape are their values
    trace = context.top_trace(args)
    if trace is None:
        return evaluate(op, args, params)
    return trace.process(op, args, params)


Op.__call__ = bind  # op(*args, **params) is bind(op, *args, **params), without a frame between


def _promote_for_python_scalars(args):
    """numpy's rule where a Python scalar meets an array of a lower kind: a float makes bool
    and integer arrays float64, an int makes bool arrays int64 (`b + 1` is 2 where b is
    True). Weak scalars otherwise take the array's dtype, and a kernel would truncate 2.5
    to 2."""
    target, lower = (np.float64, "biu") if any(type(a) is float for a in args) else (np.int64, "b")

    def promoted(a):
        dtype = a.dtype if type(a) is np.ndarray else aval_of(a).dtype
        return astype(a, dtype=np.dtype(target)) if dtype is not None and dtype.kind in lower else a
    return tuple(a if type(a) in (float, int) else promoted(a) for a in args)


def evaluate(op, args, params):
    """Run the numpy reference after checking the shape rule (errors name the user's line).
    A rule is a function of the avals and params only, so a check that passed is remembered
    per (shapes, dtypes, params) and not run again (`rule_key`; failures are not kept)."""
    key = rule_key(args, params)
    if key is None or key not in op.checked:
        try:
            op.rule(*map(aval_of, args), **params)
        except ShapeError as error:
            raise error.located(*user_frame()) from None
        if key is not None:
            if len(op.checked) >= _CHECKED_MAX:
                op.checked.clear()
            op.checked.add(key)
    if op.kind == "call":  # the library routine may call BLAS: the thread count compiled code would use
        threads.use_threads(threads.threads_for(op.blas))
    return op.impl(*args, **params)


_CHECKED_MAX = 4096  # remembered rule checks per op (cleared when full: varying shapes)
_WEAK = ((), None)   # a Python number's part of a rule key (Aval((), None))
_SCALAR_PARAMS = frozenset((int, float, bool, str, type(None)))
_NUMBERS = frozenset((int, float, bool))


def rule_key(args, params):
    """A hashable key fixing what a shape rule sees (each argument's shape and dtype, the
    params with their types), or None where that is not cheap to know for sure: arguments
    other than numpy arrays, numpy scalars and Python numbers, and params other than
    numbers, strings, None, dtypes, types and tuples of them (mutable or unhashable values)."""
    parts = []
    for a in args:
        t = type(a)
        if t is np.ndarray:
            parts.append((a.shape, a.dtype))
        elif isinstance(a, np.generic):  # (np.float64 is a float: weak, unlike a 0-d array)
            parts.append((t, a.dtype))
        elif t in _NUMBERS:
            parts.append(_WEAK)
        else:
            return None
    if not params:
        return tuple(parts)
    frozen = []
    for name, value in params.items():
        value = _frozen(value)
        if value is None:
            return None
        frozen.append((name, value))
    return tuple(parts), tuple(frozen)


def _frozen(value):
    """value tagged with its type (1, 1.0 and True are equal as dict keys), or None."""
    t = type(value)
    if t in _SCALAR_PARAMS:
        return (t, value)
    if t is tuple:
        for v in value:
            if type(v) is not int:
                break
        else:
            return value  # a tuple of ints (axes, a shape) stands for itself
        items = tuple(map(_frozen, value))
        return None if None in items else (tuple, items)
    if isinstance(value, (np.dtype, type)):
        return (t, value)
    return None


# ----------------------------------------------------------------------------- rules

def result_dtype(*avals):
    """numpy promotion where Python scalars are weak (they take the array's dtype)."""
    strong = [a.dtype for a in avals if a.dtype is not None]
    if not strong:
        return None
    first = strong[0]
    if first.isnative and all(d is first for d in strong):  # one native dtype: itself
        return first
    return np.result_type(*strong)


def broadcast_shapes(name, *shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(f"{name}: shapes {' and '.join(map(str, shapes))} do not broadcast") from None


def unchanged(x, eqn):
    """x (an input of eqn) already is eqn's result, shape and dtype: a simplification may return it."""
    return hasattr(x, "aval") and x.aval == eqn.out.aval  # numbers have no aval


def input_if_unchanged(eqn, constant, producer):
    """Op.simplify of a cast, broadcast or sum that leaves its input as it is: the input."""
    x = eqn.inputs[0]
    return x if unchanged(x, eqn) else None


def has_integer_dtype(x):
    """x is an integer or bool array (not a float array, nor a weak Python number)."""
    dtype = aval_of(x).dtype
    return dtype is not None and not np.issubdtype(dtype, np.floating)


def check_float(name, aval):
    if aval.dtype is not None and not np.issubdtype(aval.dtype, np.floating):
        raise ShapeError(f"{name}: expected a floating-point array, got {aval}")


def normalize_axes(name, dims, ndim):
    """Knet's `dims` as a sorted tuple of non-negative axes; None means all axes."""
    if dims is None:
        return tuple(range(ndim))
    if type(dims) is int and 0 <= dims < ndim:
        return (dims,)
    if type(dims) is int and -ndim <= dims < 0:
        return (dims % ndim,)
    given = dims
    dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims) if isinstance(dims, (tuple, list, range)) \
        else (None,)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise ShapeError(f"{name}: dims must be None, an axis or a tuple of axes (ints), got {given!r}")
    axes = []
    for d in dims:
        if not -ndim <= d < ndim:
            raise ShapeError(f"{name}: dims={d} is out of range for a {ndim}-d array")
        axes.append(d % ndim)
    return tuple(sorted(set(axes)))


# ----------------------------------------------------------------------------- reductions

class Monoid(NamedTuple):
    """How a reduction's kernel accumulates: `start(dtype)` is the accumulator's first value,
    `step` the statement adding entry {v} to it ({acc}), and `float_helper` the scalar helper
    ("module:function", see backend/expressions.py `_Context.call`) that does it for floating
    dtypes where it differs: `acc = helper(acc, v)` (max/min propagate NaN as numpy's).
    wide: a CPU kernel accumulates float32 in float64 along a row (sums: in float32, one
    entry after another, a million entries lose two digits; numpy adds pairwise)."""
    start: Callable
    step: str
    float_helper: str = None
    wide: bool = False


def reduce_rule(name, accumulate=False, identity=True):
    """The shape rule of a reduction over `axes`, kept as size 1. accumulate: bools and small
    integers widen as numpy's sums do; identity False: empty axes have no value (max, min)."""
    def rule(x, axes):
        if any(not 0 <= a < x.ndim for a in axes):
            raise ShapeError(f"{name}: axes {axes} out of range for {x}")
        if not identity:
            check_nonempty(name, x, axes)
        dtype = x.dtype
        if accumulate and dtype is not None and not np.issubdtype(dtype, np.floating):
            dtype = np.add.reduce(np.ones(1, dtype)).dtype  # numpy sums bools and small integers in int64
        return Aval(tuple(1 if i in axes else n for i, n in enumerate(x.shape)), dtype)
    return rule


def check_nonempty(name, x, axes):
    """maximum/minimum/argmax/argmin over no entries have no value: numpy raises, and so do
    the shape rules (a kernel would return its start value, -inf or a sentinel index)."""
    if x.shape and math.prod(x.shape[a] for a in axes) == 0:
        raise ShapeError(f"{name}: zero-size array to a reduction with no identity: axes {axes} of {x} are empty")


def no_second_derivative(what):
    """The gradient rule of a backward op that has none of its own (an RNN's, cuDNN's batch
    norm's): differentiating through it again raises, where a None rule would mean zero."""
    def rule(dy, y, *inputs, **params):
        raise TypeError(f"second derivatives through {what} are not supported (its backward pass has no gradient "
                        "of its own); differentiate it once, or write the layer from kn. functions")
    return rule


# ----------------------------------------------------------------------------- astype
# The one op defined here: bind and every gradient rule (above) convert dtypes with it.

def _astype_grad(dy, y, x, dtype):
    # back to x's float dtype; an integer x (promoted by x * 1.5) keeps dy's: not truncated to 1.
    # Floats cast to integers or bools are a step function: no gradient (None: zero), as floor's.
    if has_integer_dtype(x):
        return dy
    return None if np.dtype(dtype).kind in "biu" else astype(dy, dtype=aval_of(x).dtype)


astype = register(Op("astype", lambda x, dtype: Aval(x.shape, np.dtype(dtype)),
                     lambda x, dtype: np.asarray(x).astype(dtype),
                     (_astype_grad,), "elementwise", lambda k, x, dtype: k.cast(x, dtype),
                     simplify=input_if_unchanged, cheap=True))
