"""Transformer language model training step: knetc compiled vs PyTorch, each in its own processes.

    python benchmarks/transformer.py [--steps 60] [--warmup 3] [--train-steps 200] [--layers 4]
        [--width 128] [--heads 4] [--context 64] [--batch 32]

The model is examples/transformer.py's (token and position embeddings, pre-norm blocks of
multi-head causal self-attention and a GELU MLP, final layer norm, dense output, mean NLL);
the PyTorch model below has the same layers (F.layer_norm, F.gelu, torch.softmax, batched
matmuls, F.cross_entropy) and starts from the same weights (knetc's initialisation, copied).
One step = forward + backward + Adam update of every parameter (lr 0.001) on a batch of
character windows of the shipped Shakespeare text.

knetc runs the step two ways: as the example does (`kn.adam` over the compiled loss:
`kn.diff` runs the compiled program's forward half, which saves residuals, then its backward
half) and as the compiled joint gradient program (`kn.gradloss`, then `kn.update_` with one
`kn.Adam` per parameter: the same arithmetic in one program).

Printed:
- ms per step: the median over alternating rounds of fresh processes (benchmarks/contest.py
  says why), after `--warmup` steps; the ratio to PyTorch (lower is better);
- cold compile: the first step of a fresh process, for knetc with an empty KNETC_CACHE_DIR
  (tracing, differentiation, code generation and Numba compiling every kernel), for PyTorch
  its first step (which has nothing to compile);
- held-out loss after `--train-steps` steps of both, from the same initial weights on the
  same batches (mean NLL in nats per character over 20 fixed held-out batches).

PyTorch is imported only in its own processes.
"""
import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import knetc as kn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import transformer as example  # noqa: E402  (the example's model, loss, data and evaluation)
import contest  # noqa: E402  (beside this file)

LR, SEED, EVAL_BATCHES = 0.001, 1, 20


def setup(args):
    """(vocabulary size, training ids, held-out ids, initial model, fixed batch)."""
    vocab, train, test = example.load_text()
    kn.seed_(SEED)
    m = example.model(len(vocab), args.width, args.layers, args.context)
    rng = np.random.default_rng(SEED)
    _, ids, labels, _ = next(example.batches(m, train, args.batch, args.context, args.heads, rng))
    return len(vocab), train, test, m, ids, labels


def knetc_step(args):
    """The example's training loop: kn.adam over the compiled loss, one step per next()."""
    _, _, _, m, ids, labels = setup(args)
    steps = iter(kn.adam(example.loss, itertools.repeat((m, ids, labels, args.heads)), lr=LR))
    return lambda: next(steps)


def knetc_joint_step(args):
    """The compiled joint gradient program (value and gradients in one program, no forward /
    backward split) and one Adam update per Param: what kn.adam would run without kn.diff."""
    _, _, _, m, ids, labels = setup(args)
    params = kn.params(m)
    optimizers = [kn.Adam(lr=LR) for _ in params]
    gradloss = kn.gradloss(example.loss)

    def step():
        grads, value = gradloss(m, ids, labels, args.heads)
        kn.update_(params, [g for g in _leaves(grads)], optimizers)
        return value
    return step


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        for x in tree:
            yield from _leaves(x)
    else:
        yield tree


def torch_model(torch, m, args):
    """PyTorch's model: the weights (copies of knetc's, in kn.params order) and a loss function."""
    F = torch.nn.functional
    weights = [torch.tensor(np.asarray(p.value), requires_grad=True) for p in kn.params(m)]
    D, H, L = args.width, args.heads, args.layers
    tok, pos, *rest = weights
    blocks = [rest[12 * i: 12 * i + 12] for i in range(L)]
    gf, cf, wout, bout = rest[12 * L:]

    def loss(ids, labels):
        B, T = ids.shape
        d = D // H
        mask = torch.triu(torch.full((T, T), -math.inf), 1)
        x = (tok[ids] + pos[:T]).reshape(B * T, D)
        for g1, c1, wqkv, bqkv, wo, bo, g2, c2, w1, b1, w2, b2 in blocks:
            h = F.layer_norm(x, (D,), g1, c1, eps=example.EPS)
            q, k, v = (h @ wqkv + bqkv).reshape(B, T, 3, H, d).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1)
            x = x + (a @ v).permute(0, 2, 1, 3).reshape(B * T, D) @ wo + bo
            x = x + F.gelu(F.layer_norm(x, (D,), g2, c2, eps=example.EPS) @ w1 + b1) @ w2 + b2
        return F.cross_entropy(F.layer_norm(x, (D,), gf, cf, eps=example.EPS) @ wout + bout, labels.reshape(-1))
    return weights, loss


def torch_step(args):
    import torch
    _, _, _, m, ids, labels = setup(args)
    weights, loss = torch_model(torch, m, args)
    opt = torch.optim.Adam(weights, lr=LR)
    tids, tlabels = torch.from_numpy(ids), torch.from_numpy(labels)

    def step():
        out = loss(tids, tlabels)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        return out
    return step, torch


def contestants(args):
    def compiled():
        return "knetc compiled (kn.adam over the @kn.compile loss)", knetc_step(args)

    def joint():
        return "knetc compiled (kn.gradloss + kn.update_)", knetc_joint_step(args)

    def pytorch():
        step, torch = torch_step(args)
        return f"PyTorch {torch.__version__} (cpu, {torch.get_num_threads()} threads)", step
    return {"compiled": compiled, "joint": joint, "torch": pytorch}


# ----------------------------------------------------------------------------- children: cold start, training

def cold_child(name, args):
    """The first step of a fresh process (knetc: its cache directory is empty)."""
    step = contestants(args)[name]()[1]
    t0 = time.perf_counter()
    step()
    return {"first_step_s": time.perf_counter() - t0}


def train_child(name, args):
    """Held-out loss after args.train_steps steps on the example's batches (the same for both)."""
    V, train, test, m, _, _ = setup(args)
    rng = np.random.default_rng(SEED + 1)
    data = example.batches(m, train, args.batch, args.context, args.heads, rng)
    t0 = time.perf_counter()
    if name == "compiled":
        for k, _ in enumerate(kn.adam(example.loss, data, lr=LR)):
            if k + 1 == args.train_steps:
                break
        return {"heldout": example.heldout_loss(m, test, args.batch, args.context, args.heads, EVAL_BATCHES),
                "seconds": time.perf_counter() - t0}
    import torch
    weights, loss = torch_model(torch, m, args)
    opt = torch.optim.Adam(weights, lr=LR)
    for _, (_, ids, labels, _) in zip(range(args.train_steps), data):
        out = loss(torch.from_numpy(ids), torch.from_numpy(labels))
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
    with torch.no_grad():
        heldout = example.heldout_loss(m, test, args.batch, args.context, args.heads, EVAL_BATCHES,
                                       loss_fn=lambda _, ids, labels, __: float(loss(torch.from_numpy(ids),
                                                                                     torch.from_numpy(labels))))
    return {"heldout": heldout, "seconds": time.perf_counter() - t0}


CHILDREN = {"--child-cold": cold_child, "--child-train": train_child}


def run_child(flag, name, env=None):
    command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], flag, name]
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode:
        raise RuntimeError(f"{flag} {name} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per contestant (over 3 rounds)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=200, help="steps before comparing held-out losses "
                        "(0: skip)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    return parser.parse_known_args(argv)[0]


def main():
    args = parse_args()
    contest.main_child(contestants(args))
    contest.memory_child(contestants(args))
    for flag, child in CHILDREN.items():
        if flag in sys.argv:
            print(json.dumps(child(sys.argv[sys.argv.index(flag) + 1], args)))
            return
    have_torch = contest.have_torch()
    print(f"Transformer LM: {args.layers} layers, width {args.width}, {args.heads} heads, context {args.context}, "
          f"batch {args.batch}, float32, Adam step (fwd + bwd + update); median of {args.steps} steps per row, "
          f"each framework in its own processes (3 alternating rounds), after {args.warmup} warm-up")
    print(contest.machine())
    if not have_torch:
        print("(PyTorch not installed: no comparison)")
    names = ["compiled"] + (["torch"] if have_torch else [])
    timed = ["compiled", "joint"] + (["torch"] if have_torch else [])

    with tempfile.TemporaryDirectory(prefix="knetc-cold-") as empty:
        cold = {"compiled": run_child("--child-cold", "compiled", dict(os.environ, KNETC_CACHE_DIR=empty))}
    if have_torch:
        cold["torch"] = run_child("--child-cold", "torch")
    contestants(args)["compiled"]()[1]()  # compile into the cache, outside the timings
    contestants(args)["joint"]()[1]()
    ms = contest.compare(__file__, timed, args.steps, args.warmup)
    contest.print_ms(ms)
    contest.print_memory(__file__, names, ms)
    print("\ncold first step (fresh process; knetc with an empty KNETC_CACHE_DIR):")
    for name in names:
        print(f"  {ms[name][0]:<55} {cold[name]['first_step_s']:6.2f} s")
    if args.train_steps:
        print(f"\nheld-out loss (nats/char, {EVAL_BATCHES} batches) after {args.train_steps} steps from the same "
              f"weights on the same batches:")
        trained = {name: run_child("--child-train", name) for name in names}
        for name in names:
            print(f"  {ms[name][0]:<55} {trained[name]['heldout']:.4f}  ({trained[name]['seconds']:.0f} s)")
        if have_torch:
            ratio = trained["compiled"]["heldout"] / trained["torch"]["heldout"]
            print(f"  knetc / PyTorch: {ratio:.4f}")
    print(f"(load average {os.getloadavg()[0]:.2f} at the end; `knetc inspect examples/transformer.py:loss "
          f"--steps 1 --stage fused` shows the compiled step's kernels)")
    return ms


if __name__ == "__main__":
    main()
