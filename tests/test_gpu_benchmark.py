"""benchmarks/gpu.py and benchmarks/device_check.sh without a GPU: the script is valid bash and
names its steps, the benchmark lists its six cases (--dry-run), refuses clearly without a GPU,
and runs its cheap cases at toy sizes under Numba's simulator, printing the table with
knetc's launches and copies per call (the sum's 0-d result stays on the device)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_PY = os.path.join(ROOT, "benchmarks", "gpu.py")
CHECK = os.path.join(ROOT, "benchmarks", "device_check.sh")
CASES = {"mlp", "lenet", "charlm", "mlp4096", "sum", "softmax"}


def run(*args, simulator=False, tmp_path=None):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.pop("KNETC_TEST_GPU", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    if tmp_path is not None:
        env["KNETC_CACHE_DIR"] = str(tmp_path / "cache")
    return subprocess.run([sys.executable, GPU_PY, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def rows(text):
    """{case: [cells]} of the markdown table rows printed."""
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in CASES:
            table[cells[0]] = cells
    return table


def test_device_check_is_valid_bash_and_runs_every_step():
    proc = subprocess.run(["bash", "-n", CHECK], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = open(CHECK).read()
    for step in ("--no-index", "KNETC_TEST_GPU=1", "examples/mnist_mlp.py --epochs 1 --target cuda",
                 "examples/lenet.py --epochs 1 --target cuda", "examples/charlm.py --target cuda",
                 "benchmarks/gpu.py"):
        assert step in text, step
    budget = int(re.search(r"KNETC_CHECK_BUDGET:-(\d+)", text).group(1))
    assert budget <= 480  # 8 minutes on the H200, install included


def test_dry_run_lists_the_six_cases_with_their_targets():
    proc = run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    table = rows(proc.stdout)
    assert set(table) == CASES, proc.stdout
    assert "80%" in table["sum"][2] and "1.1x" in table["mlp4096"][2] and "1.3x" in table["softmax"][2]


def test_unknown_case_is_refused():
    proc = run("--dry-run", "--cases", "mlp,nope")
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_without_a_gpu_it_says_so_and_exits_3():
    from knetc.runtime.device import real_gpu_available
    if real_gpu_available():
        pytest.skip("this machine has a GPU")
    proc = run("--cases", "sum")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no GPU" in proc.stderr


def test_tiny_cases_run_under_the_simulator(tmp_path):
    proc = run("--tiny", "--cases", "sum,softmax", simulator=True, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = rows(proc.stdout)
    assert set(table) == {"sum", "softmax"}, proc.stdout
    for case, cells in table.items():
        float(cells[1])  # knetc ms
        launches, up, down = (float(c) for c in cells[6:9])
        assert launches >= 1 and up == 0 and down == 0, (case, cells)  # inputs and results stay on the device
    assert "copy" in proc.stdout  # the sum's note: the copy bandwidth measured in the same run


def test_launch_costs_without_a_gpu_says_so_and_exits_3():
    """benchmarks/launch_costs.py (the device check's last step) needs a real GPU; the
    simulator does not count."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "launch_costs.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no CUDA GPU" in proc.stdout
    assert "benchmarks/launch_costs.py" in open(CHECK).read()
