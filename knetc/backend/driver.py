"""What code generation produces, and the host driver both targets share.

A schedule becomes shape-generic kernels (each its own module, shared by every program
that needs the same text; see expressions.py) and one driver: a plain Python function
that runs the steps in order, names values as the IR does (`v8` is `%8`), puts the
user's source lines before the steps computed from them, writes the sizes in, and follows
the memory plan (ir/memory.py: a dead buffer taken over, `del` at a buffer's last read):

    add_relu = kernel("3fa2c1d0e9b8a7f6")  # add relu

    def driver(v0, v1, v2):
        # mnist_mlp.py:30  x = kn.relu(x @ w + b)
        v3 = np.dot(v2, v0)
        v5 = np.empty((100, 64), np.float32)
        add_relu(v3, v1, v5)
        return (v5,)

A new batch size writes a new driver, which is Python (nothing to compile), around the
same kernels. The targets (cpu.py, cuda.py) say how to allocate, launch and multiply.
"""
from dataclasses import dataclass

import numpy as np

from ..ir.fuse import Call, Kernel, Loop, Matmul, Reshape
from ..ir.loops import covers, row_index
from ..ir.memory import outputs, storage_roots
from .cache import digest
from .expressions import indent
from .names import Names, call_expression, commented_steps, driver_args, driver_outputs, physical_shape, routine_imports


@dataclass
class KernelSource:
    """One kernel module: `name` is its function, `text` the module's source, `ops` what it
    computes ("add relu"). signature: the Numba signature (CUDA kernels; tests compile them
    to PTX without a GPU)."""
    name: str
    text: str
    ops: str
    signature: str = None

    @property
    def digest(self):
        return digest(self.text)


@dataclass
class Generated:
    """The generate stage's value: the driver module's source and the kernels it binds
    (its name for each -> KernelSource)."""
    driver: str
    kernels: dict


class Driver:
    """Writes the driver of a schedule; a target subclasses it (cpu.Driver, cuda.Driver)
    with its header, array expressions, kernel sources, kernel launches and matmuls:

    launch(name, arguments, out, body): emit the launch of kernel `name` writing `out` (a
    Var; body: its KernelBody); matmul(step): emit a Matmul step."""
    target = None
    header = ""  # the target's imports and helpers, after the common ones
    # The target's array expressions: a new array and a zero-filled one (of a shape and a dtype's
    # name), a copy of the array `name` (a new buffer), and the statement copying the array
    # `value` into the array view `destination`.
    empty = zeros = copy = store = None
    kernel_source = None  # (schedule, kernel, cache) -> (KernelSource, KernelBody)

    def __init__(self, schedule, cache=True):
        self.schedule, self.cache, self.names = schedule, cache, Names(schedule.program)
        self.kernels, self._bound = {}, {}  # driver name -> KernelSource; kernel text -> driver name
        self.functions = []  # the loop bodies' functions (lists of lines), inner loops first
        self.launches = 0

    # ------------------------------------------------------------------ for the targets
    def bind(self, source):
        """The driver's name for a kernel, binding each distinct kernel once."""
        if source.text not in self._bound:
            name, n = source.name, 2
            while name in self.kernels:
                name, n = f"{source.name}_{n}", n + 1
            self.kernels[name], self._bound[source.text] = source, name
        return self._bound[source.text]

    def emit(self, line):
        self.lines.append("    " + line)

    def allocate(self, var, name=None, dtype=None, zeros=False):
        """Storage for `var` (in `dtype` when given): a dead buffer of the same size when the
        memory plan gives one, else a new one (zero-filled with `zeros`). Returns its name."""
        name = name or self.names.arg(var)
        reuse = getattr(self.schedule, "reuse", None) or {}  # out Var -> donor Var (ir/memory.py)
        donor = reuse.get(var) if dtype is None else None
        if donor is not None:
            self.emit(f"{name} = {self.names.arg(donor)}.reshape({physical_shape(var)})")
        else:
            array = (self.zeros if zeros else self.empty).format(
                shape=physical_shape(var), dtype=np.dtype(dtype or var.aval.dtype).name)
            self.emit(f"{name} = {array}")
        return name

    # ------------------------------------------------------------------ the steps
    def kernel(self, step):
        source, body = self.kernel_source(self.schedule, step, self.cache)
        out = self.allocate(step.out)
        arguments = [self.names.arg(x) for x in step.inputs] + [out] + [value for _, _, value in body.parameters]
        self.launch(self.bind(source), arguments, step.out, body)

    def reshape(self, step):
        block = f"[{step.index}]" if step.index is not None else ""
        self.emit(f"{self.names.arg(step.out)} = {self.names.arg(step.src)}{block}.reshape({physical_shape(step.out)})")

    def call(self, step):
        self.allocate(step.out)
        self.emit(call_expression(step, self.names, self.target))

    def loop(self, step):
        """A loop region: its body becomes a function of the counter, the carries, the
        invariants, the sliced arrays and the stacked arrays, called once per step:

            v20 = np.empty((128, 32, 64), np.float32)
            v11 = v3
            for t9 in range(128):
                v11 = loop9(t9, v11, v7, v8, v5, v20)
        """
        spec, body, names = step.eqn.params["spec"], step.body, self.names
        number = names.arg(step.eqn.out)[1:]
        function, counter = f"loop{number}", f"t{number}"
        k, p = spec.carried, spec.invariant
        carries, stacks = step.outs[:k], step.outs[k:]
        for stack, (rows, scale, offset) in zip(stacks, spec.stacked):  # (the plan reuses no buffer for them)
            self.allocate(stack, zeros=not covers(rows, spec.length, scale, offset))
        sources = [names.arg(x) for x in step.eqn.inputs[k + p:]]
        params = [counter] + [names.arg(v) for v in body.program.inputs[:k + p]]
        params += list(dict.fromkeys(s for s in sources if s not in params))  # (one parameter per array)
        params += [names.arg(s) for s in stacks]
        # The body's function: the sliced arrays' rows first, the stacked outputs' rows stored last.
        prologue = [f"{names.arg(v)} = {_row(source, row_index(counter, scale, offset), not v.aval.shape)}"
                    for v, source, (scale, offset) in zip(body.program.inputs[k + p:], sources, spec.rows)]
        allocated = {out for _, s in body.walk() for out in outputs(s) if not isinstance(s, Reshape)}
        roots = storage_roots(body)  # (the value whose buffer holds a value, through views)
        # A carry needs a buffer of its own (the next step reads it while writing others).
        results = [names.arg(y) if roots.get(y, y) in allocated else self.copy.format(name=names.arg(y))
                   for y in body.program.outputs[:k]]
        epilogue = [self.store.format(destination=_row(names.arg(stack), row_index(counter, scale, offset),
                                                       stack.aval.ndim <= 1), value=names.arg(y))
                    for y, stack, (_, scale, offset) in zip(body.program.outputs[k:], stacks, spec.stacked)]
        epilogue += [f"return {', '.join(results)}"] if results else []
        before = self.launches
        self.functions.append([f"def {function}({', '.join(params)}):"] + self.function(body, prologue, epilogue))
        self.launches += (self.launches - before) * (spec.length - 1)  # (the header counts a run's launches)
        carried = [names.arg(c) for c in carries]
        arguments = [counter, *carried, *(names.arg(x) for x in step.eqn.inputs[k:k + p]), *params[1 + k + p:]]
        if k:
            self.emit(f"{', '.join(carried)} = {', '.join(names.arg(x) for x in step.eqn.inputs[:k])}")
        order = f"{spec.length - 1}, -1, -1" if spec.reverse else f"{spec.length}"
        self.emit(f"for {counter} in range({order}):")
        call = f"{function}({', '.join(arguments)})"
        self.emit(f"    {', '.join(carried)} = {call}" if k else f"    {call}")

    # ------------------------------------------------------------------ functions
    def function(self, schedule, prologue, epilogue):
        """The body lines of the function running `schedule`'s steps (indented)."""
        saved = self.schedule, getattr(self, "lines", None)
        self.schedule, self.lines = schedule, []
        release = getattr(schedule, "release", None) or {}  # step index -> Vars dead after it
        write = {Kernel: self.kernel, Matmul: self.matmul, Reshape: self.reshape, Call: self.call, Loop: self.loop}
        for i, (comments, step) in enumerate(commented_steps(schedule)):
            self.lines += indent(comments)
            write[type(step)](step)
            if release.get(i):  # free buffers at their last read (the pool or malloc takes them back)
                self.emit(f"del {', '.join(self.names.arg(v) for v in release[i])}")
        lines = indent(prologue) + self.lines + indent(epilogue)
        self.schedule, self.lines = saved
        return lines

    def generate(self):
        """The Generated driver and kernels."""
        program, names = self.schedule.program, self.names
        results = [names.arg(v) for v in driver_outputs(program)]
        body = self.function(self.schedule, [], [f"return ({', '.join(results)}{',' if len(results) == 1 else ''})"])
        counts = {kind: _per_run(self.schedule, kind) for kind in (Matmul, Call)}
        lines = [f"# Generated by knetc from {program.name} ({self.target}): {self.launches} kernel launches "
                 f"of {len(self.kernels)} kernels, {counts[Matmul]} GEMMs, {counts[Call]} library calls.",
                 "import math", "import numpy as np", "from knetc.backend.cache import kernel",
                 *routine_imports(self.schedule, self.target), self.header.rstrip(), ""]
        lines += [f"{name} = kernel({source.digest!r})  # {source.ops}" for name, source in self.kernels.items()]
        for function in self.functions:
            lines += ["", ""] + function
        lines += ["", "", f"def driver({', '.join(names.arg(v) for v in driver_args(program))}):"] + body
        return Generated("\n".join(lines) + "\n", dict(self.kernels))


def _row(array, row, scalar):
    """The row `row` of an array of rows; scalar: the rows are 0-d, stored as (1,) (a slice)."""
    return f"{array}[{row}:{row} + 1]" if scalar else f"{array}[{row}]"


def _per_run(schedule, kind):
    """How many steps of `kind` one run of the schedule takes (a loop's, once per step)."""
    return sum(isinstance(s, kind) + (s.eqn.params["spec"].length * _per_run(s.body, kind) if isinstance(s, Loop) else 0)
               for s in schedule.steps)
