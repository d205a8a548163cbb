"""The examples' --plot FILE.png and progress bars, and charlm's --minutes (issue 17, items 5,
6 and 9), run as a user would: fresh processes in another working directory, tiny sizes."""
import os
import re
import subprocess
import sys

import pytest

from knetc.train.plot import Curves, WithModel

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

# Each example at a size that trains in seconds once compiled.
TINY = {
    "mnist_mlp.py": ["--epochs", "2"],
    "lenet.py": ["--epochs", "1", "--train", "200"],
    "resnet.py": ["--epochs", "1", "--train", "200"],
    "mnist_optimizers.py": ["--epochs", "1"],
    "charlm.py": ["--hidden", "16", "--embed", "8", "--batch", "8", "--seqlen", "16", "--steps", "40",
                  "--chars", "50000", "--report", "20", "--sample", "10", "--eval-batches", "2"],
    "transformer.py": ["--layers", "1", "--width", "16", "--heads", "2", "--context", "8", "--batch", "8",
                       "--steps", "40", "--chars", "50000", "--report", "20", "--eval-batches", "2",
                       "--sample", "10", "--target", "cpu"],
}


def run(example, args, tmp_path, extra_path=None, timeout=600):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["KNETC_CACHE_DIR"] = str(tmp_path / "cache")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, example), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("example", sorted(TINY))
def test_plot_without_matplotlib_says_how_to_install_it(example, tmp_path):
    """A matplotlib that cannot be imported (as where it is not installed): the example stops
    before training, with argparse's status 2 and the install command."""
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    proc = run(example, ["--plot", "curves.png"], tmp_path, extra_path=fake, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--plot needs matplotlib" in proc.stderr and "pip install matplotlib" in proc.stderr, proc.stderr
    assert "pip install -e .[plot]" in proc.stderr
    assert not (tmp_path / "curves.png").exists() and "epoch" not in proc.stdout


def test_plot_needs_a_png_name(tmp_path):
    proc = run("mnist_mlp.py", ["--plot", "curves.pdf"], tmp_path, timeout=300)
    assert proc.returncode == 2 and "ending in .png" in proc.stderr, proc.stderr


@pytest.mark.parametrize("example", sorted(TINY))
def test_plot_writes_the_training_curves(example, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install -e .[plot])")
    proc = run(example, [*TINY[example], "--plot", "out/curves.png", "--progress"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png = tmp_path / "out" / "curves.png"
    assert f"training curves: out{os.sep}curves.png" in proc.stdout
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    # --progress: kn.progress bars on stderr; the first line has no estimate yet (the first
    # step compiles), the next ones do
    bars = [line for line in proc.stderr.replace("\n", "\r").split("\r") if line.startswith("┣")]
    assert bars, proc.stderr
    assert "/--:--," in bars[0] and re.search(r"\d\d:\d\d/\d\d:\d\d, ", bars[-1]), bars


def test_no_progress_bar_unless_asked_or_on_a_terminal(tmp_path):
    proc = run("mnist_mlp.py", ["--epochs", "1"], tmp_path)  # stderr is a pipe here
    assert proc.returncode == 0 and "┣" not in proc.stderr, proc.stderr
    proc = run("mnist_mlp.py", ["--epochs", "1", "--no-progress"], tmp_path)
    assert proc.returncode == 0 and "┣" not in proc.stderr, proc.stderr


def test_charlm_minutes_count_training_time_only_and_the_evaluation_is_bounded(tmp_path):
    """--minutes 0.05 (3 s) with an empty kernel cache: compiling the first step and the
    evaluation are not counted, so it trains many steps, not one (issue 17, item 9)."""
    args = ["--hidden", "16", "--embed", "8", "--batch", "8", "--seqlen", "16", "--steps", "100000",
            "--minutes", "0.05", "--report", "100000", "--sample", "10", "--eval-batches", "3"]
    proc = run("charlm.py", args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    first, steps, total = re.search(r"first step \(compiling the loss and its gradient\) (\d+\.\d)s; "
                                    r"trained (\d+) steps \(\d+ characters\) in (\d+\.\d)s", out).groups()
    assert int(steps) >= 20, out
    assert float(total) >= float(first) + 2.9, out  # 3 s of training after the first step
    assert "held-out perplexity" in out and "(3 batches at most" in out, out


def test_curves_record_panels_and_series():
    c = Curves("t")
    c.add("loss", "train", 1, 2.0)
    c.add("loss", "train", 2, 1.0)
    c.add("accuracy", "test", 2, 0.5)
    assert c.panels() == {"loss": {"train": [(1, 2.0), (2, 1.0)]}, "accuracy": {"test": [(2, 0.5)]}}


def test_with_model_keeps_the_length_for_progress():
    data = WithModel("m", [(1, 2), (3, 4)])
    assert len(data) == 2 and list(data) == [("m", 1, 2), ("m", 3, 4)]


def test_linreg_takes_plot_too(tmp_path):
    """Every training example takes --plot (linreg had no such option)."""
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install -e .[plot])")
    proc = run("linreg.py", ["--epochs", "2", "--plot", "lr.png"], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "training curves: lr.png" in proc.stdout and (tmp_path / "lr.png").read_bytes().startswith(b"\x89PNG")
    assert run("linreg.py", ["--plot", "lr.pdf"], tmp_path, timeout=300).returncode == 2


@pytest.mark.parametrize("script, argv", [("mnist_mlp.py", ["--epochs", "0"]), ("lenet.py", ["--batchsize", "0"]),
                                          ("charlm.py", ["--steps", "0"]), ("resnet.py", ["--epochs", "-1"])])
def test_counts_of_nothing_are_usage_errors(script, argv):
    # --epochs 0 trained nothing and then failed (UnboundLocalError, ZeroDivisionError, a
    # format of None, or a silent exit 1).
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *argv], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "expected a whole number of at least 1" in done.stderr, done.stderr[-1500:]


@pytest.mark.parametrize("script, argv", [("mnist_mlp.py", ["--batchsize", "8001"]),
                                          ("lenet.py", ["--train", "50", "--batchsize", "64"]),
                                          ("resnet.py", ["--train", "99"])])
def test_a_batch_larger_than_the_training_set_is_a_usage_error(script, argv):
    # minibatch drops a partial batch, so such a run trained nothing and printed a train loss
    # of nan (the mean of no losses) with numpy's warnings.
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *argv, "--epochs", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no batch to train on" in done.stderr, done.stderr[-1500:]
    assert "nan" not in done.stdout
