"""Scalar code for one fused kernel, shared by the CPU and CUDA generators.

`KernelBody(schedule, kernel, names, loops)` walks the kernel's expression tree at an index
(one index expression per axis: a loop variable or "0") and writes straight-line Python:
loads from stored values, each op's scalar expression, and an inner loop per reduction.
A value is emitted in the innermost loop whose variables it uses (loop-invariant code
stays outside: `loops` names the kernel's own loop variables, outermost first, and
reductions add theirs), and computed once per index. A computed value is named after its
IR value (`v7` is the IR's `%7`), and a comment with the user's source line precedes the
code generated from it.
"""
import math
import re

import numpy as np

from ..ir.core import Var
from .names import import_alias, source_comment

NUMBA_TYPES = {"float32": "float32", "float64": "float64", "int64": "int64", "int32": "int32", "int16": "int16",
               "int8": "int8", "uint64": "uint64", "uint32": "uint32", "uint16": "uint16", "uint8": "uint8",
               "bool": "boolean"}


def numba_type(dtype):
    name = np.dtype(dtype).name
    if name not in NUMBA_TYPES:  # the front end refuses these at the user's line (ir/core.py); a last guard
        raise NotImplementedError(f"knetc's kernels have no {name} arithmetic")
    return NUMBA_TYPES[name]


def const(value, dtype):
    """A constant in the kernel's dtype (a bare Python float would promote float32 math to float64)."""
    if isinstance(value, float) and math.isinf(value):
        text = "math.inf" if value > 0 else "-math.inf"
    elif isinstance(value, float) and math.isnan(value):
        text = "math.nan"
    else:
        text = repr(float(value)) if np.issubdtype(np.dtype(dtype), np.floating) else repr(int(value))
    return f"{numba_type(dtype)}({text})"


class _Context:
    """What an op's scalar template may ask for: typed constants, casts, loop indices, and
    calls of scalar helper functions (`call`)."""

    def __init__(self, dtype, index, helpers=None):
        self.dtype, self._index = dtype, index
        self.helpers = helpers  # a set collecting the helpers `call` names (see helper_imports)

    def const(self, value):
        return const(value, self.dtype)

    def cast(self, name, dtype):
        return f"{numba_type(dtype)}({name})"

    def index(self, axis):
        return self._index[axis]

    def call(self, path, *args):
        """A call of the scalar helper "package.module:function" on the argument names.

        The generated module imports `function_cpu` or `function_cuda` from the module (an
        njit function or a CUDA device function; see kernels/special.py), e.g.
        k.call("knetc.kernels.special:digamma", x) -> "special_digamma(x)"."""
        if self.helpers is not None:
            self.helpers.add(path)
        return f"{import_alias(path)}({', '.join(args)})"


def helper_imports(schedule, target):
    """Import lines for the scalar helpers that the schedule's kernels call (`_Context.call`).

    The templates are rendered once more with a recording context to find them. Each line
    carries a digest of the helper module's source, so editing it changes the generated
    module (and so Numba's cache of it)."""
    paths = set()
    for eqn in schedule.groups():
        if eqn.op.scalar is None or eqn.op.kind == "reduce" or eqn.op.index_map is not None:
            continue
        names = [f"x{i}" for i in range(len(eqn.inputs))]
        try:
            eqn.op.scalar(_Context(eqn.out.aval.dtype, ("0",) * len(eqn.out.aval.shape), paths), *names, **eqn.params)
        except Exception:  # noqa: BLE001  a template that fails here fails (and reports) in KernelBody too
            continue
    lines = []
    for path in sorted(paths):
        module, function = path.split(":")
        lines.append(f"from {module} import {function}_{target} as {import_alias(path)}  # {_source_digest(module)}")
    return lines


def _source_digest(module):
    import hashlib
    import importlib.util
    origin = importlib.util.find_spec(module).origin
    with open(origin, "rb") as f:
        return "source sha256 " + hashlib.sha256(f.read()).hexdigest()[:16]


class KernelBody:
    def __init__(self, schedule, kernel, names, loops=()):
        self.schedule, self.kernel, self.names = schedule, kernel, names
        # One block per loop level: outside every loop, then inside each of `loops`.
        self.blocks = [_block(set())] + [_block({var}) for var in loops]
        self.counter, self.reductions, self.used = 0, 0, {}
        self.eqn = None  # the equation being generated (its result's name, its source line)

    # index helpers ---------------------------------------------------------------
    @staticmethod
    def broadcast_index(index, shape, target_shape):
        """The index into a value of `shape` broadcast against a domain of `target_shape`."""
        lead = len(target_shape) - len(shape)
        return tuple("0" if n == 1 else index[lead + i] for i, n in enumerate(shape))

    def load(self, var, index):
        name = self.names.arg(var)
        subscript = ", ".join(index) if index else "0"  # 0-d values are stored as (1,)
        return f"{name}[{subscript}]"

    # generation --------------------------------------------------------------------
    def _block_for(self, index):
        # Index entries are loop variables or expressions of them (index-remapping ops).
        used = {name for i in index for name in re.findall(r"[A-Za-z_]\w*", i)}
        for depth in range(len(self.blocks) - 1, 0, -1):
            if self.blocks[depth]["vars"] & used:
                return depth
        return 0

    def _fresh(self):
        self.counter += 1
        return f"t{self.counter}"

    def _named(self, var):
        """The IR value's name (`v7`), or `v7_2`, ... when it is computed at several indices."""
        base = self.names.arg(var)
        self.used[base] = self.used.get(base, 0) + 1
        return base if self.used[base] == 1 else f"{base}_{self.used[base]}"

    def _append(self, depth, line):
        """Append a line to a block, after a source comment when the source line changes."""
        block, loc = self.blocks[depth], self.eqn.loc if self.eqn is not None else None
        if loc is not None and loc != block["loc"]:
            block["lines"].append(source_comment(loc))
            block["loc"] = loc
        block["lines"].append(line)

    def _generating(self, eqn, index, key):
        outer, self.eqn = self.eqn, eqn
        try:
            return self._compute(eqn, index, key)
        finally:
            self.eqn = outer

    def _lookup(self, key, depth):
        for d in range(depth, -1, -1):
            if key in self.blocks[d]["memo"]:
                return self.blocks[d]["memo"][key]
        return None

    def value(self, x, index):
        """A name (or constant) holding x at `index` (a tuple with one entry per axis of x)."""
        if not isinstance(x, Var):
            return None  # numbers are rendered by the consumer in its dtype
        index = tuple(index)
        depth = self._block_for(index)
        key = (id(x), index)
        found = self._lookup(key, len(self.blocks) - 1)
        if found is not None:
            return found
        eqn = self.schedule.inlined.get(x)
        if eqn is None:  # a stored value: a kernel argument
            return self._emit(self.load(x, index), depth, key)
        return self._generating(eqn, index, key)

    def _emit(self, expression, depth, key):
        computed = self.eqn is not None and key[0] == id(self.eqn.out)  # else a load
        name = self._named(self.eqn.out) if computed else self._fresh()
        self._append(depth, f"{name} = {expression}")
        self.blocks[depth]["memo"][key] = name
        return name

    def root(self, index):
        return self._generating(self.kernel.eqn, tuple(index), (id(self.kernel.out), tuple(index)))

    def _compute(self, eqn, index, key):
        op, out = eqn.op, eqn.out
        if op.kind == "reduce":
            return self._reduce(eqn, index, key)
        if op.index_map is not None:
            # An index remapping (transpose, static slicing, its zero-padding adjoint):
            # `index_map(index, input_shape, **params)` gives the input's index expressions
            # and a condition (None: always) outside which the result is 0; the load uses
            # clamped indices, so it is in bounds either way.
            source_index, condition = op.index_map(index, eqn.inputs[0].aval.shape, **eqn.params)
            v = self.value(eqn.inputs[0], source_index)
            if condition is None:
                return v
            depth = max(self._depth_of(v), self._block_for(index))
            return self._emit(f"({v} if {condition} else {const(0, out.aval.dtype)})", depth, key)
        names = []
        for x in eqn.inputs:
            if op.input_gives_shape:
                names.append(None)  # not read: the result depends on the index
            elif isinstance(x, Var):
                names.append(self.value(x, self.broadcast_index(index, x.aval.shape, out.aval.shape)))
            else:
                names.append(const(x, out.aval.dtype))
        depth = max([self._depth_of(n) for n in names] + [self._block_for(index) if op.input_gives_shape else 0])
        if op.float_valued:  # integer inputs become the float result first (int / int)
            names = [f"{numba_type(out.aval.dtype)}({n})" if isinstance(x, Var) and x.aval.dtype != out.aval.dtype
                     else n for x, n in zip(eqn.inputs, names)]
        expression = op.scalar(_Context(out.aval.dtype, index), *names, **eqn.params)
        return self._emit(expression, depth, key)

    def _depth_of(self, name):
        for depth in range(len(self.blocks) - 1, 0, -1):
            if any(n == name for n in self.blocks[depth]["memo"].values()):
                return depth
        return 0

    def _reduce(self, eqn, index, key):
        (x,) = eqn.inputs
        axes, dtype = eqn.params["axes"], eqn.out.aval.dtype
        accumulator = self._named(eqn.out)
        self.reductions += 1
        loop_vars = {a: f"r{self.reductions}_{a}" for a in axes if x.aval.shape[a] != 1}
        outer = len(self.blocks) - 1
        monoid = eqn.op.monoid
        self._append(outer, f"{accumulator} = {const(monoid.start(dtype), dtype)}")
        # Inner block: one nested loop per reduced axis.
        block = _block(set(loop_vars.values()), loc=eqn.loc)
        self.blocks.append(block)
        inner_index = tuple(loop_vars.get(a, "0" if a in axes else index[a]) for a in range(x.aval.ndim))
        v = self.value(x, inner_index)
        if x.aval.dtype != dtype:  # a sum of bools or int32s accumulates in int64, as numpy's
            v = f"{numba_type(dtype)}({v})"
        step = monoid.step
        if monoid.float_step is not None and np.issubdtype(np.dtype(dtype), np.floating):
            entry = self._fresh()  # the template reads the entry three times
            self._append(len(self.blocks) - 1, f"{entry} = {v}")
            v, step = entry, monoid.float_step
        self._append(len(self.blocks) - 1, step.format(acc=accumulator, v=v))
        self.blocks.pop()
        lines, indent = [], ""
        for a, var in loop_vars.items():
            lines.append(f"{indent}for {var} in range({x.aval.shape[a]}):")
            indent += "    "
        lines += [indent + line for line in block["lines"]] if loop_vars else block["lines"]
        self._append(outer, lines[0])
        self.blocks[outer]["lines"].extend(lines[1:])
        self.blocks[outer]["memo"][key] = accumulator
        return accumulator

    def lines(self, depth=None):
        """The lines of one loop level (0: outside every loop), or of all levels in order
        (each level's lines use only values of the levels before it)."""
        if depth is not None:
            return self.blocks[depth]["lines"]
        return [line for block in self.blocks for line in block["lines"]]


def _block(loop_vars, loc=None):
    """A loop level: its loop variables, its lines, the values computed in it (memo: (id of
    Var, index) -> name), and the source line its last comment named."""
    return {"vars": loop_vars, "lines": [], "memo": {}, "loc": loc}

