"""Small named passes over a Program: decompose composites, simplify, CSE, DCE."""
from ..ops.core import Aval
from .core import Builder, Eqn, Var, needed_by


def _rewrite(program, visit):
    """Run `visit(eqn)` over the equations with inputs renamed through earlier rewrites, inside
    a Builder (ops it applies emit their equations there). `visit` returns a Var/number
    standing for eqn.out, or None to keep eqn."""
    renamed = {}
    with Builder() as b:
        b.constants = dict(program.constants)
        for eqn in program.eqns:
            inputs = tuple(renamed.get(x, x) if isinstance(x, Var) else x for x in eqn.inputs)
            eqn = Eqn(eqn.op, inputs, eqn.params, eqn.out, eqn.loc)
            b.loc = eqn.loc
            if (replacement := visit(eqn)) is None:
                b.eqns.append(eqn)
            else:
                renamed[eqn.out] = replacement
    outputs = [renamed.get(v, v) if isinstance(v, Var) else v for v in program.outputs]
    return program.replace(eqns=b.eqns, outputs=outputs, constants=b.constants)


def decompose(program):
    """Rewrite composite ops (logsumexp, softmax, ...) with the ops they are made of."""
    def visit(eqn):
        if eqn.op.kind != "composite":
            return None
        parts = eqn.op.decompose(*eqn.inputs, **eqn.params)
        if parts is None:  # (it would stay composite: this loop would never end)
            raise AssertionError(f"{eqn.op.name}'s decompose gave nothing for {eqn}")
        return parts
    while any(e.op.kind == "composite" for e in program.eqns):
        program = _rewrite(program, visit)
    return program


def simplify(program):
    """Algebraic identities that the adjoint rules leave behind (x*1, x+0, reshape to the
    same shape, double transposes and negations, casts to the same dtype): each op's own
    rules (`Op.simplify`, declared with the op)."""
    producers = {}
    producer = producers.get  # (None for a number)

    def constant(x):
        """The number x stands for: a Python number, or a constant-valued op (a 1-element `full`); else None."""
        if isinstance(x, (int, float)):
            return x
        eqn = producer(x)
        return None if eqn is None or eqn.op.constant is None else eqn.op.constant(**eqn.params)

    def visit(eqn):
        replacement = eqn.op.simplify(eqn, constant, producer) if eqn.op.simplify is not None else None
        if replacement is None:
            producers[eqn.out] = eqn
        return replacement
    return _rewrite(program, visit)


def cse(program):
    """Common subexpression elimination: identical equations compute once."""
    seen = {}

    def visit(eqn):
        key = (eqn.op.name, tuple(x if isinstance(x, Var) else (type(x), x) for x in eqn.inputs),
               tuple(sorted(eqn.params.items(), key=lambda kv: kv[0])))
        try:
            first = seen.setdefault(key, eqn.out)
        except TypeError:  # (an unhashable parameter: not merged)
            return None
        return None if first is eqn.out else first
    return _rewrite(program, visit)


def dce(program):
    """Dead code elimination: drop equations no output depends on."""
    live = needed_by(program.eqns, program.outputs)
    return program.replace(eqns=[eqn for eqn in program.eqns if eqn.out in live])


def optimize(program):
    """The standard pipeline before fusion, on the program and on its loops' bodies (constants
    the passes make in a body, a composite's, become the program's)."""
    constants = dict(program.constants)
    program = program.replace(eqns=[_with_optimized_body(e, constants) if e.op.kind == "loop" else e for e in program.eqns],
                              constants=constants)
    for step in (decompose, simplify, cse, simplify, dce):
        program = step(program)
    return program


def _with_optimized_body(eqn, constants):
    """A loop equation with its body optimised; constants the passes made in it go to `constants`
    and enter it as loop invariants (as emit_loop's free values do). A body result the passes
    reduced to a number is computed as an array again (the loop stores its results)."""
    spec, inputs, body = eqn.params["spec"], list(eqn.inputs), optimize(eqn.params["spec"].body)
    if made := {v: a for v, a in body.constants.items() if v not in body.inputs}:
        at = spec.carried + spec.invariant
        inputs[at:at] = made
        constants.update(made)
        body = body.replace(inputs=body.inputs[:at] + list(made) + body.inputs[at:], constants={})
        spec = spec.replace(invariant=spec.invariant + len(made))
    if any(not isinstance(y, Var) for y in body.outputs):
        with Builder() as b:
            b.eqns, b.loc = list(body.eqns), eqn.loc
            avals = [aval if i < spec.carried else Aval(aval.shape[1:], aval.dtype)  # (a stacked array's: its row's)
                     for i, aval in enumerate(spec.output_avals())]
            outputs = [y if isinstance(y, Var) else b.filled(aval, y) for y, aval in zip(body.outputs, avals)]
        body = body.replace(eqns=b.eqns, outputs=outputs)
    return Eqn(eqn.op, inputs, {"spec": spec.replace(body=body)}, eqn.out, eqn.loc)
