"""CharLM training step: knetc compiled (CPU) vs PyTorch (nn.LSTM), each in its own process.

    python benchmarks/rnn.py [--steps 60] [--warmup 5] [--hidden 256] [--embed 64] [--batch 32] [--seqlen 64]

One step = forward + backward + Adam update of examples/charlm.py's model (one-hot
characters @ embedding -> LSTM -> dense -> NLL) on a batch of `batch` windows of `seqlen`
characters, float32, vocabulary 65. knetc: `kn.adam` on the compiled loss (compiled forward,
compiled adjoint, one fused Adam update per Param). PyTorch: the same sizes with
nn.Embedding-equivalent one-hot matmul, nn.LSTM, nn.Linear, cross_entropy and torch.optim.Adam.
Reported: characters per second (batch * seqlen / median step time, after a warm-up, in
alternating rounds of fresh processes: benchmarks/contest.py says why), and the ratio
knetc / PyTorch (> 1: knetc is faster).
"""
import argparse
import os
import sys
import time

import numpy as np

import knetc as kn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import charlm  # noqa: E402
import contest  # noqa: E402

V = 65


def make_batch(batch, seqlen, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (seqlen + 1, batch))
    return charlm.onehot(ids[:-1], V), ids[1:].reshape(-1)


def knetc_setup(args, x, labels):
    kn.seed_(0)
    m = charlm.model(V, args.embed, args.hidden)
    steps = iter(kn.adam(charlm.loss, _repeat((m, x, labels)), lr=0.001))
    return lambda: next(steps)


def _repeat(item):
    while True:
        yield item


def torch_setup(args, x, labels):
    import torch
    torch.manual_seed(0)
    emb = torch.nn.Parameter(torch.randn(V, args.embed) * 0.1)
    lstm = torch.nn.LSTM(args.embed, args.hidden)
    out = torch.nn.Linear(args.hidden, V)
    params = [emb, *lstm.parameters(), *out.parameters()]
    opt = torch.optim.Adam(params, lr=0.001)
    tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
    T, B, _ = x.shape

    def step():
        opt.zero_grad()
        y, _ = lstm((tx.reshape(T * B, V) @ emb).reshape(T, B, -1))
        loss = torch.nn.functional.cross_entropy(out(y.reshape(T * B, -1)), ty)
        loss.backward()
        opt.step()
    return step, torch


def contestants(args):
    x, labels = make_batch(args.batch, args.seqlen)

    def knetc_compiled():
        return "knetc compiled cpu (kn.adam on @kn.compile loss)", knetc_setup(args, x, labels)

    def pytorch():
        step, torch = torch_setup(args, x, labels)
        return f"PyTorch {torch.__version__} nn.LSTM ({torch.get_num_threads()} threads, default)", step
    return {"knetc": knetc_compiled, "torch": pytorch}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=64)
    return parser.parse_known_args(argv)[0]


def main():
    args = parse_args()
    contest.main_child(contestants(args))
    contest.memory_child(contestants(args))
    chars = args.batch * args.seqlen
    print(f"CharLM: one-hot({V}) @ embed {args.embed} -> LSTM {args.hidden} -> dense {V} -> NLL; "
          f"batch {args.batch} x seqlen {args.seqlen} = {chars} characters per step, float32, Adam; "
          f"median of {args.steps} steps, each framework in its own processes (3 alternating rounds)")
    print(contest.machine())
    t0 = time.perf_counter()
    knetc_setup(args, *make_batch(args.batch, args.seqlen))()  # compile into the cache, outside the timings
    print(f"(knetc first step, compiling included: {time.perf_counter() - t0:.1f} s)")
    names = ["knetc"] + (["torch"] if contest.have_torch() else [])
    if len(names) == 1:
        print("(PyTorch not installed: no comparison)")
    ms = contest.compare(__file__, names, args.steps, args.warmup)
    width = max(len(label) for label, _ in ms.values())
    print(f"\n{'':{width}}  ms/step   chars/s  knetc/PyTorch speed")
    for label, v in ms.values():
        ratio = f"{ms['torch'][1] / v:8.2f}x" if "torch" in ms else ""
        print(f"{label:{width}}  {v:7.1f}  {1e3 * chars / v:8.0f}  {ratio}")
    print(f"(load average {os.getloadavg()[0]:.2f} after the timings)")
    contest.print_memory(__file__, names, ms)


if __name__ == "__main__":
    main()
