"""CUDA code generation: each kernel a shape-generic `numba.cuda.jit` function with one
thread per output element, and a Python host driver that allocates outputs from the
memory pool, launches the kernels and calls GEMM (cuBLAS, else knetc's tiled kernel).

A kernel recovers its output index from the thread number by div/mod over the output's
shape (read at run time), then runs the same scalar body as the CPU loop nest (see
expressions.KernelBody). Each kernel module lists its kernel's exact Numba signature in
PTX_SIGNATURES, so tests can compile it to PTX without a GPU.

A kernel with a reduction (ReductionBody) is written for blocks of threads instead:
- output of many elements (a row reduction): a group of `r` threads per output element,
  `r` a power of two up to 256 chosen by the driver from the sizes, several outputs per
  block when the extent is short. The group's threads stride over the reduced entries
  (adjacent threads read adjacent entries when the reduced axis is the input's last; else
  adjacent threads take adjacent outputs, which are adjacent in memory), then combine
  their accumulators by a tree in shared memory; the group's first thread computes the
  epilogue and stores.
- output of one element (a full reduction): the same kernel runs in two passes when the
  extent is large (`phase` 0: each of up to PARTIALS blocks strides over the whole extent
  and writes its partial result to a buffer the driver allocates; `phase` 1: one block
  reduces the partials and computes the epilogue), or in one block (`phase` 2).
The monoid's own step combines the partial values, so the result is the same set of
operations in another order: integers and max/min (NaN included) are exact, float sums
differ by rounding only (pairwise, usually closer to the exact sum). No atomics: results
are deterministic. Warp shuffles are not used (the simulator has none).

Matmul operands of a dtype other than the product's (numpy promotion, e.g. float32 @
float64) are converted first by a generated cast kernel: GEMM takes one dtype. Integer
products have no GEMM and are refused at generation time.
"""
import math
import re

import numpy as np

from ..ir.memory import storage_roots
from ..report import count
from ..runtime.device import device_wrapper, download, gpu_available, is_device_array, upload
from . import driver
from .expressions import KernelBody, _block, const, helper_imports, kernel_name, numba_type
from .names import physical_shape

BLOCK = 256  # threads per block
# A value per row of the last axis is fused into the kernel that reads it: a group of threads
# shares the row, computes its reductions together, then strides along it (row_kernel;
# ir/fuse.py's `rows`).
FUSES_ROWS = "last"
# Reductions (ReductionBody). The launch choices are the driver's (written in with the
# sizes); the kernel text depends only on SHARED.
SHARED = 256  # shared-memory slots per reduction in a block: the most threads a reduction block has
THREADS = 256  # threads per reduction block (a power of two, at most SHARED)
PARTIALS = 1024  # the most blocks a full reduction's first pass takes (partial results)
PER_THREAD = 16  # entries per thread, at least, before a full reduction takes another block
WARP = 32

KERNEL_HEADER = """# knetc kernel (cuda): {ops}
import math
import numpy as np
from numba import cuda, float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, boolean
"""

DRIVER_HEADER = f"""from knetc.kernels.gemm import gemm as tiled_gemm
from knetc.runtime import cublas
from knetc.runtime.device import upload
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
    full = all(n == 1 for n in logical)
    # Threads cover the output; a kernel with values per row loops along the row (row_kernel).
    row = max(a for a, n in enumerate(logical) if n != 1) if kernel.per_row else None
    body = ReductionBody(schedule, kernel, full, row)
    index = tuple(f"i{axis}" if n != 1 else "0" for axis, n in enumerate(logical))
    result = body.root(index)
    name = kernel_name(schedule, kernel)
    params = list(body.arrays.values()) + ["out"] + [p for p, _, _ in body.parameters]
    store = f"out[{', '.join(index) if logical else '0'}] = {result}"
    types = [array_type(x) for x in kernel.inputs + [kernel.out]] + [kind for _, kind, _ in body.parameters]
    if row is not None:
        params, types = params + ["r"], types + ["int64"]
        lines = _row_kernel(name, params, logical, row, body, store)
    elif not body.trees:  # elementwise (or reductions over size-1 axes only): one thread per element
        lines = _kernel(name, params, logical, body.lines(), store)
    elif full:
        parts = [f"p{k}" for k in range(1, len(body.trees) + 1)]
        params, types = params + parts + ["phase"], types + [f"{tree.type}[::1]" for tree in body.trees] + ["int64"]
        lines = _full_reduction(name, params, body, store, parts)
    else:
        params, types = params + ["r"], types + ["int64"]
        lines = _row_reduction(name, params, logical, body, store)
    return _module(name, schedule.fused_ops(kernel), lines, f"void({', '.join(types)})", body.helpers,
                   cache), body


# ----------------------------------------------------------------------------- reductions

class Tree:
    """One reduction of a ReductionBody that threads share: its accumulator's name and type,
    its monoid, its extent (the product of the sizes of its reduced axes) and whether
    adjacent entries of its reduced axes are adjacent in memory (the input's last axis is
    reduced)."""

    def __init__(self, accumulator, dtype, monoid, extent, contiguous):
        self.accumulator, self.dtype, self.monoid = accumulator, dtype, monoid
        self.extent, self.contiguous = extent, contiguous

    @property
    def type(self):
        return numba_type(self.dtype)


class ReductionBody(KernelBody):
    """The scalar body of a CUDA kernel whose reductions a block of threads shares.

    Each thread accumulates the entries `start, start + stride, ...` of a reduction (its
    reduced axes flattened row-major; `start` and `stride` are set by the kernel's head:
    the thread's lane and its group's size in a row reduction, its position in the grid
    and the grid's size in a full one), then the group combines its accumulators by a tree
    in shared memory (`sh<k>`, SHARED slots; entry `tid + s * q` is lane `lane + s`'s).
    Afterwards lane 0's accumulator holds the reduction. A reduction over size-1 axes only
    is one entry, computed as on the CPU."""

    def __init__(self, schedule, kernel, full, row=None):
        """row: in a kernel with values per row (row_kernel), the axis its threads stride
        along (the loop variable `i<row>`; the body's second block)."""
        super().__init__(schedule, kernel, [f"i{row}"] if row is not None else ())
        self.full, self.row, self.trees = full, row, []

    def _reduce(self, eqn, index, key):
        (x,) = eqn.inputs
        axes, dtype = eqn.params["axes"], eqn.out.aval.dtype
        shape = x.aval.shape
        reduced = [a for a in axes if shape[a] != 1]
        if not reduced or self._block_for(index) > 0:  # (in a row kernel, one per entry of the row:
            return super()._reduce(eqn, index, key)  # each thread reduces its own, alone)
        inside, self.blocks = self.blocks[1:], self.blocks[:1]  # (the loop along the row is not open)
        accumulator = self._fresh()
        self.reductions += 1
        k, monoid = self.reductions, eqn.op.monoid
        loop_vars = {a: f"j{k}_{a}" for a in reduced}
        extents = []
        for a in reduced:
            extents.append(f"m{len(self.extents)}")
            self.extents.append((extents[-1], shape[a]))
        last = max((a for a, n in enumerate(shape) if n != 1), default=None)
        tree = Tree(accumulator, dtype, monoid, math.prod(shape[a] for a in reduced), last in reduced)
        self.trees.append(tree)
        out = self.blocks[0]["lines"]
        out.append(f"{accumulator} = {const(monoid.start(dtype), dtype)}")
        # The entries: one nested block whose values are computed per entry.
        block = _block(set(loop_vars.values()))
        self.blocks.append(block)
        inner_index = tuple(loop_vars.get(a, "0" if a in axes else index[a]) for a in range(x.aval.ndim))
        v = self.value(x, inner_index)
        if x.aval.dtype != dtype:  # a sum of bools or int32s accumulates in int64, as numpy's
            v = f"{numba_type(dtype)}({v})"
        block["lines"].extend(self._step(tree, v, block))
        self.blocks.pop()
        entries = self._entries(k, list(loop_vars.values()), extents, block["lines"])
        if self.full:  # phase 1 reduces the partial results of phase 0
            out.append("if phase == 1:")
            out.append(f"    for j{k} in range(tid, p{len(self.trees)}.shape[0], nt):")
            scratch = {"lines": []}
            out.extend("        " + line for line in self._step(tree, f"p{len(self.trees)}[j{k}]", scratch))
            out.append("else:")
            entries = ["    " + line for line in entries]
        out.extend(entries)
        out.extend(self._tree(tree, len(self.trees)))
        if self.row is not None:  # every thread of the group reads the row's result (lane 0's)
            out.append(f"{accumulator} = sh{len(self.trees)}[tid - lane * q]")
        self.blocks[0]["memo"][key] = accumulator
        self.blocks += inside
        return accumulator

    def _step(self, tree, v, block):
        """The lines adding entry `v` to the tree's accumulator."""
        step, lines = tree.monoid.step, []
        if tree.monoid.float_step is not None and np.issubdtype(np.dtype(tree.dtype), np.floating):
            entry = self._fresh()  # the template reads the entry three times
            lines.append(f"{entry} = {v}")
            v, step = entry, tree.monoid.float_step
        return lines + [step.format(acc=tree.accumulator, v=v)]

    def _entries(self, k, names, extents, body):
        """The strided loop over a reduction's entries: one axis directly; several by a flat
        position whose per-axis indices advance by the stride's digits with a carry (no
        division per entry)."""
        if len(names) == 1:
            return [f"for {names[0]} in range(start, {extents[0]}, stride):"] + ["    " + line for line in body]
        lines = [f"e{k} = {' * '.join(extents)}", f"w{k} = start"]
        for name, extent in zip(reversed(names[1:]), reversed(extents[1:])):
            lines += [f"{name} = w{k} % {extent}", f"w{k} //= {extent}"]
        lines += [f"{names[0]} = w{k}", f"w{k} = stride"]
        digits = [f"d{name[1:]}" for name in names]
        for digit, extent in zip(reversed(digits[1:]), reversed(extents[1:])):
            lines += [f"{digit} = w{k} % {extent}", f"w{k} //= {extent}"]
        lines += [f"{digits[0]} = w{k}", f"for jj{k} in range(start, e{k}, stride):"]
        lines += ["    " + line for line in body]
        for a in range(len(names) - 1, 0, -1):
            lines += [f"    {names[a]} += {digits[a]}", f"    if {names[a]} >= {extents[a]}:",
                      f"        {names[a]} -= {extents[a]}", f"        {names[a - 1]} += 1"]
        return lines + [f"    {names[0]} += {digits[0]}"]

    def _tree(self, tree, number):
        """Combining the group's accumulators: halving steps in shared memory, each ended by
        a barrier every thread of the block reaches (the group size is the block's own)."""
        shared, acc = f"sh{number}", tree.accumulator
        scratch = {"lines": []}
        step = self._step(tree, f"{shared}[tid + s * q]", scratch)
        return [f"{shared} = cuda.shared.array({SHARED}, {tree.type})",
                f"{shared}[tid] = {acc}",
                "cuda.syncthreads()",
                "s = group // 2",
                "while s > 0:",
                "    if lane < s:",
                *["        " + line for line in step],
                f"        {shared}[tid] = {acc}",
                "    cuda.syncthreads()",
                "    s //= 2"]


def _group_head(logical, contiguous, what):
    """The head of a kernel whose groups of r threads each take one element of `logical` (an
    output element, or a row): the thread's lane, its group's element t and that element's
    indices. A group past the end computes with t clamped (in bounds) and stores nothing
    (`valid`): every thread of a block reaches the trees' barriers."""
    sizes, indices, count = thread_indices(logical)
    lines = ["tid = int64(cuda.threadIdx.x)", f"per = int64(cuda.blockDim.x) // r  # {what} per block", "group = r"]
    if contiguous:
        lines += ["lane = tid % r", "q = 1", "t = int64(cuda.blockIdx.x) * per + tid // r"]
    else:
        lines += ["lane = tid // per", "q = per", "t = int64(cuda.blockIdx.x) * per + tid % per"]
    lines += ["start = lane", "stride = r", *sizes, f"valid = t < {count}",
              f"t = min(t, {count} - 1)  # a group past the end reads in bounds, stores nothing", *indices]
    return ["    " + line for line in lines]


def _row_reduction(name, params, logical, body, store):
    """A kernel for an output of many elements: groups of r threads, one per output element."""
    contiguous = body.trees[0].contiguous
    layout = ("the group's threads are adjacent and read adjacent entries (the reduced axis is the last)"
              if contiguous else "adjacent threads take adjacent outputs, adjacent in memory (coalesced reads)")
    lines = [f"def {name}({', '.join(params)}):",
             f"    # Row reduction: a group of r threads per output element (r a power of two up to {SHARED},",
             "    # from the driver; blockDim // r outputs per block) strides over the reduced entries;",
             f"    # {layout};",
             "    # then a tree reduction in shared memory, and the group's first thread stores."]
    lines += _group_head(logical, contiguous, "outputs")
    lines += ["    " + line for line in body.lines()]
    lines += ["    if valid and lane == 0:", "        " + store]
    return lines


def _row_kernel(name, params, logical, row, body, store):
    """A kernel with values per row (ir/fuse.py's `rows`, softmax's max and sum): a group of
    r threads per row computes the row's reductions together, then its threads stride along
    the row, each computing and storing its entries."""
    lines = [f"def {name}({', '.join(params)}):",
             f"    # Rows: a group of r threads per row (r a power of two up to {SHARED}, from the driver;",
             "    # blockDim // r rows per block) strides over each of the row's reductions (adjacent threads,",
             "    # adjacent entries), combines it by a tree in shared memory, then strides along the row."]
    lines += _group_head(tuple(1 if axis == row else n for axis, n in enumerate(logical)), True, "rows")
    lines += ["    " + line for line in [f"n{row} = out.shape[{row}]"] + body.lines(0)]
    lines += ["    if valid:", f"        for i{row} in range(lane, n{row}, r):"]
    lines += ["            " + line for line in body.lines(1) + [store]]
    return lines


def _full_reduction(name, params, body, store, parts):
    """A kernel for an output of one element: phase 0 writes a partial result per block,
    phase 1 (one block) reduces them, phase 2 (one block) reduces the inputs directly."""
    lines = [f"def {name}({', '.join(params)}):",
             "    # Full reduction, two passes when the driver gives several blocks: phase 0: each block's",
             "    # threads stride over all entries (grid-stride), a tree reduction in shared memory, and",
             f"    # the block's partial result to {', '.join(parts)}[block]; phase 1: one block reduces the partials",
             "    # and stores; phase 2: one block reduces the entries and stores.",
             "    tid = int64(cuda.threadIdx.x)",
             "    nt = int64(cuda.blockDim.x)",
             "    bid = int64(cuda.blockIdx.x)",
             "    lane = tid",
             "    q = 1",
             "    group = nt",
             "    start = bid * nt + tid",
             "    stride = int64(cuda.gridDim.x) * nt"]
    lines += ["    " + line for line in body.lines()]
    lines += ["    if phase == 0:", "        if tid == 0:"]
    lines += [f"            {part}[bid] = {tree.accumulator}" for part, tree in zip(parts, body.trees)]
    lines += ["    elif tid == 0:", "        " + store]
    return lines


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


def pow2(n):
    """The least power of two >= n (1 for n <= 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def row_launch(n, m, contiguous):
    """(blocks, threads, r) for a row reduction of n outputs of m entries each: r threads per
    output (a power of two: the tree halves it), threads // r outputs per block. Where the
    reduced axis is not the last, adjacent threads take adjacent outputs: a warp reads 32
    adjacent entries when there are that many outputs, so each output keeps fewer threads."""
    r = min(THREADS, pow2(m))
    if not contiguous:
        r = min(r, max(1, THREADS // min(WARP, pow2(n))))
    per = max(1, min(THREADS // r, pow2(n)))
    return (n + per - 1) // per, per * r, r


def full_launch(m):
    """((blocks, threads), finish) for a full reduction of m entries: one block (finish None)
    when it has at most PER_THREAD entries per thread, else `blocks` blocks of partial
    results (at most PARTIALS) that one block of `finish` threads reduces."""
    threads = min(THREADS, pow2(m))
    blocks = min(PARTIALS, -(-m // (threads * PER_THREAD)))
    if blocks <= 1:
        return (1, threads), None
    return (blocks, threads), min(THREADS, pow2(blocks))


def array_type(var, dtype=None):
    """The Numba type of a stored value: a C-contiguous array, e.g. float32[:, ::1]."""
    ndim = len(physical_shape(var))
    return f"{numba_type(dtype or var.aval.dtype)}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


# ----------------------------------------------------------------------------- driver

ARRAY_HELPERS = """

def zeros(shape, dtype):
    \"\"\"A zero-filled device array (copied up: counted in kn.stats()).\"\"\"
    return upload(np.zeros(shape, dtype))


def copy(a):
    \"\"\"A device copy of a device array.\"\"\"
    out = device_array(a.shape, a.dtype)
    out.copy_to_device(a)
    return out
"""


class Driver(driver.Driver):
    target = "cuda"
    header = DRIVER_HEADER + ARRAY_HELPERS

    def zeros(self, shape, dtype):
        return f"zeros({shape}, np.{dtype})"

    def copy(self, name):
        return f"copy({name})"

    def store(self, destination, value):
        return f"{destination}.copy_to_device({value})"

    def empty(self, shape, dtype):
        return f"device_array({shape}, np.{dtype})"

    def launch(self, name, arguments, out, body=None):
        size = int(np.prod(out.aval.shape))
        if not size:  # an empty grid is a launch error; an empty output needs no work
            return
        trees = getattr(body, "trees", None)
        if getattr(body, "row", None) is not None:
            length = out.aval.shape[body.row]
            rows, entries = size // length, max([length] + [tree.extent for tree in trees])
            blocks, threads, r = row_launch(rows, entries, True)
            self.launches += 1
            self.emit(f"# {rows} rows of {length}: {threads // r} per block, {r} threads each, "
                      f"sharing the row's reductions (trees in shared memory)")
            self.emit(f"{name}[{blocks}, {threads}]({', '.join(arguments + [str(r)])})")
            return
        if not trees:
            self.launches += 1
            self.emit(f"{name}[launch({size})]({', '.join(arguments)})")
            return
        extent = max(tree.extent for tree in trees)
        if not body.full:
            blocks, threads, r = row_launch(size, extent, trees[0].contiguous)
            self.launches += 1
            self.emit(f"# {size} outputs of {extent} entries: {threads // r} per block, {r} threads each, "
                      f"tree reduction in shared memory")
            self.emit(f"{name}[{blocks}, {threads}]({', '.join(arguments + [str(r)])})")
            return
        (blocks, threads), finish = full_launch(extent)
        parts = [f"part{k}" for k in range(1, len(trees) + 1)]
        for part, tree in zip(parts, trees):
            self.emit(f"{part} = {self.empty((max(blocks, 1) if finish else 1,), np.dtype(tree.dtype).name)}")
        if finish is None:
            self.launches += 1
            self.emit(f"# {extent} entries: one block of {threads} threads, tree reduction in shared memory")
            self.emit(f"{name}[1, {threads}]({', '.join(arguments + parts + ['2'])})")
        else:
            self.launches += 2
            self.emit(f"# {extent} entries: {blocks} blocks of {threads} threads write partial results "
                      f"(tree reductions in shared memory), then one block of {finish} reduces them")
            self.emit(f"{name}[{blocks}, {threads}]({', '.join(arguments + parts + ['0'])})")
            self.emit(f"{name}[1, {finish}]({', '.join(arguments + parts + ['1'])})")
        self.emit(f"del {', '.join(parts)}")

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
    """`a` as a C-contiguous device array of its physical `shape` (0-d values are stored as (1,)).
    A host array is copied up (counted in kn.stats()["host_to_device"]); a device array is
    used in place (a view when only its shape differs)."""
    if not is_device_array(a):
        return upload(np.asarray(a).reshape(shape))
    if not hasattr(a, "is_c_contiguous"):
        from numba import cuda
        a = cuda.as_cuda_array(a)  # e.g. a CuPy or PyTorch array: a Numba view of its memory
    if not a.is_c_contiguous():
        raise ValueError(f"knetc (cuda): device array inputs must be C-contiguous; got shape {a.shape} "
                         f"with strides {a.strides} (copy it, e.g. with numpy.ascontiguousarray on the host)")
    return a if tuple(a.shape) == tuple(shape) else a.reshape(shape)


_LAUNCH_COUNTS = re.compile(r"(\d+) kernel launches of \d+ kernels, (\d+) GEMMs, (\d+) library calls")


def launches_of(executable):
    """The CUDA work one run of the executable's driver issues: its kernel launches, GEMMs and
    library calls (the driver module's LAUNCHES when it states it, else its header's counts)."""
    module = getattr(executable, "module", None)
    stated = getattr(module, "LAUNCHES", None)
    if isinstance(stated, int):
        return stated
    match = _LAUNCH_COUNTS.search(getattr(getattr(executable, "generated", None), "driver", "") or "")
    return sum(int(n) for n in match.groups()) if match else 0


class Runner:
    """Calls the generated driver on device arrays: numpy inputs are copied to the device and,
    when every input was a numpy array, the outputs are copied back (so the CPU and CUDA
    targets return the same types); otherwise the outputs stay on the device, as KnetArrays
    when an input was one, in their logical shapes (a 0-d output, such as a loss, is a 0-d
    device array: nothing comes back to the host until it is read, e.g. by float(loss)).

    Device-resident training needs no other copies: `resident(arrays)` gives the device
    copies the last run made of its host inputs (a diff's backward run reuses the batch the
    forward run copied up), and a one-element host input (the backward's seed dy = 1) is
    copied up once per value, not per run, unless the program may write or return it.

    Each run adds its driver's kernel launches, GEMMs and library calls to
    kn.stats()["launches"], and its copies to the transfer counters."""

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
        outputs = []
        for v in program.outputs:  # the driver returns the distinct Var outputs, in order
            if hasattr(v, "aval") and not any(v is w for w in outputs):
                outputs.append(v)
        self.logical = [tuple(v.aval.shape) for v in outputs]
        self.launches = launches_of(executable)
        self.small = _kept_inputs(executable, outputs)  # input position -> (key, device array) or None
        self._last = ()  # (host array, its device copy) of the last run that kept its outputs on the device
        constants = [v for v in program.constants if v not in program.inputs]  # Executable.constants' order
        self.constants = [to_device(value, physical_shape(v)) for v, value in zip(constants, executable.constants)]

    def __call__(self, arrays):
        on_host = not any(is_device_array(a) for a in arrays)
        wrapper = device_wrapper(arrays)  # KnetArray (runtime/device.py)
        if wrapper is not None:
            arrays = [a.data if type(a) is wrapper else a for a in arrays]  # their Numba arrays
        inputs = [self._input(i, a, shape) for i, (a, shape) in enumerate(zip(arrays, self.shapes))]
        outputs = self.driver(*inputs, *self.constants)
        count("launches", self.launches)
        if on_host:
            self._last = ()
            return tuple(download(out).reshape(shape) for out, shape in zip(outputs, self.logical))
        self._last = tuple((a, d) for a, d in zip(arrays, inputs) if not is_device_array(a))
        outputs = [out if tuple(out.shape) == shape else out.reshape(shape) for out, shape in zip(outputs, self.logical)]
        return tuple(wrapper._wrap(out) for out in outputs) if wrapper is not None else tuple(outputs)

    def _input(self, i, a, shape):
        if i in self.small and not is_device_array(a):
            host = np.asarray(a)
            if host.size == 1:
                key = (host.dtype.str, host.tobytes())
                kept = self.small[i]
                if kept is None or kept[0] != key:
                    kept = self.small[i] = (key, to_device(host, shape))
                return kept[1]
        return to_device(a, shape)

    def resident(self, arrays):
        """`arrays` with each host array the last run copied up (the same object) replaced by
        that device copy, when that run kept its outputs on the device; the rest as given.
        For the backward run of a diff on device parameters: the batch goes up once a step."""
        copies = self._last
        if not copies:
            return list(arrays)
        return [next((d for h, d in copies if h is a), a) for a in arrays]


def _kept_inputs(executable, outputs):
    """{position: None} for the one-element inputs a run may keep on the device between runs
    (by value): those the program neither updates in place (op.state_inputs) nor returns
    (an output that is the input or a view of it)."""
    program = executable.program
    written = {id(eqn.inputs[i]) for eqn in program.eqns for i in getattr(eqn.op, "state_inputs", ())}
    schedule = getattr(executable, "schedule", None)
    roots = storage_roots(schedule) if schedule is not None else {}
    returned = {id(roots.get(v, v)) for v in outputs}
    return {i: None for i, v in enumerate(program.inputs)
            if int(np.prod(physical_shape(v))) == 1 and id(v) not in written and id(v) not in returned}
