"""examples/transformer.py: in a tiny configuration (2 layers, width 16, 2 heads, context 8,
batch 4, float64) the compiled loss, its compiled gradient and the compiled logits equal the
eager ones (the Python functions run uncompiled) and a PyTorch implementation of the same
model from the same weights; the example, run as a user would in a tiny configuration,
trains (its training loss falls, its held-out loss is below the uniform 4.17 nats) and
prints a sample; --help works."""
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import knetc as kn

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
EXAMPLE = os.path.join(EXAMPLES, "transformer.py")
sys.path.insert(0, EXAMPLES)
import transformer  # noqa: E402

V, D, LAYERS, HEADS, T, B = 13, 16, 2, 2, 8, 4


def tiny_problem():
    """Weights perturbed away from the initial ones (norm gains 1, biases 0) so every
    parameter's role shows in the gradient; float64 for tight comparisons."""
    kn.seed_(5)
    m = transformer.model(V, D, LAYERS, T, atype=np.float64)
    rng = np.random.default_rng(0)
    for p in kn.params(m):
        p.value[...] += 0.1 * rng.standard_normal(p.value.shape)
    ids = rng.integers(0, V, (B, T))
    labels = rng.integers(0, V, B * T)
    return m, ids, labels


def leaves(tree):
    if isinstance(tree, (tuple, list)):
        for x in tree:
            yield from leaves(x)
    else:
        yield tree


@pytest.fixture(scope="module")
def compiled():
    m, ids, labels = tiny_problem()
    loss = kn.compile(transformer.loss.fn, target="cpu")
    gradient, value = kn.gradloss(loss)(m, ids, labels, HEADS)
    logits = kn.compile(transformer.logits.fn, target="cpu")(m, ids, HEADS)
    return (m, ids, labels), value, list(leaves(gradient)), np.asarray(logits)


def test_compiled_loss_gradient_and_logits_equal_eager(compiled):
    (m, ids, labels), value, gradient, logits = compiled
    want_gradient, want_value = kn.gradloss(transformer.loss.fn)(m, ids, labels, HEADS)
    want_gradient = list(leaves(want_gradient))
    assert np.isclose(value, want_value, rtol=1e-12), (value, want_value)
    assert len(gradient) == len(want_gradient) == len(kn.params(m)) == 4 + 2 + 12 * LAYERS
    for got, want, p in zip(gradient, want_gradient, kn.params(m)):
        assert np.asarray(got).shape == p.value.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(logits, np.asarray(transformer.logits.fn(m, ids, HEADS)), rtol=1e-10, atol=1e-12)
    assert float(transformer.loss.fn(m, ids, labels, HEADS)) == pytest.approx(value, rel=1e-12)


def test_attention_is_causal(compiled):
    """Changing the last character changes no earlier position's scores."""
    (m, ids, _), _, _, logits = compiled
    changed = ids.copy()
    changed[:, -1] = (changed[:, -1] + 1) % V
    eager = np.asarray(transformer.logits.fn(m, changed, HEADS)).reshape(B, T, V)
    np.testing.assert_allclose(eager[:, :-1], logits.reshape(B, T, V)[:, :-1], rtol=1e-12, atol=1e-12)
    assert not np.allclose(eager[:, -1], logits.reshape(B, T, V)[:, -1])


def torch_loss(torch, m, ids, labels):
    """The same model in PyTorch (its own LayerNorm, GELU and cross-entropy): the loss and the
    weights as leaf tensors in kn.params order."""
    F = torch.nn.functional
    weights = [torch.tensor(np.asarray(p.value), requires_grad=True) for p in kn.params(m)]
    tok, pos, *rest = weights
    blocks = [rest[12 * i: 12 * i + 12] for i in range(LAYERS)]
    gf, cf, wout, bout = rest[12 * LAYERS:]
    d = D // HEADS
    mask = torch.triu(torch.full((T, T), -math.inf, dtype=torch.float64), 1)
    x = (tok[torch.from_numpy(ids)] + pos[:T]).reshape(B * T, D)
    for g1, c1, wqkv, bqkv, wo, bo, g2, c2, w1, b1, w2, b2 in blocks:
        h = F.layer_norm(x, (D,), g1, c1, eps=transformer.EPS)
        q, k, v = (h @ wqkv + bqkv).reshape(B, T, 3, HEADS, d).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1)
        x = x + (a @ v).permute(0, 2, 1, 3).reshape(B * T, D) @ wo + bo
        x = x + F.gelu(F.layer_norm(x, (D,), g2, c2, eps=transformer.EPS) @ w1 + b1) @ w2 + b2
    scores = F.layer_norm(x, (D,), gf, cf, eps=transformer.EPS) @ wout + bout
    return F.cross_entropy(scores, torch.from_numpy(labels)), weights


def test_compiled_model_equals_pytorch(compiled):
    torch = pytest.importorskip("torch")
    (m, ids, labels), value, gradient, _ = compiled
    loss, weights = torch_loss(torch, m, ids, labels)
    loss.backward()
    assert loss.item() == pytest.approx(float(value), rel=1e-10)
    for got, w in zip(gradient, weights):
        np.testing.assert_allclose(np.asarray(got), w.grad.numpy(), rtol=1e-7, atol=1e-10)


TINY = ["--layers", "1", "--width", "32", "--heads", "2", "--context", "16", "--batch", "16", "--steps", "150",
        "--lr", "0.005", "--chars", "100000", "--report", "50", "--eval-batches", "4", "--sample", "60",
        "--target", "cpu"]


def run_example(tmp_path, args):
    """The example's output, run as a user would (a fresh process, another working directory)."""
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, EXAMPLE, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_example_tiny_configuration_trains(tmp_path):
    out = run_example(tmp_path, TINY)
    training = [float(v) for v in re.findall(r"training loss (\d+\.\d+)", out)]
    heldout = float(re.search(r"held-out loss (\d+\.\d+)", out).group(1))
    uniform = float(re.search(r"uniform loss (\d+\.\d+)", out).group(1))
    assert uniform == pytest.approx(math.log(65), abs=0.01), out
    assert len(training) >= 3 and training[-1] < training[0] - 0.5, out
    assert heldout < uniform - 0.8, out
    assert re.search(r"trained 150 steps", out), out
    sample = out.split("sample:\n", 1)[1].split("\ntotal")[0]
    assert len(sample) >= 60, out


def test_example_help():
    proc = subprocess.run([sys.executable, EXAMPLE, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--minutes", "--steps", "--layers", "--width", "--heads", "--context", "--batch", "--lr",
                 "--seed", "--target"):
        assert flag in proc.stdout


def test_a_single_step_run_reports_and_finishes(tmp_path):
    # (its summary divided by the time after the first step: ZeroDivisionError)
    out = run_example(tmp_path, [a if a != "150" else "1" for a in TINY])
    assert "trained 1 steps" in out, out
