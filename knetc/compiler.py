"""`@knetc.compile`: specialize a function on its arguments' structure, shapes and dtypes,
then translate (front end), differentiate (ad), optimise and fuse (ir), generate and load
kernels (backend). A specialization is reused for arguments of the same signature."""
import functools

import time

import numpy as np

from . import pytree
from .ad.reverse import adjoint_program, split
from .autograd import Param, Tracked, active_tape_levels, record_call, value_of
from .frontend import is_array, trace
from .ir.fuse import fuse
from .ir.passes import optimize
from .ir.core import Var
from .backend.module import directory_for, load_module
from .report import report

TARGETS = ("auto", "cpu", "cuda")


def resolve_target(target):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if target == "auto":
        from .runtime.device import real_gpu_available
        return "cuda" if real_gpu_available() else "cpu"
    return target


class Executable:
    """A program compiled for one target: `run(arrays)` returns its outputs."""

    def __init__(self, program, target, cache=True):
        started = time.perf_counter()
        self.program = optimize(program)
        self.schedule = fuse(self.program)
        self.target = target
        backend = _backend(target)
        self.source = backend.generate(self.schedule, cache=cache is not False)
        self.module = load_module(f"{target}_{program.name}", self.source, directory_for(cache))
        self.constants = [value for var, value in self.program.constants.items() if var not in self.program.inputs]
        outputs = [v for v in self.program.outputs]
        distinct = []
        for v in outputs:
            if isinstance(v, Var) and v not in distinct:
                distinct.append(v)
        self._slots = [(distinct.index(v), v.aval.shape) if isinstance(v, Var) else (None, v) for v in outputs]
        self._runner = backend.Runner(self)
        report("compile", f"{program.name} [{target}]: {len(self.schedule.kernels())} kernels, "
                       f"{time.perf_counter() - started:.2f}s")

    def run(self, arrays):
        results = self._runner(arrays)
        return [value if index is None else _logical(results[index], value) for index, value in self._slots]


def _logical(array, shape):
    return array.reshape(shape) if array.shape != shape else array


def _backend(target):
    if target == "cpu":
        from .backend import cpu
        return cpu
    from .backend import cuda
    return cuda


class Specialization:
    def __init__(self, program, translation, out_treedef):
        self.program, self.translation, self.out_treedef = program, translation, out_treedef

    def guards_hold(self):
        return all(g.holds() for g in self.translation.guards)

    def captured_values(self):
        return [value_of(p) for p, _ in self.translation.captures]


@pytree.register_leaf_type  # a function, not a container of arrays
class CompiledFunction:
    """The result of `@knetc.compile`: call it like the original function."""

    def __init__(self, fn, target="auto", cache=True):
        functools.update_wrapper(self, fn)
        self.fn, self.requested_target, self.cache = fn, target, cache
        self.target = resolve_target(target)
        self._specializations = {}
        self.compilations = 0

    def __repr__(self):
        return f"<knetc.compile {self.fn.__qualname__} target={self.target}>"

    # -------------------------------------------------------------- specializations
    def _signature(self, leaves):
        key = []
        for leaf in leaves:
            if is_array(leaf):
                value = value_of(leaf)
                key.append((tuple(value.shape), np.dtype(value.dtype).str))
            else:
                try:
                    hash(leaf)
                except TypeError:
                    raise TypeError(f"{self.fn.__name__}: argument leaf {leaf!r} is neither an array nor hashable") from None
                key.append(("static", type(leaf), leaf))
        return tuple(key)

    def _specialize(self, mode, args, kwargs, leaves, treedef, build):
        key = (mode, treedef, self._signature(leaves))
        spec = self._specializations.get(key)
        if spec is not None and spec.guards_hold():
            return spec
        program, translation, out_treedef = trace(self.fn, args, kwargs)
        spec = Specialization(program, translation, out_treedef)
        build(spec)
        self.compilations += 1
        self._specializations[key] = spec
        return spec

    def specializations(self):
        return list(self._specializations.values())

    def generated_modules(self):
        """The kernel modules of every specialization (calls, gradients, diff forward/backward)."""
        modules = {}
        for spec in self._specializations.values():
            for name in ("executable", "forward", "backward"):
                executable = getattr(spec, name, None)
                if executable is not None:
                    modules[executable.module.__knetc_path__] = executable.module
        return list(modules.values())

    # -------------------------------------------------------------- calling
    def __call__(self, *args, **kwargs):
        leaves, treedef = pytree.flatten((args, kwargs))
        if active_tape_levels(leaves) or any(isinstance(p, (Param, Tracked)) for p in leaves):
            recorded = self._call_recorded(args, kwargs, leaves, treedef)
            if recorded is not NotImplemented:
                return recorded

        def build(spec):
            spec.executable = Executable(spec.program, self.target, self.cache)
        spec = self._specialize("call", args, kwargs, leaves, treedef, build)
        arrays = [value_of(x) for x in leaves if is_array(x)] + spec.captured_values()
        return pytree.unflatten(spec.out_treedef, spec.executable.run(arrays))

    def _call_recorded(self, args, kwargs, leaves, treedef):
        """Inside `diff`: run the compiled forward and record one node whose backward pass is
        the compiled adjoint. Nested tapes (higher-order gradients) run the Python function
        eagerly instead, so every op is recorded."""
        levels = active_tape_levels(leaves)
        if not levels:
            return NotImplemented
        nested = len(levels) > 1 or any(isinstance(x, (Param, Tracked)) and isinstance(x.value, (Param, Tracked))
                                         for x in leaves)
        if nested:
            return self.fn(*args, **kwargs)
        array_leaves = [x for x in leaves if is_array(x)]
        tracked = tuple(bool(active_tape_levels([x])) for x in array_leaves)

        def build(spec):
            program = spec.program
            n_inputs = len(program.inputs)
            floating = [i for i, v in enumerate(program.inputs) if np.issubdtype(v.aval.dtype, np.floating)]
            wrt = [i for i in floating if i >= len(tracked) or tracked[i]]
            spec.wrt = wrt
            spec.single = len(program.outputs) == 1 and isinstance(program.outputs[0], Var)
            if not spec.single:
                return
            joint = optimize(adjoint_program(program, wrt, seed_input=True))
            forward, backward, _ = split(joint, 1, n_inputs)
            spec.forward = Executable(forward, self.target, self.cache)
            spec.backward = Executable(backward, self.target, self.cache)
        spec = self._specialize(("forward", tracked), args, kwargs, leaves, treedef, build)
        if not spec.single:
            return self.fn(*args, **kwargs)
        captured = [p for p, _ in spec.translation.captures]
        inputs = array_leaves + captured
        arrays = [value_of(x) for x in inputs]
        outs = spec.forward.run(arrays)
        y, residuals = outs[0], outs[1:]

        def backward(dy):
            grads = spec.backward.run(arrays + [np.asarray(value_of(dy), dtype=y.dtype).reshape(np.shape(y))] + residuals)
            per_input = [None] * len(inputs)
            for i, g in zip(spec.wrt, grads):
                per_input[i] = g
            return per_input
        return record_call(y, inputs, backward)

    def gradient_function(self, argnum=0, with_loss=False):
        """The compiled gradient of this (scalar) function w.r.t. argument `argnum`."""
        def gradient(*args, **kwargs):
            leaves, treedef = pytree.flatten((args, kwargs))
            if active_tape_levels(leaves):  # inside diff (grad of grad): every op must be recorded
                from .autograd import grad, gradloss
                return (gradloss if with_loss else grad)(self.fn, argnum)(*args, **kwargs)

            def build(spec):
                program = spec.program
                target_leaves, spec.target_treedef = pytree.flatten(args[argnum])
                start = len(pytree.flatten(tuple(args[:argnum]))[0])
                input_of_leaf = {}
                for i, leaf in enumerate(leaves):
                    if is_array(leaf):
                        input_of_leaf[i] = len(input_of_leaf)
                positions = [input_of_leaf.get(start + j) for j in range(len(target_leaves))]
                wrt = [p for p in positions if p is not None and np.issubdtype(program.inputs[p].aval.dtype, np.floating)]
                spec.executable = Executable(adjoint_program(program, wrt), self.target, self.cache)
                n_out = len(program.outputs)
                spec.grad_slots = [None if p not in wrt else n_out + wrt.index(p) for p in positions]
            spec = self._specialize(("grad", argnum), args, kwargs, leaves, treedef, build)
            arrays = [value_of(x) for x in leaves if is_array(x)] + spec.captured_values()
            outs = spec.executable.run(arrays)
            g = pytree.unflatten(spec.target_treedef, [None if s is None else outs[s] for s in spec.grad_slots])
            if with_loss:
                return g, pytree.unflatten(spec.out_treedef, outs[:len(spec.program.outputs)])
            return g
        gradient.__name__ = f"grad_{self.fn.__name__}"
        return gradient


def compile(fn=None, *, target="auto", cache=True):
    """Compile a model or loss function: `@kn.compile` or `@kn.compile(target="cpu")`.

    target: "cpu" (Numba njit + BLAS), "cuda" (Numba CUDA kernels + cuBLAS), or "auto" (cuda
    when a GPU is present). cache: True keeps generated kernels and Numba's machine code in
    KNETC_CACHE_DIR (default ~/.cache/knetc) for later processes; False keeps nothing after
    this process; a path uses that directory (e.g. to ship kernels with a script).

    The function is parsed from its source, typed for its arguments' shapes and dtypes,
    differentiated symbolically when a gradient is asked for, and run as generated Numba
    kernels. It returns what the Python function returns."""
    if fn is None:
        return lambda f: CompiledFunction(f, target, cache)
    return CompiledFunction(fn, target, cache)



