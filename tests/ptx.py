"""Compile CUDA kernels to PTX for sm_90 in a subprocess with the real numba.cuda.

The test session runs under the CUDA simulator, which does no type inference; PTX
compilation does, so every kernel is also checked here (no GPU needed).
"""
import json
import os
import subprocess
import sys

_SCRIPT = r"""
import importlib.util, json, sys
import knetc  # (its NumPy compatibility fixes come first: knetc/__init__.py)
from numba import cuda
jobs, cc = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
reports = []
for n, (path, kernels) in enumerate(jobs):
    spec = importlib.util.spec_from_file_location("ptx_target_%d" % n, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = {}
    for name, signature in kernels.items():
        fn = getattr(module, name)
        fn = getattr(fn, "py_func", fn)
        ptx, _ = cuda.compile_ptx(fn, signature, cc=cc)
        report[name] = {"target": ".target sm_%d%d" % cc in ptx, "entry": ".entry" in ptx, "bytes": len(ptx)}
    reports.append(report)
print(json.dumps(reports))
"""


def compile_ptx(path, kernels, cc=(9, 0)):
    """Compile `kernels` ({name: numba signature}) of the module file `path` to PTX.

    Returns {name: {"target": bool, "entry": bool, "bytes": int}}; raises on any failure.
    """
    return compile_ptx_many([(path, kernels)], cc)[0]


def kernel_modules(modules):
    """The CUDA kernel modules among generated modules (drivers have no PTX_SIGNATURES)."""
    return [m for m in modules if hasattr(m, "PTX_SIGNATURES")]


def assert_modules_compile_to_ptx(modules, cc=(9, 0)):
    """Every kernel of these generated modules (a compiled function's generated_modules())
    compiles to PTX with an entry point."""
    modules = kernel_modules(modules)
    assert modules
    reports = compile_ptx_many([(m.__knetc_path__, m.PTX_SIGNATURES) for m in modules], cc)
    for module, report in zip(modules, reports):
        assert set(report) == set(module.PTX_SIGNATURES)
        for kernel, entry in report.items():
            assert entry["target"] and entry["entry"], (module.__knetc_path__, kernel)


def compile_ptx_many(jobs, cc=(9, 0)):
    """compile_ptx for several modules [(path, kernels), ...] in one subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    jobs = [(str(path), dict(kernels)) for path, kernels in jobs]
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(jobs), json.dumps(list(cc))],
                          capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode != 0:
        raise AssertionError("PTX compilation failed:\n" + proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])
