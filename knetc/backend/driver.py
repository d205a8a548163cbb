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

from ..ir.fuse import Call, Kernel, Matmul, Reshape
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
        self.reuse = getattr(schedule, "reuse", None) or {}  # out Var -> donor Var (ir/memory.py)
        self.release = getattr(schedule, "release", None) or {}  # step index -> Vars dead after it
        self.kernels, self._bound = {}, {}  # driver name -> KernelSource; kernel text -> driver name
        self.lines = []
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

    def generate(self):
        """The Generated driver and kernels."""
        schedule, names = self.schedule, self.names
        program = schedule.program
        write = {Kernel: self.kernel, Matmul: self.matmul, Reshape: self.reshape, Call: self.call}
        for i, (comments, step) in enumerate(commented_steps(schedule)):
            for comment in comments:
                self.emit(comment)
            write[type(step)](step)
            if self.release.get(i):  # free buffers at their last read (the pool or malloc takes them back)
                self.emit(f"del {', '.join(names.arg(v) for v in self.release[i])}")
        results = [names.arg(v) for v in names.driver_outputs(program)]
        self.emit(f"return ({', '.join(results)}{',' if len(results) == 1 else ''})")
        counts = {kind: sum(isinstance(s, kind) for s in schedule.steps) for kind in (Matmul, Call)}
        lines = [f"# Generated by knetc from {program.name} ({self.target}): {self.launches} kernel launches "
                 f"of {len(self.kernels)} kernels, {counts[Matmul]} GEMMs, {counts[Call]} library calls.",
                 "import math", "import numpy as np", "from knetc.backend.cache import kernel",
                 *routine_imports(schedule, self.target), self.header.rstrip(), ""]
        lines += [f"{name} = kernel({source.digest!r})  # {source.ops}" for name, source in self.kernels.items()]
        args = ", ".join(names.arg(v) for v in names.driver_args(program))
        lines += ["", "", f"def driver({args}):"] + self.lines
        return Generated("\n".join(line for line in lines if line is not None) + "\n", dict(self.kernels))

