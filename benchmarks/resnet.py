"""ResNet training step: knetc compiled vs PyTorch, each in its own processes; and the cold compile.

    python benchmarks/resnet.py [--steps 30] [--warmup 3] [--cold 3] [--eager] [--target cpu|cuda]

One step = forward + backward + Adam update of examples/resnet.py's network (conv 3x3 16 +
batchnorm, a residual block at 16 channels, two strided blocks to 32 and 64 channels with
projected shortcuts, global average pooling, fc 64-10; 20 parameters, 11 batchnorms with
running statistics) on a batch of 100 MNIST-sized images (float32, mean NLL /
cross-entropy). PyTorch runs the same network with the same initial weights (F.conv2d with
the flipped filters, since kn.conv4's default is a true convolution; F.batch_norm in
training mode with its running statistics; torch.optim.Adam). Reported: the median
milliseconds per step in alternating rounds of fresh processes (benchmarks/contest.py says
why), the ratio to PyTorch (lower is better), and the cold first step: a fresh process with
an empty KNETC_CACHE_DIR (tracing, differentiation, fusion, Numba compiling the kernels, the
step itself), median of --cold processes, against PyTorch's first step in a fresh process.
"""
import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

import knetc as kn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from resnet import loss, resnet  # noqa: E402  (the example's model and loss)
import contest  # noqa: E402  (beside this file)

BATCH, LR = 100, 0.001


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, BATCH)


def knetc_step(f, x, y):
    kn.seed_(0)
    model = resnet(atype=np.float32)
    params = kn.params(model)
    optimizers = [kn.Adam(lr=LR) for _ in params]
    grad = kn.grad(f)

    def step():
        gradient = grad(model, x, y)
        for p, g, opt in zip(params, _arrays(gradient), optimizers):
            kn.update_(p, g, opt)
    return step


def _arrays(tree):
    """The gradient's arrays in the order of kn.params(model) (None where the model has moments)."""
    if isinstance(tree, (list, tuple)):
        return [a for t in tree for a in _arrays(t)]
    return [] if tree is None else [tree]


def torch_step(x, y, device):
    import torch
    import torch.nn.functional as F
    kn.seed_(0)
    stem, blocks, head = resnet(atype=np.float32)

    def tensor(a, flip=False):
        a = np.asarray(kn.value(a))
        a = a[:, :, ::-1, ::-1].copy() if flip else a
        return torch.tensor(a, device=device, requires_grad=True)

    def layer(filt_bn_moments):
        filt, bn, _ = filt_bn_moments
        c = filt.shape[0]
        return [tensor(filt, flip=True), tensor(bn), torch.zeros(c, device=device), torch.ones(c, device=device)]

    stem_t = layer(stem)
    blocks_t = [[layer(conv) for conv in block] for block in blocks]
    head_t = [tensor(head[0]), tensor(head[1])]
    params = [t for conv in [stem_t] + [c for b in blocks_t for c in b] for t in conv[:2]] + head_t
    opt = torch.optim.Adam(params, lr=LR)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def conv_bn(conv, h, stride=1, padding=1):
        filt, bn, mean, var = conv
        c = filt.shape[0]
        h = F.conv2d(h, filt, stride=stride, padding=padding)
        return F.batch_norm(h, mean, var, bn[:c], bn[c:], training=True, momentum=0.1, eps=1e-5)

    def step():
        h = torch.relu(conv_bn(stem_t, tx))
        for block in blocks_t:
            if len(block) == 3:
                g = torch.relu(conv_bn(block[0], h, stride=2))
                h = torch.relu(conv_bn(block[1], g) + conv_bn(block[2], h, stride=2, padding=0))
            else:
                h = torch.relu(conv_bn(block[1], torch.relu(conv_bn(block[0], h))) + h)
        out = F.cross_entropy(h.mean(dim=(2, 3)) @ head_t[0] + head_t[1], ty)
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
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cold", type=int, default=3, help="fresh processes timing the cold first step (0: skip)")
    parser.add_argument("--eager", action="store_true", help="also time knetc's eager tape (seconds per step)")
    parser.add_argument("--target", choices=("cpu", "cuda"), default="cpu")
    return parser.parse_known_args(argv)[0]


def cold_first_steps(names, runs):
    """{name: median seconds of the first step}, each in a fresh process with an empty cache."""
    firsts = {name: [] for name in names}
    saved = os.environ.get("KNETC_CACHE_DIR")
    try:
        for _ in range(runs):
            for name in names:
                with tempfile.TemporaryDirectory(prefix="knetc-cold-") as cache:
                    os.environ["KNETC_CACHE_DIR"] = cache
                    ms = contest.compare(__file__, [name], 1, 0, rounds=1)
                firsts[name].append(ms[name][1] / 1e3)
    finally:
        if saved is None:
            os.environ.pop("KNETC_CACHE_DIR", None)
        else:
            os.environ["KNETC_CACHE_DIR"] = saved
    return {name: statistics.median(t) for name, t in firsts.items()}


def main():
    args = parse_args()
    contest.main_child(contestants(args))
    print(f"ResNet (examples/resnet.py), batch {BATCH}, float32, Adam step (fwd + bwd + update); median of "
          f"{args.steps} steps per row, each framework in its own processes (3 alternating rounds), after "
          f"{args.warmup} warm-up; target {args.target}")
    print(contest.machine())
    names = ["compiled"] + (["torch"] if contest.have_torch() else [])
    if "torch" not in names:
        print("(PyTorch not installed: no comparison)")
    if args.cold:
        cold = cold_first_steps(names, args.cold)
        print(f"\ncold first step (a fresh process, empty KNETC_CACHE_DIR), median of {args.cold}:")
        for name, seconds in cold.items():
            print(f"  {name:9s} {seconds:7.2f} s")
    contestants(args)["compiled"]()[1]()  # compile into the cache, outside the timings
    if args.eager and args.target == "cpu":
        names.insert(1, "eager")
    ms = contest.compare(__file__, names, args.steps, args.warmup)
    contest.print_ms(ms)
    print(f"(load average {os.getloadavg()[0]:.2f} after the timings; "
          f"`knetc inspect examples/resnet.py:loss --steps 1 --stage fused` shows the compiled step's kernels)")
    return ms


if __name__ == "__main__":
    main()
