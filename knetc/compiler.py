"""`@knetc.compile`: specialize a function on its arguments' structure, shapes and dtypes,
then translate (front end), differentiate (ad), optimise and fuse (ir), generate and load
kernels (backend). A specialization is reused for arguments of the same signature."""
import contextlib
import decimal
import fractions
import functools
import inspect
import time
import types
import warnings

import numpy as np

from . import context, pytree
from .ad.reverse import adjoint_program, split
from .autograd import (Param, Tape, Tracked, active_tape_levels, check_argnum, grad, gradloss, record_call, recording,
                       taped_gradient, value_of)
from .frontend import is_array, trace
from .ir.fuse import Call, fuse
from .ir.memory import plan_memory
from .ir.passes import optimize
from .ir.core import Var
from .backend import cpu, cuda
from .backend.names import driver_outputs, physical_shape
from .backend.cache import directory_for, load_kernel, load_module, routines_key, seal
from .errors import CompileError
from .report import count, enabled, report
from .runtime import device_state
from .runtime.device import cuda_compiler_available, host_copy, is_device_array, real_gpu_available

TARGETS = ("auto", "cpu", "cuda")
BACKENDS = {"cpu": cpu, "cuda": cuda}
_LOG_LAUNCHES = enabled("launch")  # read once: checked on every run


def resolve_target(target):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if target == "auto":
        if not real_gpu_available():
            return "cpu"
        if not cuda_compiler_available():
            warnings.warn("knetc: a GPU is present but the CUDA compiler libraries are not installed, so "
                          "target='auto' compiles for the CPU; install them with `pip install -e .[cuda]` "
                          "(in a clone of knetc) to use the GPU", RuntimeWarning, stacklevel=3)
            return "cpu"
        return "cuda"
    return target


# ------------------------------------------------------------------ the pipeline
# A compiled function runs through these stages, each a function of the previous stage's
# value, each once per program: CompiledFunction only chooses the mode (which programs to
# build) and caches the result. `knetc inspect --stage` shows the value after each stage.
#
#   trace          Python source -> typed IR program           (trace_in_mode, frontend.trace)
#   differentiate  program -> the program the mode runs         (ad: adjoint_program)
#   optimize       program -> optimised program                 (ir.passes.optimize)
#   split          program -> {name: program} to compile        ("forward": forward + backward halves)
#   fuse           program -> fusion schedule                   (ir.fuse)
#   plan_memory    schedule -> schedule with buffer reuse and release points (ir.memory)
#   generate       schedule -> driver and kernel sources         (backend: cpu, cuda, driver)
#   load           sources -> loaded modules, as an Executable   (backend.cache)


def trace_in_mode(mode, target, fn, args, kwargs):
    """The trace stage: fn(*args, **kwargs) as a typed IR program (frontend.trace).

    Trace with kn.training() telling the mode, so that a specialization does not depend
    on where it was first called: gradient programs train (as inside diff, where "forward"
    specializations are traced), plain calls do not, and no tape around a plain call records.
    Dropout and batchnorm read the mode, and batchnorm the target (context.target())."""
    without_tape = context.without(Tape) if mode == "call" else contextlib.nullcontext()
    with without_tape, context.mode(training=mode != "call", target=target):
        return trace(fn, args, kwargs, mode)


def differentiate(program, mode, wrt=()):
    """The program `mode` runs: the primal ("call"), the value and its gradients w.r.t. the
    inputs `wrt` ("grad"), or the joint program seeded by its last input ("forward": split
    into the forward and backward halves after optimize)."""
    return program if mode == "call" else adjoint_program(program, wrt, seed_input=mode == "forward")


def split_joint(program, mode, n_inputs):
    """The programs to compile, by the Specialization attribute each becomes."""
    if mode != "forward":
        return {"executable": program}
    forward, backward, _ = split(program, 1, n_inputs)
    return {"forward": forward, "backward": backward}


def generate(schedule, target, cache=True):
    return BACKENDS[target].generate(schedule, cache=cache is not False)


def load(name, schedule, generated, target, cache=True, key=""):
    """The driver module, after the kernel modules it binds (shared by content)."""
    directory = directory_for(cache)
    kernels = [load_kernel(source, directory) for source in generated.kernels.values()]
    routines = [step.eqn.op.lowering[target] for _, step in schedule.walk() if isinstance(step, Call)]
    return load_module(f"{target}_{name}", generated.driver, directory, key + routines_key(routines)), kernels


STAGES = (trace_in_mode, differentiate, optimize, split_joint, fuse, plan_memory, generate, load)


def build(program, mode, target, wrt=(), n_inputs=None, cache=True, key=""):
    """Run the stages after trace on a traced `program`: {attribute: Executable}. Each
    Executable keeps its program before optimize (what `knetc inspect --stage adjoint`
    shows; its input checks run): a forward or backward half is split after optimize."""
    differentiated = differentiate(program, mode, wrt)
    executables = {}
    for name, part in split_joint(optimize(differentiated), mode, n_inputs).items():
        input_program = differentiated if mode != "forward" else part
        schedule = schedule_for(part, target)
        generated = generate(schedule, target, cache)
        driver, kernels = load(input_program.name, schedule, generated, target, cache, key)
        executables[name] = Executable(input_program, part, schedule, generated, driver, kernels, target)
    return executables


def schedule_for(program, target):
    """fuse and plan_memory for `target`: its kernels' structure says what may fuse (a value
    per row goes into the loop nest that reads it on the CPU, not on CUDA)."""
    return plan_memory(fuse(program, rows=BACKENDS[target].FUSES_ROWS))


def compile_program(program, target, cache=True, key=""):
    """One program, not differentiated, as an Executable (optimize, fuse, generate, load)."""
    return build(program, "call", target, cache=cache, key=key)["executable"]


class Executable:
    """A program compiled for one target: `run(arrays)` returns its outputs. Built by the
    stages (`build`): it takes the optimised program, its schedule, the generated code, and
    the loaded driver module and kernel modules.

    input_program: the program before optimize (its input checks are made before a run)."""

    def __init__(self, input_program, program, schedule, generated, module, kernel_modules, target):
        self.name, self.target, self.input_program = input_program.name, target, input_program
        self.program, self.schedule, self.generated = program, schedule, generated
        self.module, self.kernel_modules = module, kernel_modules
        constants = {var: value for var, value in program.constants.items() if var not in program.inputs}
        self.constants = [np.reshape(value, physical_shape(var))  # stored as the kernels index them (0-d as (1,))
                          for var, value in constants.items()]
        distinct = driver_outputs(program)
        self._slots = [(distinct.index(v), v.aval.shape) if isinstance(v, Var) else (None, v) for v in program.outputs]
        # results that are the program's constants or inputs (x * 1 is x): each call returns a copy, the
        # caller may write into it (a forward half's residuals are values it computes, never inputs)
        self._owned_outputs = {i for i, v in enumerate(distinct) if v in program.constants or v in program.inputs}
        self._input_checks = InputChecks(input_program, target).checks
        # Arrays that ops update in place (op.state_inputs: batchnorm's running statistics,
        # dropout's counter): on CUDA one device copy each, shared by every program, current
        # before each run; the host array current when host code reads it (runtime/device_state.py).
        self.state_inputs = {eqn.inputs[i] for eqn in program.eqns for i in eqn.op.state_inputs}
        self._runner = BACKENDS[target].Runner(self)
        self._state = [(j, self.constants[j]) for j, var in enumerate(constants) if var in self.state_inputs]
        self._first_run = True
        self._launch_text = f"{self.name} [{target}]: {self.schedule.summary()}"

    def run(self, arrays):
        if _LOG_LAUNCHES:
            report("launch", self._launch_text)
        for position, check, params, where in self._input_checks:  # before anything runs: a bad label changes nothing
            check(host_copy(arrays[position]), where, **params)  # (a device value is copied down, counted in kn.stats())
        for j, host in self._state:
            self._runner.constants[j] = device_state.before_run(host, self.target)
        outputs = self._run_first(arrays) if self._first_run else self._outputs(self._runner(arrays))
        for _, host in self._state:
            device_state.after_run(host, self.target)
        return outputs

    def _outputs(self, results):
        return [value if index is None else _logical(results[index], value, index in self._owned_outputs)
                for index, value in self._slots]

    def _run_first(self, arrays):
        """The first run is when Numba compiles or loads the kernels that no earlier program
        needed: report which, and seal freshly compiled cache files."""
        before = [_numba_counts(m) for m in self.kernel_modules]
        started = time.perf_counter()
        elsewhere = self._runner.prepare(arrays)  # {kernel: signatures compiled by other processes}
        outputs = self._outputs(self._runner(arrays))
        self._first_run = False
        elapsed = time.perf_counter() - started
        # per module: (kernels loaded from Numba's cache, kernels loaded or compiled) since `before`
        moved = [tuple(now - was for now, was in zip(_numba_counts(m, elsewhere), b)) for m, b in zip(self.kernel_modules, before)]
        loaded, compiled = sum(hits for hits, _ in moved), sum(built - hits for hits, built in moved)
        for module, (hits, built) in zip(self.kernel_modules, moved):
            if built > hits:
                seal(module)
        kernels = len(self.kernel_modules)
        if compiled:
            count("compilations")
            workers = f" ({sum(elsewhere.values())} in other processes)" if elsewhere else ""
            report("compile", f"{self.name} [{self.target}]: {compiled} of {kernels} kernels compiled in {elapsed:.2f}s{workers}")
        elif loaded:
            count("cache_hits")
            report("cache", f"hit {self.name} [{self.target}]: {loaded} of {kernels} kernels loaded in {elapsed:.3f}s")
        else:
            report("cache", f"{self.name} [{self.target}]: nothing to compile, all {kernels} kernels already loaded")
        return outputs


class InputChecks:
    """The checks ops declare on their input's values (Op.input_check: nll's labels, indices),
    made before a program's kernels run, since a kernel cannot raise: each on the program
    input the value comes from, through ops whose entries are their input's
    (Op.entries_of_input: reshape, transpose, static slices, broadcasts; a slice's whole
    source is checked, and so is the whole array a loop reads a row of). Values fixed at compile time are checked now; values computed inside
    the function cannot be checked before the run: refused where the target's kernels cannot raise."""

    def __init__(self, program, target):
        self.checks, self.target = [], target  # checks: (input position, check, params, the op's user line)
        self._scan(program, program, lambda v: v)

    def _scan(self, top, program, outside):
        """Add the checks of `program`'s equations (a loop body's too: a row or invariant it
        reads is followed to the array outside the loop; `outside` maps a value of `program`
        that is not computed in it to the value of `top` it stands for, or None)."""
        producers = {eqn.out: eqn for eqn in program.eqns}

        def source_of(v):
            while v in producers and producers[v].op.entries_of_input:
                v = producers[v].inputs[0]
            return v if v in producers else outside(v)
        for eqn in program.eqns:
            if eqn.op.kind == "loop":
                spec = eqn.params["spec"]
                entering = dict(zip(spec.body.inputs[spec.carried:], eqn.inputs[spec.carried:]))
                self._scan(top, spec.body, lambda v, entering=entering: source_of(entering[v]) if v in entering else None)
            if (check := eqn.op.input_check) is None:
                continue
            source = source_of(eqn.inputs[0])
            if source in top.constants:
                check(top.constants[source], eqn.loc, **eqn.params)
            elif source in top.inputs:
                self.checks.append((top.inputs.index(source), check, eqn.params, eqn.loc))
            elif (refusal := check.refusal(self.target, **eqn.params)) is not None:
                raise CompileError(refusal, *(eqn.loc or (None, None)),
                                   hint="compute it outside and pass it in as an argument")


def _numba_counts(module, elsewhere=None):
    """(loaded from Numba's cache, loaded or compiled) so far, over the module's dispatchers:
    their difference is what Numba compiled. elsewhere: {dispatcher: signatures compiled by
    other processes (runtime/compile_workers.py)}, which count as compiled, not loaded."""
    dispatchers = [value for value in vars(module).values()
                   if getattr(value, "stats", None) is not None and hasattr(value, "overloads")]
    hits = sum(sum(d.stats.cache_hits.values()) - (elsewhere or {}).get(d, 0) for d in dispatchers)
    return hits, sum(len(d.overloads) for d in dispatchers)


def _logical(array, shape, own):
    """The result `array` with its logical shape; with `own`, a copy of a host array the
    program holds or was given (a constant or an input it returns; device arrays as they are)."""
    array = array.reshape(shape) if array.shape != shape else array
    return array.copy() if own and isinstance(array, np.ndarray) else array


class Specialization:
    """One compiled version of a function: its primal program and executables for a mode."""

    def __init__(self, program, translation, out_treedef, mode):
        self.program, self.translation, self.out_treedef, self.mode = program, translation, out_treedef, mode

    def executables(self):
        return [e for e in (getattr(self, n, None) for n in ("executable", "forward", "backward")) if e is not None]

    def arrays(self, leaves):
        """The program's input arrays: the arguments' array leaves, then the captured Params' values."""
        return [value_of(x) for x in leaves if is_array(x)] + [value_of(p) for p, _ in self.translation.captures]


@pytree.register_leaf_type  # a function, not a container of arrays
class CompiledFunction:
    """The result of `@knetc.compile`: call it like the original function."""
    _knetc_kind = "compiled"  # (knetc/context.py: compiled code calling it traces `fn` inline)

    def __init__(self, fn, target="auto", cache=True):
        if not callable(fn) or isinstance(fn, (np.ufunc, types.BuiltinFunctionType)):  # (no Python source to read)
            raise TypeError(f"kn.compile takes a Python function (a def or lambda), got {fn!r}")
        functools.update_wrapper(self, fn)
        self.fn, self.requested_target, self.cache = fn, target, cache
        self.target = resolve_target(target)
        self._specializations = {}
        self._stale = {}  # key -> earlier specializations whose guards failed
        self.compilations = 0
        self.retraces = 0  # traces because something read from outside changed
        self._numbers_as_values = set()  # argnums whose Python numbers the function uses as Python values
        self._defaults = None  # the (__defaults__, __kwdefaults__) _signature_with_defaults was made from

    def __repr__(self):
        return f"<knetc.compile {self.fn.__qualname__} target={self.target}>"

    def __get__(self, obj, objtype=None):
        """A compiled method: `obj.f(x)` calls it with obj as its first argument."""
        return self if obj is None else types.MethodType(self, obj)

    def _arguments(self, args, kwargs):
        """The arguments with the defaults of those not given filled in, so that default
        values are arguments like the others (flattened, keyed and read live), not values
        the trace reads once; and their leaves and treedef."""
        defaults = getattr(self.fn, "__defaults__", None), getattr(self.fn, "__kwdefaults__", None)
        if self._defaults is None or defaults[0] is not self._defaults[0] or defaults[1] is not self._defaults[1]:
            signature, self._defaults = inspect.signature(self.fn), defaults  # (first call, or rebound: as Python)
            self._signature_with_defaults = signature if any(
                p.default is not p.empty for p in signature.parameters.values()) else None
        if self._signature_with_defaults is not None:
            try:
                bound = self._signature_with_defaults.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{self.fn.__name__}: {error}") from None
            bound.apply_defaults()
            args, kwargs = bound.args, bound.kwargs
        return (args, kwargs, *pytree.flatten((args, kwargs)))

    # -------------------------------------------------------------- specializations
    def _leaf_key(self, leaf):
        """An argument leaf's part of the signature: an array's type, shape and dtype; any
        other leaf itself (which must be hashable; a zero with its sign)."""
        if is_array(leaf):
            value = value_of(leaf)  # (its type too: isinstance in the function answers from it)
            return type(leaf), tuple(value.shape), np.dtype(value.dtype).str
        key = (leaf.start, leaf.stop, leaf.step) if type(leaf) is slice else (leaf, repr(leaf)) if type(leaf) in _BY_TEXT \
            else leaf  # (slices hash from 3.12 on; equal values that differ: range(0) and range(5, 5))
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"{self.fn.__name__}: argument leaf {leaf!r} is neither an array nor hashable") from None
        return "static", type(leaf), key, pytree.zero_signs(leaf)

    def specialize(self, mode, *args, **kwargs):
        """The Specialization for these arguments, built on first use. mode: "call",
        ("grad", argnum) or ("forward", tracked-leaf flags) (a call recorded inside diff)."""
        return self._specialize(mode, *self._arguments(args, kwargs))

    def _specialize(self, mode, args, kwargs, leaves, treedef):
        key = (mode, treedef, tuple(map(self._leaf_key, leaves)))  # (the signature: a key per leaf)
        spec = self._specializations.get(key)
        if spec is None or not spec.translation.holds():
            spec = self._older_or_new(key, spec, mode, args, kwargs, leaves)
        for observe in OBSERVERS:
            observe(self, spec)
        return spec

    _KEEP_STALE = 4  # earlier specializations kept per signature (alternating models reuse them)
    _WARN_RETRACES = 8

    def _why_traced(self, key, stale):
        """Why a call traces again (KNETC_LOG=compile): which guard or which part of the
        signature changed since the nearest earlier specialization."""
        if stale is not None:
            return f"{stale.translation.failed_guard()} (read from outside the function) changed"
        earlier = next(k for k in reversed(self._specializations) if k[0] == key[0])
        if earlier[1] != key[1] or len(earlier[2]) != len(key[2]):
            return "the arguments' structure changed"
        changes = [f"argument leaf {i}: {_leaf_text(a)} -> {_leaf_text(b)}"
                   for i, (a, b) in enumerate(zip(earlier[2], key[2])) if a != b]
        return "new signature (" + "; ".join(changes) + ")"

    def _older_or_new(self, key, stale, mode, args, kwargs, leaves):
        """The specialization for `key` when there is none yet or its guards failed (a value
        it read from outside changed): an earlier one whose guards hold, or a new trace."""
        older = self._stale.setdefault(key, [])
        for i, spec in enumerate(older):
            if spec.translation.holds():
                older[i] = stale
                self._specializations[key] = spec
                return spec
        if stale is not None:
            self.retraces += 1
            if self.retraces == self._WARN_RETRACES:
                warnings.warn(f"{self.fn.__qualname__} was traced again {self.retraces} times because "
                              f"{stale.translation.failed_guard()} (read from outside it) changed between calls; "
                              "pass values that change as arguments", stacklevel=4)
            older.insert(0, stale)
            del older[self._KEEP_STALE:]
        if enabled("compile") and (stale is not None or any(k[0] == key[0] for k in self._specializations)):
            report("compile", f"{self.fn.__qualname__}: traced again: {self._why_traced(key, stale)}")
        spec = Specialization(*trace_in_mode(mode, self.target, self.fn, args, kwargs), mode)
        self._build(spec, args, leaves)
        self.compilations += 1
        self._specializations[key] = spec
        return spec

    def _build(self, spec, args, leaves):
        """Choose what the mode builds (which inputs to differentiate), then run the stages."""
        program, (kind, detail) = spec.program, (spec.mode, None) if isinstance(spec.mode, str) else spec.mode
        # Every array input may be differentiated, integer ones too: the gradient is what the
        # eager tape gives (the adjoint rules decide its dtype), so that an integer Param gets
        # a gradient (and update_ refuses it) instead of silently none.
        wrt = []
        if kind == "grad":  # value and gradient in one program
            target_leaves, spec.target_treedef = pytree.flatten(args[detail])
            start = len(pytree.flatten(tuple(args[:detail]))[0])
            input_of_leaf = {i: n for n, i in enumerate(i for i, leaf in enumerate(leaves) if is_array(leaf))}
            positions = [input_of_leaf.get(start + j) for j in range(len(target_leaves))]
            spec.target_range = (start, start + len(target_leaves))
            wrt = [p for p in positions if p is not None]
            spec.grad_slots = [None if p is None else len(program.outputs) + wrt.index(p) for p in positions]
        elif kind == "forward":  # the primal now, the adjoint when the tape asks (split after AD)
            spec.wrt = wrt = [i for i in range(len(program.inputs)) if i >= len(detail) or detail[i]]
            spec.single = len(program.outputs) == 1 and isinstance(program.outputs[0], Var)
            if not spec.single:
                return  # run eagerly (the tape records each op)
        vars(spec).update(build(program, kind, self.target, wrt, len(program.inputs), self.cache,
                                spec.translation.source_key()))  # spec.executable, or spec.forward and .backward

    def specializations(self):
        return list(self._specializations.values())

    def generated_modules(self):
        """The generated modules of every specialization (calls, gradients, diff forward and
        backward): drivers first, then the kernel modules they bind."""
        executables = [e for spec in self._specializations.values() for e in spec.executables()]
        drivers = {e.module.__knetc_path__: e.module for e in executables}
        kernels = {m.__knetc_path__: m for e in executables for m in e.kernel_modules}
        return list(drivers.values()) + list(kernels.values())

    # -------------------------------------------------------------- calling
    def __call__(self, *args, **kwargs):
        args, kwargs, leaves, treedef = self._arguments(args, kwargs)
        if active_tape_levels(leaves) or recording():  # inside kn.diff: Params read from globals are recorded too
            return self._call_recorded(args, kwargs, leaves, treedef)
        spec = self._specialize("call", args, kwargs, leaves, treedef)
        return pytree.unflatten(spec.out_treedef, spec.executable.run(spec.arrays(leaves)))

    def _call_recorded(self, args, kwargs, leaves, treedef):
        """Inside `diff`: run the compiled forward and record one node whose backward pass is
        the compiled adjoint. Nested tapes (higher-order gradients) run the Python function
        eagerly instead, so every op is recorded."""
        if len(active_tape_levels(leaves)) > 1 or any(isinstance(x, (Param, Tracked))
                                                      and isinstance(x.value, (Param, Tracked)) for x in leaves):
            return self.fn(*args, **kwargs)
        array_leaves = [x for x in leaves if is_array(x)]
        tracked = tuple(bool(active_tape_levels([x])) for x in array_leaves)
        spec = self._specialize(("forward", tracked), args, kwargs, leaves, treedef)
        if not spec.single:
            return self.fn(*args, **kwargs)
        inputs = array_leaves + [p for p, _ in spec.translation.captures]
        arrays = spec.arrays(leaves)
        y, *residuals = spec.forward.run(arrays)
        resident = getattr(spec.forward._runner, "resident", None)
        if resident is not None:  # cuda: the backward reads the batch the forward copied up (it goes up once)
            arrays = resident(arrays)

        def backward(dy):
            dy = value_of(dy)
            if not (is_device_array(dy) and np.dtype(dy.dtype) == np.dtype(y.dtype)):  # a device dy stays there
                dy = np.asarray(dy, dtype=y.dtype).reshape(np.shape(y))
            by_input = dict(zip(spec.wrt, spec.backward.run(arrays + [dy] + residuals)))
            return [by_input.get(i) for i in range(len(inputs))]
        return record_call(y, inputs, backward)

    def _grad_specialization(self, argnum, args, kwargs, leaves, treedef):
        """The gradient's specialization, the arguments and leaves it runs on, and which leaves
        of argument `argnum` are Python numbers differentiated as 0-d arrays: as the eager grad
        differentiates them (np.asarray: a float is float64; the gradient comes back as a numpy
        scalar), so that they are inputs with a gradient rather than compile-time constants. A
        number the function uses as a Python value (`if model.pdrop > 0`, `range(model.depth)`)
        cannot be an array: then that argument's numbers stay constants with no gradient (None),
        unless the argument is the number itself, whose gradient the tape gives (spec None)."""
        differentiated, structure = pytree.flatten(args[argnum])
        numbers = [isinstance(leaf, (int, float)) and not isinstance(leaf, bool) for leaf in differentiated]
        if any(numbers) and argnum not in self._numbers_as_values:
            as_arrays = [np.asarray(x) if number else x for x, number in zip(differentiated, numbers)]
            with_arrays = (*args[:argnum], pytree.unflatten(structure, as_arrays), *args[argnum + 1:])
            new_leaves, new_treedef = pytree.flatten((with_arrays, kwargs))
            try:
                spec = self._specialize(("grad", argnum), with_arrays, kwargs, new_leaves, new_treedef)
                return spec, with_arrays, new_leaves, numbers
            except CompileError:
                if isinstance(args[argnum], (int, float)):  # the number itself is asked for: eager's gradient
                    return None, args, leaves, numbers
                self._numbers_as_values.add(argnum)  # (from now on)
        numbers = [False] * len(numbers)
        return self._specialize(("grad", argnum), args, kwargs, leaves, treedef), args, leaves, numbers

    def gradient_function(self, argnum=0, with_loss=False):
        """The compiled gradient of this (scalar) function w.r.t. argument `argnum`.

        As the eager `grad`: Python numbers in that argument are differentiated as 0-d
        arrays (a float as float64; the gradient comes back as a numpy scalar), and integer
        arrays get the gradient the adjoint rules give (not None), so that training an
        integer Param fails in `update_` ("weights must be floating point") instead of
        silently leaving it untrained."""
        def gradient(*args, **kwargs):
            check_argnum(argnum, args)
            args, kwargs, leaves, treedef = self._arguments(args, kwargs)
            if active_tape_levels(leaves) or recording():  # inside diff (grad of grad, or of Params read from
                return (gradloss if with_loss else grad)(self.fn, argnum)(*args, **kwargs)  # globals): record every op
            spec, args, leaves, numbers = self._grad_specialization(argnum, args, kwargs, leaves, treedef)
            # The tape has the gradient of a number argument used as a Python value (`if s > 0`: no
            # spec), and totals a Param tied elsewhere (through this program).
            if spec is None or _tied_outside(leaves, spec.target_range, spec.translation.captures):
                return taped_gradient(self if spec else self.fn, argnum, with_loss)(*args, **kwargs)
            if spec.out_treedef is not None:
                raise TypeError(f"grad: {self.fn.__name__} must return one scalar (the loss), not several results")
            outs = spec.executable.run(spec.arrays(leaves))
            g = [None if s is None or outs[s] is None else outs[s][()] if number else outs[s]
                 for s, number in zip(spec.grad_slots, numbers)]
            g = pytree.unflatten(spec.target_treedef, _shared_totals(pytree.flatten(args[argnum])[0], g))
            return (g, pytree.unflatten(spec.out_treedef, outs[:len(spec.program.outputs)])) if with_loss else g
        gradient.__name__ = f"grad_{self.fn.__name__}"
        return gradient


def _leaf_text(entry):
    """A signature entry as text: f32[100,784] for an array, the value for a static leaf."""
    return repr(entry[2]) if entry[0] == "static" else f"{np.dtype(entry[2]).name}[{','.join(map(str, entry[1]))}]"


def _tied_outside(leaves, target, captures):
    """Is a Param among leaves[target[0]:target[1]] (the differentiated argument's) also
    another argument's or keyword's, or read from outside the function? Its gradient is then
    the total over all its uses (as eagerly), which the gradient program, differentiating
    that argument alone, does not give."""
    start, end = target
    inside = {id(x) for x in leaves[start:end] if isinstance(x, Param)}
    return bool(inside) and any(isinstance(x, Param) and id(x) in inside for x in (*leaves[:start], *leaves[end:])) \
        or any(id(p) in inside for p, _ in captures)


def _shared_totals(leaves, grads):
    """A Param that appears at several places of the differentiated argument (tied weights)
    gets its total gradient at each, as eagerly."""
    places = {}
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, Param) and grads[i] is not None:
            places.setdefault(id(leaf), []).append(i)
    for shared in places.values():  # (a Param at one place: its own gradient)
        total = functools.reduce(np.add, (grads[i] for i in shared))
        for i in shared:
            grads[i] = total
    return grads


_BY_TEXT = (range, frozenset, decimal.Decimal, fractions.Fraction)  # (values that are equal but not the same)
OBSERVERS = []  # callables (compiled function, specialization), told of every call (knetc inspect)


def compile(fn=None, *, target="auto", cache=True):
    """Compile a model or loss function: `@kn.compile` or `@kn.compile(target="cpu")`.

    target: "cpu" (Numba njit + BLAS), "cuda" (Numba CUDA kernels + cuBLAS), or "auto" (cuda
    when a GPU is present). cache: True keeps generated kernels and Numba's machine code in
    KNETC_CACHE_DIR (default ~/.cache/knetc) for later processes; False keeps nothing after
    this process; a path uses that directory (e.g. to ship kernels with a script).

    The function is parsed from its source, typed for its arguments' shapes and dtypes,
    differentiated symbolically when a gradient is asked for, and run as generated Numba
    kernels. It returns what the Python function returns.

    Example:
        >>> import numpy as np, knetc as kn
        >>> def loss(w, x):
        ...     return kn.sum(kn.relu(x @ w))
        >>> fast = kn.compile(loss, target="cpu")       # or @kn.compile above the def
        >>> w, x = np.ones((3, 2)), np.arange(12.0).reshape(4, 3)
        >>> float(fast(w, x)) == float(loss(w, x))
        True
        >>> kn.grad(fast)(w, x)                         # the compiled gradient
        array([[18., 18.],
               [22., 22.],
               [26., 26.]])
    """
    if fn is None:
        return lambda f: compile(f, target=target, cache=cache)
    if isinstance(fn, (staticmethod, classmethod)):  # (@kn.compile above @staticmethod: the function, wrapped again)
        return type(fn)(CompiledFunction(fn.__func__, target, cache))
    return CompiledFunction(fn, target, cache)



