"""CharLM training step: knetc compiled (CPU) vs PyTorch (nn.LSTM), in one process.

    python benchmarks/rnn.py [--steps 40] [--warmup 5] [--hidden 256] [--embed 64] [--batch 32] [--seqlen 64]

One step = forward + backward + Adam update of examples/charlm.py's model (one-hot
characters @ embedding -> LSTM -> dense -> NLL) on a batch of `batch` windows of `seqlen`
characters, float32, vocabulary 65. knetc: `kn.adam` on the compiled loss (compiled forward,
compiled adjoint, one fused Adam update per Param). PyTorch: the same sizes with
nn.Embedding-equivalent one-hot matmul, nn.LSTM, nn.Linear, cross_entropy and torch.optim.Adam.
Reported: characters per second (batch * seqlen / median step time, after a warm-up, in
interleaved rounds), and the ratio knetc / PyTorch (> 1: knetc is faster).
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import knetc as kn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import charlm  # noqa: E402

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


def interleaved_ms(steps_by_name, steps, warmup, rounds=4):
    """Median ms per step of each, measured in interleaved rounds (the machine is shared)."""
    blocks = {name: v if isinstance(v, tuple) else (v, None, None) for name, v in steps_by_name.items()}
    times = {name: [] for name in blocks}
    per_round = max(1, steps // rounds)
    for r in range(rounds + 1):
        for name, (step, before, after) in blocks.items():
            if before:
                before()
            for _ in range(warmup if r == 0 else per_round):
                t0 = time.perf_counter()
                step()
                if r:
                    times[name].append(time.perf_counter() - t0)
            if after:
                after()
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=64)
    args = parser.parse_args()
    x, labels = make_batch(args.batch, args.seqlen)
    chars = args.batch * args.seqlen
    print(f"CharLM: one-hot({V}) @ embed {args.embed} -> LSTM {args.hidden} -> dense {V} -> NLL; "
          f"batch {args.batch} x seqlen {args.seqlen} = {chars} characters per step, float32, Adam")
    print(f"python {platform.python_version()}, numpy {np.__version__}, knetc {kn.__version__}, "
          f"{os.cpu_count()} CPUs, {platform.machine()}, load average {os.getloadavg()[0]:.2f} at start")
    steps = {}
    t0 = time.perf_counter()
    step = knetc_setup(args, x, labels)
    step()  # compile
    print(f"(knetc first step, compiling included: {time.perf_counter() - t0:.1f} s)")
    steps["knetc compiled cpu (kn.adam on @kn.compile loss)"] = step
    torch_name = None
    try:
        tstep, torch = torch_setup(args, x, labels)
        threads = torch.get_num_threads()
        torch_name = f"PyTorch {torch.__version__} nn.LSTM ({threads} threads, default)"
        steps[torch_name] = tstep
    except ImportError:
        print("(PyTorch not installed: no comparison)")
    ms = interleaved_ms(steps, args.steps, args.warmup)
    width = max(len(n) for n in ms)
    print(f"\n{'':{width}}  ms/step   chars/s  knetc/PyTorch speed")
    for name, v in ms.items():
        ratio = f"{ms[torch_name] / v:8.2f}x" if torch_name else ""
        print(f"{name:{width}}  {v:7.1f}  {1e3 * chars / v:8.0f}  {ratio}")
    print(f"(load average {os.getloadavg()[0]:.2f} after the timings)")


if __name__ == "__main__":
    main()
