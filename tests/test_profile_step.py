"""benchmarks/profile_step.py: the compiled MLP step's kernels and GEMMs, each timed inside
the step and attributed to the user's source line; the eager step by Python function."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "profile_step.py")


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_compiled_step_by_kernel_and_user_line():
    out = _run("mlp", "--steps", "5", "--warmup", "2", "--top", "50")
    total, inside = map(float, re.search(r"([\d.]+) ms a step .* in the drivers' calls ([\d.]+) ms", out).groups())
    assert 0 < inside <= total
    rows = [line for line in out.splitlines() if re.match(r"\s+[\d.]+\s+[\d.]+%\s+\d+\s+[\d.]+\s+\S+ \(\d+\)", line)]
    # the MLP's gradient: 5 GEMMs (forward 2, backward 3) and its kernels, one call each per step
    assert sum("matmul (" in row for row in rows) == 5
    assert any(" k_" in row for row in rows)
    assert all("mlp.py:" in row for row in rows)  # each attributed to a line of benchmarks/mlp.py's loss
    assert any("kn.relu(x @ w + b)" in row for row in rows) and any("kn.nll(" in row for row in rows)
    shares = sum(float(re.match(r"\s+[\d.]+\s+([\d.]+)%", row).group(1)) for row in rows)
    assert shares <= 100.5
    # GB/s: the bytes of each call's arrays (inputs and output) per second: positive for the GEMMs
    # (a kernel over 100 labels may print 0.0 on a loaded machine)
    assert all(float(row.split()[3]) >= 0 for row in rows)
    assert all(float(row.split()[3]) > 0 for row in rows if "matmul (" in row)


def test_eager_step_by_function():
    out = _run("mlp", "--eager", "--steps", "5", "--warmup", "2", "--top", "40")
    assert "eager step under cProfile" in out
    assert re.search(r"\d+\s+evaluate \(ops/core\.py:\d+\)", out)  # the op table's evaluation
