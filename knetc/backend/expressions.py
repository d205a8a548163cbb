"""Scalar code for one fused kernel, shared by the CPU and CUDA generators.

Kernels are shape-generic: a kernel's text depends on its fused expression, dtypes, ranks
and which input axes broadcast (have size 1), never on sizes, so that one compiled kernel
serves every layer, loop step, program and batch size that needs it (backend/cache.py
keys kernels by a digest of their text). What varies comes in at run time: the output's
sizes from `out.shape`, and as scalar arguments every number of the expression (`c0`,
`c1`, ...: `x * 0.01` and `x * 0.5` share a kernel) and each reduction's extent (`m0`, ...).

`KernelBody(schedule, kernel, loops)` walks the kernel's expression tree at an index (one
index expression per axis: a loop variable or "0") and writes straight-line Python: loads
from the input arrays (`x0`, `x1`, ... in `kernel.inputs` order), each op's scalar
expression, and an inner loop per reduction. A value is emitted in the innermost loop
whose variables it uses (loop-invariant code stays outside: `loops` names the kernel's own
loop variables, outermost first, and reductions add theirs), and computed once per index.

On the CPU (`ranges` given), a reduction whose reduced axes all come before its kept axes
in memory (a column sum: out[0, j] = sum_i f(x[i, j])) streams its input instead: its
reduction loops run outside the kernel's own loops, accumulating a block of output rows
at a time into a local array (`a1`, ...: the rows blo..bhi of lo..hi, see
backend/cpu.py), which the kernel's loops then read. Each entry accumulates its terms in
the same order as in the plain loop nest, so the results are the same, bit for bit.
"""
import importlib.util
import math
import re

import numpy as np

from ..ir.core import Var
from ..ir.fuse import squeezed_index, squeezes
from .cache import file_sha256
from .names import import_alias, import_line

NUMBA_TYPES = {name: name for name in ("float32", "float64", "int64", "int32", "int16", "int8", "uint64", "uint32",
                                       "uint16", "uint8")} | {"bool": "boolean"}


def numba_type(dtype):
    name = np.dtype(dtype).name
    if name not in NUMBA_TYPES:  # the front end refuses these at the user's line (ir/core.py); a last guard
        raise NotImplementedError(f"knetc's kernels have no {name} arithmetic")
    return NUMBA_TYPES[name]


def const(value, dtype):
    """A constant in the kernel's dtype (a bare Python float would promote float32 math to float64)."""
    return f"{numba_type(dtype)}({number_text(value, dtype)})"


def number_text(value, dtype):
    """A number as Python source, a float for a float dtype and an int otherwise (so that a
    kernel's scalar argument has one Numba type whatever the literal was: 1 and 1.5 alike)."""
    if not np.issubdtype(np.dtype(dtype), np.floating):
        return repr(int(value))
    if math.isinf(value):
        return "math.inf" if value > 0 else "-math.inf"
    return "math.nan" if math.isnan(value) else repr(float(value))


class _Context:
    """What an op's scalar template may ask for: typed constants, casts, loop indices, and
    calls of scalar helper functions (`call`). vectorizes: the value is computed in a CPU
    loop that LLVM may run in vector lanes (not a reduction's in-order accumulation, not
    CUDA), where arithmetic beats a C library call per element (kernels/fastmath.py)."""

    def __init__(self, dtype, index, helpers, vectorizes=False, vector_calls=None):
        self.dtype, self._index, self.helpers, self.vectorizes = dtype, index, helpers, vectorizes
        self.vector_calls = vector_calls  # (a list the kernel keeps: what vector_call called)

    def const(self, value): return const(value, self.dtype)
    def cast(self, name, dtype): return f"{numba_type(dtype)}({name})"
    def index(self, axis): return self._index[axis]

    def call(self, path, *args):
        """A call of the scalar helper "package.module:function" on the argument names.

        The kernel module imports `function_cpu` or `function_cuda` from the module (an
        njit function or a CUDA device function; see kernels/special.py), e.g.
        k.call("knetc.kernels.special:digamma", x) -> "special_digamma(x)"."""
        self.helpers.add(path)
        return f"{import_alias(path)}({', '.join(args)})"

    def vector_call(self, path, *args):
        """`call` of a helper that pays only where the loop vectorizes (kernels/fastmath.py)."""
        self.vector_calls.append(path)
        return self.call(path, *args)


KERNEL_HEADER = """# knetc kernel ({target}): {ops}
import math
import numpy as np
from numba import {jit}, float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, boolean
"""


def kernel_module(target, ops, helpers, lines):
    """A kernel module's text: what it computes (`ops`), its imports, then `lines`. Each scalar
    helper ("module:function", recorded by `_Context.call` while the kernel was written) is
    imported with a digest of its module's source, so that editing it changes the kernel's
    text, and so its cache key."""
    text = KERNEL_HEADER.format(target=target, ops=ops, jit={"cpu": "njit", "cuda": "cuda"}[target])
    for path in sorted(helpers):
        text += f"{import_line(path, '_' + target)}  # {source_digest(path.split(':')[0])}\n"
    return text + "\n\n" + "\n".join(lines) + "\n"


def source_digest(module):
    return "source sha256 " + file_sha256(importlib.util.find_spec(module).origin)[:16]


SCRATCH = "knetc.kernels.scratch:empty"  # np.empty for kernels
STREAM_BLOCK = 4096  # accumulator entries per block of a streamed reduction (32 KiB of float64)
STREAM_MIN = 32  # fewer entries in a block: the reduction's loops run inside the kernel's
WIDE_BLOCK = 128  # entries of a float32 sum added in float32 before the float64 total (Monoid.wide)


class KernelBody:
    def __init__(self, schedule, kernel, loops=(), ranges=None):
        """loops: the kernel's loop variables, outermost first. ranges (CPU only): each
        loop's range text in a kernel with streamed reductions (the first loop runs over a
        block `blo, bhi`); None: reductions never stream and loops do not vectorize (CUDA,
        whose threads are its lanes)."""
        self.schedule, self.kernel = schedule, kernel
        self.loops, self.ranges = list(loops), ranges
        self.streams = []  # per streamed reduction: (its accumulator's allocation, its lines per block)
        self.unsigned = {}  # loop variable -> its uint64 copy, which loads use (no negative-index wraparound)
        self.arrays = {x: f"x{i}" for i, x in enumerate(kernel.inputs)}
        self.numbers = []  # (parameter, Numba type, Python text of the value the driver passes)
        self.extents = []  # (parameter, size): reduction loop lengths
        self.helpers = set()  # scalar helpers the templates call ("module:function")
        # One block per loop level: outside every loop, then inside each of `loops`.
        self.blocks = [_block(set())] + [_block({var}) for var in loops]
        self.counter, self.reductions = 0, 0
        # accumulating > 0 while a reduction's in-order accumulation is written (it does not
        # vectorize); vector_calls: the vector helpers called so far (_Context.vector_call)
        self.accumulating, self.vector_calls = 0, []

    @property
    def parameters(self):
        """The kernel's parameters after `out`: (name, Numba type, what the driver passes)."""
        return self.numbers + [(name, "int64", repr(size)) for name, size in self.extents]

    # index helpers ---------------------------------------------------------------
    @staticmethod
    def broadcast_index(index, shape, target_shape):
        """The index into a value of `shape` broadcast against a domain of `target_shape`."""
        lead = len(target_shape) - len(shape)
        return tuple("0" if n == 1 else index[lead + i] for i, n in enumerate(shape))

    def load(self, var, index):
        index = [self.unsigned.get(i, i) for i in index]
        return f"{self.arrays[var]}[{', '.join(index) if index else '0'}]"  # (0-d values are stored as (1,))

    # generation --------------------------------------------------------------------
    def _block_for(self, index):
        # Index entries are loop variables or expressions of them (index-remapping ops).
        used = {name for i in index for name in re.findall(r"[A-Za-z_]\w*", i)}
        return next((depth for depth in range(len(self.blocks) - 1, 0, -1) if self.blocks[depth]["vars"] & used), 0)

    def _fresh(self):
        self.counter += 1
        return f"t{self.counter}"

    def _lookup(self, key, depth):
        return next((block["memo"][key] for block in reversed(self.blocks[:depth + 1]) if key in block["memo"]), None)

    def value(self, x, index):
        """A name holding x at `index` (a tuple with one entry per axis of x)."""
        index = tuple(index)
        key = (id(x), index)
        found = self._lookup(key, len(self.blocks) - 1)
        if found is not None:
            return found
        eqn = self.schedule.inlined.get(x)  # (None: a stored value, a kernel argument)
        return self._compute(eqn, index, key) if eqn is not None else self._emit(self.load(x, index), self._block_for(index), key)

    def _emit(self, expression, depth, key):
        name = self._fresh()
        self.blocks[depth]["lines"].append(f"{name} = {expression}")
        self.blocks[depth]["memo"][key] = name
        return name

    def number(self, eqn, position, dtype):
        """The number at input `position` of `eqn`: a scalar argument, converted to the
        kernel's dtype once, outside every loop."""
        key = ("number", id(eqn), position)
        found = self._lookup(key, 0)
        if found is None:
            parameter = f"c{len(self.numbers)}"
            kind = "float64" if np.issubdtype(np.dtype(dtype), np.floating) else "int64"
            self.numbers.append((parameter, kind, number_text(eqn.inputs[position], dtype)))
            found = self._emit(f"{numba_type(dtype)}({parameter})", 0, key)
        return found

    def store(self):
        """The statement storing the kernel's result in `out`, at the loop variables i<axis> of its
        axes of size other than 1."""
        shape = self.kernel.out.aval.shape
        index = tuple(f"i{axis}" if n != 1 else "0" for axis, n in enumerate(shape))
        result = self._compute(self.kernel.eqn, index, (id(self.kernel.out), index))
        return f"out[{', '.join(index) if shape else '0'}] = {result}"

    def _compute(self, eqn, index, key):
        op, out = eqn.op, eqn.out
        if op.kind == "reduce":
            return self._reduce(eqn.inputs[0], eqn.params["axes"], out.aval.dtype, op.monoid, index, key)
        if squeezes(eqn):  # a reshape that adds or drops size-1 axes: the same entry of its input
            return self.value(eqn.inputs[0], squeezed_index(index, out.aval.shape, eqn.inputs[0].aval.shape))
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
        # numbers in the result's dtype, or a comparison's in its operands' (not in bool)
        operands = out.aval.dtype if out.aval.dtype != bool else np.result_type(
            *(x.aval.dtype if isinstance(x, Var) else x for x in eqn.inputs))
        names = [None if op.input_gives_shape  # (the inputs are not read: the result depends on the index)
                 else self.value(x, self.broadcast_index(index, x.aval.shape, out.aval.shape)) if isinstance(x, Var)
                 else self.number(eqn, position, operands) for position, x in enumerate(eqn.inputs)]
        depth = max([self._depth_of(n) for n in names] + [self._block_for(index) if op.input_gives_shape else 0])
        if op.float_valued or np.dtype(out.aval.dtype).kind == "f":  # integer inputs become the float result first
            # (int / int; Numba types uint64 - int8 as int64, numpy as float64)
            names = [f"{numba_type(out.aval.dtype)}({n})" if isinstance(x, Var) and x.aval.dtype != out.aval.dtype
                     else n for x, n in zip(eqn.inputs, names)]
        vectorizes = self.ranges is not None and not self.accumulating
        context = _Context(out.aval.dtype, index, self.helpers, vectorizes, self.vector_calls)
        expression = op.scalar(context, *names, **eqn.params)
        return self._emit(expression, depth, key)

    def _depth_of(self, name):
        """The loop level where the value `name` is computed (0 also for a number or None)."""
        depths = range(len(self.blocks) - 1, 0, -1)
        return next((depth for depth in depths if name in self.blocks[depth]["memo"].values()), 0)

    def _reduce(self, x, axes, dtype, monoid, index, key):
        """x reduced over `axes` by `monoid` in `dtype`, at `index` (of the kept axes)."""
        if self._streams(x.aval.shape, axes, index):
            return self._stream(x, axes, dtype, monoid, index, key)
        # The reduction runs in the innermost loop its result varies in (once per row for a
        # value per row: ir/fuse.py's `rows`); the loops inside that one are not open yet.
        outer = self._block_for(index)
        inside, self.blocks = self.blocks[outer + 1:], self.blocks[:outer + 1]
        accumulator = self._fresh()
        loop_vars, inner_index = self._reduction_loops(x, axes, index)
        wide = monoid.wide and self.ranges is not None and dtype == np.float32 and bool(loop_vars)
        self.blocks[outer]["lines"].append(f"{accumulator} = {const(monoid.start(dtype), np.float64 if wide else dtype)}")
        # Over one axis, the entries are first written with vector math (kernels/fastmath.py)
        # if they use any, then accumulated in order from that buffer: the same additions in
        # the same order, and the entries' loop vectorizes (softmax's exps). Otherwise the
        # entries are computed inside the accumulation, which does not vectorize.
        buffered, calls = self.ranges is not None and len(loop_vars) == 1, len(self.vector_calls)
        last = next(reversed(loop_vars.values()), None)  # (a wide sum's block starts have no sign LLVM knows)
        self.unsigned, unsigned = ({last: f"u{last}"}, [f"u{last} = uint64({last})"]) if wide else ({}, [])
        self.accumulating += not buffered
        entry_lines, v = self._entry_block(x, inner_index, dtype, loop_vars.values())
        self.accumulating -= not buffered
        self.unsigned, entry_lines = {}, unsigned + entry_lines
        extents = {var: self._extent(x.aval.shape[a]) for a, var in loop_vars.items()}
        loops = [f"for {var} in range({extent}):" for var, extent in extents.items()]
        if buffered and len(self.vector_calls) > calls:
            ((var, extent),) = extents.items()  # (one axis)
            buffer = f"b{self.reductions}"
            self.blocks[0]["lines"].append(f"{buffer} = {self._empty(extent, f'np.{np.dtype(dtype).name}')}")
            self.blocks[outer]["lines"].extend(nest(loops, [entry_lines + [f"{buffer}[{var}] = {v}"]]))
            v, entry_lines = f"{buffer}[{'u' if wide else ''}{var}]", unsigned
        body = entry_lines + self._step(v, dtype, monoid, accumulator)
        if wide:  # float32 sums of WIDE_BLOCK entries (a short chain of fast adds) added up in float64
            extent, partial, end = extents[last], self._fresh(), f"{last}_0 + {WIDE_BLOCK}"
            loops[-1] = f"for {last}_0 in range(0, {extent}, {WIDE_BLOCK}):"
            body = [f"{partial} = {const(0, dtype)}", f"for {last} in range({last}_0, {end} if {end} < {extent} else {extent}):",
                    *indent(entry_lines + self._step(v, dtype, monoid, partial)), f"{accumulator} += float64({partial})"]
        self.blocks[outer]["lines"].extend(nest(loops, [body]))  # (a wide sum: in float32 under a name of its own)
        accumulator = self._emit(f"float32({accumulator})", outer, key) if wide else accumulator
        self.blocks[outer]["memo"][key] = accumulator
        self.blocks += inside
        return accumulator

    def _empty(self, shape, dtype):
        """A local array's allocation: a cached helper's call (kernels/scratch.py)."""
        self.helpers.add(SCRATCH)
        return f"{import_alias(SCRATCH)}({shape}, {dtype})"

    def _reduction_loops(self, x, axes, index):
        """A new reduction's loop variables (reduced axis of size other than 1 -> name) and the
        index of its entries in x (`index` on the kept axes)."""
        self.reductions += 1
        loop_vars = {a: f"j{self.reductions}_{a}" for a in axes if x.aval.shape[a] != 1}
        return loop_vars, tuple(loop_vars.get(a, "0" if a in axes else index[a]) for a in range(x.aval.ndim))

    def _extent(self, size):
        """A new scalar parameter (m0, m1, ...) holding a reduction loop's length."""
        name = f"m{len(self.extents)}"
        self.extents.append((name, size))
        return name

    def _entry_block(self, x, index, dtype, loop_vars):
        """The lines computing x at `index` as an entry of a reduction (see _entry), in a block
        of their own whose loop variables are the reduction's (`loop_vars`); and its name."""
        self.blocks.append(_block(set(loop_vars)))
        v = self._entry(x, index, dtype)
        return self.blocks.pop()["lines"], v

    def _entry(self, x, index, dtype):
        """x at `index` as an entry of a reduction accumulating in `dtype`."""
        v = self.value(x, index)  # (a sum of bools or int32s accumulates in int64, as numpy's)
        return v if x.aval.dtype == dtype else f"{numba_type(dtype)}({v})"

    def _step(self, v, dtype, monoid, accumulator, local=False):
        """The lines adding the entry `v` to `accumulator`; local: through a local variable
        (the accumulator is an array's entry)."""
        step = monoid.step
        if monoid.float_helper is not None and np.issubdtype(np.dtype(dtype), np.floating):
            self.helpers.add(monoid.float_helper)
            step = f"{{acc}} = {import_alias(monoid.float_helper)}({{acc}}, {{v}})"
        if not local:
            return [step.format(acc=accumulator, v=v)]
        total = self._fresh()
        return [f"{total} = {accumulator}", step.format(acc=total, v=v), f"{accumulator} = {total}"]

    def _streams(self, shape, axes, index):
        """Does a reduction of a value of `shape` over `axes` at `index` stream its input?
        Its reduced axes (of size other than 1) must all come before its kept ones, and its
        kept axes be read at the kernel's own loop variables, all of them, in order (so
        each output entry is one accumulator entry and the threads' rows lo..hi are the
        accumulator's). Depends on ranks, size-1 axes and the expression only."""
        if self.ranges is None or len(self.blocks) != len(self.loops) + 1:
            return False
        reduced = [a for a in axes if shape[a] != 1]
        kept = [a for a, n in enumerate(shape) if a not in axes and n != 1]
        return bool(reduced and kept) and max(reduced) < min(kept) and [index[a] for a in kept] == self.loops

    def _stream(self, x, axes, dtype, monoid, index, key):
        """A streamed reduction (see the module's doc): the lines that fill its accumulator
        array for the rows blo..bhi, kept in self.streams; returns the name of its entry at
        `index`, read in the kernel's innermost loop. A block of fewer than STREAM_MIN
        entries (a sum of a tall, narrow array) is filled in the plain order instead: there
        each row would add to the same few entries, a chain of loads and stores."""
        loop_vars, inner_index = self._reduction_loops(x, axes, index)
        array = f"a{self.reductions}"
        cell = f"{array}[{', '.join([f'uint64({self.loops[0]} - blo)'] + self.loops[1:])}]"
        loops = [f"for {var} in range({self._extent(x.aval.shape[a])}):" for a, var in loop_vars.items()]
        kernel_loops = [f"for {var} in range({extent}):" for var, extent in zip(self.loops, self.ranges)]
        start = const(monoid.start(dtype), dtype)
        # Streamed: the reduction's loops outside the kernel's, each step on the entry in the array.
        reduction, *levels = self._levels(x, inner_index, dtype, monoid, loop_vars.values(), cell, True)
        streamed = nest(kernel_loops, [[f"{cell} = {start}"]]) + nest(loops + kernel_loops, [reduction] + levels)
        # Plain: the kernel's loops outside, a scalar accumulator per entry.
        accumulator = self._fresh()
        *levels, reduction = self._levels(x, inner_index, dtype, monoid, loop_vars.values(), accumulator, False)
        levels[-1] = levels[-1] + [f"{accumulator} = {start}"] + nest(loops, [reduction]) + [f"{cell} = {accumulator}"]
        width = " * ".join(["(bhi - blo)"] + self.ranges[1:])
        lines = [f"if {width} >= {STREAM_MIN}:", *indent(streamed), "else:", *indent(nest(kernel_loops, levels))]
        rows = ["brows if brows < hi - lo else hi - lo"] + self.ranges[1:]  # (the block's rows, the other loops' lengths)
        shape = rows[0] if len(rows) == 1 else f"({', '.join(rows)})"
        numpy_dtype = "np.bool_" if np.dtype(dtype) == np.bool_ else f"np.{np.dtype(dtype).name}"
        self.streams.append((f"{array} = {self._empty(shape, numpy_dtype)}", lines))
        return self._emit(cell, len(self.blocks) - 1, key)

    def _levels(self, x, index, dtype, monoid, loop_vars, accumulator, streamed):
        """The lines of a streamed reduction's levels, each step adding x at `index` to
        `accumulator`: the reduction's level (its variables `loop_vars`) then the kernel's
        (streamed), or the kernel's then the reduction's. Values of their own (block 0, the
        numbers, is shared with the kernel's loops)."""
        kernel_blocks = self.blocks
        reduction, levels = _block(set(loop_vars)), [_block({var}) for var in self.loops]
        self.blocks = [kernel_blocks[0]] + ([reduction] + levels if streamed else levels + [reduction])
        if streamed:  # the first loop's bounds (blo, bhi) have no sign Numba knows: its loads
            first = self.loops[0]  # index with an unsigned copy (plain strided loads, which vectorise)
            self.unsigned = {first: "u" + first[1:]}
            levels[0]["lines"].append(f"{self.unsigned[first]} = uint64({first})")
        self.blocks[-1]["lines"].extend(self._step(self._entry(x, index, dtype), dtype, monoid, accumulator, streamed))
        blocks, self.blocks, self.unsigned = self.blocks[1:], kernel_blocks, {}
        return [block["lines"] for block in blocks]

    def lines(self, depth=None):
        """The lines of one loop level (0: outside every loop), or of all levels in order
        (each level's lines use only values of the levels before it)."""
        blocks = self.blocks if depth is None else [self.blocks[depth]]
        return [line for block in blocks for line in block["lines"]]


def indent(lines, levels=1):
    """The lines, each `levels` levels (four spaces each) deeper."""
    return ["    " * levels + line for line in lines]


def nest(headers, levels):
    """Nested loops, `headers` outermost first: the lines of each level, the level's header (if
    any) indented as deep as the level outside it. `levels`: the lines of the innermost levels,
    innermost last (the ones outside them have none; level 0 is outside every loop)."""
    bodies = [[]] * (len(headers) + 1 - len(levels)) + list(levels)
    lines = list(bodies[0])
    for depth, (header, body) in enumerate(zip(headers, bodies[1:])):
        lines += indent([header], depth) + indent(body, depth + 1)
    return lines


def _block(loop_vars):
    """A loop level: its loop variables, its lines, and the values computed in it (memo:
    (id of Var, index) -> name)."""
    return {"vars": loop_vars, "lines": [], "memo": {}}


def kernel_name(schedule, kernel):
    """A name that says what a kernel computes, from its first ops ("k_add_relu"; the prefix
    keeps it from shadowing a function its body calls, such as abs)."""
    ops = list(dict.fromkeys(schedule.fused_ops(kernel).split()))
    return "_".join(["k"] + ops[:3] + (["etc"] if len(ops) > 3 else []))
