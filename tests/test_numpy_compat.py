"""What knetc/numpy_compat.py adjusts: knetc's CUDA kernels compile with a NumPy that lacks
np.row_stack (NumPy 2.5 removed it; numba-cuda 0.30.4 still names it when it loads its typing
registries), and numpy.f2py loads when used, not when SciPy (for Numba's BLAS) lists NumPy."""
import os
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import numpy
    numpy.__dict__.pop("row_stack", None)  # as NumPy 2.5 ships
    import knetc
    from numba import cuda, float32

    def double(x, out):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = 2 * x[i]

    ptx, _ = cuda.compile_ptx(double, (float32[:], float32[:]), cc=(9, 0))
    assert ".entry" in ptx, ptx[:200]
    print("compiled", len(ptx))
""")


def test_cuda_kernels_compile_without_numpy_row_stack():
    pytest.importorskip("numba.cuda")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}  # the real compiler
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("compiled")


DEFERRED = textwrap.dedent("""
    import sys
    import numpy as np
    import knetc as kn

    w = kn.Param(np.ones((3, 2)))
    assert kn.compile(lambda w, x: kn.sum(x @ w))(w, np.ones((4, 3))) == 24  # Numba's BLAS: cython_blas alone
    assert "scipy.linalg.cython_blas" in sys.modules and "scipy.linalg" not in sys.modules
    assert "numpy.f2py.crackfortran" not in sys.modules, "numpy.f2py was loaded for nothing"
    import scipy.linalg  # whole when asked for, holding the table loaded before it
    assert scipy.linalg.cython_blas is sys.modules["scipy.linalg.cython_blas"]
    assert np.allclose(scipy.linalg.solve(np.eye(2) * 2, np.ones(2)), 0.5)
    from numpy import f2py
    assert callable(f2py.run_main)  # whole on first use
    import numpy.f2py.crackfortran
    assert np.f2py is sys.modules["numpy.f2py"]
    print("deferred")
""")


def test_numpy_f2py_and_scipy_linalg_load_only_when_used(tmp_path):
    pytest.importorskip("scipy")
    program = tmp_path / "deferred.py"  # kn.compile reads its function's source from a file
    program.write_text(DEFERRED)
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "deferred"
