"""The one context at the bottom: a stack of traces, the training flag and the target.

A trace is an interpreter of ops: the IR builder (knetc/ir/core.py, symbolic values),
an eager tape (knetc/autograd.py, Params and taped values) or KnetArray evaluation
(knetc/knetarray.py, device arrays). `bind` (knetc/ops/core.py) asks the stack, as
JAX's core does: the highest trace owning one of the arguments processes the op, and
plain arrays are evaluated with the op's numpy reference. A trace processing an op binds
the ops on its values' inner values, which lower traces then process.

Values say what kind they are with a class attribute `_knetc_kind`: "symbolic" (an IR
value), "boxed" (a Param or taped value: its value is in `.value`), "device" (a
KnetArray) or "compiled" (a @kn.compile function: its Python function is in `.fn`), so
that lower layers can ask without importing the layers above them.

This module imports nothing from knetc.
"""
import contextlib


class Trace:
    """One interpreter on the stack. `level`: its position (higher is innermost).
    `owns(x)`: is x one of its values now; `process(op, args, params)`: apply the op.
    `symbolic`: it builds a program (errors are placed at the statement being translated)."""
    level = -1
    symbolic = False

    def owns(self, x):
        raise NotImplementedError

    def process(self, op, args, params):
        raise NotImplementedError


_BASE = []   # permanent traces below every pushed one (KnetArray evaluation)
_STACK = []  # pushed traces, outermost first
# bind's shortcut for ops on Params and taped values while traces are pushed (installed by
# knetc/autograd.py): boxed_dispatch(op, args, params) applies the op as the stack would,
# or returns NotImplemented where it cannot tell cheaply (then the stack is asked).
boxed_dispatch = None
_training = False
_target = None


def traces():
    """The stack, outermost first (permanent traces, then pushed ones)."""
    return _BASE + _STACK


def install(trace):
    """A permanent trace at the bottom of the stack (KnetArray evaluation)."""
    trace.level = -1
    _BASE.append(trace)


def push(trace):
    """`trace` on top of the stack, at the next level."""
    trace.level = len(_STACK)
    _STACK.append(trace)
    return trace


def pop(trace):
    assert _STACK[-1] is trace, "traces are popped in the order they were pushed"
    _STACK.pop()


@contextlib.contextmanager
def pushed(trace):
    """`trace` on top of the stack for the duration."""
    push(trace)
    try:
        yield trace
    finally:
        pop(trace)


@contextlib.contextmanager
def without(kind):
    """The pushed traces of type `kind` hidden for the duration (tracing a plain call:
    no tape around it records)."""
    saved = list(_STACK)
    _STACK[:] = [t for t in _STACK if not isinstance(t, kind)]
    try:
        yield
    finally:
        _STACK[:] = saved


def top_trace(args):
    """The highest trace owning one of args, or None."""
    for trace in reversed(_STACK):
        if any(trace.owns(a) for a in args):
            return trace
    for trace in _BASE:
        if any(trace.owns(a) for a in args):
            return trace
    return None


def owned(x):
    return any(t.owns(x) for t in _STACK) or any(t.owns(x) for t in _BASE)


def stack_of(kind):
    """The pushed traces of type `kind`, outermost first."""
    return [t for t in _STACK if isinstance(t, kind)]


def compiling():
    """Is a program being built (an IR builder on the stack)?"""
    return any(t.symbolic for t in _STACK)


def symbolic_trace():
    """The innermost trace building a program (the IR builder that owns symbolic values)."""
    return next(t for t in reversed(_STACK) if t.symbolic)


# ----------------------------------------------------------------------------- values

_KINDS = {}  # type -> its _knetc_kind (bind asks for every argument of every op)


def kind(x):
    t = type(x)
    try:
        return _KINDS[t]
    except KeyError:
        k = _KINDS[t] = getattr(t, "_knetc_kind", None)
        return k


def is_symbolic(x):
    """An IR value (compiled code)."""
    return kind(x) == "symbolic"


def is_boxed(x):
    """A Param or a taped value (its value is `x.value`)."""
    return kind(x) == "boxed"


def value_of(x):
    """The plain value inside any nesting of Params and taped values."""
    while kind(x) == "boxed":
        x = x.value
    return x


def unowned_stripped(x):
    """A Param or taped value that no trace records now (no tape, a finished tape) is its
    value, down to a value some trace owns."""
    while kind(x) == "boxed" and not owned(x):
        x = x.value
    return x


# ----------------------------------------------------------------------------- mode

def training():
    """True while `diff` is recording (inside a training step) and while a compiled gradient
    program is traced, e.g. to apply dropout only then:
    `kn.training()  # False here; True inside kn.diff(loss, ...)`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.training()
        False
        >>> w = kn.Param(np.ones(2))
        >>> seen = []
        >>> _ = kn.diff(lambda: seen.append(kn.training()) or kn.sum(w))
        >>> seen
        [True]
    """
    return _training


def target():
    """The target ("cpu" or "cuda") of the function being traced now, or None."""
    return _target


@contextlib.contextmanager
def mode(training=None, target=None):
    """Set the training flag and/or the target for the duration (None: unchanged)."""
    global _training, _target
    saved = _training, _target
    if training is not None:
        _training = training
    if target is not None:
        _target = target
    try:
        yield
    finally:
        _training, _target = saved
