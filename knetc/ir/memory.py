"""Memory planning: which buffers a step may write into, and which names the driver drops.

Only Kernel, Matmul and Call steps allocate; a Reshape is a view of its source's storage,
so a value (an allocating step's output) is stored with every view that reshapes it,
transitively. A value is dead after the last step that reads it or one of its views
(Kernel.inputs, Matmul a/b, Call.inputs, Reshape.src). Never released, given or taken:
program inputs and constants (not allocated here) and the values any program output
reaches (returned to the caller).

The driver frees a buffer by dropping every name bound to it (`del name` after a step), so
the memory that matters is `peak_bytes(schedule, reuse, release=True)`. plan_memory sets:

  schedule.reuse = {out Var: donor Var}
      `out` is written into the buffer of the dead value `donor` (an allocating step's
      output, named by the buffer's original allocated root when the buffer is handed on
      more than once, never itself in the map; the driver writes `out = donor.reshape(...)`).
      The donor's buffer is dead strictly before the taking step (a kernel may read any
      index of its inputs while it writes), of the same dtype and number of elements (0-d
      values are stored as (1,); the generator reshapes). A buffer waiting for its next
      value is held from its value's death to the taking step, so it is taken only when
      that keeps the bytes held at every step in between at or under the peak without
      reuse: reuse never raises the release=True peak, and lowers the held-until-return one.
      Greedy in step order, the most recently freed allowed buffer first (warm in cache).

  schedule.release = {step index i: [Var, ...]}   (steps with nothing to drop are absent)
      The names the driver may drop after step i, in definition order: for each value dead
      after step i (last read there, or never read: its defining step), the value and its
      views (Reshape outs of it, transitively); and, when no later step takes its buffer,
      the buffer's root (the donor Var the plan names; the value itself when it was a fresh
      buffer). While a buffer waits to be taken, only its root name stays bound (the taking
      step writes `out = root.reshape(...)`). So every Var bound to allocated storage that
      no output reaches is dropped exactly once, and after dropping release[i] the only
      names bound to dead storage are the roots of buffers awaiting reuse. Never listed:
      program inputs, constants, views of them (they hold no allocated memory), and any
      Var whose storage a program output reaches.

    plan_memory(schedule, reuse=True)   sets schedule.reuse and schedule.release
                                        (reuse=False: release only, every output fresh)
    release_after(schedule, reuse)      the release map for any reuse plan
    peak_bytes(schedule, reuse, release)   bytes held by allocated buffers at the worst step
"""
import itertools

import numpy as np

from .core import Var
from .fuse import Call, Kernel, Loop, Matmul, Reshape

ALLOCATING = (Kernel, Matmul, Call)  # steps writing a buffer the plan may choose


def outputs(step):
    """The values a step defines (a loop: each of its results)."""
    return step.outs if isinstance(step, Loop) else [step.out]


def storage_roots(schedule):
    """{step output: the allocated Var whose buffer holds it} (a Reshape's out: its src's
    root, transitively; a view of an input or constant: that input, which is not allocated)."""
    root = {}
    for step in schedule.steps:
        for out in outputs(step):
            root[out] = root.get(step.src, step.src) if isinstance(step, Reshape) else out
    return root


def lifetimes(schedule, reuse=None):
    """(roots, end, pinned, occupants): roots as storage_roots; end[v]: for each allocated
    value v, the index of the last step that reads v or a view of it (its defining step if
    none does); pinned: the allocated values a program output is (a view of); occupants:
    {buffer root: [(step index, allocated value written into it)], in step order} for the
    plan `reuse` ({out: donor}; None: every output in a fresh buffer). A loop's results are
    allocated values of their own, which the plan never hands on."""
    root, end, occupants = storage_roots(schedule), {}, {}
    for t, step in enumerate(schedule.steps):
        if isinstance(step, ALLOCATING + (Loop,)):
            for out in outputs(step):
                end[out] = t
                occupants.setdefault(reuse.get(out, out) if reuse else out, []).append((t, out))
        end.update((root[x], t) for x in step.inputs if root.get(x) in end)
    pinned = {root[v] for v in schedule.program.outputs if isinstance(v, Var) and root.get(v) in end}
    return root, end, pinned, occupants


def _key(var):
    return np.dtype(var.aval.dtype), var.size  # (0-d: 1 element, as stored)


def _bytes(var):
    return var.size * np.dtype(var.aval.dtype).itemsize


def plan_memory(schedule, reuse=True):
    """Choose, for each allocating step, a dead buffer to write its output into (none when
    reuse is False), and the names to drop after each step: sets schedule.reuse and
    schedule.release (see the module docstring) and returns `schedule`."""
    _, end, pinned, _ = lifetimes(schedule)
    live = live_bytes(schedule)         # bytes held at each step, updated as buffers wait
    limit = max(live, default=0)        # the peak without reuse: never exceeded
    free = {}       # (dtype, elements) -> [(death step, buffer root)], the most recently freed last
    dying = {}      # step index t -> buffer roots whose current value is last read at t
    plan = {}
    for t, step in enumerate(schedule.steps):
        for buffer in dying.pop(t - 1, ()):
            free.setdefault(_key(buffer), []).append((t - 1, buffer))
        if isinstance(step, Loop):
            plan_memory(step.body, reuse)  # (a body's values live for one step of its loop)
        if not isinstance(step, ALLOCATING) or step.out in pinned:
            continue
        buffer, pool, size = step.out, free.get(_key(step.out), []) if reuse else [], _bytes(step.out)
        for k in reversed(range(len(pool))):
            died, candidate = pool[k]
            wait = range(died + 1, t)   # the steps it is held through waiting (none if it died at t - 1)
            if all(live[u] + size <= limit for u in wait):
                for u in wait:
                    live[u] += size
                buffer = plan[step.out] = candidate
                del pool[k]
                break
        dying.setdefault(end[step.out], []).append(buffer)
    schedule.reuse = plan
    schedule.release = release_after(schedule, plan)
    return schedule


def release_after(schedule, reuse=None):
    """{step index: [Vars whose names the driver may drop after that step]} for the plan
    `reuse` ({out: donor}; None: every output in a fresh buffer), as plan_memory's
    schedule.release (module docstring)."""
    root, end, pinned, buffers = lifetimes(schedule, reuse)
    position = {out: t for t, step in enumerate(schedule.steps) for out in outputs(step)}
    names = {}      # allocated value -> it and its views, in definition order
    for out in position:
        if root[out] in end:
            names.setdefault(root[out], []).append(out)
    release = {}
    for buffer, occupants in buffers.items():
        values = [v for _, v in occupants]
        if pinned.intersection(values):
            continue
        for v in values[:-1]:  # the buffer is taken again: keep its root bound
            release.setdefault(end[v], []).extend(n for n in names[v] if n is not buffer)
        last = values[-1]
        release.setdefault(end[last], []).extend(names[last] + ([buffer] if buffer is not last else []))
    return {t: sorted(release[t], key=position.get) for t in sorted(release) if release[t]}


def live_bytes(schedule, reuse=None, release=True):
    """The bytes held at each step (a list, one entry per step) by the buffers the schedule
    allocates; see peak_bytes."""
    _, end, pinned, buffers = lifetimes(schedule, reuse)
    last = len(schedule.steps) - 1
    delta = [0] * (len(schedule.steps) + 1)  # bytes allocated (freed) at each step
    for occupants in buffers.values():  # a buffer: from its first value to its last read
        size = max(_bytes(v) for _, v in occupants)
        delta[occupants[0][0]] += size
        delta[max(last if v in pinned or not release else end[v] for _, v in occupants) + 1] -= size
    return list(itertools.accumulate(delta[:-1]))


def peak_bytes(schedule, reuse=None, release=True):
    """The most bytes held at once, over the steps, by the buffers the schedule allocates
    (Kernel, Matmul and Call outputs: elements of the stored shape times the dtype's size).
    Not counted: program inputs and constants, views (Reshape), and what generated code
    may add (the CUDA driver's matmul dtype casts, library routines' workspaces).

    reuse: {out: donor} (plan_memory's); None: every output in a fresh buffer.
    release=True: a buffer is held from its first allocation until the last step reading a
    value stored in it (a driver dropping schedule.release's names after each step); a
    buffer handed on is held in between its values too, so reuse cannot lower this figure
    (plan_memory's never raises it). Buffers holding program outputs are held until the end.
    release=False: nothing is freed before the schedule returns (a driver that keeps every
    local): the total size of the distinct buffers."""
    return max(live_bytes(schedule, reuse, release), default=0)
