"""Scalar code for one fused kernel, shared by the CPU and CUDA generators.

`KernelBody(schedule, kernel, arg_names)` walks the kernel's expression tree at an index
(one index expression per axis: a loop variable or "0") and writes straight-line Python:
loads from stored values, each op's scalar expression, and an inner loop per reduction.
A value is emitted in the innermost loop whose variables it uses (loop-invariant code
stays outside), and computed once per index.
"""
import math

import numpy as np

from ..ir.core import Var

NUMBA_TYPES = {"float32": "float32", "float64": "float64", "int64": "int64",
               "int32": "int32", "int8": "int8", "uint8": "uint8", "bool": "boolean"}


def numba_type(dtype):
    return NUMBA_TYPES[np.dtype(dtype).name]


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
    """What an op's scalar template may ask for: typed constants, casts, loop indices."""

    def __init__(self, dtype, index):
        self.dtype, self._index = dtype, index

    def const(self, value):
        return const(value, self.dtype)

    def cast(self, name, dtype):
        return f"{numba_type(dtype)}({name})"

    def index(self, axis):
        return self._index[axis]


class KernelBody:
    def __init__(self, schedule, kernel, arg_names):
        self.schedule, self.kernel, self.arg_names = schedule, kernel, arg_names
        self.blocks = [{"vars": set(), "lines": [], "memo": {}}]  # outermost = the kernel's loop body
        self.counter = 0

    # index helpers ---------------------------------------------------------------
    @staticmethod
    def broadcast_index(index, shape, target_shape):
        """The index into a value of `shape` broadcast against a domain of `target_shape`."""
        lead = len(target_shape) - len(shape)
        return tuple("0" if n == 1 else index[lead + i] for i, n in enumerate(shape))

    def load(self, var, index):
        name = self.arg_names[var]
        subscript = ", ".join(index) if index else "0"  # 0-d values are stored as (1,)
        return f"{name}[{subscript}]"

    # generation --------------------------------------------------------------------
    def _block_for(self, index):
        used = {i for i in index if i != "0"}
        for depth in range(len(self.blocks) - 1, 0, -1):
            if self.blocks[depth]["vars"] & used:
                return depth
        return 0

    def _fresh(self):
        self.counter += 1
        return f"t{self.counter}"

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
        return self._compute(eqn, index, key)

    def _emit(self, expression, depth, key):
        name = self._fresh()
        self.blocks[depth]["lines"].append(f"{name} = {expression}")
        self.blocks[depth]["memo"][key] = name
        return name

    def root(self, index):
        return self._compute(self.kernel.eqn, tuple(index), (id(self.kernel.out), tuple(index)))

    def _compute(self, eqn, index, key):
        op, out = eqn.op, eqn.out
        if op.kind == "reduce":
            return self._reduce(eqn, index, key)
        if op.name == "transpose":
            perm = eqn.params["perm"]
            source_index = [None] * len(perm)
            for j, p in enumerate(perm):
                source_index[p] = index[j]
            return self.value(eqn.inputs[0], source_index)
        names = []
        for x in eqn.inputs:
            if op.name == "iota":
                names.append(None)  # its input only gives the shape
            elif isinstance(x, Var):
                names.append(self.value(x, self.broadcast_index(index, x.aval.shape, out.aval.shape)))
            else:
                names.append(const(x, out.aval.dtype))
        expression = op.scalar(_Context(out.aval.dtype, index), *names, **eqn.params)
        depth = max([self._depth_of(n) for n in names] + [self._block_for(index) if op.name == "iota" else 0])
        return self._emit(expression, depth, key)

    def _depth_of(self, name):
        for depth in range(len(self.blocks) - 1, 0, -1):
            if any(n == name for n in self.blocks[depth]["memo"].values()):
                return depth
        return 0

    def _reduce(self, eqn, index, key):
        (x,) = eqn.inputs
        axes, dtype = eqn.params["axes"], eqn.out.aval.dtype
        accumulator = self._fresh()
        loop_vars = {a: f"r{self.counter}_{a}" for a in axes if x.aval.shape[a] != 1}
        outer = len(self.blocks) - 1
        is_sum = eqn.op.name == "reduce_sum"
        self.blocks[outer]["lines"].append(f"{accumulator} = {const(0.0 if is_sum else -math.inf, dtype)}")
        # Inner block: one nested loop per reduced axis.
        block = {"vars": set(loop_vars.values()), "lines": [], "memo": {}}
        self.blocks.append(block)
        inner_index = tuple(loop_vars.get(a, "0" if a in axes else index[a]) for a in range(x.aval.ndim))
        v = self.value(x, inner_index)
        if is_sum:
            block["lines"].append(f"{accumulator} += {v}")
        else:
            block["lines"].append(f"{accumulator} = max({accumulator}, {v})")
        self.blocks.pop()
        lines, indent = [], ""
        for a, var in loop_vars.items():
            lines.append(f"{indent}for {var} in range({x.aval.shape[a]}):")
            indent += "    "
        lines += [indent + line for line in block["lines"]] if loop_vars else block["lines"]
        self.blocks[outer]["lines"].extend(lines)
        self.blocks[outer]["memo"][key] = accumulator
        return accumulator

    def lines(self):
        return self.blocks[0]["lines"]

