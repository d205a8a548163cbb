"""knetc's CUDA kernels compile with a NumPy that lacks np.row_stack (NumPy 2.5 removed it;
numba-cuda 0.30.4 still names it when it loads its typing registries)."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba.cuda")

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
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}  # the real compiler
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("compiled")
