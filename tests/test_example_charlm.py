"""examples/charlm.py in its tiny configuration, run as a user would (a fresh process, another
working directory): the LSTM language model must learn. Measured with this configuration:
held-out perplexity 10.5 after 300 steps, about 1.5 s of training once compiled (uniform over
the 65 characters: 65; the character frequencies alone give about 30), so the threshold of
15 says the model uses context."""
import os
import re
import subprocess
import sys

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "charlm.py")
TINY = ["--hidden", "32", "--embed", "16", "--batch", "16", "--seqlen", "32", "--steps", "300", "--lr", "0.01",
        "--chars", "200000", "--report", "100", "--sample", "80"]


def run_example(tmp_path, args):
    """The example's output, run as a user would (a fresh process, another working directory,
    an empty kernel cache)."""
    env = dict(os.environ, KNETC_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, EXAMPLE, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_charlm_tiny_configuration_learns(tmp_path):
    out = run_example(tmp_path, TINY)
    uniform = int(re.search(r"uniform perplexity (\d+)", out).group(1))
    training = [float(p) for p in re.findall(r"training perplexity\s+(\d+\.\d+)", out)]
    heldout = float(re.search(r"held-out perplexity (\d+\.\d+)", out).group(1))
    assert uniform == 65, out
    assert len(training) >= 3 and training[-1] < training[0] < uniform, out
    assert heldout < 15, out
    sample = out.split("sample:\n", 1)[1]
    assert len(sample.rstrip("\n")) >= 60, out


def test_a_held_out_text_shorter_than_a_batch_is_refused_before_training(tmp_path):
    """It printed a perfect held-out perplexity of 1.00 (the mean of no batches); the examples
    now say why they cannot measure it, before training, and the measure itself refuses."""
    env = dict(os.environ, KNETC_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    for example in (EXAMPLE, EXAMPLE.replace("charlm.py", "transformer.py")):
        proc = subprocess.run([sys.executable, example, "--chars", "20000", "--minutes", "0.1"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "held-out characters are fewer than one batch" in proc.stderr, proc.stderr
        assert "perplexity" not in proc.stdout
    sys.path.insert(0, os.path.dirname(EXAMPLE))
    try:
        import charlm
        import pytest
        with pytest.raises(ValueError, match="fewer than one batch"):
            charlm.heldout_perplexity(None, list(range(100)), 65, 16, 32)
    finally:
        sys.path.remove(os.path.dirname(EXAMPLE))


def test_a_single_step_run_reports_and_finishes(tmp_path):
    # (its summary divided by the time after the first step: ZeroDivisionError)
    out = run_example(tmp_path, [a if a != "300" else "1" for a in TINY])
    assert "trained 1 steps" in out and "held-out perplexity" in out, out
