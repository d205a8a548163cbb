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
import collections
import itertools
import math
import re

import numpy as np

from ..ir.memory import storage_roots
from ..report import count
from ..runtime.device import device_wrapper, download, gpu_available, is_device_array, upload
from . import driver
from .expressions import KernelBody, const, indent, kernel_module, kernel_name, numba_type
from .names import driver_outputs, physical_shape

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


def zeros(shape, dtype):
    \"\"\"A zero-filled device array (copied up: counted in kn.stats()).\"\"\"
    return upload(np.zeros(shape, dtype))


def copy(a):
    \"\"\"A device copy of a device array.\"\"\"
    out = device_array(a.shape, a.dtype)
    out.copy_to_device(a)
    return out
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
    indices = ["rest = t", *unravel("rest", [f"i{axis}" for axis in axes], [f"n{axis}" for axis in axes])]
    return sizes, indices, " * ".join(f"n{axis}" for axis in axes)


def unravel(flat, names, extents):
    """Lines setting `names` to the row-major indices, over axes of lengths `extents`, of the
    position the variable `flat` holds (which they use up)."""
    lines = []
    for name, extent in zip(reversed(names[1:]), reversed(extents[1:])):
        lines += [f"{name} = {flat} % {extent}", f"{flat} //= {extent}"]
    return lines + [f"{names[0]} = {flat}"]


def _kernel(logical, body_lines, store):
    """The body of a kernel with one thread per output element."""
    sizes, indices, count = thread_indices(logical)
    return ["t = cuda.grid(1)", *sizes, f"if t < {count}:", *indent(indices + body_lines + [store])]


def _module(name, params, ops, lines, helpers, cache):
    """A CUDA kernel module: the imports its body needs, the kernel (`params`: (name, Numba type)
    pairs; `lines`: its body), its signature."""
    signature = f"void({', '.join(kind for _, kind in params)})"
    lines = [f"@cuda.jit(cache={cache})", f"def {name}({', '.join(p for p, _ in params)}):", *indent(lines), "", "",
             f"PTX_SIGNATURES = {{{name!r}: {signature!r}}}  # for compiling to PTX ahead of time (tests/ptx.py)"]
    return driver.KernelSource(name, kernel_module("cuda", ops, helpers, lines), ops, signature)


def kernel_source(schedule, kernel, cache=True):
    """(KernelSource, KernelBody) for one fused kernel."""
    logical = kernel.out.aval.shape
    full = all(n == 1 for n in logical)
    # Threads cover the output; a kernel with values per row loops along the row (row_kernel).
    row = max(a for a, n in enumerate(logical) if n != 1) if kernel.per_row else None
    body = ReductionBody(schedule, kernel, full, row)
    store = body.store()
    params = [(p, array_type(x)) for x, p in body.arrays.items()] + [("out", array_type(kernel.out))]
    params += [(p, kind) for p, kind, _ in body.parameters]
    group = [("r", "int64")]  # the threads per output element or row (the driver's choice)
    if row is not None:
        lines, params = _row_kernel(logical, row, body, store), params + group
    elif not body.trees:  # elementwise (or reductions over size-1 axes only): one thread per element
        lines = _kernel(logical, body.lines(), store)
    elif full:
        partials = [(f"p{k}", f"{numba_type(tree.dtype)}[::1]") for k, tree in enumerate(body.trees, 1)]
        lines, params = _full_reduction(body, store), params + partials + [("phase", "int64")]
    else:
        lines, params = _row_reduction(logical, body, store), params + group
    return _module(kernel_name(schedule, kernel), params, schedule.fused_ops(kernel), lines, body.helpers, cache), body


# ----------------------------------------------------------------------------- reductions

class Tree(collections.namedtuple("Tree", "accumulators dtype monoid extent contiguous")):
    """One reduction of a ReductionBody that threads share: its accumulators' names (one, or
    an online pair's two) and dtype, its monoid (None: an online pair), its extent (the
    product of the sizes of its reduced axes) and whether adjacent entries of its reduced
    axes are adjacent in memory (the input's last axis is reduced)."""


def online_pairs(schedule, kernel):
    """{id of the result: (max, sum, shift)} for the reductions of a kernel that are a max m
    of a value a and a sum over the same axes of exp(a - shift), shift a value per row (m, or
    logsumexp's m with an infinite max taken as 0): softmax's, log-softmax's, logsumexp's.
    One pass over the entries computes both (ReductionBody._combine)."""
    eqns, pairs, inlined = list(schedule.computed_by(kernel)), {}, schedule.inlined
    for top, total in itertools.product(eqns, eqns):
        exp = total.op.online == "row_sum" and inlined.get(total.inputs[0])
        sub = exp and exp.op.online == "exponential" and inlined.get(exp.inputs[0])
        if sub and sub.op.online == "shift" and top.op.online == "row_max" and sub.inputs[0] is top.inputs[0] and \
                top.params == total.params and getattr(sub.inputs[1], "aval", None) == top.out.aval == total.out.aval:
            pairs[id(top.out)] = pairs[id(total.out)] = (top, total, sub.inputs[1])
    return pairs


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
        self.pairs = {} if full else online_pairs(schedule, kernel)

    def _reduce(self, x, axes, dtype, monoid, index, key):
        shape = x.aval.shape
        if all(shape[a] == 1 for a in axes) or self._block_for(index) > 0:  # (in a row kernel, one per
            return super()._reduce(x, axes, dtype, monoid, index, key)  # entry of the row: each thread reduces its own)
        top, total, shift = self.pairs.get(key[0], (None, None, None))
        if top is not None:  # a max and a sum of exps: one online tree
            x, dtype, monoid = top.inputs[0], top.out.aval.dtype, None
        inside, self.blocks = self.blocks[1:], self.blocks[:1]  # (the loop along the row is not open)
        starts = [monoid.start(dtype)] if monoid else [-math.inf, 0]
        accumulators = [self._fresh() for _ in starts]
        loop_vars, inner_index = self._reduction_loops(x, axes, index)
        k, number = self.reductions, len(self.trees) + 1
        extents = [self._extent(shape[a]) for a in loop_vars]
        last = max((a for a, n in enumerate(shape) if n != 1), default=None)
        tree = Tree(accumulators, dtype, monoid, math.prod(shape[a] for a in loop_vars), last in loop_vars)
        self.trees.append(tree)
        out = self.blocks[0]["lines"]
        if not monoid:
            out += [f"# Online max and sum, one pass: each thread keeps {accumulators[0]}, the max of its entries,",
                    f"# and {accumulators[1]}, the sum of exp(entry - max), rescaled as the max grows; the tree",
                    "# combines the threads' pairs alike."]
        out += [f"{acc} = {const(start, dtype)}" for acc, start in zip(accumulators, starts)]
        # The entries: one nested block whose values are computed per entry.
        lines, v = self._entry_block(x, inner_index, dtype, loop_vars.values())
        entries = self._entries(k, list(loop_vars.values()), extents, lines + self._combine(tree, v))
        if self.full:  # phase 1 reduces the partial results of phase 0
            out += ["if phase == 1:", f"    for j{k} in range(tid, p{number}.shape[0], nt):",
                    *indent(self._step(f"p{number}[j{k}]", dtype, monoid, accumulators[0]), 2), "else:"]
            entries = indent(entries)
        out += entries + self._tree(tree, number)
        if not self.full:  # every thread of the group reads the result (lane 0's)
            out += [f"{acc} = sh{number}{'s' * n}[tid - lane * q]" for n, acc in enumerate(accumulators)]
        self.blocks[0]["memo"][key] = accumulators[0]
        if top is not None:  # the max, then the sum of exp(entry - shift): a row without a finite max gives
            (m, s), memo = accumulators, self.blocks[0]["memo"]  # exp(max - shift), as the sum of its terms does
            memo[id(top.out), index], memo[id(total.out), index] = m, s
            shift = self.value(shift, index)  # (after: it may read the max)
            out.append(f"{s} = {s} if abs({m}) < math.inf else {const(math.nan, dtype)}" if shift == m else
                       f"{s} = ({s} if abs({m}) < math.inf else {const(1, dtype)}) * math.exp({m} - {shift})")
        self.blocks += inside
        return self.blocks[0]["memo"][key]

    def _combine(self, tree, v, theirs=None):
        """The lines adding to the tree's accumulators an entry v, or (theirs given) another
        thread's accumulators (v, theirs). An online pair (m, s) takes a new max m' (or NaN)
        as s = s * exp(m - m') + 1 (or + theirs), m = m'; a lesser entry (not -inf) as
        s += exp(v - m) (or theirs * exp(v - m))."""
        if tree.monoid:
            return self._step(v, tree.dtype, tree.monoid, tree.accumulators[0])
        m, s = tree.accumulators
        return [f"if {v} > {m} or {v} != {v}:  # a new max (or NaN): rescale the sum to it",
                f"    {s} = {s} * math.exp({m} - {v}) + {theirs or const(1, tree.dtype)}", f"    {m} = {v}",
                f"elif {v} > {const(-math.inf, tree.dtype)}:",
                f"    {s} += {theirs + ' * ' if theirs else ''}math.exp({v} - {m})"]

    def _entries(self, k, names, extents, body):
        """The strided loop over a reduction's entries: one axis directly; several by a flat
        position whose per-axis indices advance by the stride's digits with a carry (no
        division per entry)."""
        if len(names) == 1:
            return [f"for {names[0]} in range(start, {extents[0]}, stride):", *indent(body)]
        digits = [f"d{name[1:]}" for name in names]
        lines = [f"e{k} = {' * '.join(extents)}", f"w{k} = start", *unravel(f"w{k}", names, extents),
                 f"w{k} = stride", *unravel(f"w{k}", digits, extents), f"for jj{k} in range(start, e{k}, stride):",
                 *indent(body)]
        for a in range(len(names) - 1, 0, -1):
            lines += [f"    {names[a]} += {digits[a]}", f"    if {names[a]} >= {extents[a]}:",
                      f"        {names[a]} -= {extents[a]}", f"        {names[a - 1]} += 1"]
        return lines + [f"    {names[0]} += {digits[0]}"]

    def _tree(self, tree, number):
        """Combining the group's accumulators: halving steps in shared memory, each ended by
        a barrier every thread of the block reaches (the group size is the block's own)."""
        shared = [f"sh{number}{'s' * n}" for n in range(len(tree.accumulators))]  # (sh1, and sh1s for a pair's sum)
        stores = [f"{sh}[tid] = {acc}" for sh, acc in zip(shared, tree.accumulators)]
        theirs = [f"{sh}[tid + s * q]" for sh in shared]
        names = [self._fresh() for _ in shared] if not tree.monoid else theirs  # (a pair's: each read once)
        return [*[f"{sh} = cuda.shared.array({SHARED}, {numba_type(tree.dtype)})" for sh in shared], *stores,
                "cuda.syncthreads()", "s = group // 2", "while s > 0:", "    if lane < s:",
                *indent([f"{name} = {sh}" for name, sh in zip(names, theirs) if name != sh], 2),
                *indent(self._combine(tree, *names) + stores, 2), "    cuda.syncthreads()", "    s //= 2"]


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
    return lines + ["start = lane", "stride = r", *sizes, f"valid = t < {count}",
                    f"t = min(t, {count} - 1)  # a group past the end reads in bounds, stores nothing", *indices]


def _row_reduction(logical, body, store):
    """A kernel for an output of many elements: groups of r threads, one per output element."""
    contiguous = body.trees[0].contiguous
    layout = ("the group's threads are adjacent and read adjacent entries (the reduced axis is the last)"
              if contiguous else "adjacent threads take adjacent outputs, adjacent in memory (coalesced reads)")
    return [f"# Row reduction: a group of r threads per output element (r a power of two up to {SHARED},",
            "# from the driver; blockDim // r outputs per block) strides over the reduced entries;", f"# {layout};",
            "# then a tree reduction in shared memory, and the group's first thread stores.",
            *_group_head(logical, contiguous, "outputs"), *body.lines(), "if valid and lane == 0:", "    " + store]


def _row_kernel(logical, row, body, store):
    """A kernel with values per row (ir/fuse.py's `rows`, softmax's max and sum): a group of
    r threads per row computes the row's reductions together, then its threads stride along
    the row, each computing and storing its entries."""
    return [f"# Rows: a group of r threads per row (r a power of two up to {SHARED}, from the driver;",
            "# blockDim // r rows per block) strides over each of the row's reductions (adjacent threads,",
            "# adjacent entries), combines it by a tree in shared memory, then strides along the row.",
            *_group_head(tuple(1 if axis == row else n for axis, n in enumerate(logical)), True, "rows"),
            f"n{row} = out.shape[{row}]", *body.lines(0),
            "if valid:", f"    for i{row} in range(lane, n{row}, r):", *indent(body.lines(1) + [store], 2)]


def _full_reduction(body, store):
    """A kernel for an output of one element: phase 0 writes a partial result per block (to
    p1, p2, ...: one per tree), phase 1 (one block) reduces them, phase 2 (one block)
    reduces the inputs directly."""
    parts = [f"p{k}" for k in range(1, len(body.trees) + 1)]
    return ["# Full reduction, two passes when the driver gives several blocks: phase 0: each block's",
            "# threads stride over all entries (grid-stride), a tree reduction in shared memory, and",
            f"# the block's partial result to {', '.join(parts)}[block]; phase 1: one block reduces the partials",
            "# and stores; phase 2: one block reduces the entries and stores.",
            "tid = int64(cuda.threadIdx.x)", "nt = int64(cuda.blockDim.x)", "bid = int64(cuda.blockIdx.x)",
            "lane = tid", "q = 1", "group = nt", "start = bid * nt + tid", "stride = int64(cuda.gridDim.x) * nt",
            *body.lines(), "if phase == 0:", "    if tid == 0:",
            *[f"        {part}[bid] = {tree.accumulators[0]}" for part, tree in zip(parts, body.trees)],
            "elif tid == 0:", "    " + store]


def cast_source(var, dtype, cache=True):
    """A kernel converting a stored value of `var`'s rank and dtype to `dtype` (a
    mixed-dtype matmul operand)."""
    logical, source, target = physical_shape(var), np.dtype(var.aval.dtype).name, np.dtype(dtype).name
    index = ", ".join(f"i{axis}" if n != 1 else "0" for axis, n in enumerate(logical))
    lines = _kernel(logical, [], f"out[{index}] = {numba_type(dtype)}(x0[{index}])")
    return _module(f"cast_{source}_to_{target}", [("x0", array_type(var)), ("out", array_type(var, dtype))],
                   f"{source} -> {target} for a matmul", lines, (), cache)


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
    return ((1, threads), None) if blocks <= 1 else ((blocks, threads), min(THREADS, pow2(blocks)))


def array_type(var, dtype=None):
    """The Numba type of a stored value: a C-contiguous array, e.g. float32[:, ::1]."""
    ndim = len(physical_shape(var))
    return f"{numba_type(dtype or var.aval.dtype)}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


# ----------------------------------------------------------------------------- driver

class Driver(driver.Driver):
    target = "cuda"
    header = DRIVER_HEADER

    empty = "device_array({shape}, np.{dtype})"
    zeros = "zeros({shape}, np.{dtype})"
    copy = "copy({name})"
    store = "{destination}.copy_to_device({value})"
    kernel_source = staticmethod(kernel_source)

    def launch(self, name, arguments, out, body=None):
        size = int(np.prod(out.aval.shape))
        if not size:  # an empty grid is a launch error; an empty output needs no work
            return
        trees, row = getattr(body, "trees", ()), getattr(body, "row", None)
        self.launches += 1
        if row is None and not trees:
            return self.emit(f"{name}[launch({size})]({', '.join(arguments)})")
        if row is None and body.full:
            return self.full_reduction(name, arguments, trees)
        length = out.aval.shape[row] if row is not None else 1
        rows, extent = size // length, max([length] + [tree.extent for tree in trees])
        blocks, threads, r = row_launch(rows, extent, row is not None or trees[0].contiguous)
        self.emit(f"# {rows} rows of {length}: {threads // r} per block, {r} threads each, sharing the row's "
                  "reductions (trees in shared memory)" if row is not None else f"# {size} outputs of {extent} "
                  f"entries: {threads // r} per block, {r} threads each, tree reduction in shared memory")
        self.emit(f"{name}[{blocks}, {threads}]({', '.join(arguments + [str(r)])})")

    def full_reduction(self, name, arguments, trees):
        """The launches of a full reduction: one block, or blocks writing partial results and
        one block reducing them (phases 2, or 0 and 1: _full_reduction)."""
        extent = max(tree.extent for tree in trees)
        (blocks, threads), finish = full_launch(extent)
        parts = [f"part{k}" for k in range(1, len(trees) + 1)]
        for part, tree in zip(parts, trees):
            self.emit(f"{part} = {self.empty.format(shape=(blocks,), dtype=np.dtype(tree.dtype).name)}")
        if finish is None:
            self.emit(f"# {extent} entries: one block of {threads} threads, tree reduction in shared memory")
            self.emit(f"{name}[1, {threads}]({', '.join(arguments + parts + ['2'])})")
        else:
            self.launches += 1  # (a second launch)
            self.emit(f"# {extent} entries: {blocks} blocks of {threads} threads write partial results "
                      f"(tree reductions in shared memory), then one block of {finish} reduces them")
            self.emit(f"{name}[{blocks}, {threads}]({', '.join(arguments + parts + ['0'])})")
            self.emit(f"{name}[1, {finish}]({', '.join(arguments + parts + ['1'])})")
        self.emit(f"del {', '.join(parts)}")

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
        converted = self.allocate(var, f"{name}_{dtype.name}", dtype)
        self.launch(self.bind(cast_source(var, dtype, self.cache)), [name, converted], var)
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
        program, self.driver = executable.program, executable.module.driver
        self.shapes = [physical_shape(v) for v in program.inputs]
        outputs = driver_outputs(program)
        self.logical = [tuple(v.aval.shape) for v in outputs]
        # The CUDA work one run issues: its driver's kernel launches, GEMMs and library calls (its header's counts).
        self.launches = sum(int(n) for n in _LAUNCH_COUNTS.search(executable.generated.driver).groups())
        self.small = _kept_inputs(executable, outputs)  # input position -> (key, device array) or None
        self._last = ()  # (host array, its device copy) of the last run that kept its outputs on the device
        # The program's constants, as Executable.constants stores them (0-d values as (1,)).
        self.constants = [to_device(value, value.shape) for value in executable.constants]

    def prepare(self, arrays):
        """Nothing before a first run: each kernel compiles when it first launches (forked
        processes, as on the CPU, cannot share a process's CUDA context)."""
        return {}

    def __call__(self, arrays):
        on_host = not any(is_device_array(a) for a in arrays)
        wrapper = device_wrapper(arrays)  # KnetArray (runtime/device.py), or None
        arrays = [a.data if type(a) is wrapper else a for a in arrays]  # (a KnetArray's Numba array)
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
        if i not in self.small or is_device_array(a) or np.size(a) != 1:
            return to_device(a, shape)
        host = np.asarray(a)
        key = (host.dtype.str, host.tobytes())
        if self.small[i] is None or self.small[i][0] != key:
            self.small[i] = (key, to_device(host, shape))
        return self.small[i][1]

    def resident(self, arrays):
        """`arrays` with each host array the last run copied up (the same object) replaced by
        that device copy, when that run kept its outputs on the device; the rest as given.
        For the backward run of a diff on device parameters: the batch goes up once a step."""
        return [next((d for h, d in self._last if h is a), a) for a in arrays]


def _kept_inputs(executable, outputs):
    """{position: None} for the one-element inputs a run may keep on the device between runs
    (by value): those the program neither updates in place (executable.state_inputs) nor
    returns (an output that is the input or a view of it)."""
    roots = storage_roots(executable.schedule)
    excluded = executable.state_inputs | {roots.get(v, v) for v in outputs}  # (updated in place, or returned)
    return {i: None for i, v in enumerate(executable.program.inputs)
            if int(np.prod(physical_shape(v))) == 1 and v not in excluded}
