"""A character-level Transformer language model on Shakespeare, compiled whole by knetc.

    python examples/transformer.py                   # default: 4 layers, width 128, 4 heads, context 64, batch 32
    python examples/transformer.py --minutes 2       # stop training after two minutes (training time only)
    python examples/transformer.py --layers 1 --width 32 --heads 2 --context 16 --batch 16 --steps 150 --lr 0.005 --chars 100000
    python examples/transformer.py --target cuda     # on a GPU (auto, the default, picks it when present)

Model (a GPT-style decoder, pre-norm): character ids -> token embedding `tok[ids]` plus
position embedding `pos[:T]` (both Param matrices, indexed: a gather whose adjoint is a
scatter-add) -> `layers` blocks of

    x = x + attention(layernorm(x))      # multi-head causal self-attention
    x = x + mlp(layernorm(x))            # width -> 4 width -> width, GELU (erf form)

-> a final layer norm -> a dense layer to the vocabulary -> `kn.nll` of the next character.
Attention: queries, keys and values from one (width, 3 width) matrix, split into `heads`
heads by reshape and permutedims; scores `kn.bmm(q, k, trans_b=True) / sqrt(d)` over the
(batch, head) axes, a causal mask (-inf above the diagonal, built inside the compiled
function with np.triu), `kn.softmax` over the keys, `kn.bmm(a, v)`, the heads joined and
projected. Layer normalisation is written from `kn.mean` and `kn.var` (biased, as
PyTorch's LayerNorm, eps 1e-5). The loss function is compiled with `@kn.compile` (one
program: forward, symbolic adjoint, fused kernels) and trained with `kn.adam`.

The text is examples/data/shakespeare/input.txt; its last 10% is held out. Training takes
random windows of `context + 1` characters. `--minutes` counts training steps only (not the
first step's compilation, not evaluation). Printed: the training loss (mean NLL in nats per
character, of the recent steps), the held-out loss on a fixed number of consecutive windows
(`--eval-batches`, so evaluation time is bounded), the training speed, and a sample
generated one character at a time by the compiled forward function (`logits`).

Default configuration (818,241 parameters), measured on a 2-core VM (load average 1.5-2.7),
2026-12-02: first step 8.4 s with an empty kernel cache (compiling the gradient program),
then 224 ms a step; `--minutes 3` trains 807 steps and reaches a held-out loss of 1.87 nats
per character (perplexity 6.5; uniform: 4.17). benchmarks/transformer.py compares the step
with PyTorch's. The third command above is the tiny configuration of
tests/test_example_transformer.py (a few seconds once compiled).

`--plot FILE.png` writes the training loss and perplexity per report, and the held-out ones
at the end (needs matplotlib); on a terminal a `kn.progress` bar shows the steps.
"""
import argparse
import itertools
import math
import os
import sys
import time

import numpy as np

import knetc as kn
from knetc.train.plot import (Curves, Sized, add_example_arguments, check_example_arguments,
                              showing_progress, positive)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "shakespeare", "input.txt")
EPS = 1e-5  # layer norm's epsilon (PyTorch's default)


def load_text(chars=None):
    """(vocabulary, ids of the training part, ids of the held-out last 10%)."""
    with open(DATA, encoding="utf-8") as f:
        text = f.read()
    vocab = sorted(set(text))
    if chars:
        text = text[:chars]
    ids = np.searchsorted(np.array(vocab), np.array(list(text)))  # vocab is sorted
    split = int(len(ids) * 0.9)
    return vocab, ids[:split], ids[split:]


# ----------------------------------------------------------------------------- the model

def model(V, D=128, layers=4, context=64, atype=None):
    """The parameters as nested tuples of Params (kn.adam updates every Param it finds):

    (tok (V, D), pos (context, D), blocks, (final norm gain, bias), out weight (D, V), out bias (V,))
    with each block (ln1 gain, ln1 bias, Wqkv (D, 3D), bqkv, Wo (D, D), bo, ln2 gain, ln2 bias,
    W1 (D, 4D), b1, W2 (4D, D), b2). Embeddings are N(0, 0.02) (GPT-2's), dense weights
    Xavier-uniform, biases zero, norm gains one.
    """
    def ones(n):
        return kn.param(np.ones(n, np.float32), atype=atype)

    def embedding(rows, cols):
        return kn.param(kn.gaussian(np.float32, rows, cols, std=0.02), atype=atype)

    blocks = tuple((ones(D), kn.param0(D, atype=atype), kn.param(D, 3 * D, atype=atype), kn.param0(3 * D, atype=atype),
                    kn.param(D, D, atype=atype), kn.param0(D, atype=atype),
                    ones(D), kn.param0(D, atype=atype), kn.param(D, 4 * D, atype=atype), kn.param0(4 * D, atype=atype),
                    kn.param(4 * D, D, atype=atype), kn.param0(D, atype=atype))
                   for _ in range(layers))
    return (embedding(V, D), embedding(context, D), blocks, (ones(D), kn.param0(D, atype=atype)),
            kn.param(D, V, atype=atype), kn.param0(V, atype=atype))


def layernorm(x, g, b):
    """(x - mean) / sqrt(var + eps) * g + b over the last axis (biased variance, as PyTorch)."""
    mu = kn.mean(x, dims=-1)
    return (x - mu) / np.sqrt(kn.var(x, dims=-1, corrected=False, mean=mu) + EPS) * g + b


def gelu(x):
    """x * Phi(x), the exact (erf) GELU (PyTorch's default)."""
    return 0.5 * x * (1 + kn.erf(x * 0.7071067811865476))


def attention(x, wqkv, bqkv, wo, bo, B, T, H):
    """Multi-head causal self-attention of x (B*T, D)."""
    D = x.shape[-1]
    d = D // H
    qkv = kn.reshape(x @ wqkv + bqkv, B, T, 3, H, d)
    q = kn.permutedims(qkv[:, :, 0], (0, 2, 1, 3))  # (B, H, T, d)
    k = kn.permutedims(qkv[:, :, 1], (0, 2, 1, 3))
    v = kn.permutedims(qkv[:, :, 2], (0, 2, 1, 3))
    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)  # position t sees positions <= t
    a = kn.softmax(kn.bmm(q, k, trans_b=True) * (1.0 / math.sqrt(d)) + mask, dims=-1)  # (B, H, T, T)
    o = kn.reshape(kn.permutedims(kn.bmm(a, v), (0, 2, 1, 3)), B * T, D)  # heads joined: (B*T, D)
    return o @ wo + bo


def forward(m, ids, heads):
    """Scores (B*T, V) of the next character after each position of ids (B, T)."""
    tok, pos, blocks, final, wout, bout = m
    B, T = ids.shape
    x = kn.reshape(tok[ids] + pos[:T], B * T, -1)  # token + position embeddings
    for g1, c1, wqkv, bqkv, wo, bo, g2, c2, w1, b1, w2, b2 in blocks:
        x = x + attention(layernorm(x, g1, c1), wqkv, bqkv, wo, bo, B, T, heads)
        x = x + gelu(layernorm(x, g2, c2) @ w1 + b1) @ w2 + b2
    g, c = final
    return layernorm(x, g, c) @ wout + bout


@kn.compile
def logits(m, ids, heads):
    """The compiled forward pass (for sampling)."""
    return forward(m, ids, heads)


@kn.compile
def loss(m, ids, labels, heads):
    """Mean NLL per character (nats): ids (B, T) inputs, labels (B*T,) the next characters."""
    return kn.nll(forward(m, ids, heads), labels)


# ----------------------------------------------------------------------------- data, evaluation, sampling

def batches(m, ids, batch, context, heads, rng):
    """Endless (model, ids, labels, heads) (the arguments of `loss`) of `batch` random windows."""
    while True:
        starts = rng.integers(0, len(ids) - context - 1, batch)
        win = np.stack([ids[s:s + context + 1] for s in starts])  # (B, T+1)
        yield m, win[:, :-1], win[:, 1:].reshape(-1), heads


def heldout_loss(m, ids, batch, context, heads, eval_batches, loss_fn=loss):
    """Mean NLL per character over the first `eval_batches` batches of consecutive windows
    of the held-out text (fewer if the text is shorter): a bounded evaluation."""
    n = min(eval_batches, (len(ids) - 1) // (batch * context))
    if n == 0:  # (no batch to measure: never a loss of 0)
        raise ValueError(f"the held-out text has {len(ids)} characters, fewer than one batch of {batch} x "
                         f"{context} + 1 (or --eval-batches is 0): give more text (--chars) or a smaller --batch")
    total = 0.0
    for k in range(n):
        chunk = ids[k * batch * context: (k + 1) * batch * context + 1]
        win = np.stack([chunk[i * context: i * context + context + 1] for i in range(batch)])
        total += float(loss_fn(m, win[:, :-1], win[:, 1:].reshape(-1), heads))
    return total / max(n, 1)


def generate(m, vocab, n, context, heads, start="\n", temperature=0.8, seed=0, logits_fn=logits):
    """n characters sampled one at a time from the model's prediction after the last
    `context` characters. The window always has `context` entries (left-padded with the
    start character until the text is long enough), so one compiled program serves every
    step; the prediction is read at the position of the last real character."""
    rng = np.random.default_rng(seed)
    text = [vocab.index(start)]
    for _ in range(n):
        window = text[-context:]
        last = len(window) - 1
        ids = np.array([window + [window[-1]] * (context - len(window))])  # (1, context), padded on the right
        scores = np.asarray(logits_fn(m, ids, heads))[last] / temperature
        p = np.exp(scores - scores.max())
        text.append(int(rng.choice(len(vocab), p=p / p.sum())))
    return "".join(vocab[c] for c in text[1:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=positive, default=32)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--steps", type=positive, default=100000, help="training steps (batches)")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="stop after this much training time (compilation and evaluation not counted)")
    ap.add_argument("--chars", type=int, default=None, help="use only the first CHARS characters of the text")
    ap.add_argument("--report", type=int, default=100, help="print the training loss every REPORT steps")
    ap.add_argument("--eval-batches", type=int, default=20, help="held-out batches to evaluate (bounded)")
    ap.add_argument("--sample", type=int, default=300, help="characters to generate at the end")
    ap.add_argument("--seed", type=int, default=1)
    add_example_arguments(ap)  # --target, --plot FILE.png, --progress/--no-progress
    args = ap.parse_args(argv)
    check_example_arguments(ap, args)  # (--target cuda only with a GPU)
    if args.width % args.heads:
        ap.error(f"--width {args.width} is not a multiple of --heads {args.heads}")
    loss_fn = loss if args.target == loss.requested_target else kn.compile(loss.fn, target=args.target)
    logits_fn = logits if args.target == logits.requested_target else kn.compile(logits.fn, target=args.target)

    vocab, train, test = load_text(args.chars)
    if len(test) <= args.batch * args.context or args.eval_batches < 1:  # (the held-out measure needs a batch)
        ap.error(f"{len(test)} held-out characters are fewer than one batch of {args.batch} x {args.context} + 1 "
                 "(or --eval-batches is below 1): give more --chars or a smaller --batch or --context")
    V = len(vocab)
    kn.seed_(args.seed)
    m = model(V, args.width, args.layers, args.context,
              atype=kn.atype() if loss_fn.target == "cuda" else np.float32)
    rng = np.random.default_rng(args.seed)
    nparams = sum(int(np.prod(p.value.shape)) for p in kn.params(m))
    print(f"{len(train)} training and {len(test)} held-out characters, vocabulary {V} "
          f"(uniform loss {math.log(V):.2f}); {args.layers} layers, width {args.width}, {args.heads} heads, "
          f"context {args.context}, batch {args.batch}, {nparams} parameters, target {loss_fn.target}", flush=True)
    t_start = time.time()
    train_time, recent, step, first_step = 0.0, [], 0, None
    curves = Curves(f"Transformer: {args.layers} layers, width {args.width}", xlabel="step")
    data = itertools.islice(batches(m, train, args.batch, args.context, args.heads, rng), args.steps)
    steps = Sized(kn.adam(loss_fn, data, lr=args.lr), args.steps)  # --minutes may stop it sooner
    show_progress = showing_progress(args)
    if show_progress:
        steps = kn.progress(lambda p: f"loss {p.currval:.3f}", steps)
    t0 = time.time()
    for value in steps:
        value = float(value)
        t1 = time.time()
        step += 1
        if step == 1:
            first_step = t1 - t0  # compiles the gradient program: not training time
        else:
            train_time += t1 - t0
        recent.append(value)
        if step % args.report == 0 or step == args.steps:
            curves.add("loss", "training", step, np.mean(recent))
            curves.add("perplexity", "training", step, math.exp(np.mean(recent)))
            if show_progress:
                sys.stderr.write("\n")  # keep the bar's line; the report goes below it
            print(f"step {step:6d}  {train_time:7.1f}s  training loss {np.mean(recent):.3f}", flush=True)
            recent = []
        if train_time > 60 * args.minutes:  # (--steps bounds the data)
            break
        t0 = time.time()
    if show_progress and step < args.steps:
        sys.stderr.write("\n")  # stopped by --minutes: the bar did not finish its line
    if recent:
        print(f"training loss {np.mean(recent):.3f} (last {len(recent)} steps)")
    per_step = train_time / max(step - 1, 1)
    rate = f", {1e3 * per_step:.1f} ms/step after the first, {args.batch * args.context / per_step:.0f} chars/s" \
        if per_step > 0 else ""  # (one step: only the first)
    print(f"first step (compiling the gradient) {first_step:.1f}s; trained {step} steps{rate}")
    t_eval = time.time()
    test_loss = heldout_loss(m, test, args.batch, args.context, args.heads, args.eval_batches, loss_fn)
    print(f"held-out loss {test_loss:.3f} (perplexity {math.exp(test_loss):.2f}; "
          f"{args.eval_batches} batches, {time.time() - t_eval:.1f}s)")
    curves.add("loss", "held-out", step, test_loss)
    curves.add("perplexity", "held-out", step, math.exp(test_loss))
    print("sample:\n" + generate(m, vocab, args.sample, args.context, args.heads, seed=args.seed, logits_fn=logits_fn))
    print(f"total {time.time() - t_start:.1f}s")
    if args.plot:
        print(f"training curves: {curves.save(args.plot)}")
    return test_loss


if __name__ == "__main__":
    main()
