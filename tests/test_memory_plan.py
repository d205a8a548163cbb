"""plan_memory (knetc/ir/memory.py): buffer reuse and release by liveness over a fusion schedule.

The key test is `check_plan`, written apart from the planner: it walks the steps keeping
which values each buffer holds, and fails when a step reads a value whose buffer was
overwritten, writes a buffer it reads, or when a program output is not in its buffer at
the end; given `release` (names dropped after each step) it also fails when a dropped name
is still needed (read later, a donor later, an output, an input or constant) or when dead
storage not waiting to be taken still has a name bound after a step (a leak). It runs over
compiled schedules (no Numba: the stages up to fuse) and over hand-made ones;
`check_greedy` checks that every output that could take a dead buffer without raising the
live peak (bytes held at each step, computed here by brute force) takes the most recently
freed one.
"""
import numpy as np
import pytest

import knetc as kn
from knetc import pytree
from knetc.compiler import differentiate, fuse, split_joint, trace_in_mode
from knetc.ir.core import Program, Var
from knetc.ir.fuse import Call, Kernel, Loop, Matmul, Reshape, Schedule
from knetc.ir.memory import live_bytes, peak_bytes, plan_memory, release_after
from knetc.ir.passes import optimize
from knetc.ops.core import Aval

ALLOCATING = (Kernel, Matmul, Call)


# ---------------------------------------------------------------- the checker


def elements(var):
    return int(np.prod(var.aval.shape))


def output_roots(schedule):
    """The allocated Vars whose storage a program output is (a reshape of)."""
    source = {s.out: s.src for s in schedule.steps if isinstance(s, Reshape)}
    roots = set()
    for v in schedule.program.outputs:
        while isinstance(v, Var) and v in source:
            v = source[v]
        roots.add(v)
    allocated = {s.out for s in schedule.steps if isinstance(s, ALLOCATING)}
    return roots & allocated


def check_plan(schedule, reuse, release=None):
    """Does running the steps with `reuse` overwrite no value that is still read? Given
    `release`, is every name it drops dead and every dead buffer's name dropped?"""
    program, steps = schedule.program, schedule.steps
    position = {s.out: t for t, s in enumerate(steps)}
    allocated = {s.out for s in steps if isinstance(s, ALLOCATING)}
    external = set(program.inputs) | set(program.constants)
    pinned = output_roots(schedule)
    for out, donor in reuse.items():
        assert out in allocated, "only Kernel, Matmul and Call outputs take a buffer"
        assert donor in allocated and donor not in external, "the donor is an allocated step output"
        assert donor not in reuse, "the donor is named by its original allocated root"
        assert position[donor] < position[out]
        assert np.dtype(donor.aval.dtype) == np.dtype(out.aval.dtype)
        assert elements(donor) == elements(out)
        assert out not in pinned and donor not in pinned, "a buffer holding a program output is never shared"

    storage, holds = {}, {}  # value -> buffer; buffer -> values it holds now
    for t, step in enumerate(steps):
        read = list(step.inputs)
        for x in read:
            if x in external:
                assert x not in storage
                continue
            assert x in storage, f"step {t} reads {x} before it is written"
            assert x in holds[storage[x]], f"step {t} reads a value whose buffer was overwritten"
        if isinstance(step, Reshape):
            buffer = storage.get(step.src, ("external", step.src))
            storage[step.out] = buffer
            holds.setdefault(buffer, set()).add(step.out)
            continue
        buffer = reuse.get(step.out, step.out)
        assert buffer not in {storage[x] for x in read if x in storage}, f"step {t} writes a buffer it reads"
        holds[buffer] = {step.out}  # what the buffer held is gone
        storage[step.out] = buffer
    for v in program.outputs:
        if isinstance(v, Var) and v not in external:
            assert v in holds[storage[v]], "a program output was overwritten"
    if release is not None:
        check_release(schedule, reuse, release)


def check_release(schedule, reuse, release):
    """release: {step index: Vars whose names are dropped after it}. A dropped name must be
    one bound to allocated storage that no program output reaches, defined by then, dropped
    once, read by no later step and taken as a donor by no later step. After each step, a
    buffer nothing reads any more must have no name left bound to it, but for its root
    when a later step takes it."""
    program, steps = schedule.program, schedule.steps
    position = {s.out: t for t, s in enumerate(steps)}
    allocated = {s.out for s in steps if isinstance(s, ALLOCATING)}
    external = set(program.inputs) | set(program.constants)
    outputs = {v for v in program.outputs if isinstance(v, Var)}
    pinned = output_roots(schedule)
    source = {s.out: s.src for s in steps if isinstance(s, Reshape)}

    def value(x):  # the allocated value (or input) whose storage x is
        while x in source:
            x = source[x]
        return x
    buffer_of = {x: reuse.get(value(x), value(x)) for x in position if value(x) in allocated}
    last_read, taken = {}, {}  # name -> last step reading it; buffer -> last step taking it
    for t, s in enumerate(steps):
        for x in s.inputs:
            last_read[x] = t
    for out, donor in reuse.items():
        taken[donor] = max(taken.get(donor, -1), position[out])
    dropped = {}
    for i, names in release.items():
        assert 0 <= i < len(steps)
        for x in names:
            assert x not in external, "an input or constant is released"
            assert x in buffer_of, "only names bound to allocated storage are released"
            assert x not in dropped, f"{x} is released twice"
            assert position[x] <= i, f"{x} is released before it is defined"
            assert x not in outputs and value(x) not in pinned, "a program output's storage is released"
            assert last_read.get(x, -1) <= i, f"{x} is read after it is released"
            assert taken.get(x, -1) <= i, f"{x} is released before a later step takes its buffer"
            dropped[x] = i
    never = len(steps)
    for i in range(len(steps)):
        named, live = {}, set()  # buffer -> names bound after step i; buffers read later
        for x, buffer in buffer_of.items():
            if position[x] > i:
                continue
            if dropped.get(x, never) > i:
                named.setdefault(buffer, set()).add(x)
            if last_read.get(x, -1) > i:
                live.add(buffer)
        for buffer, names in named.items():
            if buffer in live or buffer in pinned:
                continue
            if taken.get(buffer, -1) > i:
                assert names <= {buffer}, f"after step {i} a buffer waiting to be taken keeps names but its root"
            else:
                assert not names, f"after step {i} dead storage is still named: a leak ({len(names)} names)"


def last_reads(schedule):
    """{allocated value: the last step reading it or a view of it (its own step if none)}."""
    steps = schedule.steps
    source = {s.out: s.src for s in steps if isinstance(s, Reshape)}

    def root(v):
        while v in source:
            v = source[v]
        return v
    last_read = {}
    for t, s in enumerate(steps):
        if isinstance(s, ALLOCATING):
            last_read.setdefault(s.out, t)
        for x in s.inputs:
            if root(x) in last_read:
                last_read[root(x)] = t
    return last_read


def nbytes(var):
    return elements(var) * np.dtype(var.aval.dtype).itemsize


def held_per_step(schedule, reuse, release=True):
    """Bytes of allocated buffers held at each step, by brute force: a buffer is held from
    the step writing its first value to the last step reading any value in it (to the end
    when a program output is in it, or with release=False)."""
    steps = schedule.steps
    position = {s.out: t for t, s in enumerate(steps)}
    pinned, last_read = output_roots(schedule), last_reads(schedule)
    occupants = {}
    for s in steps:
        if isinstance(s, ALLOCATING):
            occupants.setdefault(reuse.get(s.out, s.out), []).append(s.out)
    spans = []
    for buffer, values in occupants.items():
        first = min(position[v] for v in values)
        stop = len(steps) - 1 if not release or pinned & set(values) else max(last_read[v] for v in values)
        spans.append((first, stop, max(nbytes(v) for v in values)))
    return [sum(size for first, stop, size in spans if first <= t <= stop) for t in range(len(steps))]


def check_greedy(schedule, reuse):
    """Every output that could take a dead buffer (same dtype and size, nothing sharing its
    storage read from this step on, no program output in it, and holding it from its death
    to this step keeps the bytes held at each step in between at or under the peak without
    reuse) takes one, the most recently freed; computed by brute force from the plan itself."""
    steps = schedule.steps
    position = {s.out: t for t, s in enumerate(steps)}
    pinned, last_read = output_roots(schedule), last_reads(schedule)
    limit = max(held_per_step(schedule, {}), default=0)
    occupants = {}  # buffer -> allocated values written into it so far
    for t, s in enumerate(steps):
        if not isinstance(s, ALLOCATING):
            continue
        if s.out not in pinned:
            held = held_per_step(schedule, {o: d for o, d in reuse.items() if position[o] < t})
            free = {}  # buffer -> the step after which it is dead, for those it may take
            for buffer, values in occupants.items():
                if buffer in pinned:
                    continue
                died = max(last_read[v] for v in values)
                if died < t and np.dtype(buffer.aval.dtype) == np.dtype(s.out.aval.dtype) \
                        and elements(buffer) == elements(s.out) \
                        and all(held[u] + nbytes(s.out) <= limit for u in range(died + 1, t)):
                    free[buffer] = died
            if not free:
                assert s.out not in reuse, f"step {t} takes a buffer that is not free or raises the peak"
            else:
                assert s.out in reuse, f"step {t} could reuse one of {len(free)} dead buffers"
                assert reuse[s.out] in free, f"step {t} takes a buffer that is not free or raises the peak"
                assert free[reuse[s.out]] == max(free.values()), "not the most recently freed buffer"
        occupants.setdefault(reuse.get(s.out, s.out), []).append(s.out)


# ---------------------------------------------------------------- programs

def schedules_of(fn, args, mode="grad"):
    """The fusion schedules knetc compiles for fn(*args): mode "call", "grad" (w.r.t. the
    array leaves of args[0]) or "forward" (the forward and backward halves)."""
    trace_mode = ("grad", 0) if mode == "grad" else "call" if mode == "call" else ("forward", None)
    program, _, _ = trace_in_mode(trace_mode, "cpu", fn, args, {})
    wrt = list(range(len(pytree.flatten(args[0])[0])))
    differentiated = differentiate(program, mode, wrt)
    parts = split_joint(optimize(differentiated), mode, len(program.inputs))
    return [fuse(part) for part in parts.values()]


def mlp_loss(w, x, y):
    for i in range(0, len(w) - 2, 2):
        x = kn.relu(x @ w[i] + w[i + 1])
    return kn.nll(x @ w[-2] + w[-1], y)


def lenet_loss(w, x, y):
    c1, cb1, c2, cb2, w3, b3, w4, b4 = w
    x = kn.pool(kn.relu(kn.conv4(c1, x) + cb1))
    x = kn.pool(kn.relu(kn.conv4(c2, x) + cb2))
    x = kn.relu(kn.mat(x) @ w3 + b3)
    return kn.nll(x @ w4 + b4, y)


def reshapes(x, w):
    h = kn.tanh(kn.reshape(x, 4, -1) @ w)        # a view of an input, then a GEMM
    g = kn.reshape(kn.exp(h), 2, 2, -1)           # a view of an intermediate
    s = kn.sum(g, dims=2)
    return kn.sum(kn.reshape(g - s, 4, -1) * h)


def reshaped_outputs(x, w):
    h = kn.tanh(x @ w)
    e = kn.exp(h - kn.sum(h, dims=1))
    return kn.reshape(e, -1), kn.reshape(kn.reshape(h * 2, 2, -1), -1), kn.sum(e * h)


def centred_chain(x):
    """Elementwise values kept apart by reductions: each x is stored (two readers). (Over a
    list: unrolled, one straight-line schedule; loop regions are checked below.)"""
    for _ in [0] * 5:
        x = kn.tanh(x - kn.sum(x, dims=1) / x.shape[1])
    return kn.sum(x * x)


def normal(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def mlp_args():
    sizes = [(20, 16), (16,), (16, 12), (12,), (12, 5), (5,)]
    w = [normal(s, i) for i, s in enumerate(sizes)]
    return w, normal((8, 20), 9), np.arange(8) % 5


def lenet_args(batch=4):
    sizes = [(4, 1, 5, 5), (1, 4, 1, 1), (6, 4, 5, 5), (1, 6, 1, 1), (96, 16), (16,), (16, 10), (10,)]
    w = [normal(s, i) * 0.1 for i, s in enumerate(sizes)]
    return w, normal((batch, 1, 28, 28), 9), np.arange(batch) % 10


CASES = {
    "mlp_gradient": (mlp_loss, mlp_args, "grad"),
    "mlp_forward_backward": (mlp_loss, mlp_args, "forward"),
    "lenet_gradient": (lenet_loss, lenet_args, "grad"),
    "lenet_forward_backward": (lenet_loss, lenet_args, "forward"),
    "reshapes": (reshapes, lambda: (normal((4, 6)), normal((6, 6), 1)), "call"),
    "reshapes_gradient": (reshapes, lambda: (normal((4, 6)), normal((6, 6), 1)), "grad"),
    "reshaped_outputs": (reshaped_outputs, lambda: (normal((4, 6)), normal((6, 6), 1)), "call"),
    "centred_chain": (centred_chain, lambda: (normal((8, 6), dtype=np.float64),), "call"),
    "centred_chain_gradient": (centred_chain, lambda: (normal((8, 6), dtype=np.float64),), "grad"),
}


def case_schedules(name):
    fn, args, mode = CASES[name]
    return schedules_of(fn, args(), mode)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_overwrites_no_live_value_and_releases_every_dead_buffer(name):
    for schedule in case_schedules(name):
        assert plan_memory(schedule) is schedule
        check_plan(schedule, schedule.reuse, schedule.release)
        check_greedy(schedule, schedule.reuse)
        assert schedule.release == release_after(schedule, schedule.reuse)


@pytest.mark.parametrize("name", sorted(CASES))
def test_release_without_reuse(name):
    for schedule in case_schedules(name):
        assert plan_memory(schedule, reuse=False).reuse == {}
        check_plan(schedule, {}, schedule.release)
        assert schedule.release == release_after(schedule)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reuse_never_raises_the_peak(name):
    for schedule in case_schedules(name):
        reuse = plan_memory(schedule).reuse
        for release in (True, False):  # freed after the last read; held until the return
            for plan in ({}, reuse):  # peak_bytes against the brute force
                assert live_bytes(schedule, plan, release) == held_per_step(schedule, plan, release)
                assert peak_bytes(schedule, plan, release) == max(held_per_step(schedule, plan, release))
            assert peak_bytes(schedule, reuse, release=release) <= peak_bytes(schedule, release=release)
        # a buffer waiting for its next value is held in between: reuse only adds bytes to
        # steps, so where it never raises the live peak it leaves it exactly
        assert peak_bytes(schedule, reuse) == peak_bytes(schedule)
        assert peak_bytes(schedule) <= peak_bytes(schedule, release=False)


@pytest.mark.parametrize("name", ["mlp_gradient", "lenet_gradient", "centred_chain", "centred_chain_gradient"])
def test_programs_with_dead_intermediates_reuse_buffers(name):
    for schedule in case_schedules(name):
        reuse = plan_memory(schedule).reuse
        assert reuse
        assert peak_bytes(schedule, reuse, release=False) < peak_bytes(schedule, release=False)


def test_a_chain_separated_by_reductions_hands_buffers_on():
    schedule, = case_schedules("centred_chain")
    reuse = plan_memory(schedule).reuse
    square = [s.out for s in schedule.steps if isinstance(s, Kernel) and s.out.aval.shape == (8, 6)]
    assert len(square) == 5
    # x1 is read by the step writing x2, so x3 is the first to take a dead (8, 6) buffer: x1's
    assert reuse[square[2]] is square[0]
    assert reuse[square[3]] is square[1]
    assert reuse[square[4]] is square[0]  # x3 (in x1's buffer) died: named by the original root


def test_plan_is_deterministic():
    def positions():
        schedule = plan_memory(case_schedules("lenet_gradient")[0])
        at = {s.out: t for t, s in enumerate(schedule.steps)}
        return sorted((at[out], at[donor]) for out, donor in schedule.reuse.items())
    assert positions() == positions()


def test_outputs_that_are_views_of_intermediates_keep_their_buffers():
    schedule, = case_schedules("reshaped_outputs")
    reuse = plan_memory(schedule).reuse
    pinned = output_roots(schedule)
    assert len(pinned) == 3  # e, h * 2 (through two reshapes) and the sum
    assert not pinned & (set(reuse) | set(reuse.values()))


# ---------------------------------------------------------------- hand-made schedules

def var(*shape, dtype=np.float32):
    return Var(Aval(tuple(shape), np.dtype(dtype)))


def schedule(inputs, steps, outputs, constants=None):
    program = Program("hand", inputs, [], outputs, constants)
    return Schedule(program, steps, {}, {})


def kernel(out, *inputs):
    return Kernel(out, None, list(inputs))


def test_prefers_the_most_recently_freed_buffer():
    x, a, b, c, d, s, total = var(4), var(4), var(4), var(4), var(4), var(1), var()
    steps = [kernel(a, x), kernel(b, x), kernel(c, a), kernel(s, b), kernel(d, c, s), kernel(total, d)]
    sched = schedule([x], steps, [total])
    # a dies at step 2, b at step 3: c (step 2) may take neither; d takes b, freed last
    assert plan_memory(sched).reuse == {d: b}
    check_plan(sched, sched.reuse, sched.release)
    check_greedy(sched, sched.reuse)
    # a's buffer is dead after step 2 and never taken; b's is taken by d, so the name b
    # stays bound until d (in b's buffer) dies at step 5
    assert sched.release == {2: [a], 4: [c, s], 5: [b, d]}


def test_a_step_never_takes_the_buffer_it_reads():
    x, a, b = var(4), var(4), var(4)
    plan = plan_memory(schedule([x], [kernel(a, x), kernel(b, a)], [b])).reuse
    assert plan == {}


def test_dtype_and_size_must_match_exactly_but_not_shape():
    x, a, s, b, c, d, total = var(2, 3), var(2, 3), var(1), var(6, dtype=np.float64), var(5), var(3, 2), var()
    steps = [kernel(a, x), kernel(s, a), kernel(b, s), kernel(c, s), kernel(d, s, b, c), kernel(total, d)]
    sched = schedule([x], steps, [total])
    assert plan_memory(sched).reuse == {d: a}  # (3, 2) float32 fits (2, 3) float32; b and c do not
    check_plan(sched, sched.reuse, sched.release)
    check_greedy(sched, sched.reuse)
    # a waits through steps 2 and 3 (24 bytes): 76 and 96 bytes held, the peak is d's step (96)
    assert held_per_step(sched, sched.reuse) == [24, 28, 76, 96, 96, 28]
    assert peak_bytes(sched, sched.reuse) == peak_bytes(sched) == 96


def test_views_keep_a_buffer_alive_and_inputs_are_never_donors():
    x, a, va, s, b, vx, c = var(4), var(4), var(2, 2), var(1), var(4), var(2, 2), var(4)
    steps = [kernel(a, x), Reshape(va, a), kernel(s, a), kernel(b, s), Reshape(vx, x), kernel(c, va, vx, b)]
    sched = schedule([x], steps, [c])
    # a is last read (through its view) by the step writing c: nothing is free for b or c
    assert plan_memory(sched).reuse == {}
    check_plan(sched, {}, sched.release)
    assert sched.release == {3: [s], 5: [a, va, b]}  # vx, a view of the input, holds nothing
    with pytest.raises(AssertionError, match="overwritten"):
        check_plan(sched, {b: a})  # the checker catches writing b over a while va is still read


def test_chains_name_the_original_root_and_outputs_are_not_shared():
    x, a, b, c, d, e, ve = var(4), var(4), var(4), var(4), var(4), var(4), var(2, 2)
    steps = [kernel(a, x), kernel(b, a), kernel(c, b), kernel(d, c), kernel(e, d), Reshape(ve, e)]
    sched = schedule([x], steps, [ve])
    plan = plan_memory(sched).reuse
    assert plan == {c: a, d: b}  # e's storage is the output (through ve): it takes no buffer
    check_plan(sched, plan, sched.release)
    check_greedy(sched, plan)
    # a's buffer: a dies at step 1 (only the root name a is bound while it waits), c at step 3
    assert sched.release == {3: [a, c], 4: [b, d]}  # e and ve are returned: never released


def test_peak_bytes_counts_allocations_not_inputs_or_views():
    x, a, va, b, c, total = var(4), var(4), var(2, 2), var(4), var(4), var(1)
    # float32: 16 bytes each, total 4
    steps = [kernel(a, x), Reshape(va, a), kernel(b, va), kernel(c, b), kernel(total, c)]
    sched = schedule([x], steps, [total])
    assert peak_bytes(sched) == 32                    # a and b at step 2, b and c at step 3
    assert peak_bytes(sched, release=False) == 52     # a, b, c and total
    plan = plan_memory(sched).reuse
    assert plan == {c: a}
    assert peak_bytes(sched, plan) == 32
    assert peak_bytes(sched, plan, release=False) == 36
    big = var(64)
    waits = schedule([x], [kernel(a, x), kernel(b, a), kernel(big, b), kernel(c, b), kernel(total, c)], [total])
    # a dies at step 1; held until c (step 3) it would wait through step 2, the peak (b and
    # 256 bytes): c takes no buffer, the peak stays
    assert plan_memory(waits).reuse == {}
    assert peak_bytes(waits) == 256 + 16
    assert peak_bytes(waits, {c: a}) == 256 + 32 > peak_bytes(waits)
    check_greedy(waits, {})
    with pytest.raises(AssertionError, match="not free or raises the peak"):
        check_greedy(waits, {c: a})
    assert waits.release == {1: [a], 2: [big], 3: [b], 4: [c]}
    zero_d = schedule([x], [kernel(var(), x)], [])
    assert peak_bytes(zero_d) == 4                    # 0-d: one element stored


def test_the_checker_catches_unsafe_plans():
    chain, = case_schedules("centred_chain")
    square = [s.out for s in chain.steps if isinstance(s, Kernel) and s.out.aval.shape == (8, 6)]
    with pytest.raises(AssertionError, match="writes a buffer it reads"):
        check_plan(chain, {square[1]: square[0]})  # x2's kernel reads x1
    with pytest.raises(AssertionError, match="writes a buffer it reads"):
        check_plan(chain, {square[2]: square[0], square[3]: square[1], square[4]: square[1]})  # x5 reads x4
    x, a, b, c, d = var(4), var(4), var(4), var(4), var(1)
    late = schedule([x], [kernel(a, x), kernel(b, x), kernel(c, b), kernel(d, a, c)], [d])
    with pytest.raises(AssertionError, match="overwritten"):
        check_plan(late, {c: a})  # a is still read at step 3
    with pytest.raises(AssertionError, match="original allocated root"):
        check_plan(chain, {square[2]: square[0], square[4]: square[2]})
    with pytest.raises(AssertionError, match="could reuse"):
        check_greedy(chain, {})


def test_the_checker_catches_unsafe_or_leaking_releases():
    x, a, va, b, c, d, e = var(4), var(4), var(2, 2), var(4), var(4), var(4), var(4)
    steps = [kernel(a, x), Reshape(va, a), kernel(b, va), kernel(c, b), kernel(d, c), kernel(e, d, x)]
    sched = schedule([x], steps, [e])
    plan = plan_memory(sched).reuse
    assert plan == {c: a, d: b}
    # a dies at step 2 (b reads its view) and c takes its buffer: va is dropped, a stays
    assert sched.release == {2: [va], 4: [a, c], 5: [b, d]}
    check_plan(sched, plan, sched.release)
    with pytest.raises(AssertionError, match="read after it is released"):
        check_plan(sched, plan, {1: [va], 4: [a, c], 5: [b, d]})  # va is read at step 2
    with pytest.raises(AssertionError, match="before a later step takes its buffer"):
        check_plan(sched, plan, {2: [a, va], 4: [c], 5: [b, d]})  # c is written into a's buffer
    with pytest.raises(AssertionError, match="leak"):
        check_plan(sched, plan, {2: [va], 4: [a, c]})  # b's buffer (holding d) is never dropped
    with pytest.raises(AssertionError, match="leak"):
        check_plan(sched, plan, {2: [va], 4: [c], 5: [b, d]})  # a's buffer stays named at the end
    with pytest.raises(AssertionError, match="keeps names but its root"):
        check_plan(sched, plan, {4: [a, va, c], 5: [b, d]})  # va bound while a's buffer waits
    with pytest.raises(AssertionError, match="output"):
        check_plan(sched, plan, {2: [va], 4: [a, c], 5: [b, d, e]})
    with pytest.raises(AssertionError, match="input or constant"):
        check_plan(sched, plan, {2: [va], 4: [a, c], 5: [b, d, x]})
    with pytest.raises(AssertionError, match="released twice"):
        check_plan(sched, plan, {2: [va], 4: [a, c], 5: [a, b, d]})


def tanh_rnn(w, xs, h):
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ w + h)
    return kn.sum(h * h)


@pytest.mark.parametrize("mode", ["call", "grad"])
def test_loop_bodies_have_sound_plans_and_loop_results_are_never_shared(mode):
    """A loop body is a straight-line schedule planned on its own (its values live for one
    step); the loop's results are buffers of their own that the outer plan never hands on."""
    args = (normal((4, 4), dtype=np.float64), normal((6, 3, 4), 1, np.float64), normal((3, 4), 2, np.float64))
    checked = 0
    for schedule in schedules_of(tanh_rnn, args, mode):
        plan_memory(schedule)
        loops = [s for s in schedule.steps if isinstance(s, Loop)]
        assert loops, "range(T) stays a loop"
        results = {out for loop in loops for out in loop.outs}
        assert not results & (set(schedule.reuse) | set(schedule.reuse.values()))
        for loop in loops:
            check_plan(loop.body, loop.body.reuse, loop.body.release)
            checked += 1
    assert checked == (1 if mode == "call" else 2)  # the forward loop, and the adjoint loop running backwards
