"""benchmarks/compile.py (cold compile time) runs its smallest case end to end: a fresh child
process with an empty kernel cache, one JSON line back, a table."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "compile.py")


def test_compile_benchmark_quick_smallest_case():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--cases", "mlp_depth1", "--frameworks", "knetc",
                           "--json", "--timeout", "120"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "| MLP depth 1" in proc.stdout  # the table row
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(results) == ["mlp_depth1"] and list(results["mlp_depth1"]) == ["knetc"]
    run = results["mlp_depth1"]["knetc"]
    assert run["status"] == "ok", run
    assert run["first"] > 0 and run["second"] > 0 and run["import_s"] > 0
    assert run["compilations"] >= 1  # an empty cache: Numba compiled the kernels
    assert run["first"] > run["second"]  # the first call includes compiling
