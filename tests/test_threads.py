"""The CPU thread pools (runtime/threads.py): BLAS's thread count per program and per eager
call, and the cores a data-parallel rank may use."""
import os
import subprocess
import sys

import pytest

from knetc.runtime import threads


def test_blas_thread_choice():
    if threads.threads_for() is None:
        pytest.skip("SciPy's OpenBLAS not found")
    assert threads.threads_for(blas_in_prange=True) == 1
    assert threads.threads_for() == threads._default


def test_blas_threads_override(monkeypatch):
    if threads.threads_for() is None:
        pytest.skip("SciPy's OpenBLAS not found")
    monkeypatch.setenv("KNETC_BLAS_THREADS", "3")
    assert threads.threads_for() == 3 and threads.threads_for(blas_in_prange=True) == 3


def test_eager_library_calls_set_blas_threads_per_op(monkeypatch):
    """An eager conv (BLAS inside its parallel loops) must not leave BLAS on one thread for
    the next eager library call, an RNN here, that runs plain GEMMs."""
    import numpy as np
    import knetc as kn
    if threads.threads_for() is None:
        pytest.skip("SciPy's OpenBLAS not found")
    monkeypatch.delenv("KNETC_BLAS_THREADS", raising=False)
    seen = []
    monkeypatch.setattr(threads, "use_threads", seen.append)
    kn.conv4(np.ones((2, 1, 3, 3)), np.ones((1, 1, 5, 5)))
    kn.RNN(3, 4)(np.ones((2, 1, 3), np.float32))
    assert seen[0] == 1 and seen[-1] == threads._default


def test_share_cores_limits_every_pool_unless_the_user_set_one():
    # (in a fresh process: the pools are process-wide)
    script = (
        "import knetc\n"
        "from knetc.runtime import threads\n"
        "threads.share_cores(1)\n"
        "print(threads.threads_for(), threads.THREADS)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "KNETC_BLAS_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    blas, rows = out.stdout.split()
    assert rows == "1" and blas in ("1", "None")  # (None: no SciPy OpenBLAS found)
    env.update(NUMBA_NUM_THREADS="2", KNETC_BLAS_THREADS="2")  # the user's choice stands
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    blas, rows = out.stdout.split()
    assert rows == "2" and blas in ("2", "None")


@pytest.mark.parametrize("threads_, blas, blocks", [(2, 1, 2), (2, 2, 1), (4, 1, 4), (4, 2, 2), (4, None, 4)])
def test_rows_take_half_the_threads_while_blas_runs_on_several(monkeypatch, threads_, blas, blocks):
    """BLAS's workers spin on their cores between GEMMs: a kernel split across all of knetc's
    threads beside them waits for cores (row_threads)."""
    import numpy as np
    monkeypatch.setattr(threads, "THREADS", threads_)
    monkeypatch.setattr(threads, "_current", blas)
    monkeypatch.setattr(threads, "_workers", None)  # a pool of THREADS - 1 threads, shut down below
    seen, out = [], np.zeros(40, np.int64)

    def kernel(out, lo, hi):
        seen.append((lo, hi))
        out[lo:hi] += 1
    try:
        threads.in_parallel(kernel, 40, out)
    finally:
        if threads._workers is not None:
            threads._workers.shutdown()
    assert len(seen) == blocks and out.tolist() == [1] * 40  # every row once
