"""CPU code generation: each kernel a shape-generic `numba.njit` loop nest whose outer loop
runs over a range of rows it is given (so that the driver can split large outputs across
threads: runtime.threads.in_parallel), and a Python driver that calls them and BLAS
(kernels/matmul.py; the Runner sets BLAS's threads for the program: runtime/threads.py)."""
import numpy as np

from ..ir.fuse import Call, Matmul
from ..runtime import compile_workers, threads
from . import driver
from .expressions import STREAM_BLOCK, KernelBody, indent, kernel_module, kernel_name, nest

# A kernel is a loop nest: a value per row (a row's max) of any leading axes is computed
# once per row, in the loop over the rows, so fusion may put it in the kernel that reads it
# (ir/fuse.py's `rows`).
FUSES_ROWS = "nest"


def kernel_source(schedule, kernel, cache=True):
    """(KernelSource, KernelBody) for one fused kernel. The loops run over the output's axes
    of size other than 1, the outermost over the rows lo..hi, the others to lengths read
    from `out` at run time.

    A reduction over leading axes (a column sum) streams its input row by row
    (expressions.KernelBody._stream): the rows lo..hi are then taken in blocks blo..bhi of
    about STREAM_BLOCK output entries, each block's reductions filled into local arrays
    before its loops over the output read them. A thread's entries are its rows' only."""
    axes = [axis for axis, n in enumerate(kernel.out.aval.shape) if n != 1]
    loops = [f"i{axis}" for axis in axes]
    ranges = ["blo, bhi"] + [f"n{axis}" for axis in axes[1:]]
    body = KernelBody(schedule, kernel, loops, ranges)  # a value is read in the loop it varies in
    store = body.store()
    name = kernel_name(schedule, kernel)
    params = list(body.arrays.values()) + ["out"] + [p for p, _, _ in body.parameters] + (["lo", "hi"] if loops else [])
    lines = [f"n{axis} = out.shape[{axis}]" for axis in axes[1:]] + body.lines(0)
    if body.streams:
        inner = " * ".join(ranges[1:])
        rows = f"1 + {STREAM_BLOCK} // ({inner} + 1)" if inner else f"{STREAM_BLOCK}"
        lines += [f"brows = {rows}"] + [allocation for allocation, _ in body.streams]  # rows per block (at least 1)
        lines += ["for blo in range(lo, hi, brows):", "    bhi = blo + brows if blo + brows < hi else hi"]
    extents = ranges if body.streams else ["lo, hi"] + ranges[1:]
    loop_nest = nest([f"for {var} in range({extent}):" for var, extent in zip(loops, extents)],
                     [body.lines(k) for k in range(1, len(loops) + 1)]) + indent([store], len(loops))
    lines += indent([line for _, block in body.streams for line in block] + loop_nest, 1 if body.streams else 0)
    # no_cfunc_wrapper: drivers call a kernel through its Python wrapper only; the C-callable
    # one Numba also builds by default costs about 10 ms of compile time per kernel.
    lines = [f"@njit(cache={cache}, nogil=True, error_model='numpy', no_cfunc_wrapper=True)",
             f"def {name}({', '.join(params)}):", *indent(lines)]
    ops = schedule.fused_ops(kernel)
    return driver.KernelSource(name, kernel_module("cpu", ops, body.helpers, lines), ops), body


class Driver(driver.Driver):
    target = "cpu"
    header = "from knetc.kernels.matmul import matmul\nfrom knetc.runtime.threads import in_parallel"

    empty = "np.empty({shape}, np.{dtype})"
    zeros = "np.zeros({shape}, np.{dtype})"
    copy = "{name}.copy()"
    store = "{destination} = {value}"
    kernel_source = staticmethod(kernel_source)

    def launch(self, name, arguments, out, body=None):
        """A kernel call; with a large output, its rows split across threads."""
        arguments, rows = ", ".join(arguments), next((n for n in out.aval.shape if n != 1), None)
        work = int(np.prod(out.aval.shape)) * int(np.prod([size for _, size in body.extents]))
        self.launches += 1
        if rows is None:  # one element: no loops
            self.emit(f"{name}({arguments})")
        elif work >= threads.PARALLEL_MIN_WORK:
            self.emit(f"in_parallel({name}, {rows}, {arguments})")
        else:
            self.emit(f"{name}({arguments}, 0, {rows})")

    def matmul(self, step):
        dtype = np.dtype(step.out.aval.dtype).name
        operands = []
        for var, transposed in ((step.a, step.trans_a), (step.b, step.trans_b)):
            operand = self.names.arg(var) + (".T" if transposed else "")
            operands.append(operand if var.aval.dtype == step.out.aval.dtype else f"{operand}.astype(np.{dtype})")
        out = self.names.arg(step.out)
        if dtype in ("float32", "float64") and step.a.aval.ndim == step.b.aval.ndim == 2:
            self.allocate(step.out)
            self.emit(f"matmul({', '.join(operands)}, {out})")  # (SciPy's BLAS: kernels/matmul.py)
        else:  # vectors and integer products: numpy's
            scalar = ".reshape((1,))" if step.out.aval.shape == () else ""  # np.dot of vectors gives a number
            self.emit(f"{out} = np.dot({', '.join(operands)}){scalar}")


def generate(schedule, cache=True):
    """The driver and kernels of a schedule (driver.Generated). cache: Numba's on-disk cache."""
    return Driver(schedule, cache).generate()


class Runner:
    """Calls the generated driver with contiguous inputs and the program's constants."""

    def __init__(self, executable):
        self.driver, self.constants = executable.module.driver, executable.constants
        steps = [step for _, step in executable.schedule.walk()]
        gemms = [np.prod(s.out.aval.shape) * s.a.aval.shape[0 if s.trans_a else -1] for s in steps if isinstance(s, Matmul)]
        self.blas_threads = threads.threads_for({s.eqn.op.blas for s in steps if isinstance(s, Call)}, gemms)
        self.kernels = [getattr(executable.module, name) for name in executable.generated.kernels]

    def __call__(self, arrays):
        threads.use_threads(self.blas_threads)
        return self.driver(*self._arguments(arrays))

    def _arguments(self, arrays):
        return [np.ascontiguousarray(a) for a in arrays] + self.constants

    def prepare(self, arrays):
        """Before the first run: compile the kernels that are new to this process and to the
        cache (Numba would compile them one by one as the driver calls them) in several
        processes at once (runtime/compile_workers.py). {kernel: signatures other processes
        compiled}."""
        return compile_workers.compile_calls(self.driver, self._arguments(arrays), self.kernels)
