"""Variable names, source comments and storage shapes shared by the generators."""
import linecache
import os

from ..ir.core import Var, var_numbers
from ..ir.fuse import Call


def physical_shape(var):
    """How a value is stored: 0-d values as one-element vectors (simpler for both targets)."""
    return tuple(var.aval.shape) or (1,)


class Names:
    """The generated code's names for values: the IR's `%8` is `v8`, numbered as `knetc inspect
    --stage fused` prints the same (optimised) program (ir.core.var_numbers)."""

    def __init__(self, program):
        self._names = {v: f"v{n}" for v, n in var_numbers(program).items()}

    def arg(self, var):
        # (u<n>: a value not in the program, such as a loop's carry that nothing reads)
        return self._names.setdefault(var, f"u{len(self._names)}")


def driver_args(program):
    """The driver's parameters: the program's inputs, then its other constants."""
    return list(program.inputs) + [v for v in program.constants if v not in program.inputs]


def driver_outputs(program):
    """What the driver returns: the program's distinct Var outputs, in order (numbers and None
    are filled in by the caller)."""
    return list(dict.fromkeys(v for v in program.outputs if isinstance(v, Var)))


def import_alias(path):
    """The name a generated module binds "package.module:function" to (a library routine
    or a scalar helper): "knetc.kernels.special:digamma" -> "special_digamma"."""
    module, function = path.split(":")
    return f"{module.rsplit('.', 1)[-1]}_{function}"


def import_line(path, suffix=""):
    """The line importing "package.module:function" (function<suffix>, when given) as its import_alias."""
    module, function = path.split(":")
    return f"from {module} import {function}{suffix} as {import_alias(path)}"


def routine_imports(schedule, target):
    """Import lines for the library routines the schedule's Call steps use."""
    return sorted({import_line(step.eqn.op.lowering[target]) for _, step in schedule.walk() if isinstance(step, Call)})


def call_expression(step, names, target):
    """`routine(inputs..., out, param=value, ...)` for a Call step (params as Python literals)."""
    args = [names.arg(x) if isinstance(x, Var) else repr(x) for x in step.eqn.inputs] + [names.arg(step.out)]
    args += [f"{key}={value!r}" for key, value in step.eqn.params.items()]
    return f"{import_alias(step.eqn.op.lowering[target])}({', '.join(args)})"


def source_comment(loc):
    """The comment naming a user's source line, put before the code generated from it:
    (".../mnist_mlp.py", 30) -> "# mnist_mlp.py:30  h = kn.relu(x @ w1 + b1)"."""
    path, line = loc
    text = linecache.getline(path, line).strip()
    return f"# {os.path.basename(path)}:{line}" + (f"  {text}" if text else "")


def commented_steps(schedule):
    """The schedule's steps, each with the comments to put before it in the driver: the
    user's source lines it computes (every line a fused kernel's ops come from), each
    once where it differs from the line named last."""
    order = {e: i for i, e in enumerate(schedule.program.eqns)}
    last = None
    for step in schedule.steps:
        comments = []
        for loc in _source_lines(schedule, step, order):
            if loc != last:
                comments.append(source_comment(loc))
                last = loc
        yield comments, step


def _source_lines(schedule, step, order):
    eqn = getattr(step, "eqn", None) or schedule.producers.get(step.out)
    group, stack = [], [eqn] if eqn is not None else []
    while stack:  # the equations a kernel computes, through the values fused into it
        eqn = stack.pop()
        group.append(eqn)
        stack.extend(schedule.inlined[x] for x in eqn.inputs if isinstance(x, Var) and x in schedule.inlined)
    return [e.loc for e in sorted(group, key=lambda e: order.get(e, 0)) if e.loc is not None]
