"""CPU code generation: each kernel a shape-generic `numba.njit` loop nest (parallel over the
outer loop when the work is large), and a Python driver that calls them and numpy's BLAS."""
import numpy as np

from ..ir.fuse import Call
from ..runtime import threads
from . import driver
from .expressions import KernelBody, helper_imports, kernel_name

PARALLEL_MIN_WORK = 1 << 16  # below this, threads cost more than they save

KERNEL_HEADER = """# knetc kernel (cpu): {ops}
import math
import numpy as np
from numba import njit, prange, float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, boolean
"""


def kernel_source(schedule, kernel, cache=True):
    """(KernelSource, its parameters after `out`) for one fused kernel. The loops run over
    the output's axes of size other than 1, their lengths read from `out` at run time."""
    logical = kernel.out.aval.shape
    loops = [(axis, f"i{axis}") for axis, n in enumerate(logical) if n != 1]
    body = KernelBody(schedule, kernel, [var for _, var in loops])  # a value is read in the loop it varies in
    index = tuple(f"i{axis}" if n != 1 else "0" for axis, n in enumerate(logical))
    result = body.root(index)
    work = int(np.prod(logical)) * int(np.prod([size for _, size in body.extents]))  # elements x reduction steps
    parallel = work >= PARALLEL_MIN_WORK and bool(loops)
    name = kernel_name(schedule, kernel)
    params = list(body.arrays.values()) + ["out"] + [p for p, _, _ in body.parameters]
    lines = [f"@njit(cache={cache}, parallel={parallel}, error_model='numpy')",
             f"def {name}({', '.join(params)}):"]
    indent = "    "
    lines += [f"{indent}n{axis} = out.shape[{axis}]" for axis, _ in loops]
    lines += [indent + line for line in body.lines(0)]
    for k, (axis, var) in enumerate(loops):
        iterator = "prange" if parallel and k == 0 else "range"
        lines.append(f"{indent}for {var} in {iterator}(n{axis}):")
        indent += "    "
        lines += [indent + line for line in body.lines(k + 1)]
    lines.append(f"{indent}out[{', '.join(index) if logical else '0'}] = {result}")
    header = KERNEL_HEADER.format(ops=schedule.fused_ops(kernel))
    header += "".join(line + "\n" for line in helper_imports(body.helpers, "cpu"))
    return driver.KernelSource(name, header + "\n\n" + "\n".join(lines) + "\n"), body.parameters


class Driver(driver.Driver):
    target = "cpu"

    def empty(self, shape, dtype):
        return f"np.empty({shape}, np.{dtype})"

    def launch(self, name, arguments, size):
        self.launches += 1
        self.emit(f"{name}({', '.join(arguments)})")

    def kernel_source(self, kernel):
        return kernel_source(self.schedule, kernel, self.cache)

    def matmul(self, step):
        dtype = np.dtype(step.out.aval.dtype).name
        operands = []
        for var, transposed in ((step.a, step.trans_a), (step.b, step.trans_b)):
            operand = self.names.arg(var) + (".T" if transposed else "")
            operands.append(operand if var.aval.dtype == step.out.aval.dtype else f"{operand}.astype(np.{dtype})")
        out = self.names.arg(step.out)
        if step.out in self.reuse:
            self.allocate(step.out)
            self.emit(f"np.dot({', '.join(operands)}, out={out})")
        else:
            scalar = ".reshape((1,))" if step.out.aval.shape == () else ""  # np.dot of vectors gives a number
            self.emit(f"{out} = np.dot({', '.join(operands)}){scalar}")


def generate(schedule, cache=True):
    """The driver and kernels of a schedule (driver.Generated). cache: Numba's on-disk cache."""
    return Driver(schedule, cache).generate()


class Runner:
    """Calls the generated driver with contiguous inputs and the program's constants."""

    def __init__(self, executable):
        self.driver, self.constants = executable.module.driver, executable.constants
        nested = any(isinstance(s, Call) and s.eqn.op.blas_in_prange for s in executable.schedule.steps)
        self.blas_threads = threads.threads_for(nested)
        threads.start_numba_pool()

    def __call__(self, arrays):
        threads.use_threads(self.blas_threads)
        return self.driver(*[np.ascontiguousarray(a) for a in arrays], *self.constants)
