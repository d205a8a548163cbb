"""Symbolic reverse mode: from a primal program, the program that also computes gradients.

The adjoint equations are emitted by the same rules the eager tape runs (the op table's
`grads`), applied to IR values, so the result is ordinary IR that the passes optimise and
fuse with the primal equations. The adjoint of a loop region (ir/loops.py) is a loop
running the other way over the body's adjoint, fed with the values the forward loop
stacks for it step by step (loop_adjoint)."""
from ..ir.core import Builder, Eqn, Var, needed_by
from ..ir.fuse import fusion_kind, recomputable
from ..ir.loops import LOOP, emit_loop, float_typed, project
from ..ops.elementwise import add


def adjoint_program(program, wrt, seed_input=False):
    """The joint program: the primal outputs, then d outputs[0] / d inputs[i] for i in wrt.

    outputs[0] must be a scalar, seeded with 1, or with `seed_input` any shape, seeded by
    a cotangent appended to the inputs. A gradient that is identically zero is None.
    """
    y = program.outputs[0]
    if not isinstance(y, Var):
        return program.replace(outputs=program.outputs + [None] * len(wrt))
    if y.size != 1 and not seed_input:
        raise ValueError(f"grad: the function must return a scalar, got shape {y.aval.shape}")
    seed = Var(y.aval) if seed_input else None
    active = _depends_on(program, {program.inputs[i] for i in wrt})
    with Builder() as b:
        b.eqns, b.constants = list(program.eqns), dict(program.constants)
        cotangents = backward_pass(b, program.eqns, {y: seed if seed_input else b.filled(y.aval, 1.0)}, active)
    gradients = [cotangents.get(program.inputs[i]) for i in wrt]
    inputs = program.inputs + ([seed] if seed_input else [])
    return program.replace(inputs=inputs, eqns=b.eqns, outputs=program.outputs + gradients, constants=b.constants)


def backward_pass(b, eqns, cotangents, active):
    """Emit into the builder `b` the adjoint of `eqns`, last equation first, from the
    cotangents of some of their values ({Var: cotangent}); returns the cotangents of every
    value reached, the inputs' included. `active`: the values depending on a differentiated
    input (no adjoint is emitted for the others)."""
    of_loop = {}  # a loop's value -> {output index: cotangent}
    for eqn in reversed(eqns):
        if eqn.op.kind == "loop_output":
            if (dy := cotangents.pop(eqn.out, None)) is not None:
                of_loop.setdefault(eqn.inputs[0], {})[eqn.params["index"]] = dy
            continue
        b.loc = eqn.loc  # adjoint equations point at the primal line they differentiate
        if eqn.op.kind == "loop":
            dys = of_loop.pop(eqn.out, None)
            contributions = loop_adjoint(b, eqn, dys, active) if dys else []
        else:
            if (dy := cotangents.pop(eqn.out, None)) is None:
                continue
            contributions = [(x, rule(dy, eqn.out, *eqn.inputs, **eqn.params))
                             for x, rule in zip(eqn.inputs, eqn.op.grads)
                             if rule is not None and isinstance(x, Var) and x in active]
        _accumulate(cotangents, contributions)
    return cotangents


def _accumulate(cotangents, contributions):
    """Add each (value, gradient) to the value's cotangent (a None gradient is zero)."""
    for x, g in contributions:
        if g is not None:
            cotangents[x] = g if x not in cotangents else add(cotangents[x], g)
    return cotangents


def loop_adjoint(b, eqn, dys, active):
    """The adjoint of the loop equation `eqn`, given its outputs' cotangents ({index: dy}).

    The body is differentiated once. Its equations the primal results need stay in the
    forward loop, which now also stacks, step by step, the values the rest reads (it
    replaces `eqn` in b.eqns); the rest becomes the body of a loop running the other way:
    its carries are the carries' cotangents and the sums of the invariants' gradients, and
    it stacks each sliced input's gradient at the row the forward step read.
    Returns [(input of eqn, its gradient)]."""
    spec = eqn.params["spec"]
    body, k, p = spec.body, spec.carried, spec.invariant
    inputs, outputs = body.inputs, body.outputs
    wrt = {i for i, x in enumerate(eqn.inputs) if isinstance(x, Var) and x in active and float_typed(inputs[i])}
    depends = _depends_on(body, {inputs[i] for i in wrt})
    while more := {j for j in range(k) if outputs[j] in depends and float_typed(inputs[j])} - wrt:
        wrt |= more  # a carry whose next value depends on a differentiated input is differentiated too
        depends = _depends_on(body, {inputs[i] for i in wrt})
    seeded = sorted(i for i in dys if i >= k)
    hot = {j for j in dys if j < k and j in wrt}  # carries whose cotangent flows back step by step
    needed = needed_by(body.eqns, [outputs[i] for i in sorted(hot) + seeded])
    while more := {j for j in wrt if j < k and inputs[j] in needed} - hot:
        hot |= more  # (a differentiated carry that those outputs read flows back too)
        needed = needed_by(body.eqns, [outputs[i] for i in sorted(hot) + seeded])
    hot = sorted(hot)

    with Builder() as joint:  # the body and its adjoint
        joint.eqns, joint.loc = list(body.eqns), eqn.loc
        seeds = {i: Var(outputs[i].aval) for i in hot + seeded}
        cotangents = _accumulate({}, [(outputs[i], seed) for i, seed in seeds.items()])
        cotangents = backward_pass(joint, body.eqns, cotangents, depends)
        carry_grads = [cotangents[inputs[j]] if inputs[j] in cotangents else joint.filled(inputs[j].aval, 0.0)
                       for j in hot]
        sums = [(i, cotangents[inputs[i]]) for i in range(k, k + p) if i in wrt and inputs[i] in cotangents]
        partial = [Var(g.aval) for _, g in sums]
        totals = [add(s, g) for s, (_, g) in zip(partial, sums)]
        row_grads = [(i, cotangents[inputs[i]]) for i in range(k + p, len(inputs))
                     if i in wrt and inputs[i] in cotangents]
    b.constants.update(joint.constants)

    gradients = carry_grads + totals + [g for _, g in row_grads]
    forward, backward_eqns, produced, reads = _partition(joint.eqns, outputs, gradients)
    position = {v: i for i, v in enumerate(inputs)}
    saved, invariants, rows = [], [], []
    for v in reads:
        i = position.get(v)
        if v in produced or (i is not None and i < k):
            saved.append(v)  # a value of the step: stacked by the forward loop
        elif i is not None and i < k + p:
            invariants.append((v, eqn.inputs[i]))
        elif i is not None:
            rows.append((v, eqn.inputs[i], *spec.rows[i - k - p]))

    forward_spec = spec.replace(body=body.replace(eqns=forward, outputs=list(outputs) + saved),
                                stacked=spec.stacked + ((spec.length, 1, 0),) * len(saved),
                                saved=spec.saved + len(saved))
    b.eqns[next(i for i, e in enumerate(b.eqns) if e is eqn)] = Eqn(LOOP, eqn.inputs, {"spec": forward_spec},
                                                                     eqn.out, eqn.loc)
    stacks = project(b, eqn.out, forward_spec, range(len(outputs), len(outputs) + len(saved)))

    carries = [(seeds[j], dys[j] if j in dys else b.filled(inputs[j].aval, 0.0)) for j in hot]
    carries += [(s, b.filled(s.aval, 0.0)) for s in partial]
    rows = [(v, stack, 1, 0) for v, stack in zip(saved, stacks)] + rows
    rows += [(seeds[i], dys[i], *spec.stacked[i - k][1:]) for i in seeded]
    stacked = [(g, eqn.inputs[i].aval.shape[0], *spec.rows[i - k - p]) for i, g in row_grads]
    finals, gradient_rows = emit_loop(b, spec.length, carries, invariants, rows, backward_eqns,
                                      carry_grads + totals, stacked, reverse=not spec.reverse)
    positions = hot + [i for i, _ in sums + row_grads]  # (finals: the carries' cotangents, then the sums)
    return [(eqn.inputs[i], g) for i, g in zip(positions, finals + gradient_rows) if eqn.inputs[i] in active]


def split(joint, n_primal, n_inputs):
    """Split a joint program (seeded by its last input) into forward and backward programs.

    forward: the first n_inputs inputs -> primal outputs + residuals (values the backward
    pass needs). backward: all joint inputs + residuals -> the gradient outputs."""
    forward_eqns, backward_eqns, forward_vars, reads = _partition(joint.eqns, joint.outputs[:n_primal],
                                                                  joint.outputs[n_primal:])
    residuals = [v for v in reads if v in forward_vars]
    forward = joint.replace(name=joint.name + "_forward", inputs=joint.inputs[:n_inputs], eqns=forward_eqns,
                            outputs=list(joint.outputs[:n_primal]) + residuals)
    backward = joint.replace(name=joint.name + "_backward", inputs=joint.inputs + residuals, eqns=backward_eqns,
                             outputs=list(joint.outputs[n_primal:]))
    return forward, backward, len(residuals)


def _partition(eqns, primal_outputs, gradients):
    """(forward, backward, the values forward computes for backward, the Vars backward and
    `gradients` read in first-read order). forward: the equations the primal outputs need,
    with the outputs of the loops among them (a forward loop's stacked values, read by the
    adjoint loop); backward: the rest and the cheap ones it computes again; both in program order."""
    needed = needed_by(eqns, primal_outputs)
    loops = {e.out for e in eqns if e.op.kind == "loop" and e.out in needed}
    forward = [e for e in eqns if e.out in needed or (e.op.kind == "loop_output" and e.inputs[0] in loops)]
    produced = {e.out for e in forward}
    # A cheap value the backward pass reads (0.5 * x in a GELU) is computed there again
    # rather than stored by the forward pass, where that reads no more (x is stored instead),
    # only kernels read it (a GEMM's operand would be a kernel of its own) and it has no
    # input check (the forward pass made it: nll's labels are not copied down again).
    reads, producers = {x for e in eqns if e.out not in produced for x in e.inputs}, {e.out: e for e in eqns}
    kept = {x for e in eqns if e.out not in produced and fusion_kind(e) not in ("elementwise", "reduce")
            for x in e.inputs} | set(primal_outputs)  # (read outside kernels, or returned)
    for e in reversed(forward):
        if e.out in reads and e.out not in kept and e.op.input_check is None and recomputable(e, producers):
            produced.discard(e.out)
            reads.update(e.inputs)
    backward = [e for e in eqns if e.out not in produced]
    reads = [x for e in backward for x in e.inputs] + list(gradients)
    return forward, backward, produced, list(dict.fromkeys(x for x in reads if isinstance(x, Var)))


def _depends_on(program, sources):
    """The Vars whose value depends on any of `sources`."""
    active = set(sources)
    for eqn in program.eqns:
        if any(isinstance(x, Var) and x in active for x in eqn.inputs):
            active.add(eqn.out)
    return active
