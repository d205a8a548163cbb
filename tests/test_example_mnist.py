"""The README's main job, examples/mnist_mlp.py, run as a user would (a fresh process,
another working directory) for one epoch: it must train and report a test accuracy.
Measured: 0.9075..0.9125 after one epoch over seeds 1..5 (0.945..0.952 after the default
10 epochs); the threshold leaves room for platform differences."""
import os
import re
import subprocess
import sys

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "mnist_mlp.py")


def test_mnist_mlp_one_epoch(tmp_path):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # the example runs as a user would (target auto)
    env["KNETC_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, EXAMPLE, "--epochs", "1", "--seed", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    accuracies = [float(a) for a in re.findall(r"test accuracy (\d\.\d+)", proc.stdout)]
    assert len(accuracies) == 1, proc.stdout
    assert accuracies[0] >= 0.85, proc.stdout
