"""LeNet training step: knetc eager vs knetc compiled vs PyTorch, each in its own process.

    python benchmarks/lenet.py [--steps 150] [--warmup 10] [--target cpu|cuda]

One step = forward + backward + Adam update of LeNet's 8 parameters (conv 5x5x20, max-pool
2, conv 5x5x50, max-pool 2, fc 800-500, fc 500-10, ReLU; examples/lenet.py) on a batch of
100 MNIST-sized images (float32, mean NLL / cross-entropy). Reported: the median
milliseconds per step in alternating rounds of fresh processes
(benchmarks/contest.py says why), and the ratio to PyTorch (lower is better); then each
contestant's peak memory in a fresh process of its own (Linux: from /proc/self/status):
the peak resident set during steps after warm-up, above the process's resident set
before the model was built (imports and data excluded; parameters, optimizer state,
loaded kernels and every buffer a step makes included), and its rise during the steps.
With --target cuda (a GPU), knetc runs on the device and PyTorch on cuda when it can.
"""
import argparse
import os
import sys

import numpy as np

import knetc as kn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from lenet import lenet, loss  # noqa: E402  (the example's model and loss)
import contest  # noqa: E402  (beside this file)

BATCH, LR = 100, 0.001


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, BATCH)


def knetc_step(f, x, y):
    kn.seed_(0)
    w = lenet()
    optimizers = [kn.Adam(lr=LR) for _ in w]
    grad = kn.grad(f)

    def step():
        for p, g, opt in zip(w, grad(w, x, y), optimizers):
            kn.update_(p, g, opt)
    return step


def torch_step(x, y, device):
    import torch
    import torch.nn.functional as F
    kn.seed_(0)
    params = [torch.tensor(np.asarray(p.value), device=device, requires_grad=True) for p in lenet()]
    opt = torch.optim.Adam(params, lr=LR)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step():
        c1, cb1, c2, cb2, w3, b3, w4, b4 = params
        h = F.max_pool2d(torch.relu(F.conv2d(tx, c1) + cb1), 2)
        h = F.max_pool2d(torch.relu(F.conv2d(h, c2) + cb2), 2)
        h = torch.relu(h.reshape(BATCH, -1) @ w3 + b3)
        out = F.cross_entropy(h @ w4 + b4, ty)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return step, torch


def contestants(args):
    x, y = make_data()

    def compiled():
        return "knetc compiled (kn.grad(loss))", knetc_step(kn.compile(loss.fn, target=args.target), x, y)

    def eager():
        return "knetc eager (kn.grad(loss.fn))", knetc_step(loss.fn, x, y)

    def pytorch():
        step, torch = torch_step(x, y, args.target)
        return f"PyTorch {torch.__version__} ({args.target}, {torch.get_num_threads()} threads)", step
    return {"compiled": compiled, "eager": eager, "torch": pytorch}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--target", choices=("cpu", "cuda"), default="cpu")
    return parser.parse_known_args(argv)[0]


def main():
    args = parse_args()
    contest.main_child(contestants(args))
    contest.memory_child(contestants(args))
    print(f"LeNet, batch {BATCH}, float32, Adam step (fwd + bwd + update); median of {args.steps} steps "
          f"per row, each framework in its own processes (3 alternating rounds), after {args.warmup} "
          f"warm-up; target {args.target}")
    print(contest.machine())
    contestants(args)["compiled"]()[1]()  # compile into the cache, outside the timings
    names = ["compiled"] + (["eager"] if args.target == "cpu" else []) + (["torch"] if contest.have_torch() else [])
    if "torch" not in names:
        print("(PyTorch not installed: no comparison)")
    ms = contest.compare(__file__, names, args.steps, args.warmup)
    contest.print_ms(ms)
    contest.print_memory(__file__, [n for n in names if n != "eager"], ms)
    print(f"(load average {os.getloadavg()[0]:.2f} after the timings; "
          f"`knetc inspect examples/lenet.py:loss --steps 1 --stage fused` shows the compiled step's kernels)")
    return ms


if __name__ == "__main__":
    main()
