"""Fusion: decide which values live in memory and group the rest into kernels.

An elementwise value (or a transpose, which is only an index permutation) is computed
inside its consumer's kernel, not stored, when it has exactly one consumer that is
elementwise over as many elements (no recomputation) or a reduction (a prologue). A
reduction's result may in turn feed elementwise consumers of its own shape (an epilogue).
Transposes read only by matmuls become the GEMM's transpose flags.

With `rows`, a value that varies only along the leading axes of its elementwise consumer
(a row's max in `x - max(x, axis=-1)`, a row's log-sum in log-softmax) is fused too: the
kernel computes it once per row, before its loop along the row ("nest", the CPU's loop
nests: rows of any leading axes; "last", CUDA: rows of the last axis, one group of threads
per row, which shares the row's reductions). Then a cheap value (no reduction in it) that
several places of one kernel read is computed at each, and a cheap number anywhere.

The schedule is a list of steps in program order, each with the stored values it reads
(`step.inputs`):
  Kernel(out, eqn)          compute `out` (fused expression tree rooted at eqn)
  Matmul(out, a, b, ta, tb) out = op(a) @ op(b)
  Reshape(out, src, index)  a view of a stored value (of its block `src[index]` if given)
  Call(out, eqn)            a library routine (op kind "call") writing `out`
  Loop(outs, eqn, body)     a loop region (ir/loops.py): its body's schedule, run each step
"""
from dataclasses import dataclass

from .core import Var

MAX_KERNEL_INPUTS = 8
MAX_READS = 3  # a cheap value read at more places in one kernel than this is stored


@dataclass
class Kernel:
    out: Var
    eqn: object
    inputs: list  # stored Vars the kernel reads, in first-use order
    per_row: bool = False  # computes a value per row of its output (fuse's `rows`)


@dataclass
class Matmul:
    out: Var
    a: Var
    b: Var
    trans_a: bool
    trans_b: bool
    inputs = property(lambda self: [self.a, self.b])


@dataclass
class Reshape:
    out: Var
    src: Var
    index: str = None  # numpy basic index (Op.view_index): the view is of that block
    inputs = property(lambda self: [self.src])


class _ReadsEquationInputs:  # inputs: the stored values among its equation's inputs
    inputs = property(lambda self: [x for x in self.eqn.inputs if isinstance(x, Var)])


@dataclass
class Call(_ReadsEquationInputs):
    out: Var
    eqn: object


@dataclass
class Loop(_ReadsEquationInputs):
    """A loop region (ir/loops.py): its body's own schedule, run `length` times. outs: the
    loop's results in output order (a placeholder Var where nothing reads one)."""
    outs: list
    eqn: object
    body: "Schedule"
    out = property(lambda self: self.eqn.out)  # the loop equation's own value (not an array)


@dataclass
class Schedule:
    program: object
    steps: list
    inlined: dict   # Var -> Eqn computed inside a consumer's kernel
    producers: dict  # Var -> Eqn

    def walk(self):
        """(schedule, step) for every step, the loop bodies' steps after their loop's."""
        for step in self.steps:
            yield self, step
            if isinstance(step, Loop):
                yield from step.body.walk()

    def kernels(self):
        return [s for _, s in self.walk() if isinstance(s, Kernel)]

    def summary(self):
        """What runs: "12 ops -> 4 kernels + 2 GEMMs + 1 library calls" (views launch nothing;
        a loop's body counts once)."""
        count = {kind: sum(isinstance(s, kind) for _, s in self.walk()) for kind in (Kernel, Matmul, Call, Loop)}
        ops = len(self.program.eqns) + sum(len(s.body.program.eqns) for _, s in self.walk() if isinstance(s, Loop))
        return (f"{ops} ops -> {count[Kernel]} kernels + {count[Matmul]} GEMMs + {count[Call]} library calls"
                + (f" in {count[Loop]} loops" if count[Loop] else ""))

    def fused_ops(self, kernel):
        """The op names computed by a kernel, in evaluation order (for comments and inspect)."""
        return " ".join(reversed([eqn.op.name for eqn in self.computed_by(kernel)]))

    def groups(self):
        """eqn -> kernel number, for printing the IR with its fusion groups."""
        kernels = [(schedule, s) for schedule, s in self.walk() if isinstance(s, Kernel)]
        return {eqn: number for number, (schedule, kernel) in enumerate(kernels)
                for eqn in schedule.computed_by(kernel)}

    def computed_by(self, kernel):
        """The equations a kernel computes, its root first, then depth first the ones inlined
        into it, each once (a value read at several places is named once)."""
        stack, seen = [kernel.eqn], set()
        while stack:
            eqn = stack.pop()
            if eqn not in seen:
                seen.add(eqn)
                yield eqn
                if not eqn.op.input_gives_shape:  # (iota reads a shape only)
                    stack.extend(self.inlined[x] for x in eqn.inputs if isinstance(x, Var) and x in self.inlined)


def fusion_kind(eqn):
    """How fusion treats an equation: an index remapping (transpose, static slicing) is
    elementwise, computed where its consumer reads it, and so is a reshape that only adds
    or drops axes of size 1 (a reduction's (1, 1) read as a number)."""
    return "elementwise" if eqn.op.index_map is not None or squeezes(eqn) else eqn.op.kind


def squeezes(eqn):
    """Is eqn a view that only adds or drops axes of size 1? Its entries keep their indices
    along the other axes (squeezed_index)."""
    return (eqn.op.kind == "view" and eqn.op.index_map is None
            and [n for n in eqn.inputs[0].aval.shape if n != 1] == [n for n in eqn.out.aval.shape if n != 1])


def squeezed_index(index, shape, source_shape):
    """The index into a value of `source_shape` of the entry at `index` of its reshape to
    `shape`, which adds or drops axes of size 1 only."""
    kept = iter([i for i, n in zip(index, shape) if n != 1])
    return tuple("0" if n == 1 else next(kept) for n in source_shape)


def fuse(program, rows=None):
    producers = {e.out: e for e in program.eqns}
    consumers = {}
    for eqn, x in ((eqn, x) for eqn in program.eqns for x in eqn.inputs if isinstance(x, Var)):
        consumers.setdefault(x, []).append(eqn)
    outputs = {v for v in program.outputs if isinstance(v, Var)}

    absorbed = {eqn.out for eqn in program.eqns  # transposes that matmuls read through their flags
                if eqn.op.matrix_transpose and eqn.out.aval.ndim == 2 and eqn.out not in outputs
                and eqn.out in consumers and all(u.op.kind == "matmul" for u in consumers[eqn.out])}

    # may_reduce: v could contain a reduction once inlined (conservative, decided forwards).
    may_reduce = {}
    for eqn in program.eqns:
        may_reduce[eqn.out] = fusion_kind(eqn) == "reduce" or any(
            may_reduce.get(x, False) and len(consumers.get(x, [])) == 1 for x in eqn.inputs if isinstance(x, Var))
    # Decide backwards, so a consumer's fate is known: in_prologue[v] means v ends up inside
    # a reduction's loop, where another reduction would nest loops.
    # A kernel reads at most MAX_KERNEL_INPUTS stored values: a long chain (the sum of a
    # gradient over 128 loop steps) becomes kernels of one shape, compiled once, not one
    # kernel whose size grows with the chain. width: a kernel's root -> its input count;
    # roots: an inlined value -> the roots of the kernels that compute it.
    # aligned[v]: v is computed at its kernel's own index (elementwise consumers of its shape
    # all the way to the kernel's root), where a per-row value may be fused into it.
    # rowwise (CUDA): values computed once per row of their kernel (per row, or at the index
    # of a kernel with an output per row): a reduction's entries there are the row's.
    inlined, in_prologue, roots, width, aligned, per_row, rowwise = {}, {}, {}, {}, {}, set(), set()

    def placement(v, kind, user):
        """(in a prologue, at the kernel's own index, per row) for v computed inside its user's
        kernel, or None if it may not be."""
        user_kind = fusion_kind(user)
        if user.out in absorbed or user.op.kind == "view" and user.op.index_map is None and user.out not in inlined:
            return None  # (a stored view's input is stored)
        user_aligned = aligned.get(user.out, user.out not in inlined) and user.op.index_map is None
        same = user_aligned and user_kind == "elementwise" and v.aval.shape == user.out.aval.shape
        if user_kind == "elementwise" and (user.out.size == v.size or _remaps(user, may_reduce[v])):
            prologue = in_prologue.get(user.out, False)
            return None if may_reduce[v] and prologue else (prologue, same, False)
        if user_kind == "reduce" and at_row(user.out) and kind == "elementwise" and v.shape[:-1] == user.out.shape[:-1]:
            return False, True, False  # (then values per row in it are the row's: no nested loop)
        if user_kind == "reduce" and kind == "elementwise" and not may_reduce[v]:
            return True, False, False
        if rows and user_kind == "elementwise" and v.size == 1 and not may_reduce[v]:
            return False, False, False  # a cheap number: computed once, before the kernel's loops
        if rows and user_kind == "elementwise" and user_aligned \
                and _per_row(v.aval.shape, user.out.aval.shape, last=rows == "last"):
            return False, False, True
        return None

    def at_row(v):  # is v (a reduction) computed once per row of the kernel it is in?
        return rows is not None and (v in rowwise if v in inlined else v.size > 1 and v.shape[-1] == 1)

    for eqn in reversed(program.eqns):
        v, kind = eqn.out, fusion_kind(eqn)
        users = [u for u in consumers.get(v, []) if not u.op.input_gives_shape]  # (iota reads a shape only)
        if v in outputs or not users or v in absorbed or kind not in ("elementwise", "reduce"):
            continue
        kernels = {kernel for u in users for kernel in roots.get(u.out, (u.out,))}
        # Several readers: a cheap value (no reduction in it) is computed at each read instead
        # of stored when they all read it in one kernel (softmax's exp(x - max) in the row sum
        # and in the quotient), or in a few kernels when that costs what loading it would
        # (nll's one-hot labels: recomputable).
        # On CUDA also a value at its kernel's own index, where its reductions can only be values
        # per row, computed once (softmax's e); on the CPU such a value of a cheap op only
        # (log-softmax's x - max, read in its row sum's exp and in its result: one kernel),
        # so that an exp is still taken once per entry (softmax's e is stored).
        places = [placement(v, kind, user) for user in users]
        at_rows = [p and (p[2] or at_row(user.out) and user.out.shape == v.shape) for user, p in zip(users, places)]
        cheap = not may_reduce[v] or (rows == "last" or eqn.op.cheap) and len(kernels) == 1 and all(
            p and (p[1] or row) for p, row in zip(places, at_rows))
        grown = {kernel: width.get(kernel, _arity(producers[kernel])) - 1 + _arity(eqn) for kernel in kernels}
        if (len(users) > 1 or len(kernels) > 1) and not (rows and cheap and len(users) <= MAX_READS and (
                len(kernels) == 1 or len(kernels) <= MAX_READS and recomputable(eqn, producers))) \
                or None in places or max(grown.values()) > MAX_KERNEL_INPUTS:
            continue
        inlined[v] = eqn
        in_prologue[v] = any(prologue for prologue, _, _ in places)
        aligned[v] = all(same for _, same, _ in places)
        roots[v] = kernels
        width.update(grown)
        per_row.update(kernel for user, (_, _, row) in zip(users, places) if row
                       for kernel in roots.get(user.out, (user.out,)) if kernel.shape != v.shape)
        if all(at_rows):
            rowwise.add(v)

    steps = []
    for eqn in program.eqns:
        v = eqn.out
        if v in inlined or v in absorbed or eqn.op.kind == "loop_output":  # (a loop_output names one of Loop.outs)
            continue
        if eqn.op.kind == "matmul":
            a, b = eqn.inputs
            ta, tb = a in absorbed, b in absorbed
            steps.append(Matmul(v, producers[a].inputs[0] if ta else a, producers[b].inputs[0] if tb else b, ta, tb))
        elif eqn.op.kind == "view" and eqn.op.index_map is None:  # a reshape: the stored value, read with another shape
            steps.append(Reshape(v, eqn.inputs[0]))
        elif eqn.op.view_index is not None and eqn.inputs[0] not in inlined and (
                block := eqn.op.view_index(eqn.inputs[0].aval.shape, **eqn.params)) is not None:
            steps.append(Reshape(v, eqn.inputs[0], block))  # a contiguous block of a stored value (xs[t]): a view
        elif eqn.op.kind == "call":
            steps.append(Call(v, eqn))
        elif eqn.op.kind == "loop":
            spec = eqn.params["spec"]
            outs = [Var(aval) for aval in spec.output_avals()]  # (placeholders where nothing reads one)
            for user in consumers.get(v, []):
                outs[user.params["index"]] = user.out
            steps.append(Loop(outs, eqn, fuse(spec.body, rows)))
        else:
            steps.append(Kernel(v, eqn, _kernel_inputs(eqn, inlined), v in per_row))
    return Schedule(program, steps, inlined, producers)


def _arity(eqn):
    """The stored values an equation reads (an upper bound once others are fused into it)."""
    return 0 if eqn.op.input_gives_shape else sum(isinstance(x, Var) for x in eqn.inputs)


def recomputable(eqn, producers):
    """Does computing eqn's value in each kernel that reads it cost about what loading it
    would? A cheap op (Op.cheap) or a free one (an index remapping, a size-1 reshape) that
    reads no more entries than it has (an iota's are not read: it is its index)."""
    free = eqn.op.cheap or eqn.op.index_map is not None or squeezes(eqn)
    reads = 0 if eqn.op.input_gives_shape else sum(
        x.size for x in eqn.inputs if isinstance(x, Var) and not (x in producers and producers[x].op.input_gives_shape))
    return free and reads <= eqn.out.size


def _per_row(shape, domain, last):
    """Does a value of `shape`, broadcast over `domain`, vary only along leading axes of it,
    and not along all of them? Then a kernel's loop nest over `domain` computes it once per
    index of those axes, outside the inner loops (at least one loop: a number would be
    computed by each thread that shares the rows). `last`: the rows must be the whole
    domain but its last axis of size other than 1 (a group of CUDA threads shares one)."""
    shape = (1,) * (len(domain) - len(shape)) + tuple(shape)
    k = next((a for a, (n, m) in enumerate(zip(shape, domain)) if n != m), len(domain))
    varying = [a for a, m in enumerate(domain) if m != 1]
    if last:
        return bool(varying) and k == varying[-1] and all(n == 1 for n in shape[k:])
    return any(m != 1 for m in domain[:k]) and all(n == 1 for n in shape[k:]) and any(m != 1 for m in domain[k:])


def _remaps(user, may_reduce):
    """May the user compute its input inside it whatever the sizes (Op.inline_input)? Static
    indexing reads each input entry at most once; its adjoint, zero padding, too, but for
    cheap inputs only (the clamped load is also evaluated where the result is the zero fill)."""
    return user.op.inline_input == "always" or user.op.inline_input == "cheap" and not may_reduce


def _kernel_inputs(eqn, inlined, order=None):
    """The stored values a kernel computing eqn reads, each once, in first-use order (a dict's)."""
    order = {} if order is None else order
    for x in () if eqn.op.input_gives_shape else eqn.inputs:  # (iota reads a shape only)
        if x in inlined:
            _kernel_inputs(inlined[x], inlined, order)
        elif isinstance(x, Var):
            order.setdefault(x)
    return list(order)
