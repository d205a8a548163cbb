"""Loop regions: a `for t in range(n)` whose body is traced once and stays a loop.

    %9: loop = loop[length=128] %3 %1 %2 %0         # %3 the carry's start, %1 %2 loop-invariant, %0 sliced
      body(%10: f32[32,64], %1: f32[64,64], %2: f32[64], %11: f32[32,64]):   # carry, invariants, row %0[t]
        %12: f32[32,64] = matmul %10 %1
        ...
        return %15                                     # the carry's next value, then stacked rows
    %16: f32[32,64] = loop_output[index=0] %9

A loop equation reads, in order: the carries' start values, the loop-invariant values and
the sliced arrays. Its body (a Program) reads, in the same order, the carries' current
values, the invariants and one row of each sliced array (`source[scale * t + offset]`),
and returns the carries' next values, then the rows it stacks: stacked output j is an
array whose row `scale * t + offset` is the body's value at step t (rows no step writes are
zero). `loop_output[index=i]` equations name the loop's results: the carries' final
values, then the stacked arrays. The counter t runs over 0..length-1, or backwards with
`reverse` (the adjoint of a loop is the reversed loop: ad/reverse.py).
"""
from dataclasses import dataclass, replace

import numpy as np

from ..ops.core import Aval, Op
from .core import Eqn, Program, Var


def _no_reference(*args, **params):
    raise NotImplementedError("loop regions exist only in compiled programs")


LOOP = Op("loop", _no_reference, _no_reference, (), "loop")
LOOP_OUTPUT = Op("loop_output", _no_reference, _no_reference, (), "loop_output")
LOOP_AVAL = Aval((), None)  # the loop equation's own value: only its outputs are arrays


@dataclass(frozen=True, eq=False)
class LoopSpec:
    """A loop equation's parameters (see the module docstring)."""
    body: Program
    length: int
    carried: int         # the body's first `carried` inputs and outputs are the carries
    invariant: int       # then `invariant` loop-invariant inputs, then one row per sliced array
    rows: tuple          # (scale, offset) per sliced input
    stacked: tuple       # (rows, scale, offset) per stacked output
    reverse: bool = False
    saved: int = 0       # the last `saved` stacked outputs are values kept for the adjoint loop

    def replace(self, **changes):
        return replace(self, **changes)

    def output_avals(self):
        carries = [v.aval for v in self.body.inputs[:self.carried]]
        stacks = [Aval((rows,) + y.aval.shape, y.aval.dtype)
                  for y, (rows, _, _) in zip(self.body.outputs[self.carried:], self.stacked)]
        return carries + stacks

    def __repr__(self):
        text = f"length={self.length}" + (", reverse" if self.reverse else "")
        if self.saved:
            text += f", stacks {self.saved} value{'s' if self.saved > 1 else ''} per step for the adjoint"
        return text


def covers(rows, length, scale, offset):
    """Do the rows `scale * t + offset`, t < length, cover 0..rows-1 (so a stacked array
    needs no zero fill)?"""
    return length == rows and (scale, offset) in ((1, 0), (-1, rows - 1))


def row_index(counter, scale, offset):
    """`scale * t + offset` as source text: "t5", "127 - t5", "2 * t5 + 1"."""
    if scale == -1 and offset:
        return f"{offset} - {counter}"
    term = counter if scale == 1 else f"-{counter}" if scale == -1 else f"{scale} * {counter}"
    return f"{term} {'+' if offset > 0 else '-'} {abs(offset)}" if offset else term


def emit_loop(builder, length, carries, invariants, rows, eqns, carry_outputs, stacked, reverse=False, saved=0):
    """Append a loop to `builder`: its body's loop-invariant equations first (hoisted: they
    read nothing that changes between steps), then the loop equation and its outputs.

    carries: [(body Var, start value)]; invariants: [(body Var, outer value)]; rows: [(body
    Var, sliced array, scale, offset)]; eqns: the body's equations; carry_outputs: the
    carries' next values; stacked: [(body value, rows, scale, offset)]. Values the body reads
    from outside that are not listed become invariants of their own.
    Returns (the carries' final values, the stacked arrays)."""
    varying = {v for v, *_ in [*carries, *rows]}
    outer = {v: x for v, x in invariants if v is not x}
    kept = []  # (a transpose stays with the matmul that reads it: ir/fuse.py makes it a GEMM flag)
    for eqn in eqns:
        if eqn.op.state_inputs or eqn.op.matrix_transpose or any(x in varying for x in eqn.inputs):
            kept.append(eqn)
            varying.add(eqn.out)
        else:  # loop-invariant: computed once, before the loop
            builder.eqns.append(Eqn(eqn.op, [outer.get(x, x) for x in eqn.inputs], eqn.params, eqn.out, eqn.loc))
    outputs = list(carry_outputs) + [y for y, *_ in stacked]
    bound = varying | {v for v, _ in invariants}
    reads = [x for e in kept for x in e.inputs] + outputs
    invariants = list(invariants) + [(v, v) for v in dict.fromkeys(reads) if isinstance(v, Var) and v not in bound]
    body = Program("loop_body", [v for v, *_ in [*carries, *invariants, *rows]], kept, outputs)
    spec = LoopSpec(body, length, len(carries), len(invariants), tuple((s, o) for *_, s, o in rows),
                    tuple((n, s, o) for _, n, s, o in stacked), reverse, saved)
    loop = Var(LOOP_AVAL)
    inputs = [x for _, x, *_ in [*carries, *invariants, *rows]]
    builder.eqns.append(Eqn(LOOP, inputs, {"spec": spec}, loop, builder.loc))
    results = project(builder, loop, spec, range(len(outputs)))
    return results[:len(carries)], results[len(carries):]


def project(builder, loop, spec, indices):
    """`loop_output` equations naming the loop's outputs at `indices`."""
    avals = spec.output_avals()
    results = {i: Var(avals[i]) for i in indices}
    builder.eqns.extend(Eqn(LOOP_OUTPUT, (loop,), {"index": i}, out, builder.loc) for i, out in results.items())
    return list(results.values())


def bodies(eqns):
    """The bodies of the loops among `eqns`, nested ones too."""
    for eqn in eqns:
        if eqn.op.kind == "loop":
            body = eqn.params["spec"].body
            yield body
            yield from bodies(body.eqns)


def float_typed(v):
    return isinstance(v, Var) and v.aval.dtype is not None and np.issubdtype(v.aval.dtype, np.floating)
