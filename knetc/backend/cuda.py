"""CUDA code generation: each kernel a shape-generic `numba.cuda.jit` function with one
thread per output element, and a Python host driver that allocates outputs from the
memory pool, launches the kernels and calls GEMM (cuBLAS, else knetc's tiled kernel).

A kernel recovers its output index from the thread number by div/mod over the output's
shape (read at run time), then runs the same scalar body as the CPU loop nest (see
expressions.KernelBody): a reduction is a loop inside the thread. Each kernel module lists
its kernel's exact Numba signature in PTX_SIGNATURES, so tests can compile it to PTX
without a GPU.

Matmul operands of a dtype other than the product's (numpy promotion, e.g. float32 @
float64) are converted first by a generated cast kernel: GEMM takes one dtype. Integer
products have no GEMM and are refused at generation time.
"""
import numpy as np

from ..runtime.device import device_wrapper, gpu_available, is_device_array
from . import driver
from .expressions import KernelBody, helper_imports, kernel_name, numba_type
from .names import physical_shape

BLOCK = 256  # threads per block

KERNEL_HEADER = """# knetc kernel (cuda): {ops}
import math
import numpy as np
from numba import cuda, float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, boolean
"""

DRIVER_HEADER = f"""from knetc.kernels.gemm import gemm as tiled_gemm
from knetc.runtime import cublas
from knetc.runtime.pool import device_array

BLOCK = {BLOCK}  # threads per block
gemm = cublas.gemm if cublas.available() else tiled_gemm  # out = op(a) @ op(b)


def launch(n):
    \"\"\"(blocks, threads per block) for one thread per element of an n-element output.\"\"\"
    threads = min(n, BLOCK)
    return (n + threads - 1) // threads, threads
"""


# ----------------------------------------------------------------------------- kernels

def thread_indices(logical):
    """(sizes, indices, count): lines reading the lengths n0, n1, ... of the output's axes of
    size other than 1, lines computing their indices i0, i1, ... from the thread number t
    (row-major), and the number of threads that have work."""
    axes = [axis for axis, n in enumerate(logical) if n != 1]
    sizes = [f"n{axis} = out.shape[{axis}]" for axis in axes]
    if len(axes) <= 1:
        return sizes, [f"i{axis} = t" for axis in axes], f"n{axes[0]}" if axes else "1"
    indices = ["rest = t"]
    for axis in reversed(axes[1:]):
        indices += [f"i{axis} = rest % n{axis}", f"rest //= n{axis}"]
    indices.append(f"i{axes[0]} = rest")
    return sizes, indices, " * ".join(f"n{axis}" for axis in axes)


def _kernel(name, params, logical, body_lines, store):
    sizes, indices, count = thread_indices(logical)
    lines = [f"def {name}({', '.join(params)}):", "    t = cuda.grid(1)"]
    lines += ["    " + line for line in sizes]
    lines.append(f"    if t < {count}:")
    lines += ["        " + line for line in indices + body_lines + [store]]
    return lines


def _module(name, ops, lines, signature, helpers, cache):
    """A CUDA kernel module: the imports its body needs, the kernel, its signature."""
    header = KERNEL_HEADER.format(ops=ops) + "".join(line + "\n" for line in helper_imports(helpers, "cuda"))
    text = "\n".join([header, "", f"@cuda.jit(cache={cache})", *lines, "", "",
                      f"PTX_SIGNATURES = {{{name!r}: {signature!r}}}  # for compiling to PTX ahead of time (tests/ptx.py)"])
    return driver.KernelSource(name, text + "\n", ops, signature)


def kernel_source(schedule, kernel, cache=True):
    """(KernelSource, KernelBody) for one fused kernel."""
    logical = kernel.out.aval.shape
    body = KernelBody(schedule, kernel)  # one thread per element: no loops of its own
    index = tuple(f"i{axis}" if n != 1 else "0" for axis, n in enumerate(logical))
    result = body.root(index)
    name = kernel_name(schedule, kernel)
    params = list(body.arrays.values()) + ["out"] + [p for p, _, _ in body.parameters]
    store = f"out[{', '.join(index) if logical else '0'}] = {result}"
    types = [array_type(x) for x in kernel.inputs + [kernel.out]] + [kind for _, kind, _ in body.parameters]
    lines = _kernel(name, params, logical, body.lines(), store)
    return _module(name, schedule.fused_ops(kernel), lines, f"void({', '.join(types)})", body.helpers,
                   cache), body


def cast_source(var, dtype, cache=True):
    """A kernel converting a stored value of `var`'s rank and dtype to `dtype` (a
    mixed-dtype matmul operand)."""
    logical = physical_shape(var)
    index = ", ".join(f"i{axis}" if n != 1 else "0" for axis, n in enumerate(logical))
    name = f"cast_{np.dtype(var.aval.dtype).name}_to_{np.dtype(dtype).name}"
    lines = _kernel(name, ["x0", "out"], logical, [], f"out[{index}] = {numba_type(dtype)}(x0[{index}])")
    signature = f"void({array_type(var)}, {array_type(var, dtype)})"
    return _module(name, f"{np.dtype(var.aval.dtype).name} -> {np.dtype(dtype).name} for a matmul", lines,
                   signature, (), cache)


def array_type(var, dtype=None):
    """The Numba type of a stored value: a C-contiguous array, e.g. float32[:, ::1]."""
    ndim = len(physical_shape(var))
    return f"{numba_type(dtype or var.aval.dtype)}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


# ----------------------------------------------------------------------------- driver

class Driver(driver.Driver):
    target = "cuda"
    header = DRIVER_HEADER

    def empty(self, shape, dtype):
        return f"device_array({shape}, np.{dtype})"

    def launch(self, name, arguments, out, body=None):
        size = int(np.prod(out.aval.shape))
        if size:  # an empty grid is a launch error; an empty output needs no work
            self.launches += 1
            self.emit(f"{name}[launch({size})]({', '.join(arguments)})")

    def kernel_source(self, kernel):
        return kernel_source(self.schedule, kernel, self.cache)

    def matmul(self, step):
        dtype = np.dtype(step.out.aval.dtype)
        if dtype not in (np.float32, np.float64):
            raise NotImplementedError(
                f"CUDA target: matmul producing {dtype.name} is not supported (cuBLAS and knetc's GEMM "
                f"take float32 or float64); convert the operands with .astype(np.float32) first")
        operands = [self.operand(x, dtype) for x in (step.a, step.b)]
        flags = [f"{flag}=True" for flag, on in (("trans_a", step.trans_a), ("trans_b", step.trans_b)) if on]
        out = self.allocate(step.out)
        self.emit(f"gemm({', '.join(operands + [out] + flags)})")

    def operand(self, var, dtype):
        """The name of a matmul operand in the product's dtype (cast by a kernel if needed)."""
        name = self.names.arg(var)
        if np.dtype(var.aval.dtype) == dtype:
            return name
        kernel = self.bind(cast_source(var, dtype, self.cache))
        converted = self.allocate(var, f"{name}_{dtype.name}", dtype)
        self.launch(kernel, [name, converted], var)
        return converted


def generate(schedule, cache=True):
    """The driver and kernels of a schedule (driver.Generated). cache: Numba's on-disk cache."""
    return Driver(schedule, cache).generate()


# ----------------------------------------------------------------------------- runner

def to_device(a, shape):
    """`a` as a C-contiguous device array of its physical `shape` (0-d values are stored as (1,))."""
    from numba import cuda
    if not is_device_array(a):
        return cuda.to_device(np.ascontiguousarray(a).reshape(shape))
    if not hasattr(a, "is_c_contiguous"):
        a = cuda.as_cuda_array(a)  # e.g. a CuPy or PyTorch array: a Numba view of its memory
    if not a.is_c_contiguous():
        raise ValueError(f"knetc (cuda): device array inputs must be C-contiguous; got shape {a.shape} "
                         f"with strides {a.strides} (copy it, e.g. with numpy.ascontiguousarray on the host)")
    return a if tuple(a.shape) == tuple(shape) else a.reshape(shape)


class Runner:
    """Calls the generated driver on device arrays: numpy inputs are copied to the device and,
    when every input was a numpy array, the outputs are copied back (so the CPU and CUDA
    targets return the same types); otherwise the outputs stay on the device, as KnetArrays
    when an input was one."""

    def __init__(self, executable):
        from ..runtime import pool  # (imports numba.cuda: CPU-only programs never load it)
        if not gpu_available():
            raise RuntimeError("target='cuda' needs a CUDA GPU and none was found (numba.cuda.is_available() "
                               "is False); use target='cpu' or 'auto', or set NUMBA_ENABLE_CUDASIM=1 before "
                               "importing knetc to run the CUDA kernels in Numba's simulator")
        pool.install_once()
        program = executable.program
        self.driver = executable.module.driver
        self.shapes = [physical_shape(v) for v in program.inputs]
        constants = [v for v in program.constants if v not in program.inputs]  # Executable.constants' order
        self.constants = [to_device(value, physical_shape(v)) for v, value in zip(constants, executable.constants)]

    def __call__(self, arrays):
        on_host = not any(is_device_array(a) for a in arrays)
        wrapper = device_wrapper(arrays)  # KnetArray (runtime/device.py)
        if wrapper is not None:
            arrays = [a.data if type(a) is wrapper else a for a in arrays]  # their Numba arrays
        outputs = self.driver(*[to_device(a, shape) for a, shape in zip(arrays, self.shapes)], *self.constants)
        if on_host:
            return tuple(out.copy_to_host() for out in outputs)
        return tuple(wrapper._wrap(out) for out in outputs) if wrapper is not None else outputs
