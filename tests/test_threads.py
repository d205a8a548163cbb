"""The CPU thread pools (runtime/threads.py): Numba's OpenMP pool waits passively unless
the user chose a policy, and the choice leaves the process environment as it was."""
import os
import subprocess
import sys

import pytest

from knetc.runtime import threads

# Start the pool the way knetc does, then report what the OpenMP runtime read
# (OMP_DISPLAY_ENV makes libgomp print its settings when it loads) and the environment after.
CHILD = """
import os, numba
import knetc.kernels
numba.get_num_threads()  # what a first parallel loop does: start the pool if it is not started
assert numba.threading_layer() == "omp", numba.threading_layer()
print("AFTER", os.environ.get("OMP_WAIT_POLICY"))
"""


def _child(policy):
    env = dict(os.environ, OMP_DISPLAY_ENV="VERBOSE", NUMBA_THREADING_LAYER="omp")
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    run = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    if run.returncode and "threading layer" in run.stderr.lower():
        pytest.skip("Numba's OpenMP threading layer is not available here")
    assert run.returncode == 0, run.stderr
    return run.stdout + run.stderr


def _spin_count(output):
    """How long an idle worker spins before it sleeps (libgomp: 0 when passive)."""
    lines = [line for line in output.splitlines() if "GOMP_SPINCOUNT" in line and "=" in line]
    assert lines, output
    return int(lines[0].split("=", 1)[1].strip().strip("'\""))


def test_numba_pool_waits_passively_and_environment_is_restored():
    output = _child(None)
    assert _spin_count(output) == 0
    assert "AFTER None" in output


def test_user_wait_policy_is_kept():
    output = _child("ACTIVE")
    assert _spin_count(output) > 0
    assert "AFTER ACTIVE" in output


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
        "import numba, knetc\n"
        "from knetc.runtime import threads\n"
        "threads.share_cores(1)\n"
        "print(threads.threads_for(), threads.THREADS, numba.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "KNETC_BLAS_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    blas, rows, numba_threads = out.stdout.split()
    assert rows == numba_threads == "1" and blas in ("1", "None")  # (None: no SciPy OpenBLAS found)
    env.update(NUMBA_NUM_THREADS="2", KNETC_BLAS_THREADS="2")  # the user's choice stands
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    blas, rows, numba_threads = out.stdout.split()
    assert rows == numba_threads == "2" and blas in ("2", "None")
