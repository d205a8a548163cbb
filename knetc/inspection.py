"""What `knetc inspect` shows: every stage of a compiled function, as plain text.

    knetc.inspect(loss, model, x, y, stage="fused")      # Python
    knetc inspect examples/mnist_mlp.py:loss --stage ptx  # command line (knetc.cli)

Stages: source, ir (typed IR), adjoint (primal + adjoint IR), fused (the optimised IR with
fusion groups marked), kernels (generated Numba source), driver (the host driver), ptx,
resources (registers, spills, shared and local memory per CUDA kernel, from ptxas), all.
"""
import inspect as _pyinspect
import re
import types

import numpy as np

from .ad.reverse import adjoint_program
from .backend.cache import directory_for, load_module, read_text, write_atomically
from .ir.core import format_program
from . import compiler

# What each compiler stage (compiler.STAGES) is shown as: the inspect stages, in pipeline order.
VIEWS = {"trace_in_mode": ("source", "ir"), "differentiate": ("adjoint",), "fuse": ("fused",),
         "generate": ("kernels", "driver"), "load": ("ptx", "resources")}
STAGES = tuple(view for stage in compiler.STAGES for view in VIEWS.get(stage.__name__, ()))


def inspect(fn, *args, stage="all", target=None, mode="grad", argnum=0, cc=(9, 0), **kwargs):
    """The text of the asked stages for `fn` (a @kn.compile function) at these arguments.

    mode: "grad" (the compiled gradient w.r.t. `argnum`, as kn.grad(fn) runs) or "call".
    target: "cpu" or "cuda" for the kernels/driver stages (default: fn's target).
    A plain Python function is compiled first (as `kn.compile(fn, target=target)` would)."""
    from .compiler import CompiledFunction, compile
    if not isinstance(fn, CompiledFunction):
        if not isinstance(fn, types.FunctionType):
            raise TypeError(f"knetc.inspect expects a Python function or a @kn.compile function, got {fn!r}")
        fn = compile(fn, target=target or "auto")
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
        out.append(f"# {e.schedule.summary()}\n" + format_program(e.program, groups=e.schedule.groups()))
    return "\n\n".join(out)


def _generated(e, target):
    """The generated module source of an executable for `target` (generated anew if the
    executable runs on the other target)."""
    if target == e.target:
        return e.source
    from .compiler import backend_for
    return backend_for(target).generate(e.schedule, cache=True)


def split_source(source):
    """(kernels, driver) parts of a generated module."""
    match = re.search(r"^(@njit\([^)]*\)\n)?def driver\(", source, re.M)
    kernels, driver = source[:match.start()], source[match.start():]
    return kernels, driver


def _kernels(fn, spec, executables, target, cc):
    return "\n\n".join(split_source(_generated(e, target))[0] for e in executables)


def _driver(fn, spec, executables, target, cc):
    return "\n\n".join(split_source(_generated(e, target))[1] for e in executables)


def _cuda_modules(executables):
    """The CUDA modules of the executables, imported (no GPU needed to compile to PTX)."""
    return [load_module(f"cuda_{e.name}", _generated(e, "cuda"), directory_for(True)) for e in executables]


def _ptx_of(module, cc):
    """(kernel name, PTX) for each kernel of a CUDA module; the PTX is kept in the kernel
    cache beside the module (written atomically, checked before reuse)."""
    from numba import cuda
    stem = module.__knetc_path__[:-3]
    for name, signature in module.PTX_SIGNATURES.items():
        path = f"{stem}.{name}.sm_{cc[0]}{cc[1]}.ptx"
        ptx = read_text(path)
        if ptx is None or f".target sm_{cc[0]}{cc[1]}" not in ptx or not ptx.rstrip().endswith("}"):
            kernel = getattr(module, name)
            ptx, _ = cuda.compile_ptx(getattr(kernel, "py_func", kernel), signature, cc=cc)
            write_atomically(path, ptx)
        yield name, ptx


def _ptx(fn, spec, executables, target, cc):
    out = []
    for module in _cuda_modules(executables):
        for name, ptx in _ptx_of(module, cc):
            out.append(f"// ---- kernel {name} ----\n{ptx}")
    return "\n".join(out)


def _resources(fn, spec, executables, target, cc):
    rows = [f"{'kernel':<10} {'registers':>9} {'spill st':>9} {'spill ld':>9} {'smem':>7} {'lmem/stack':>10}  ops"]
    for e, module in zip(executables, _cuda_modules(executables)):
        fused = {k.name: e.schedule.fused_ops(k) for k in e.schedule.kernels()}
        for name, ptx in _ptx_of(module, cc):
            r = ptxas_resources(ptx, cc)
            rows.append(f"{name:<10} {r['registers']:>9} {r['spill_stores']:>9} {r['spill_loads']:>9} "
                        f"{r['smem']:>7} {r['stack']:>10}  {fused.get(name, 'cast')}")
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


_STAGE_TEXT = {"source": _source, "ir": _ir, "adjoint": _adjoint, "fused": _fused, "kernels": _kernels,
               "driver": _driver, "ptx": _ptx, "resources": _resources}
