"""The compiled-program suite on the CUDA target: under the simulator (tests/conftest.py)
every generated kernel runs and matches the eager path, and every kernel compiles to PTX
for sm_90 (the simulator does no type inference; the PTX compiler does)."""
import numpy as np
import pytest

import knetc as kn
from ptx import compile_ptx_many, kernel_modules
from test_compile_programs import F64, PROGRAMS, assert_trees_close

CUDA = {name: kn.compile(f.fn, target="cuda") for name, (f, _) in PROGRAMS.items()}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_cuda_value_and_gradient_equal_eager(name):
    f, make = PROGRAMS[name]
    args, kwargs = make(np.float64)
    gradient, loss = kn.gradloss(CUDA[name])(*args, **kwargs)
    assert_trees_close(loss, f.fn(*args, **kwargs), F64)
    assert_trees_close(gradient, kn.grad(f.fn)(*args, **kwargs), F64)


def test_every_cuda_kernel_of_the_programs_compiles_to_ptx_for_sm90():
    modules = {}
    for name, (f, make) in PROGRAMS.items():
        if not CUDA[name].specializations():  # run on its own: compile what the test above would
            args, kwargs = make(np.float64)
            kn.gradloss(CUDA[name])(*args, **kwargs)
        for module in kernel_modules(CUDA[name].generated_modules()):
            modules[module.__knetc_path__] = module
    reports = compile_ptx_many([(path, m.PTX_SIGNATURES) for path, m in modules.items()])
    kernels = 0
    for (path, module), report in zip(modules.items(), reports):
        assert set(report) == set(module.PTX_SIGNATURES), path
        for name, entry in report.items():
            assert entry["target"] and entry["entry"], (path, name)
            kernels += 1
    assert kernels >= 2 * len(PROGRAMS)  # forward, adjoint and fused kernels (shared where alike)
