"""The IR: a flat, typed SSA list of equations (like a jaxpr), built by binding ops to Vars.

    def loss(%0: f32[784,64], %1: f32[64], %2: f32[100,784]):
      %3: f32[100,64] = matmul %2 %0          # mnist_mlp.py:14
      %4: f32[100,64] = add %3 %1
      return %4
"""
import os

import numpy as np

from .. import context, pytree
from ..errors import CompileError, ShapeError
from ..ops.core import Aval, astype, aval_of
from ..ops.elementwise import full
from ..ops.methods import ArrayMethods


@pytree.register_leaf_type
class Var(ArrayMethods):
    """A typed SSA value. Python operators on it emit equations into the current Builder."""
    _knetc_kind = "symbolic"  # (knetc/context.py)
    __slots__ = ("aval",)

    def __init__(self, aval):
        self.aval = aval

    def __bool__(self):
        raise CompileError("a condition depends on array data, which is only known when the kernels run",
                           hint="branch on shapes or Python values, or compute both sides and blend "
                                "them with comparisons (e.g. `m = x > 0; m * a + (1 - m) * b`)")

    def __iter__(self):
        raise CompileError("iterating over an array value is not supported in compiled code",
                           hint="iterate over range(x.shape[0]) or over lists of arrays")

    def __repr__(self):
        return f"Var({self.aval})"


class Eqn:
    """out = op(*inputs, **params); inputs are Vars or Python numbers. loc: (file, line)."""
    __slots__ = ("op", "inputs", "params", "out", "loc")

    def __init__(self, op, inputs, params, out, loc=None):
        self.op, self.inputs, self.params, self.out, self.loc = op, tuple(inputs), params, out, loc


class Program:
    """inputs -> eqns -> outputs. `constants` maps input Vars that hold arrays fixed at compile time."""

    def __init__(self, name, inputs, eqns, outputs, constants=None):
        self.name, self.inputs, self.eqns, self.outputs = name, list(inputs), list(eqns), list(outputs)
        self.constants = dict(constants or {})

    def replace(self, **changes):
        return Program(**{**vars(self), **changes})

    def __str__(self):
        return format_program(self)


def var_numbers(program):
    """Var -> its number in the printed program (`%n`): the order of first appearance, reading
    the inputs, then each equation's result and inputs (and a loop's body, after the loop's
    result), then the outputs. The generated code names values by the same numbers (`v8` is
    `%8`; backend/names.py)."""
    first_seen = dict.fromkeys(v for v in _values_in_order(program) if isinstance(v, Var))
    return {v: n for n, v in enumerate(first_seen)}


def _values_in_order(program):
    """Every value the program reads or defines (repeats included), in var_numbers' order."""
    yield from program.inputs
    for eqn in program.eqns:
        yield eqn.out
        yield from eqn.inputs
        if eqn.op.kind == "loop":
            yield from _values_in_order(eqn.params["spec"].body)
    yield from program.outputs


def needed_by(eqns, values):
    """The values `values` are computed from by `eqns` (themselves included). `eqns` are in
    program order, so one backward sweep reaches them all."""
    needed = {v for v in values if isinstance(v, Var)}
    for eqn in reversed(eqns):
        if eqn.out in needed:
            needed.update(x for x in eqn.inputs if isinstance(x, Var))
    return needed


def format_program(program, groups=None, numbers=None):
    """The stable text form. `groups` (eqn -> group number) marks fusion groups."""
    numbers = var_numbers(program) if numbers is None else numbers

    def name(v):
        return f"%{numbers[v]}" if isinstance(v, Var) else repr(v)

    args = ", ".join(f"{name(v)}: {v.aval}" + (" (constant)" if v in program.constants else "") for v in program.inputs)
    lines = [f"def {program.name}({args}):"]
    for eqn in program.eqns:
        params = "".join(f"[{k}={_fmt(v)}]" if k != "spec" else f"[{v!r}]" for k, v in eqn.params.items())
        aval = "loop" if eqn.op.kind == "loop" else eqn.out.aval
        text = f"  {name(eqn.out)}: {aval} = {eqn.op.name}{params} {' '.join(name(x) for x in eqn.inputs)}"
        notes = [f"group {groups[eqn]}"] if groups and eqn in groups else []
        if eqn.loc is not None:
            notes.append(f"{os.path.basename(eqn.loc[0])}:{eqn.loc[1]}")
        lines.append(text.ljust(64) + "  # " + ", ".join(notes) if notes else text)  # no trailing blanks
        if eqn.op.kind == "loop":
            lines += ["    " + line for line in format_program(eqn.params["spec"].body, groups, numbers).splitlines()]
    lines.append(f"  return {', '.join(name(v) for v in program.outputs)}")
    return "\n".join(lines)


def _fmt(v):
    return np.dtype(v).name if isinstance(v, (np.dtype, type)) else repr(v)


# Arrays with at most this many entries are copied into the program when traced; larger ones
# are read live (also the frontend's limit for guarding an outside array by its contents).
SNAPSHOT_MAX = 1 << 16


class Builder(context.Trace):
    """Collects equations while ops are bound to Vars: `with Builder() as b: y = x + 1`.
    A trace on the context's stack: the innermost builder owns every Var."""
    symbolic = True

    def __init__(self):
        self.eqns, self.constants, self.loc = [], {}, None
        self._sources = {}  # constant Var -> the array it was made from

    def __enter__(self):
        return context.push(self)

    def __exit__(self, *exc):
        context.pop(self)

    def owns(self, x):
        return isinstance(x, Var)

    def input(self, aval):
        if aval.dtype == np.float16 or not np.dtype(aval.dtype).isnative:  # (Numba has no float16 on the CPU)
            what, fix = ("float16", "np.float32") if aval.dtype == np.float16 else (
                f"{np.dtype(aval.dtype).str} (the other byte order)", "x.dtype.newbyteorder('=')")
            raise CompileError(f"a {what} array cannot be a compiled function's input: pass x.astype({fix})")
        return Var(aval)

    def constant(self, array, live=False):
        """A Var holding an array known at compile time (passed to the kernels as an input):
        up to SNAPSHOT_MAX entries, a copy of its entries now (numpy code may change the array
        later, and the value read here must not change with it); larger arrays (weights, data
        sets) and state an op updates in place (`live`: batchnorm's running statistics) by
        reference, read live at each run. The same array read again, unchanged, is the same Var."""
        small = array.size <= SNAPSHOT_MAX and not live
        for var, source in self._sources.items():
            if source is array and (not small or np.array_equal(
                    self.constants[var], array, equal_nan=array.dtype.kind in "fc")):
                return var
        var = Var(Aval(tuple(array.shape), np.dtype(array.dtype)))
        self.constants[var], self._sources[var] = (array.copy() if small else array), array
        return var

    def emit(self, op, args, params):
        if op.kind == "elementwise":
            args = self._numpy_scalars(op, args, params)
            if any(type(a) is int for a in args) and (wider := self._out_of_range_ints(op, args, params)) is not None:
                return wider
        args = tuple(self.constant(a, i in op.state_inputs) if isinstance(a, np.ndarray) else a.item()
                     if isinstance(a, np.generic) else a for i, a in enumerate(args))
        for a in args:
            if not isinstance(a, (Var, int, float)):
                raise CompileError(f"{op.name}: cannot use a {type(a).__name__} in compiled code",
                                   *(self.loc or (None, None)))
        try:
            aval = op.rule(*map(aval_of, args), **params)
        except ShapeError as error:
            raise error.located(*(self.loc or (None, None))) from None
        if aval.dtype is not None and np.dtype(aval.dtype).kind not in "biuf" or aval.dtype == np.float16:
            raise CompileError(f"{op.name}: the result would be {np.dtype(aval.dtype).name} (as numpy gives it), "
                               f"which compiled code does not support", *(self.loc or (None, None)),
                               hint="convert the inputs first, e.g. x.astype(np.float32)")
        out = Var(aval)
        self.eqns.append(Eqn(op, args, params, out, self.loc))
        return out

    process = emit  # (the trace protocol's name: ops bound to Vars are emitted)

    def filled(self, aval, value):
        """A Var of `aval` holding `value` everywhere (a `full` equation)."""
        return self.emit(full, (), dict(shape=aval.shape, value=value, dtype=aval.dtype))

    def _numpy_scalars(self, op, args, params):
        """A numpy scalar (np.float64(2.5), np.prod(x.shape)) is typed as numpy types it, like
        a 0-d array (x32 * np.float64(2) is float64), unlike a Python number: where that
        changes the result's dtype it becomes a 0-d constant instead of a kernel literal."""
        if not any(isinstance(a, np.generic) for a in args):
            return args
        try:
            strong = op.rule(*(Aval((), a.dtype) if isinstance(a, np.generic) else aval_of(a) for a in args), **params)
            weak = op.rule(*(aval_of(a.item()) if isinstance(a, np.generic) else aval_of(a) for a in args), **params)
        except Exception:  # the rule refuses one of them: keep the literal, emit reports the error
            return args
        return args if strong.dtype == weak.dtype else tuple(
            np.asarray(a) if isinstance(a, np.generic) else a for a in args)

    def _out_of_range_ints(self, op, args, params):
        """numpy refuses a Python int that the integer array's dtype cannot hold (`int8 + 300`:
        OverflowError) except in comparisons, which it answers as in exact arithmetic. A kernel
        would wrap the literal (uint8 < -1 would be uint8 < 255): refuse as numpy does, or
        compare in a wider type (the answer is a bool, as of any integer comparison)."""
        dtypes = [aval_of(a).dtype for a in args if not isinstance(a, (bool, int, float))]
        if not dtypes or any(d is None or np.dtype(d).kind not in "iu" for d in dtypes):
            return None
        dtype = np.result_type(*dtypes)
        info = np.iinfo(dtype)
        bad = [a for a in args if type(a) is int and not info.min <= a <= info.max]
        if not bad:
            return None
        if op.name not in _COMPARISONS:
            raise OverflowError(f"Python integer {bad[0]} out of bounds for {dtype}")
        i64 = np.iinfo(np.int64)
        wide = np.dtype(np.int64) if dtype != np.uint64 and all(
            i64.min <= a <= i64.max for a in args if type(a) is int) else np.dtype(np.float64)
        widened = tuple(astype(a, dtype=wide) if isinstance(a, Var) else
                        self.constant(np.asarray(a, dtype=wide)) if isinstance(a, np.ndarray) else
                        float(a) if wide.kind == "f" and type(a) is int else a for a in args)
        return astype(self.emit(op, widened, params), dtype=np.dtype(bool))


_COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}


def current_builder():
    builders = context.stack_of(Builder)
    if not builders:
        raise RuntimeError("an IR value was used outside of compilation")
    return builders[-1]
