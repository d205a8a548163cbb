"""A character-level LSTM language model on Shakespeare (Knet's CharLM tutorial, in knetc).

    python examples/charlm.py                    # the ten-minute CPU configuration (defaults)
    python examples/charlm.py --minutes 1        # train for a minute (compiling and evaluation not counted)
    python examples/charlm.py --plot charlm.png  # and write the training curves (needs matplotlib)
    python examples/charlm.py --hidden 32 --embed 16 --batch 16 --seqlen 32 --steps 300 --lr 0.01 --chars 200000
    python examples/charlm.py --target cuda      # on a GPU (auto, the default, picks it when present)

Model: character ids -> embedding (a Param matrix, indexed by multiplying one-hot rows) ->
`kn.RNN` LSTM -> dense output layer -> `kn.nll`, compiled with `@kn.compile` and trained
with `kn.adam` (each step: the compiled forward pass, the compiled adjoint, one Adam
update per Param). The text is examples/data/shakespeare/input.txt; its last 10% is held
out. Training takes random windows of `seqlen + 1` characters (each sequence starts from
a zero state: truncated backpropagation through time). Printed: training perplexity (of the
recent steps), held-out perplexity (exp of the mean NLL per character) and a sample
generated from the model, one character at a time with the eager RNN carrying its state.

`--minutes` counts training time only: not the first step (which compiles the loss and its
gradient), nor the evaluation. The held-out perplexity is over at most `--eval-batches`
batches (default 20, about 41,000 characters of the 111,540 held out). `--plot FILE.png`
writes the training loss and perplexity per report (and the held-out ones at the end);
on a terminal a `kn.progress` bar shows the steps.

The last command is the tiny configuration tests/test_example_charlm.py runs (a few
seconds once compiled; held-out perplexity about 10.5).

Default configuration (embed 64, hidden 256, batch 32, seqlen 64, lr 0.003): about ten
minutes on a 2-core CPU; held-out perplexity falls from 65 (uniform over the characters)
to about 5.5 (measured: 5.51 after 1,620 steps, 3.3M characters, on a shared 2-core VM).

With a GPU (`--target cuda`) the parameters are `kn.atype()` arrays (KnetArrays): the
embedding, the LSTM's weights and the output layer live on the device with their Adam
state; each step copies the one-hot batch and labels up and the loss down. Sampling runs
eagerly on a host copy of the model (`kn.cpucopy`).
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


def onehot(ids, V):
    """(..., V) float32 rows with a 1 at each id: multiplying by the embedding selects rows."""
    out = np.zeros(ids.shape + (V,), np.float32)
    np.put_along_axis(out, ids[..., None], 1.0, axis=-1)
    return out


def model(V, E, H, atype=None):
    """(embedding (V, E), LSTM, output weight (H, V), output bias (V,)); atype: the array type
    (default kn.atype(): KnetArrays when a GPU is active, else numpy float32)."""
    return (kn.param(V, E, atype=atype), kn.RNN(E, H, rnn_type="lstm", atype=atype), kn.param(H, V, atype=atype),
            kn.param0(V, atype=atype))


@kn.compile
def loss(m, x, labels):
    """Mean NLL per character: x (T, B, V) one-hot inputs, labels (T*B,) the next characters."""
    emb, rnn, w, b = m
    T, B, V = x.shape
    e = kn.reshape(kn.reshape(x, T * B, V) @ emb, T, B, -1)  # the embedding of every character
    y = rnn(e)  # (T, B, H)
    return kn.nll(kn.reshape(y, T * B, -1) @ w + b, labels)


def batches(m, ids, V, batch, seqlen, rng):
    """Endless (model, x, labels) (the arguments of `loss`) of `batch` random windows: x (T, B, V), labels the next characters."""
    while True:
        starts = rng.integers(0, len(ids) - seqlen - 1, batch)
        win = np.stack([ids[s:s + seqlen + 1] for s in starts], axis=1)  # (T+1, B)
        yield m, onehot(win[:-1], V), win[1:].reshape(-1)


def heldout_perplexity(m, ids, V, batch, seqlen, loss=loss, eval_batches=None):
    """exp(mean NLL) over consecutive windows of the held-out text (the compiled loss), over
    its first `eval_batches` batches (None: all of it)."""
    n = (len(ids) - 1) // (batch * seqlen)
    if n == 0:  # (no batch to measure: never a perplexity of 1)
        raise ValueError(f"the held-out text has {len(ids)} characters, fewer than one batch of {batch} x "
                         f"{seqlen} + 1: give more text (--chars) or a smaller --batch or --seqlen")
    if eval_batches is not None:
        n = min(n, eval_batches)
    total = 0.0
    for k in range(n):
        chunk = ids[k * batch * seqlen: (k + 1) * batch * seqlen + 1]
        win = np.stack([chunk[i * seqlen: i * seqlen + seqlen + 1] for i in range(batch)], axis=1)
        total += float(loss(m, onehot(win[:-1], V), win[1:].reshape(-1)))
    return math.exp(total / max(n, 1))


def generate(m, vocab, n, start="\n", temperature=0.8, seed=0):
    """n characters sampled from the model, the eager RNN keeping its state between steps."""
    if any(isinstance(p.value, kn.KnetArray) for p in kn.params(m)):
        m = kn.cpucopy(m)  # one character at a time: on the host
    emb, rnn, w, b = m
    V = len(vocab)
    rng = np.random.default_rng(seed)
    rnn.h, rnn.c = 0, 0
    out, ch = [], vocab.index(start)
    for _ in range(n):
        y = rnn(onehot(np.array([ch]), V) @ emb.value)  # (1, H): one step of one sequence
        scores = (np.asarray(y) @ w.value + b.value)[0] / temperature
        p = np.exp(scores - scores.max())
        ch = int(rng.choice(V, p=p / p.sum()))
        out.append(vocab[ch])
    rnn.h, rnn.c = None, None
    return "".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=positive, default=32)
    ap.add_argument("--seqlen", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--steps", type=positive, default=3000, help="training steps (batches)")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="stop after this much training time (compilation and evaluation not counted)")
    ap.add_argument("--chars", type=int, default=None, help="use only the first CHARS characters of the text")
    ap.add_argument("--report", type=int, default=250, help="print the training perplexity every REPORT steps")
    ap.add_argument("--eval-batches", type=int, default=20, help="held-out batches to evaluate (bounded)")
    ap.add_argument("--sample", type=int, default=400, help="characters to generate at the end")
    ap.add_argument("--seed", type=int, default=1)
    add_example_arguments(ap)  # --target, --plot FILE.png, --progress/--no-progress
    args = ap.parse_args(argv)
    check_example_arguments(ap, args)  # (--target cuda only with a GPU)
    loss_fn = loss if args.target == loss.requested_target else kn.compile(loss.fn, target=args.target)

    vocab, train, test = load_text(args.chars)
    if len(test) <= args.batch * args.seqlen:  # (before training: the held-out measure needs one batch)
        ap.error(f"{len(test)} held-out characters are fewer than one batch of {args.batch} x {args.seqlen} + 1: "
                 "give more --chars or a smaller --batch or --seqlen")
    V = len(vocab)
    kn.seed_(args.seed)
    m = model(V, args.embed, args.hidden, atype=kn.atype() if loss_fn.target == "cuda" else np.float32)
    rng = np.random.default_rng(args.seed)
    print(f"{len(train)} training and {len(test)} held-out characters, vocabulary {V} "
          f"(uniform perplexity {V}); embed {args.embed}, LSTM {args.hidden}, batch {args.batch}x{args.seqlen}, "
          f"target {loss_fn.target}")
    t_start = time.time()
    train_time, recent, step, first_step = 0.0, [], 0, None
    curves = Curves(f"CharLM: LSTM {args.hidden}, batch {args.batch}x{args.seqlen}", xlabel="step")
    data = itertools.islice(batches(m, train, V, args.batch, args.seqlen, rng), args.steps)
    steps = Sized(kn.adam(loss_fn, data, lr=args.lr, gclip=5.0), args.steps)  # --minutes may stop it sooner
    show_progress = showing_progress(args)
    if show_progress:
        steps = kn.progress(lambda p: f"loss {p.currval:.3f}", steps)
    t0 = time.time()
    for value in steps:
        t1 = time.time()
        step += 1
        if step == 1:
            first_step = t1 - t0  # compiles the loss and its gradient: not training time
        else:
            train_time += t1 - t0
        recent.append(float(value))
        if step % args.report == 0 or step == args.steps:
            curves.add("loss", "training", step, np.mean(recent))
            curves.add("perplexity", "training", step, math.exp(np.mean(recent)))
            if show_progress:
                sys.stderr.write("\n")  # keep the bar's line; the report goes below it
            print(f"step {step:5d}  {train_time:6.1f}s  training perplexity {math.exp(np.mean(recent)):7.2f}",
                  flush=True)
            recent = []
        if train_time > 60 * args.minutes:  # (--steps bounds the data)
            break
        t0 = time.time()
    if show_progress and step < args.steps:
        sys.stderr.write("\n")  # stopped by --minutes: the bar did not finish its line
    train_ppl = math.exp(np.mean(recent)) if recent else float("nan")
    per_step = train_time / max(step - 1, 1)
    chars = step * args.batch * args.seqlen
    rate = f", {1e3 * per_step:.1f} ms/step after the first, {args.batch * args.seqlen / per_step:.0f} chars/s" \
        if per_step > 0 else ""  # (one step: only the first)
    print(f"first step (compiling the loss and its gradient) {first_step:.1f}s; trained {step} steps "
          f"({chars} characters) in {first_step + train_time:.1f}s{rate}")
    if recent:
        print(f"training perplexity {train_ppl:.2f} (last {len(recent)} steps)")
    t_eval = time.time()
    test_ppl = heldout_perplexity(m, test, V, args.batch, args.seqlen, loss_fn, args.eval_batches)
    print(f"held-out perplexity {test_ppl:.2f} ({args.eval_batches} batches at most, {time.time() - t_eval:.1f}s)")
    curves.add("loss", "held-out", step, math.log(test_ppl))
    curves.add("perplexity", "held-out", step, test_ppl)
    print("sample:\n" + generate(m, vocab, args.sample, seed=args.seed))
    print(f"total {time.time() - t_start:.1f}s")
    if args.plot:
        print(f"training curves: {curves.save(args.plot)}")
    return test_ppl


if __name__ == "__main__":
    main()
