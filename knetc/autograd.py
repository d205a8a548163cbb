"""Eager reverse mode on a tape, as Knet's AutoGrad: Param, diff, grad, gradloss, value, params.

Ops applied to Params inside `diff` are recorded on a tape; `grad` runs the tape backwards
with the op table's adjoint rules. A tape is a trace on the context's stack
(knetc/context.py). Tapes nest: the adjoint rules are themselves ops, so a backward pass
run while an outer `diff` is active is recorded there (higher-order gradients). Each op
sees its arguments at one tape level: `_ceiling` is the level being recorded, and a Param
resolves to the innermost tape below it.
"""
import dis
import functools
import math
import operator
import sys
import types
import weakref

import numpy as np

from . import context, pytree
from .context import training, value_of  # noqa: F401  (kn.training; value_of for the layers above)
from .errors import CompileError, ShapeError, format_error, user_frame
from .ir.core import Builder, Var, current_builder
from .ops.broadcast import broadcast_to, unbroadcast
from .ops.core import OPS, Op, aval_of, bind, evaluate
from .ops.elementwise import add, eq, mul, ne
from .ops.methods import UFUNCS, ArrayMethods, numpy_name, supported_call

_ceiling = float("inf")  # the level being recorded: tapes at or above it do not see the op


class _Recordable(ArrayMethods):
    """Conversions shared by Params and taped values: they act like their value, by numpy's
    rules (`if a > 0`, `while`, `and`, `bool()`, `float()`, `int()`, indexing with them)."""

    def __bool__(self):
        return bool(value_of(self))  # size 1: its value; larger: numpy's ValueError (ambiguous)

    # Elementwise, as every other comparison (a Param acts like its value). Hashing stays by
    # identity: Params are dict keys, and dicts compare keys by identity before ==.
    def __eq__(self, other): return eq(self, other)
    def __ne__(self, other): return ne(self, other)
    __hash__ = object.__hash__

    def __float__(self):
        self._refuse_storing(sys._getframe(1))
        return float(value_of(self))

    def _refuse_storing(self, caller):
        # numpy converts the value it stores into an entry (h[0] = y) with __array__ or
        # float(): an explicit float(y) is the user's number, this one would drop y's gradient.
        if _tape_of(self) is not None and _storing_item(caller):
            raise ValueError(format_error(  # (numpy replaces a TypeError by its own message here)
                f"storing a {type(self).__name__} recorded by kn.diff into a numpy array (h[i] = y) would lose its "
                "gradient: build the array from recorded values (kn.cat, np.stack, kn.setindex), or store "
                "kn.value(y) for a constant", *user_frame()))

    def __format__(self, spec):
        return format(value_of(self), spec)

    def __round__(self, ndigits=None):
        value = np.asarray(value_of(self))[()]  # (a 0-d array: numpy's scalar rounds; a larger one raises as numpy)
        return round(value) if ndigits is None else round(value, ndigits)

    def item(self, *index):
        return np.asarray(value_of(self)).item(*index)

    def tolist(self):
        return np.asarray(value_of(self)).tolist()

    def __int__(self):
        return int(value_of(self))

    def __index__(self):
        return operator.index(value_of(self))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        result = super().__array_ufunc__(ufunc, method, *inputs, **kwargs)
        if result is NotImplemented and not _recorded(inputs, kwargs):  # plain values: numpy's
            return getattr(ufunc, method)(*_plain(inputs), **_plain(kwargs))
        if result is NotImplemented:
            what = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
            keywords = [k for k, v in kwargs.items()
                        if not (k == "out" and all(o is None for o in (v if isinstance(v, tuple) else (v,))))]
            out = kwargs.get("out")
            if method == "__call__" and isinstance(out, tuple) and len(out) == 1 and out[0] is inputs[0] \
                    and not isinstance(inputs[0], _Recordable):  # h += w on a numpy array h
                raise TypeError(f"an in-place {what} (such as h += w) into a numpy array cannot hold a Param or "
                                "recorded value (the array would lose its gradient): write h = h + w")
            if keywords and method == "__call__" and ufunc in UFUNCS:
                raise TypeError(f"{what}(..., {'=..., '.join(keywords)}=...) is not supported on Params and recorded "
                                "values: knetc records numpy ufuncs called with their inputs only; assign the result "
                                "(no out=), or use kn.value(x) for a constant")
            raise TypeError(f"{what} is not supported on Params and recorded values: knetc differentiates "
                            "only the numpy ufuncs in its op table; write it with kn. functions or supported numpy "
                            "calls, or use kn.value(x) for a constant")
        return result

    def __array_function__(self, func, types, args, kwargs):
        result = super().__array_function__(func, types, args, kwargs)
        if result is NotImplemented and not _recorded(args, kwargs):  # plain values: numpy's
            return func(*_plain(args), **_plain(kwargs))
        if result is NotImplemented:
            if supported_call(func) is not None:  # (with arguments its entry does not take: where=, initial=)
                raise TypeError(f"{numpy_name(func)} on Params and recorded values takes {supported_call(func)}, not "
                                f"these arguments (keywords: {sorted(kwargs)}); use kn.value(x) for a constant")
            raise TypeError(f"{numpy_name(func)} is not supported on Params and recorded values: knetc "
                            "differentiates only the numpy functions in its op table; write it with kn. functions "
                            "or supported numpy calls, or use kn.value(x) for a constant")
        return result

    # What knetc does not differentiate works on the value while nothing records it.

    def copy(self):
        return mul(self, 1) if _recorded((self,), {}) else np.array(value_of(self), copy=True)

    def __array__(self, dtype=None, copy=None):
        # numpy builds a plain array from a list of recorded values (np.sum([a, b]),
        # np.array([...])) through here: that would silently drop the gradient.
        self._refuse_storing(sys._getframe(1))
        if _tape_of(self) is not None:
            raise TypeError(format_error(
                f"a {type(self).__name__} recorded by kn.diff cannot become a numpy array: its gradient "
                "would be lost. Join recorded values with kn.cat / np.concatenate / np.stack (e.g. "
                "np.sum(np.stack([a, b])) instead of np.sum([a, b])), or use kn.value(x) for a constant",
                *user_frame()))
        return np.asarray(value_of(self), dtype=dtype)


_STORE_SUBSCR = dis.opmap["STORE_SUBSCR"]


def _storing_item(frame):
    """Is `frame` (Python code calling into C) running a subscript assignment (`h[i] = y`)?"""
    code = frame.f_code.co_code
    return 0 <= frame.f_lasti < len(code) and code[frame.f_lasti] == _STORE_SUBSCR


def _recorded(args, kwargs):
    """Does a tape record any of the values in args/kwargs now?"""
    leaves, _ = pytree.flatten((args, kwargs))
    return any(_tape_of(x) is not None for x in leaves if isinstance(x, _Recordable))


def _plain(tree):
    """tree with Params and taped values replaced by their values."""
    leaves, treedef = pytree.flatten(tree)
    return pytree.unflatten(treedef, [value_of(x) if isinstance(x, _Recordable) else x for x in leaves])


@pytree.register_leaf_type
class Param(_Recordable):
    """A value to differentiate with respect to: `w = Param(np.zeros((3, 4)))`.

    Acts like its value (operators, numpy functions); `w.value` is the array, `w.opt` the
    optimizer state used by the training functions.

    Example:
        >>> import numpy as np, knetc as kn
        >>> w = kn.Param(np.array([[1.0, 2.0]]))
        >>> (w * 3).shape, float(np.sum(w))       # acts like its value
        ((1, 2), 3.0)
        >>> kn.grad(kn.diff(lambda: kn.sum(w @ w.T)), w)
        array([[2., 4.]])
    """
    _knetc_kind = "boxed"  # (knetc/context.py)

    def __init__(self, value, opt=None):
        if isinstance(value, (list, tuple, int, float)):  # Param([1, 2, 3]) as in Knet
            value = np.asarray(value)
        self.value, self.opt = value, opt

    @property
    def aval(self):
        return aval_of(self.value)

    def __repr__(self):
        return f"P({self.value!r})"

    # `w -= lr * g` updates the value in place, as on the array a Param acts like (and as
    # Knet's `w .-= ...`); without these Python would rebind the name to a new plain array.
    def __iadd__(self, other): return self._update(operator.iadd, other)
    def __isub__(self, other): return self._update(operator.isub, other)
    def __imul__(self, other): return self._update(operator.imul, other)
    def __itruediv__(self, other): return self._update(operator.itruediv, other)
    def __ifloordiv__(self, other): return self._update(operator.ifloordiv, other)
    def __imod__(self, other): return self._update(operator.imod, other)
    def __ipow__(self, other): return self._update(operator.ipow, other)
    def __imatmul__(self, other): return self._update(operator.imatmul, other)

    def _update(self, update, other):
        if _tape_of(self) is not None:
            raise TypeError(format_error(
                "a Param cannot be updated in place while kn.diff records it: its gradient would be "
                "wrong. Update it after the diff (e.g. with kn.update_), or compute a new value", *user_frame()))
        value = self.value
        self.value = update(value, value_of(other))
        if isinstance(value, np.ndarray) and self.value is not value:  # (a 0-d array or scalar: numpy made a new one)
            self.value = np.asarray(self.value, dtype=value.dtype)
        return self


@pytree.register_leaf_type
class Tracked(_Recordable):
    """A value recorded on a tape (Knet's Result; `diff` returns one)."""
    _knetc_kind = "boxed"
    __slots__ = ("value", "tape", "node")

    def __init__(self, value, tape, node):
        self.value, self.tape, self.node = value, tape, node

    @property
    def aval(self):
        return aval_of(self.value)

    def __repr__(self):
        return f"T({self.value!r})"


class _Leaf(Tracked):
    """A Param's entry on a tape. It refers to its tape weakly (the tape refers to it), so
    that a finished tape and its gradients are freed when the result `diff` returned is,
    not when Python's cycle collector next runs. `keep`: a strong reference, for the leaf
    that `diff` returns itself (f returned the Param)."""
    __slots__ = ("_tape", "keep")

    def __init__(self, param, tape):
        self.value, self.node, self._tape, self.keep = param, None, weakref.ref(tape), None

    @property
    def tape(self):
        return self._tape()


class Node:
    """One recorded call: `backward(dy)` gives a gradient (or None) for each input."""
    __slots__ = ("op", "params", "inputs", "output", "parents")

    def __init__(self, op, params, inputs, output, parents):
        self.op, self.params, self.inputs, self.output, self.parents = op, params, inputs, output, parents

    def backward(self, dy):
        fused = self.op.eager_grad
        if fused is not None and not context._STACK and self.parents[0] is not None:  # (nothing records)
            g = fused(dy, self.output, *self.inputs)
            if g is not None:
                return [g]
        rules = self.op.grads
        return [None if parent is None or rules[i] is None else rules[i](dy, self.output, *self.inputs, **self.params)
                for i, parent in enumerate(self.parents)]


class CallNode(Node):
    """A node whose backward pass is a function (a compiled adjoint, a user primitive)."""
    __slots__ = ("function",)

    def __init__(self, function, parents):
        super().__init__(None, None, None, None, parents)
        self.function = function

    def backward(self, dy):
        return self.function(dy)


class Tape(context.Trace):
    """One `diff`'s record: a trace on the context's stack owning the values recorded on it
    and, when it is the innermost tape below the ceiling, the Params."""

    def __init__(self):
        self.nodes, self.active = [], True
        self.leaves = {}  # id(param) -> Tracked: each Param's entry on this tape
        self.params = []
        self.gradients = None  # node -> gradient, filled by the first `grad`

    def lift(self, param):
        """The Param as recorded on this tape (its value stays the Param: lower tapes see it)."""
        tracked = self.leaves.get(id(param))
        if tracked is None:
            tracked = self.leaves[id(param)] = _Leaf(param, self)
            self.params.append(param)
        return tracked

    def owns(self, x):
        return _tape_of(x) is self

    def process(self, op, args, params):
        return _record(self, op, args, params)


def _tape_of(x):
    """The tape on which x is to be recorded now, or None."""
    t = type(x)
    if t is Tracked or t is _Leaf or isinstance(x, Tracked):
        tape = x.tape
        return tape if tape.active and tape.level < _ceiling else None
    if t is _Argument:  # only its own tape records it; below that, it is its value
        tape = context._STACK[x.level] if x.level < len(context._STACK) else None
        return tape if isinstance(tape, Tape) and tape.active and tape.level < _ceiling else None
    if t is Param or isinstance(x, Param):
        for trace in reversed(context._STACK):  # the innermost tape below the ceiling
            if trace.level < _ceiling and isinstance(trace, Tape):
                return trace
        return None
    return None


def recording():
    """Is a `diff` recording now (a tape on the stack)?"""
    return bool(context.stack_of(Tape))


_PLAIN = (np.ndarray, float, int, bool)  # inner values evaluated with no trace below the tape


def _record(tape, op, args, params, owners=None):
    """Record op on the tape; its inner values are bound below the tape's level.
    owners: each argument's _tape_of, where the caller knows them."""
    global _ceiling
    if owners is None:
        owners = [_tape_of(a) for a in args]
    inputs, parents, values = [], [], []
    # plain: the values are numpy arrays and numbers (Params' values among them) and no trace
    # lies below this tape, so binding them below the tape's level evaluates them: do so directly.
    plain = context._STACK[0] is tape
    for a, owner in zip(args, owners):
        if owner is tape:
            tracked = tape.lift(a) if isinstance(a, Param) else a
            inner = tracked.value
            inputs.append(inner)
            parents.append(tracked)
        else:
            inner = a
            inputs.append(a)
            parents.append(None)
        if plain:
            if type(inner) is Param:  # a leaf's value is its Param: not recorded below this tape
                inner = inner.value
            if type(inner) in _PLAIN or isinstance(inner, np.generic):
                values.append(inner)
            else:
                plain = False
    saved, _ceiling = _ceiling, tape.level
    try:
        output = evaluate(op, values, params) if plain else bind(op, *inputs, **params)
    finally:
        _ceiling = saved
    if isinstance(output, (np.ndarray, np.generic)) and output.dtype.kind == "c":
        # (the rules are written for real values: a complex product's would lack its conjugates)
        raise TypeError(format_error(f"{op.name} gives a complex value inside kn.diff: knetc differentiates real "
                                     "values only (split z into its real and imaginary parts)", *user_frame()))
    node = Node(op, params, inputs, output, parents)
    tape.nodes.append(node)
    return Tracked(output, tape, node)


def _dispatch(op, args, params):
    """context.boxed_dispatch: bind's path while only tapes are pushed and the arguments are
    Params, taped values, numpy arrays and numbers. The same as asking the stack: a boxed
    value that no pushed tape records now is its value; the innermost tape recording an
    argument records the op (none: it is evaluated)."""
    stack = context._STACK
    for trace in stack:
        if type(trace) is not Tape:
            return NotImplemented
    kind = context.kind
    top, stripped, owners = None, None, []
    for i, a in enumerate(args):
        k = kind(a)
        if k is None:
            owners.append(None)
            continue
        if k != "boxed":
            return NotImplemented
        x = a
        while True:
            tape = _tape_of(x)
            if tape is not None and tape in stack:
                break
            x = x.value
            k = kind(x)
            if k != "boxed":
                if k is not None:
                    return NotImplemented  # a device value: the stack's evaluation trace
                tape = None
                break
        owners.append(tape)
        if x is not a:
            if stripped is None:
                stripped = list(args)
            stripped[i] = x
        if tape is not None and (top is None or tape.level > top.level):
            top = tape
    if stripped is not None:
        args = tuple(stripped)
    if top is None:
        return evaluate(op, args, params)
    return _record(top, op, args, params, owners)


context.boxed_dispatch = _dispatch


def _at_level(level, fn, *args, **kw):
    global _ceiling
    saved, _ceiling = _ceiling, level
    try:
        return fn(*args, **kw)
    finally:
        _ceiling = saved


def record_call(outputs_value, args, backward):
    """Record a call computed outside the tape (a compiled function) as one node.

    `args` are the call's inputs as the caller saw them (Params, taped values, arrays);
    `backward(dy)` returns a gradient (or None) for each of them."""
    tapes = [t for t in map(_tape_of, args) if t is not None]
    if not tapes:
        return outputs_value
    tape = max(tapes, key=lambda t: t.level)
    parents = [(tape.lift(a) if isinstance(a, Param) else a) if _tape_of(a) is tape else None for a in args]
    node = CallNode(backward, parents)
    tape.nodes.append(node)
    return Tracked(outputs_value, tape, node)


def active_tape_levels(args):
    """Levels of the active tapes the arguments would be recorded on (for compiled calls)."""
    return {t.level for t in map(_tape_of, args) if t is not None}


def diff(f, *args, **kwargs):
    """Evaluate f(*args, **kwargs) recording operations on Params; `grad(result, param)` then
    gives gradients. As Knet's `@diff`, a scalar result's gradients are computed before it
    returns, from the values as they are now: changing an input or a Param in place
    afterwards (a data buffer refilled, an update) does not change them.

    >>> x = kn.Param(np.array([1., 2., 3.])); y = kn.diff(lambda: kn.sum(x * x)); kn.grad(y, x)
    array([2., 4., 6.])
    """
    tape = Tape()
    try:
        context.push(tape)  # (context.pushed and context.mode(training=True), without their generators)
        try:
            saved, context._training = context._training, True
            try:
                y = f(*args, **kwargs)
            finally:
                context._training = saved
        finally:
            context.pop(tape)
    finally:
        tape.active = False
    if isinstance(y, Tracked) and y.tape is tape:
        if math.prod(aval_of(y.value).shape) == 1:  # (a larger one: grad says it is no scalar)
            _backward(y)
        return y
    if isinstance(y, Param):  # f returned a Param itself: d y / d y is one
        leaf = tape.lift(y)
        leaf.keep = tape
        return leaf
    return Tracked(y, tape, None)  # nothing depended on a Param: every gradient is None


def _backward(y):
    """Gradients of y (computed once per tape), keyed by id of each Param's leaf on the tape."""
    tape = y.tape
    if tape.gradients is None:
        tape.gradients = _at_level(tape.level, _run_backward, y)
        tape.nodes = []  # the gradients are kept: free the values saved for them now (the
        # tape and its recorded values refer to each other, so only the cycle collector would)
    return tape.gradients


def _run_backward(y):
    aval = aval_of(y.value)
    if math.prod(aval.shape) != 1:
        raise ValueError(f"grad: the differentiated result must be a scalar, got shape {aval.shape}")
    seed = np.ones(aval.shape, dtype=aval.dtype or np.float64)
    if y.node is None:  # a Param's own leaf (the result is the Param), or a constant
        return {id(y): seed[()]} if y.tape.leaves.get(id(y.value)) is y else {}
    # Pending gradients keyed by node (inner values) or by leaf (Params). Creation order is
    # a topological order, so one reverse sweep sees every node after all its consumers.
    gradients = {id(y.node): seed}
    for node in reversed(y.tape.nodes):
        dy = gradients.pop(id(node), None)
        if dy is None:
            continue
        for parent, g in zip(node.parents, node.backward(dy)):
            if parent is None or g is None:
                continue
            key = id(parent.node) if parent.node is not None else id(parent)
            gradients[key] = g if key not in gradients else add(gradients[key], g)
    return gradients


def grad(y_or_f, x=None, argnum=0):
    """grad(y, x): the gradient of a `diff` result with respect to the Param x, or None if
    it is zero. grad(f, argnum=0): a function returning the gradient of the scalar-valued
    f with respect to its argument `argnum` (an array, number, or a list/tuple/dict of them).

    Example:
        >>> import numpy as np, knetc as kn
        >>> w = kn.Param(np.array([1.0, 2.0]))
        >>> y = kn.diff(lambda: kn.sum(w * w))    # record sum(w^2)
        >>> kn.grad(y, w)                         # d/dw = 2w
        array([2., 4.])
        >>> kn.grad(lambda x: kn.sum(x ** 3))(np.array([1.0, 2.0]))   # a gradient function
        array([ 3., 12.])
    """
    if callable(y_or_f) and not isinstance(y_or_f, Tracked):
        argnum = x if isinstance(x, int) else argnum
        return _gradient_function(y_or_f, argnum, with_loss=False)
    y = y_or_f
    if not isinstance(y, Tracked):
        raise TypeError("grad(y, x): y must be the result of kn.diff")
    gradients = _backward(y)
    if isinstance(x, Param):
        leaf = y.tape.leaves.get(id(x))
        return None if leaf is None else _on_device_of(gradients.get(id(leaf)), x.value)
    if isinstance(x, Tracked) and x.tape is y.tape and x.node is None:
        return gradients.get(id(x))
    raise TypeError(f"grad(y, x): x must be a Param, got {type(x).__name__}")


def _on_device_of(g, w):
    """A gradient lives where its weight does: a KnetArray weight gets a KnetArray gradient even
    when no device value reached it (d sum(w * x)/dw is the host array x)."""
    if g is None or context.kind(w) != "device" or context.kind(g) is not None:
        return g
    return type(w)(np.asarray(g))  # (a KnetArray)


def gradloss(f, argnum=0):
    """Like grad(f, argnum) but the function returns (gradient, loss).

    Example: ``g, loss = kn.gradloss(loss_fn)(model, x, y)  # one forward and backward pass``"""
    return _gradient_function(f, argnum, with_loss=True)


def _gradient_function(f, argnum, with_loss):
    compiled_gradient = getattr(f, "gradient_function", None)
    if compiled_gradient is not None:  # a @knetc.compile function: the compiled adjoint
        return compiled_gradient(argnum, with_loss)
    return taped_gradient(f, argnum, with_loss)


def taped_gradient(f, argnum=0, with_loss=False):
    """grad(f, argnum) (with_loss: gradloss) by recording f on a tape: what a compiled
    function falls back to where its one gradient program cannot answer as this does."""

    def gradient(*args, **kwargs):
        check_argnum(argnum, args)
        leaves, treedef = pytree.flatten(args[argnum])
        # Arrays and numbers are differentiated, as _Arguments that only this grad's tape records
        # (no enclosing diff, nor a compiled trace between the two, takes them as Params); a
        # Param as itself, unless an enclosing diff records it (nested kn.grad(f)(x)); other
        # leaves (names, functions) pass through.
        ps = [_Argument(leaf) if _tape_of(leaf) is not None or _differentiable(leaf) else leaf for leaf in leaves]
        args = list(args)
        args[argnum] = pytree.unflatten(treedef, ps)
        y = diff(f, *args, **kwargs)
        for p in ps:
            if type(p) is _Argument:  # its tape is done: kept by f somewhere, it is its value from now on
                p.level = math.inf
        g = pytree.unflatten(treedef, [grad(y, p) if isinstance(p, Param) else None for p in ps])
        loss = value(y)
        loss = loss.value if isinstance(loss, Param) else loss  # f returned its argument
        return (g, loss) if with_loss else g
    gradient.__name__ = f"grad_{getattr(f, '__name__', 'f')}"
    return gradient


class _Argument(Param):
    """The argument of kn.grad(f)(x): an array, or a value an enclosing diff records (a Param,
    or a value computed from one). Only the tape of this grad's diff, pushed next,
    differentiates it; the enclosing tapes see its value, so that a gradient depending on it depends on x there (second
    derivatives), and f reading x from outside reads a constant of this differentiation, not its
    argument (in JAX's terms, no perturbation confusion)."""

    def __init__(self, value):
        super().__init__(value)
        self.level = len(context._STACK)


def check_argnum(argnum, args):
    """grad(f, argnum)(*args): argnum must pick one of the positional arguments."""
    if not isinstance(argnum, int) or isinstance(argnum, bool):
        raise TypeError(format_error(f"grad: argnum must be one int, the position of the argument to differentiate "
                                     f"(as in Knet), got {argnum!r}; to differentiate several, pass them in one "
                                     "list or tuple argument", *user_frame()))
    if not -len(args) <= argnum < len(args):
        raise TypeError(format_error(
            f"grad: argnum={argnum!r}, but the function was called with {len(args)} positional "
            f"argument{'s' * (len(args) != 1)}: pass the argument to differentiate positionally", *user_frame()))


def _differentiable(leaf):
    if isinstance(leaf, Param) or isinstance(leaf, bool):
        return False  # a Param is differentiated as itself
    return isinstance(leaf, (int, float)) or hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def value(x):
    """The value inside a Param or a `diff` result; anything else is returned as is.

    Example: ``y = kn.diff(lambda: kn.sum(w * w)); float(kn.value(y))  # the loss as a number``"""
    return x.value if isinstance(x, (Param, Tracked)) else x


getval = value


_NOT_CONTAINERS = (type, types.FunctionType, types.ModuleType, types.MethodType, types.BuiltinFunctionType)


def params(x):
    """The Params in x: those a `diff` result depends on, or found by a recursive search.

    Example: ``for p in kn.params(model): p.opt = kn.Adam()``"""
    if isinstance(x, Tracked):
        return list(x.tape.params)
    found, seen = [], set()

    def search(obj, depth=0):
        if id(obj) in seen or depth > 100:
            return
        seen.add(id(obj))
        if isinstance(obj, Param):
            found.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                search(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                search(v, depth + 1)
        elif not isinstance(obj, _NOT_CONTAINERS + (Tracked,)):
            if hasattr(obj, "__dict__"):
                search(vars(obj), depth + 1)
            for name in pytree.slot_names(type(obj)):  # fields of classes with __slots__
                search(getattr(obj, name, None), depth + 1)
    search(x)
    return found


# ----------------------------------------------------------------------------- user primitives

@pytree.register_leaf_type  # a function, not a container of arrays
class Primitive:
    """A user function recorded as one op, with the user's gradient rules (`kn.primitive`).

    Eagerly the function runs on arrays and its call is one node on the tape, differentiated
    by the rules. In compiled code it is one op of kind "composite": automatic
    differentiation uses the rules, then the op is replaced by the function's body (run on
    IR values), which fuses with the code around it. Its shape rule comes from running the
    body on abstract values. Positional arguments are the op's inputs (arrays or numbers);
    keyword arguments are passed through as constants.
    """

    def __init__(self, fn, rules, zero=False):
        functools.update_wrapper(self, fn)
        self.fn, self.rules, self.zero = fn, tuple(rules), zero
        self._ops, self._avals = {}, {}
        self.op_name = _unique_op_name(getattr(fn, "__qualname__", getattr(fn, "__name__", "primitive")))

    def __repr__(self):
        return f"<knetc primitive {self.op_name}>"

    def __call__(self, *args, **kwargs):
        if self.zero and not context.compiling():  # Knet's @zerograd: eagerly nothing recorded, a plain value
            return self.fn(*map(value_of, args), **{key: value_of(v) for key, v in kwargs.items()})
        return bind(self.op(len(args)), *args, **kwargs)

    def op(self, n):
        """The Op for calls with n positional arguments (each input has its gradient rule)."""
        op = self._ops.get(n)
        if op is None:
            grads = tuple(None if self.zero else self._grad(i) for i in range(n))
            op = self._ops[n] = Op(self.op_name, self._rule, self._impl, grads, "composite",
                                   decompose=self._decompose)
        return op

    def _impl(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def _decompose(self, *args, **kwargs):
        try:
            out = self.fn(*args, **kwargs)
        except ShapeError:
            raise
        except Exception as error:
            raise self._not_compilable(error) from None
        if isinstance(out, np.ndarray):  # a constant result
            out = current_builder().constant(out)
        return out

    def _rule(self, *avals, **kwargs):
        try:
            key = (avals, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:
            key = None
        aval = self._avals.get(key) if key is not None else None
        if aval is None:
            aval = self._abstract_result(avals, kwargs)
            if key is not None:
                self._avals[key] = aval
        return aval

    def _abstract_result(self, avals, kwargs):
        """The result's shape and dtype: run the body on IR values (nothing is computed)."""
        compiling = context.compiling()
        try:
            with Builder():
                out = self.fn(*[Var(a) for a in avals], **kwargs)
        except ShapeError:
            raise
        except Exception as error:
            if compiling:
                raise self._not_compilable(error) from None
            # Eager use of a body that only runs on numpy arrays: its result on ones tells.
            with np.errstate(all="ignore"):
                out = self.fn(*[np.ones(a.shape, a.dtype or np.float64) for a in avals], **kwargs)
        if not hasattr(out, "shape") and not isinstance(out, (int, float)):
            raise TypeError(f"primitive {self.__name__} must return one array, got {type(out).__name__}")
        aval = aval_of(out)
        return aval if aval.dtype is not None else aval._replace(dtype=np.dtype(np.float64))

    def _not_compilable(self, error):
        message = error.message if isinstance(error, CompileError) else f"{type(error).__name__}: {error}"
        return CompileError(f"primitive {self.__name__}: its body must be written with knetc ops "
                            f"(kn.*, operators, numpy ufuncs on arrays) to be compiled: {message}")

    def _grad(self, i):
        rule = self.rules[i] if i < len(self.rules) else _MISSING
        if rule is None:
            return None  # an explicit None: zero gradient for this argument
        name = self.__name__

        def gradient(dy, y, *xs, **kwargs):
            if rule is _MISSING:
                raise NotImplementedError(f"primitive {name}: no gradient rule for argument {i}; "
                                          f"give one per argument: @kn.primitive(g0, g1, ...)")
            g = rule(dy, y, *xs, **kwargs)
            shape = aval_of(xs[i]).shape
            if g is None:  # the rule says zero
                return np.zeros(shape, aval_of(dy).dtype or np.float64)
            return _fit(g, shape, name, i)
        return gradient


def _fit(g, shape, name, i):
    """A rule's gradient brought to its argument's shape: summed over broadcast axes (a
    broadcasting function), or broadcast up (a rule returning a scalar)."""
    g_shape = aval_of(g).shape
    if g_shape == tuple(shape):
        return g
    try:
        common = np.broadcast_shapes(g_shape, shape)
    except ValueError:
        common = None
    if common == tuple(shape):
        return broadcast_to(g, shape=tuple(shape))
    if common == g_shape:
        return unbroadcast(g, shape)
    raise ShapeError(f"primitive {name}: the gradient rule for argument {i} returned shape {g_shape} "
                     f"for an argument of shape {tuple(shape)}")


_MISSING = object()
_USER_OP_NAMES = set()


def _unique_op_name(name):
    # Op names must be unique: common subexpression elimination compares them.
    candidate, n = name, 1
    while candidate in OPS or candidate in _USER_OP_NAMES:
        n += 1
        candidate = f"{name}_{n}"
    _USER_OP_NAMES.add(candidate)
    return candidate


def primitive(*rules):
    """Decorator making f one differentiable op with the given gradient rules (Knet's @primitive).

    `@kn.primitive(g0, g1)` on `def f(x0, x1)`: `gi(dy, y, x0, x1)` returns the gradient for
    argument i (dy: the output's gradient, y: the output); written with kn ops they also
    give higher-order gradients, and a result of the output's shape is summed back to a
    broadcast input's shape. A rule None means zero gradient; `@kn.primitive()` without
    rules records f as a primitive that cannot be differentiated. Works eagerly, inside
    `diff` and in `@kn.compile` code (the body must then use knetc ops).

    >>> @kn.primitive(lambda dy, y, a, b: dy * a / y, lambda dy, y, a, b: dy * b / y)
    ... def hypot(a, b):
    ...     return kn.sqrt(a * a + b * b)
    """
    for rule in rules:
        if rule is not None and not callable(rule):
            raise TypeError(f"primitive: gradient rules must be functions or None, got {type(rule).__name__}")

    def decorate(fn):
        if not callable(fn):
            raise TypeError("primitive: decorate a function; write @kn.primitive() (with parentheses) "
                            "when there are no gradient rules")
        return Primitive(fn, rules)
    return decorate


def zerograd(fn):
    """Decorator making f an op with zero gradient (Knet's @zerograd): nothing flows back
    through it, eagerly or compiled, and grad of a result depending only through it is None.

    >>> @kn.zerograd
    ... def step(x):
    ...     return kn.sign(x) * 0.5 + 0.5
    """
    if not callable(fn):
        raise TypeError("zerograd: decorate a function")
    return Primitive(fn, (), zero=True)
