"""What `knetc inspect` shows: every stage of a compiled function, as plain text.

    knetc.inspect(loss, model, x, y, stage="fused")      # Python
    knetc inspect examples/mnist_mlp.py:loss --stage ptx  # command line (knetc.cli)

Stages: source, ir (typed IR), adjoint (primal + adjoint IR), fused (the optimised IR with
fusion groups marked), memory (buffer reuse and release, peak bytes), kernels (the
shape-generic Numba kernels), driver (the host driver), ptx,
resources (registers, spills, shared and local memory per CUDA kernel, from ptxas), all.
"""
import inspect as _pyinspect
import re
import types

import numpy as np

from .ad.reverse import adjoint_program
from .backend.cache import directory_for, load_kernel, read_text, write_atomically
from .ir.core import format_program, var_numbers
from .ir.fuse import Loop
from .ir.memory import peak_bytes
from . import compiler
from .runtime.device import simulator_active

# What each compiler stage (compiler.STAGES) is shown as: the inspect stages, in pipeline order.
VIEWS = {"trace_in_mode": ("source", "ir"), "differentiate": ("adjoint",), "fuse": ("fused",), "plan_memory": ("memory",),
         "generate": ("kernels", "driver"), "load": ("ptx", "resources")}
STAGES = tuple(view for stage in compiler.STAGES for view in VIEWS.get(stage.__name__, ()))


def inspect(fn, *args, stage="all", target=None, mode="grad", argnum=0, cc=(9, 0), **kwargs):
    """The text of the asked stages for `fn` (a @kn.compile function) at these arguments.

    mode: "grad" (the compiled gradient w.r.t. `argnum`, as kn.grad(fn) runs) or "call".
    target: "cpu" or "cuda" for the kernels/driver stages (default: fn's target).
    A plain Python function is compiled first (as `kn.compile(fn, target=target)` would)."""
    if not isinstance(fn, compiler.CompiledFunction):
        if not isinstance(fn, types.FunctionType):
            raise TypeError(f"knetc.inspect expects a Python function or a @kn.compile function, got {fn!r}")
        fn = compiler.compile(fn, target=target or "auto")
    if mode not in ("grad", "call") or target not in (None, "cpu", "cuda"):
        raise ValueError(f"kn.inspect: mode must be 'grad' or 'call' and target 'cpu', 'cuda' or None, "
                         f"got mode={mode!r}, target={target!r}")
    spec = fn.specialize(("grad", argnum) if mode == "grad" else "call", *args, **kwargs)
    return describe(fn, spec, stages(stage), target or fn.target, cc)


def stages(stage):
    """`stage` ("all", a name, "a,b" or a list) as a list of stage names, checked."""
    names = list(STAGES) if stage in ("all", None) else (stage.split(",") if isinstance(stage, str) else list(stage))
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)} or all")
    return names


def describe(fn, spec, names, target, cc=(9, 0)):
    """The stages of one specialization, each under a `--- stage ---` heading."""
    executables = spec.executables()
    parts = [f"=== {fn.fn.__qualname__} ({mode_text(spec.mode)}): {_signature_text(spec.program)} ==="]
    for name in names:
        parts.append(f"--- {name} ---")
        parts.append(_STAGE_TEXT[name](fn, spec, executables, target, cc).rstrip())
    return "\n".join(parts) + "\n"


def mode_text(mode):
    if mode == "call":
        return "call"
    kind, detail = mode
    return f"gradient w.r.t. argument {detail}" if kind == "grad" else "recorded inside diff"


def _signature_text(program):
    return ", ".join(str(v.aval) for v in program.inputs)


def _source(fn, spec, executables, target, cc):
    lines, first = _pyinspect.getsourcelines(fn.fn)
    return "".join(f"{first + i:5d}  {line}" for i, line in enumerate(lines))


def _ir(fn, spec, executables, target, cc):
    return str(spec.program)


def _adjoint(fn, spec, executables, target, cc):
    program = spec.program
    if spec.mode == "call":  # show what kn.grad would differentiate: every float input
        wrt = [i for i, v in enumerate(program.inputs) if np.issubdtype(v.aval.dtype, np.floating)]
        return "# as kn.grad would compute it (w.r.t. every float input)\n" + str(adjoint_program(program, wrt))
    return "\n\n".join(str(e.input_program) for e in executables)


def _fused(fn, spec, executables, target, cc):
    out = []
    for e in executables:
        schedule = _schedule(e, target)
        out.append(f"# {schedule.summary()}\n" + format_program(e.program, groups=schedule.groups()))
    return "\n\n".join(out)


def _memory(fn, spec, executables, target, cc):
    """The memory plan: which step's output takes which dead buffer, what is freed after
    each step, and the peak bytes with and without the plan (ir/memory.py)."""
    out = []
    for e in executables:
        schedule = _schedule(e, target)
        numbers = var_numbers(schedule.program)
        before = peak_bytes(schedule, None, release=False)
        after = peak_bytes(schedule, schedule.reuse, release=True)
        lines = [f"# peak {before:,} bytes with every buffer held to the end; {after:,} with the plan"
                 + (" (loop bodies apart: their values live for one step)" if len(schedule.steps) < sum(
                     1 for _ in schedule.walk()) else "")]
        out.append("\n".join(lines + _plan_lines(schedule, numbers, "")))
    return "\n\n".join(out)


def _plan_lines(schedule, numbers, indent):
    def name(v):
        return f"%{numbers[v]}" if v in numbers else "(unused)"
    lines = []
    for i, step in enumerate(schedule.steps):
        notes = []
        if step.out in schedule.reuse:
            notes.append(f"into the buffer of {name(schedule.reuse[step.out])}")
        if schedule.release.get(i):
            notes.append("then free " + ", ".join(name(v) for v in schedule.release[i]))
        what = ", ".join(name(v) for v in step.outs) if isinstance(step, Loop) else f"{name(step.out)}: {step.out.aval}"
        lines.append(f"{indent}{type(step).__name__.lower():8} {what}" + ("  " + "; ".join(notes) if notes else ""))
        if isinstance(step, Loop):
            lines += _plan_lines(step.body, numbers, indent + "    ")
    return lines


def _schedule(e, target):
    """An executable's fusion schedule for `target` (made anew if it runs on the other one:
    what fuses depends on the target)."""
    return e.schedule if target == e.target else compiler.schedule_for(e.program, target)


def _generated(e, target):
    """The generated code (backend.driver.Generated) of an executable for `target`."""
    return e.generated if target == e.target else compiler.generate(_schedule(e, target), target)


def _kernels(fn, spec, executables, target, cc):
    seen = {}  # each kernel once: several executables (and steps) share kernels
    for e in executables:
        for source in _generated(e, target).kernels.values():
            seen.setdefault(source.text, source)
    return "\n\n".join(source.text for source in seen.values())


def _driver(fn, spec, executables, target, cc):
    return "\n\n".join(_generated(e, target).driver for e in executables)


def _cuda_kernels(executables):
    """(name, KernelSource, module) of each distinct CUDA kernel of the executables, loaded
    (no GPU needed to compile to PTX)."""
    seen = {}
    for e in executables:
        for source in _generated(e, "cuda").kernels.values():
            if source.text not in seen:
                seen[source.text] = (source, load_kernel(source, directory_for(True)))
    return list(seen.values())


def _ptx_of(source, module, cc):
    """The PTX of a CUDA kernel module's kernel, kept in the kernel cache beside the module
    (written atomically, checked before reuse)."""
    from numba import cuda
    path = f"{module.__knetc_path__[:-3]}.sm_{cc[0]}{cc[1]}.ptx"
    ptx = read_text(path)
    if ptx is None or f".target sm_{cc[0]}{cc[1]}" not in ptx or not ptx.rstrip().endswith("}"):
        if simulator_active():  # (the simulator's numba.cuda has no compiler)
            raise ValueError("the ptx and resources stages need Numba's CUDA compiler, which the simulator "
                             "replaces: run without NUMBA_ENABLE_CUDASIM=1 (no GPU is needed)")
        kernel = getattr(module, source.name)
        ptx, _ = cuda.compile_ptx(getattr(kernel, "py_func", kernel), source.signature, cc=cc)
        write_atomically(path, ptx)
    return ptx


def _ptx(fn, spec, executables, target, cc):
    return "\n".join(f"// ---- kernel {source.name} ----\n{_ptx_of(source, module, cc)}"
                     for source, module in _cuda_kernels(executables))


def _resources(fn, spec, executables, target, cc):
    rows = [f"{'kernel':<24} {'registers':>9} {'spill st':>9} {'spill ld':>9} {'smem':>7} {'lmem/stack':>10}  ops"]
    for source, module in _cuda_kernels(executables):
        r = ptxas_resources(_ptx_of(source, module, cc), cc)
        rows.append(f"{source.name:<24} {r['registers']:>9} {r['spill_stores']:>9} {r['spill_loads']:>9} "
                    f"{r['smem']:>7} {r['stack']:>10}  {source.ops}")
    return f"# sm_{cc[0]}{cc[1]}, from ptxas -v (through nvJitLink); bytes except registers\n" + "\n".join(rows)


def ptxas_resources(ptx, cc=(9, 0)):
    """Registers, spill stores/loads, shared memory and stack bytes of a one-kernel PTX,
    read from ptxas's verbose report (nvJitLink runs ptxas; no GPU needed)."""
    from cuda.bindings import nvjitlink
    options = [f"-arch=sm_{cc[0]}{cc[1]}", "-Xptxas=-v"]
    handle = nvjitlink.create(len(options), options)
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel")
        nvjitlink.complete(handle)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
    finally:
        nvjitlink.destroy(handle)
    text = log.decode(errors="replace")

    def number(pattern):
        found = re.search(pattern, text)
        return int(found.group(1)) if found else 0
    return {"registers": number(r"Used (\d+) registers"), "spill_stores": number(r"(\d+) bytes spill stores"),
            "spill_loads": number(r"(\d+) bytes spill loads"), "smem": number(r"(\d+) bytes smem"),
            "stack": number(r"(\d+) bytes stack frame"), "log": text}


_STAGE_TEXT = {"source": _source, "ir": _ir, "adjoint": _adjoint, "fused": _fused, "memory": _memory, "kernels": _kernels,
               "driver": _driver, "ptx": _ptx, "resources": _resources}
