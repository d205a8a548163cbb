"""Eager reverse mode on a tape, as Knet's AutoGrad: Param, diff, grad, gradloss, value, params.

Ops applied to Params inside `diff` are recorded on a tape; `grad` runs the tape backwards
with the op table's adjoint rules. Tapes nest: the adjoint rules are themselves ops, so a
backward pass run while an outer `diff` is active is recorded there (higher-order
gradients). Each op sees its arguments at one tape level: `_ceiling` is the level being
recorded, and a Param resolves to the innermost active tape below it.
"""
import types

import numpy as np

from .ops.core import HANDLERS, aval_of, bind
from .ops.elementwise import add
from .ops.methods import ArrayMethods
from . import pytree

_TAPES = []  # active tapes, outermost first
_ceiling = float("inf")


@pytree.register_leaf_type
class Param(ArrayMethods):
    """A value to differentiate with respect to: `w = Param(np.zeros((3, 4)))`.

    Acts like its value (operators, numpy functions); `w.value` is the array, `w.opt` the
    optimizer state used by the training functions."""
    _knetc_priority = 1

    def __init__(self, value, opt=None):
        if isinstance(value, (list, tuple, int, float)):  # Param([1, 2, 3]) as in Knet
            value = np.asarray(value)
        self.value, self.opt = value, opt

    @property
    def aval(self):
        return aval_of(self.value)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(value_of(self), dtype=dtype)

    def __repr__(self):
        return f"P({self.value!r})"


@pytree.register_leaf_type
class Tracked(ArrayMethods):
    """A value recorded on a tape (Knet's Result; `diff` returns one)."""
    _knetc_priority = 1
    __slots__ = ("value", "tape", "node")

    def __init__(self, value, tape, node):
        self.value, self.tape, self.node = value, tape, node

    @property
    def aval(self):
        return aval_of(self.value)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(value_of(self), dtype=dtype)

    def __float__(self):
        return float(value_of(self))

    def __repr__(self):
        return f"T({self.value!r})"


class Node:
    """One recorded call: `backward(dy)` gives a gradient (or None) for each input."""
    __slots__ = ("op", "params", "inputs", "output", "parents")

    def __init__(self, op, params, inputs, output, parents):
        self.op, self.params, self.inputs, self.output, self.parents = op, params, inputs, output, parents

    def backward(self, dy):
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


class Tape:
    def __init__(self, level):
        self.level, self.nodes, self.active = level, [], True
        self.leaves = {}  # id(param) -> Tracked: each Param's entry on this tape
        self.params = []
        self.gradients = None  # node -> gradient, filled by the first `grad`

    def lift(self, param):
        """The Param as recorded on this tape (its value stays the Param: lower tapes see it)."""
        tracked = self.leaves.get(id(param))
        if tracked is None:
            tracked = self.leaves[id(param)] = Tracked(param, self, None)
            self.params.append(param)
        return tracked


def _tape_of(x):
    """The tape on which x is to be recorded now, or None."""
    if isinstance(x, Tracked):
        return x.tape if x.tape.active and x.tape.level < _ceiling else None
    if isinstance(x, Param):
        below = [t for t in _TAPES if t.level < _ceiling]
        return below[-1] if below else None
    return None


def value_of(x):
    """The plain array inside any nesting of Params and taped values."""
    while isinstance(x, (Param, Tracked)):
        x = x.value
    return x


def _record(op, args, params):
    tapes = [t for t in map(_tape_of, args) if t is not None]
    if not tapes:  # only finished tapes or no tape at all: plain evaluation
        return bind(op, *[_untracked(a) for a in args], **params)
    tape = max(tapes, key=lambda t: t.level)
    inputs, parents = [], []
    for a in args:
        if _tape_of(a) is tape:
            tracked = tape.lift(a) if isinstance(a, Param) else a
            inputs.append(tracked.value)
            parents.append(tracked)
        else:
            inputs.append(a)
            parents.append(None)
    output = _at_level(tape.level, bind, op, *inputs, **params)
    node = Node(op, params, inputs, output, parents)
    tape.nodes.append(node)
    return Tracked(output, tape, node)


def _untracked(x):
    # A value of a finished tape is a constant now; Params with no tape are their values.
    while isinstance(x, (Param, Tracked)) and _tape_of(x) is None:
        x = x.value
    return x


def _at_level(level, fn, *args, **kw):
    global _ceiling
    saved, _ceiling = _ceiling, level
    try:
        return fn(*args, **kw)
    finally:
        _ceiling = saved


HANDLERS[1] = _record


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


def training():
    """True while `diff` is recording (inside a training step), e.g. to apply dropout only then:
    `kn.training()  # False here; True inside kn.diff(loss, ...)`."""
    return bool(_TAPES)


def diff(f, *args, **kwargs):
    """Evaluate f(*args, **kwargs) recording operations on Params; `grad(result, param)` then
    gives gradients. As Knet's `@diff`:

    >>> x = Param(np.array([1., 2., 3.])); y = diff(lambda: kn.sum(x * x)); grad(y, x)
    array([2., 4., 6.])
    """
    tape = Tape(len(_TAPES))
    _TAPES.append(tape)
    try:
        y = f(*args, **kwargs)
    finally:
        _TAPES.pop()
        tape.active = False
    if isinstance(y, Tracked) and y.tape is tape:
        return y
    return Tracked(y, tape, None)  # nothing depended on a Param: every gradient is None


def _backward(y):
    """Gradients of y (computed once per tape), keyed by id of each Param's leaf on the tape."""
    tape = y.tape
    if tape.gradients is None:
        tape.gradients = _at_level(tape.level, _run_backward, y)
    return tape.gradients


def _run_backward(y):
    aval = aval_of(y.value)
    if int(np.prod(aval.shape)) != 1:
        raise ValueError(f"grad: the differentiated result must be a scalar, got shape {aval.shape}")
    if y.node is None:
        return {}
    # Pending gradients keyed by node (inner values) or by leaf (Params). Creation order is
    # a topological order, so one reverse sweep sees every node after all its consumers.
    gradients = {id(y.node): np.ones(aval.shape, dtype=aval.dtype or np.float64)}
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
        return None if leaf is None else gradients.get(id(leaf))
    if isinstance(x, Tracked) and x.tape is y.tape and x.node is None:
        return gradients.get(id(x))
    raise TypeError(f"grad(y, x): x must be a Param, got {type(x).__name__}")


def gradloss(f, argnum=0):
    """Like grad(f, argnum) but the function returns (gradient, loss)."""
    return _gradient_function(f, argnum, with_loss=True)


def _gradient_function(f, argnum, with_loss):
    compiled_gradient = getattr(f, "gradient_function", None)
    if compiled_gradient is not None:  # a @knetc.compile function: the compiled adjoint
        return compiled_gradient(argnum, with_loss)

    def gradient(*args, **kwargs):
        leaves, treedef = pytree.flatten(args[argnum])
        # Arrays and numbers are differentiated; other leaves (names, functions) pass through.
        ps = [Param(leaf) if _differentiable(leaf) else leaf for leaf in leaves]
        args = list(args)
        args[argnum] = pytree.unflatten(treedef, ps)
        y = diff(f, *args, **kwargs)
        g = pytree.unflatten(treedef, [grad(y, p) if isinstance(p, Param) else None for p in ps])
        return (g, value(y)) if with_loss else g
    gradient.__name__ = f"grad_{getattr(f, '__name__', 'f')}"
    return gradient


def _differentiable(leaf):
    if isinstance(leaf, Param) or isinstance(leaf, bool):
        return False  # a Param is differentiated as itself
    return isinstance(leaf, (int, float)) or hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def value(x):
    """The value inside a Param or a `diff` result; anything else is returned as is."""
    return x.value if isinstance(x, (Param, Tracked)) else x


getval = value


_NOT_CONTAINERS = (type, types.FunctionType, types.ModuleType, types.MethodType, types.BuiltinFunctionType)


def params(x):
    """The Params in x: those a `diff` result depends on, or found by a recursive search."""
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
        elif hasattr(obj, "__dict__") and not isinstance(obj, _NOT_CONTAINERS):
            search(vars(obj), depth + 1)
    search(x)
    return found
