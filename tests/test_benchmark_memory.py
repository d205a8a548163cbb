"""benchmarks/contest.py's peak memory: every step benchmark measures a contestant's resident
set in a fresh process (`--memory-of NAME`): before the model, just before the timed steps,
and the peak during them."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc peak reset")
def test_mlp_compiled_step_memory_child():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "mlp.py"), "--memory-of", "compiled"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kib = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(kib) == {"setup", "peak", "before_steps"}
    assert 0 < kib["setup"] <= kib["before_steps"] <= kib["peak"]
    assert kib["peak"] - kib["setup"] < 2 * 1024 * 1024  # (KiB) an MLP step: far below 2 GiB
