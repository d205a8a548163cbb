"""Variable names and storage shapes shared by the generators."""
from ..ir.core import Var


def physical_shape(var):
    """How a value is stored: 0-d values as one-element vectors (simpler for both targets)."""
    return tuple(var.aval.shape) or (1,)


class Names:
    def __init__(self, program):
        self.program = program
        self._names = {}
        for i, v in enumerate(program.inputs):
            self._names[v] = f"a{i}"
        for i, v in enumerate(program.constants):
            self._names.setdefault(v, f"c{i}")

    def arg(self, var):
        if var not in self._names:
            self._names[var] = f"v{len(self._names)}"
        return self._names[var]

    def driver_args(self, program):
        return list(program.inputs) + [v for v in program.constants if v not in program.inputs]

    def driver_outputs(self, program):
        """Distinct Var outputs, in order (numbers and None are filled in by the caller)."""
        seen = []
        for v in program.outputs:
            if isinstance(v, Var) and v not in seen:
                seen.append(v)
        return seen


def import_alias(path):
    """The name a generated module binds "package.module:function" to (a library routine
    or a scalar helper): "knetc.kernels.special:digamma" -> "special_digamma"."""
    module, function = path.split(":")
    return f"{module.rsplit('.', 1)[-1]}_{function}"


def routine_imports(schedule, target):
    """Import lines for the library routines the schedule's Call steps use."""
    lines = set()
    for step in schedule.steps:
        if type(step).__name__ == "Call":
            path = step.eqn.op.lowering[target]
            module, function = path.split(":")
            lines.add(f"from {module} import {function} as {import_alias(path)}")
    return sorted(lines)


def call_expression(step, names, target):
    """`routine(inputs..., out, param=value, ...)` for a Call step (params as Python literals)."""
    args = [names.arg(x) if isinstance(x, Var) else repr(x) for x in step.eqn.inputs]
    args.append(names.arg(step.out))
    args += [f"{key}={value!r}" for key, value in step.eqn.params.items()]
    return f"{import_alias(step.eqn.op.lowering[target])}({', '.join(args)})"
