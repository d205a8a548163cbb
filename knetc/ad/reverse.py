"""Symbolic reverse mode: from a primal program, the program that also computes gradients.

The adjoint equations are emitted by the same rules the eager tape runs (the op table's
`grads`), applied to IR values, so the result is ordinary IR that the passes optimise and
fuse with the primal equations."""
import numpy as np

from ..ir.core import Builder, Var
from ..ops.elementwise import add, full


def adjoint_program(program, wrt, seed_input=False):
    """The joint program: the primal outputs, then d outputs[0] / d inputs[i] for i in wrt.

    outputs[0] must be a scalar, seeded with 1, or with `seed_input` any shape, seeded by
    a cotangent appended to the inputs. A gradient that is identically zero is None.
    """
    y = program.outputs[0]
    if not isinstance(y, Var):
        return program.replace(outputs=program.outputs + [None] * len(wrt))
    if int(np.prod(y.aval.shape)) != 1 and not seed_input:
        raise ValueError(f"grad: the function must return a scalar, got shape {y.aval.shape}")
    seed = Var(y.aval) if seed_input else None
    active = _depends_on(program, {program.inputs[i] for i in wrt})
    with Builder() as b:
        b.eqns, b.constants = list(program.eqns), dict(program.constants)
        cotangents = {y: seed if seed_input else b.emit(full, (), dict(shape=y.aval.shape, value=1.0, dtype=y.aval.dtype))}
        for eqn in reversed(program.eqns):
            dy = cotangents.pop(eqn.out, None)
            if dy is None:
                continue
            b.loc = eqn.loc  # adjoint equations point at the primal line they differentiate
            for i, x in enumerate(eqn.inputs):
                rule = eqn.op.grads[i] if i < len(eqn.op.grads) else None
                if rule is None or not isinstance(x, Var) or x not in active:
                    continue
                g = rule(dy, eqn.out, *eqn.inputs, **eqn.params)
                cotangents[x] = g if x not in cotangents else add(cotangents[x], g)
    gradients = [cotangents.get(program.inputs[i]) for i in wrt]
    inputs = program.inputs + ([seed] if seed_input else [])
    return program.replace(inputs=inputs, eqns=b.eqns, outputs=program.outputs + gradients, constants=b.constants)


def split(joint, n_primal, n_inputs):
    """Split a joint program (seeded by its last input) into forward and backward programs.

    forward: the first n_inputs inputs -> primal outputs + residuals (values the backward
    pass needs). backward: all joint inputs + residuals -> the gradient outputs."""
    primal = [v for v in joint.outputs[:n_primal] if isinstance(v, Var)]
    forward_vars = set()
    producers = {e.out: e for e in joint.eqns}
    stack = list(primal)
    while stack:
        v = stack.pop()
        if v in forward_vars or v not in producers:
            continue
        forward_vars.add(v)
        stack.extend(x for x in producers[v].inputs if isinstance(x, Var))
    forward_eqns = [e for e in joint.eqns if e.out in forward_vars]
    backward_eqns = [e for e in joint.eqns if e.out not in forward_vars]
    residuals = []
    for v in [x for e in backward_eqns for x in e.inputs] + list(joint.outputs[n_primal:]):
        if isinstance(v, Var) and v in forward_vars and v not in residuals:
            residuals.append(v)
    forward = joint.replace(name=joint.name + "_forward", inputs=joint.inputs[:n_inputs], eqns=forward_eqns,
                            outputs=list(joint.outputs[:n_primal]) + residuals)
    backward = joint.replace(name=joint.name + "_backward", inputs=joint.inputs + residuals, eqns=backward_eqns,
                             outputs=list(joint.outputs[n_primal:]))
    return forward, backward, len(residuals)


def _depends_on(program, sources):
    """The Vars whose value depends on any of `sources`."""
    active = set(sources)
    for eqn in program.eqns:
        if any(isinstance(x, Var) and x in active for x in eqn.inputs):
            active.add(eqn.out)
    return active
