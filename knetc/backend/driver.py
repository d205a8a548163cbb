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
from .names import Names, call_expression, commented_steps, physical_shape, routine_imports


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
    with its header, allocation, kernel launches, matmuls and kernel sources."""
    target = None
    header = ""  # the target's imports and helpers, after the common ones

    def __init__(self, schedule, cache=True):
        self.schedule, self.cache = schedule, cache
        self.names = Names(schedule.program)
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
            self.kernels[name] = source
            self._bound[source.text] = name
        return self._bound[source.text]

    def emit(self, line):
        self.lines.append("    " + line)

    def allocate(self, var, name=None, dtype=None):
        """Storage for `var` (in `dtype` when given): a dead buffer of the same size when the
        memory plan gives one, else a new one. Returns its name."""
        name = name or self.names.arg(var)
        donor = self.reuse.get(var) if dtype is None else None
        if donor is not None:
            self.emit(f"{name} = {self.names.arg(donor)}.reshape({physical_shape(var)})")
        else:
            self.emit(f"{name} = {self.empty(physical_shape(var), np.dtype(dtype or var.aval.dtype).name)}")
        return name

    def empty(self, shape, dtype):
        raise NotImplementedError

    def zeros(self, shape, dtype):
        raise NotImplementedError

    def copy(self, name):
        """An expression for a copy of the array `name` (a new buffer)."""
        raise NotImplementedError

    def store(self, destination, value):
        """A statement copying the array `value` into the array view `destination`."""
        raise NotImplementedError

    def launch(self, name, arguments, out, body=None):
        """Emit the launch of kernel `name` writing `out` (a Var; body: its KernelBody)."""
        raise NotImplementedError

    def kernel_source(self, kernel):
        raise NotImplementedError

    def matmul(self, step):
        raise NotImplementedError

    # ------------------------------------------------------------------ the steps
    def kernel(self, step):
        source, body = self.kernel_source(step)
        name = self.bind(source)
        out = self.allocate(step.out)
        arguments = [self.names.arg(x) for x in step.inputs] + [out] + [value for _, _, value in body.parameters]
        self.launch(name, arguments, step.out, body)

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
        spec, names = step.eqn.params["spec"], self.names
        number = names.arg(step.eqn.out)[1:]
        function, counter = f"loop{number}", f"t{number}"
        k, p, q = spec.carried, spec.invariant, len(spec.rows)
        carries, stacks = step.outs[:k], step.outs[k:]
        for stack, (rows, scale, offset) in zip(stacks, spec.stacked):
            fill = self.empty if covers(rows, spec.length, scale, offset) else self.zeros
            self.emit(f"{names.arg(stack)} = {fill(physical_shape(stack), np.dtype(stack.aval.dtype).name)}")
        sources = [names.arg(x) for x in step.eqn.inputs[k + p:]]
        params = [counter] + [names.arg(v) for v in step.body.program.inputs[:k + p]]
        params += list(dict.fromkeys(s for s in sources if s not in params))  # (one parameter per array)
        params += [names.arg(s) for s in stacks]
        before = self.launches
        self.functions.append(self.body_function(function, counter, step, params, sources))
        self.launches += (self.launches - before) * (spec.length - 1)  # (the header counts a run's launches)
        arguments = [counter] + [names.arg(x) for x in step.eqn.inputs[k:k + p]] + params[1 + k + p:]
        if k:
            self.emit(f"{', '.join(names.arg(c) for c in carries)} = "
                      f"{', '.join(names.arg(x) for x in step.eqn.inputs[:k])}")
        order = f"{spec.length - 1}, -1, -1" if spec.reverse else f"{spec.length}"
        self.emit(f"for {counter} in range({order}):")
        call = f"{function}({', '.join(arguments[:1] + [names.arg(c) for c in carries] + arguments[1:])})"
        self.emit(f"    {', '.join(names.arg(c) for c in carries)} = {call}" if k else f"    {call}")

    def body_function(self, function, counter, step, params, sources):
        """The lines of a loop body's function (see loop)."""
        spec, body, names = step.eqn.params["spec"], step.body, self.names
        k, p = spec.carried, spec.invariant
        prologue = []
        for v, source, (scale, offset) in zip(body.program.inputs[k + p:], sources, spec.rows):
            row = row_index(counter, scale, offset)
            block = f"{row}" if v.aval.shape else f"{row}:{row} + 1"  # (a 0-d row is stored as (1,))
            prologue.append(f"{names.arg(v)} = {source}[{block}]")
        allocated = {out for _, s in body.walk() for out in outputs(s) if not isinstance(s, Reshape)}
        epilogue, results = [], []
        for i, y in enumerate(body.program.outputs):
            text = names.arg(y)
            if i < k:  # a carry: a buffer of its own (the next step reads it while writing others)
                results.append(text if _storage(body, y) in allocated else self.copy(text))
            else:
                stack = names.arg(step.outs[i])
                rows, scale, offset = spec.stacked[i - k]
                row = row_index(counter, scale, offset)
                destination = f"{stack}[{row}]" if step.outs[i].aval.ndim > 1 else f"{stack}[{row}:{row} + 1]"
                epilogue.append(self.store(destination, text))
        returns = [f"return {', '.join(results)}"] if results else []
        lines = self.function(body, prologue, epilogue + returns)
        return [f"def {function}({', '.join(params)}):"] + lines

    # ------------------------------------------------------------------ functions
    def function(self, schedule, prologue, epilogue):
        """The body lines of the function running `schedule`'s steps (indented)."""
        saved = self.schedule, getattr(self, "lines", None), getattr(self, "reuse", None), getattr(self, "release", None)
        self.schedule, self.lines = schedule, []
        self.reuse = getattr(schedule, "reuse", None) or {}  # out Var -> donor Var (ir/memory.py)
        self.release = getattr(schedule, "release", None) or {}  # step index -> Vars dead after it
        for line in prologue:
            self.emit(line)
        write = {Kernel: self.kernel, Matmul: self.matmul, Reshape: self.reshape, Call: self.call, Loop: self.loop}
        for i, (comments, step) in enumerate(commented_steps(schedule)):
            for comment in comments:
                self.emit(comment)
            write[type(step)](step)
            if self.release.get(i):  # free buffers at their last read (the pool or malloc takes them back)
                self.emit(f"del {', '.join(self.names.arg(v) for v in self.release[i])}")
        for line in epilogue:
            self.emit(line)
        lines = self.lines
        self.schedule, self.lines, self.reuse, self.release = saved
        return lines

    def generate(self):
        """The Generated driver and kernels."""
        schedule, names = self.schedule, self.names
        program = schedule.program
        results = [names.arg(v) for v in names.driver_outputs(program)]
        body = self.function(schedule, [], [f"return ({', '.join(results)}{',' if len(results) == 1 else ''})"])
        counts = {kind: _per_run(schedule, kind) for kind in (Matmul, Call)}
        lines = [f"# Generated by knetc from {program.name} ({self.target}): {self.launches} kernel launches "
                 f"of {len(self.kernels)} kernels, {counts[Matmul]} GEMMs, {counts[Call]} library calls.",
                 "import math", "import numpy as np", "from knetc.backend.cache import kernel",
                 *routine_imports(schedule, self.target), self.header.rstrip(), ""]
        lines += [f"{name} = kernel({source.digest!r})  # {source.ops}" for name, source in self.kernels.items()]
        for function in self.functions:
            lines += ["", ""] + function
        args = ", ".join(names.arg(v) for v in names.driver_args(program))
        lines += ["", "", f"def driver({args}):"] + body
        return Generated("\n".join(line for line in lines if line is not None) + "\n", dict(self.kernels))


def _storage(schedule, var):
    """The value whose buffer holds `var` (through views)."""
    return storage_roots(schedule).get(var, var)


def _per_run(schedule, kind):
    """How many steps of `kind` one run of the schedule takes (a loop's, once per step)."""
    return sum(isinstance(s, kind) + (s.eqn.params["spec"].length * _per_run(s.body, kind) if isinstance(s, Loop) else 0)
               for s in schedule.steps)
