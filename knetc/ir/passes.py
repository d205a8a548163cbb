"""Small named passes over a Program: decompose composites, simplify, CSE, DCE."""
import numpy as np

from .core import Builder, Eqn, Var


def _rewrite(program, visit):
    """Run `visit(eqn, builder)` over the equations with inputs renamed through earlier
    rewrites. `visit` returns a Var/number standing for eqn.out, or None to keep eqn."""
    renamed = {}
    with Builder() as b:
        b.constants = dict(program.constants)
        for eqn in program.eqns:
            inputs = tuple(renamed.get(x, x) if isinstance(x, Var) else x for x in eqn.inputs)
            eqn = Eqn(eqn.op, inputs, eqn.params, eqn.out, eqn.loc)
            b.loc = eqn.loc
            replacement = visit(eqn, b)
            if replacement is None:
                b.eqns.append(eqn)
            else:
                renamed[eqn.out] = replacement
    outputs = [renamed.get(v, v) if isinstance(v, Var) else v for v in program.outputs]
    return program.replace(eqns=b.eqns, outputs=outputs, constants=b.constants)


def decompose(program):
    """Rewrite composite ops (logsumexp, softmax, ...) with the ops they are made of."""
    def visit(eqn, b):
        if eqn.op.kind != "composite":
            return None
        return eqn.op.decompose(*eqn.inputs, **eqn.params)
    while any(e.op.kind == "composite" for e in program.eqns):
        program = _rewrite(program, visit)
    return program


def _constant_value(x, producers):
    """The number x stands for: a Python number, or a 0-d/1-element `full`; else None."""
    if isinstance(x, (int, float)):
        return x
    eqn = producers.get(x)
    if eqn is not None and eqn.op.name == "full" and int(np.prod(eqn.params["shape"])) == 1:
        return eqn.params["value"]
    return None


def simplify(program):
    """Algebraic identities that the adjoint rules leave behind (x*1, x+0, reshape to the
    same shape, double transposes and negations, casts to the same dtype)."""
    producers = {}

    def same(x, eqn):
        return isinstance(x, Var) and x.aval == eqn.out.aval

    def visit(eqn, b):
        name, ins, p = eqn.op.name, eqn.inputs, eqn.params
        c = [_constant_value(x, producers) for x in ins]
        if name == "mul" and c[1] == 1 and same(ins[0], eqn) or name in ("add", "sub") and c[1] == 0 and same(ins[0], eqn) \
                or name == "div" and c[1] == 1 and same(ins[0], eqn):
            return ins[0]
        if name == "mul" and c[0] == 1 and same(ins[1], eqn) or name == "add" and c[0] == 0 and same(ins[1], eqn):
            return ins[1]
        if name in ("reshape", "broadcast_to", "astype") and same(ins[0], eqn):
            return ins[0]
        inner = producers.get(ins[0]) if ins and isinstance(ins[0], Var) else None
        if name == "neg" and inner is not None and inner.op.name == "neg":
            return inner.inputs[0]
        if name == "reshape" and inner is not None and inner.op.name == "reshape":
            return eqn.op(inner.inputs[0], **p)
        if name == "transpose" and inner is not None and inner.op.name == "transpose":
            perm = tuple(inner.params["perm"][i] for i in p["perm"])
            return inner.inputs[0] if perm == tuple(range(len(perm))) else eqn.op(inner.inputs[0], perm=perm)
        if name == "transpose" and p["perm"] == tuple(range(len(p["perm"]))):
            return ins[0]
        if name == "reduce_sum" and all(ins[0].aval.shape[a] == 1 for a in p["axes"]):
            return ins[0]  # summing over size-1 axes (keepdims) changes nothing
        producers[eqn.out] = eqn
        return None
    return _rewrite(program, visit)


def cse(program):
    """Common subexpression elimination: identical equations compute once."""
    seen = {}

    def visit(eqn, b):
        key = (eqn.op.name, tuple(x if isinstance(x, Var) else (type(x), x) for x in eqn.inputs),
               tuple(sorted(eqn.params.items(), key=lambda kv: kv[0])))
        try:
            hash(key)
        except TypeError:
            return None
        if key in seen:
            return seen[key]
        seen[key] = eqn.out
        return None
    return _rewrite(program, visit)


def dce(program):
    """Dead code elimination: drop equations no output depends on."""
    live = {v for v in program.outputs if isinstance(v, Var)}
    kept = []
    for eqn in reversed(program.eqns):
        if eqn.out in live:
            kept.append(eqn)
            live.update(x for x in eqn.inputs if isinstance(x, Var))
    return program.replace(eqns=kept[::-1])


def optimize(program):
    """The standard pipeline before fusion."""
    for step in (decompose, simplify, cse, simplify, dce):
        program = step(program)
    return program
