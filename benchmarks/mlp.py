"""MLP training step: knetc eager vs knetc compiled (CPU) vs PyTorch eager, each in its own process.

    python benchmarks/mlp.py [--steps 600] [--warmup 50]

One step = forward + backward + SGD update of all 4 parameters of a 784-64-10 ReLU MLP on a
batch of 100 (float32, mean NLL / cross-entropy), as examples/mnist_mlp.py trains it.
Reported: the median milliseconds per step after a warm-up, in alternating rounds of fresh
processes (benchmarks/contest.py says why), and the ratio to PyTorch (lower is better; < 1
is faster than PyTorch), and the compiled step against its floor: the same five GEMMs alone,
through the same BLAS call (issue 18's target: 1.3x). Then the time to the first compiled step in fresh
processes: cold (an empty KNETC_CACHE_DIR: trace, differentiate, generate, Numba-compile)
and warm (a second process on the same cache dir: trace, differentiate, generate, load
Numba's cached machine code).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import knetc as kn

import contest  # beside this file

BATCH, SIZES, LR = 100, (784, 64, 10), 0.1


@kn.compile(target="cpu")
def loss(model, x, y):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, y)


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    return x, y


def make_model(seed=0):
    kn.seed_(seed)
    return [(kn.param(i, o), kn.param0(o)) for i, o in zip(SIZES[:-1], SIZES[1:])]


def knetc_step(grad):
    def step(model, x, y):
        for (w, b), (dw, db) in zip(model, grad(model, x, y)):
            w.value -= LR * dw
            b.value -= LR * db
    return step


def torch_setup(model, x, y):
    import torch
    params = [torch.tensor(np.asarray(p.value), requires_grad=True) for layer in model for p in layer]
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        w1, b1, w2, b2 = params
        h = torch.relu(tx @ w1 + b1)
        out = torch.nn.functional.cross_entropy(h @ w2 + b2, ty)
        out.backward()
        with torch.no_grad():
            for p in params:
                p -= LR * p.grad
                p.grad = None
    return step, torch


def first_step_child():
    """Run in a fresh process: time the first compiled gradient step (import excluded)."""
    x, y = make_data()
    model = make_model()
    t0 = time.perf_counter()
    knetc_step(kn.grad(loss))(model, x, y)
    print(f"FIRST_STEP {time.perf_counter() - t0:.4f}")


def first_step(cache_dir):
    env = dict(os.environ, KNETC_CACHE_DIR=cache_dir)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--first-step-child"], env=env,
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    step = float(out.split("FIRST_STEP")[1].split()[0])
    return step, wall


def contestants(args):
    x, y = make_data()

    def eager():
        model, step = make_model(), knetc_step(kn.grad(loss.fn))
        return "knetc eager (kn.grad(loss.fn))", lambda: step(model, x, y)

    def compiled():
        model, step = make_model(), knetc_step(kn.grad(loss))
        return "knetc compiled cpu (kn.grad(loss))", lambda: step(model, x, y)

    # Breakdown of the compiled step: the kn.grad(loss) call alone, and the generated driver
    # alone (all kernels and BLAS calls, no Python around them).
    def grad_call():
        model, grad = make_model(), kn.grad(loss)
        return "  of which: kn.grad(loss) call", lambda: grad(model, x, y)

    def driver():
        model, grad = make_model(), kn.grad(loss)
        grad(model, x, y)  # compile, then look at the specialization
        spec = [s for s in loss.specializations() if hasattr(s, "grad_slots")][0]
        runner = spec.executable._runner
        arrays = [np.ascontiguousarray(p.value) for layer in model for p in layer] + [x, y] \
            + list(spec.executable.constants)
        return "  of which: generated driver (kernels)", lambda: runner.driver(*arrays)

    # The floor issue 18 measures the compiled step against: the step's five GEMMs alone
    # (forward x @ w1, h @ w2; backward dz @ w2.T, h.T @ dz, x.T @ dh), through the same BLAS
    # call the generated driver makes (kernels/matmul.py), with the driver's BLAS threads.
    def gemms():
        from knetc.kernels.matmul import matmul
        from knetc.runtime import threads
        threads.use_threads(threads.threads_for())
        model = make_model()
        w1, w2 = (np.ascontiguousarray(layer[0].value) for layer in model)
        h, dz, dh = (np.ones((BATCH, n), np.float32) for n in (SIZES[1], SIZES[2], SIZES[1]))
        products = [(x, w1, h), (h, w2, dz), (dz, w2.T, dh), (h.T, dz, w2.copy()), (x.T, dh, w1.copy())]

        def step():
            for a, b, out in products:
                matmul(a, b, out)
        return "  floor: its 5 GEMMs alone (same BLAS call)", step

    def pytorch(threads=None):
        step, torch = torch_setup(make_model(), x, y)
        if threads:
            torch.set_num_threads(threads)
            return f"PyTorch eager, {threads} thread (for reference)", step
        return f"PyTorch {torch.__version__} eager ({torch.get_num_threads()} threads, default)", step
    return {"eager": eager, "compiled": compiled, "grad_call": grad_call, "driver": driver, "gemms": gemms,
            "torch": pytorch, "torch1": lambda: pytorch(1)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--first-step-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_known_args(argv)[0]


def main():
    args = parse_args()
    if args.first_step_child:
        return first_step_child()
    contest.main_child(contestants(args))
    contest.memory_child(contestants(args))
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, float32, SGD step (fwd + bwd + update); "
          f"median of {args.steps} steps per row, each in its own processes (3 alternating rounds), "
          f"after {args.warmup} warm-up")
    print(contest.machine())
    contestants(args)["compiled"]()[1]()  # compile into the cache, outside the timings
    names = ["eager", "compiled", "grad_call", "driver", "gemms"]
    if contest.have_torch():
        names += ["torch", "torch1"]
    else:
        print("(PyTorch not installed: no comparison)")
    ms = contest.compare(__file__, names, args.steps, args.warmup)
    contest.print_ms(ms)
    print(f"compiled step / its GEMMs alone: {ms['compiled'][1] / ms['gemms'][1]:.2f}x (issue 18's target: 1.3x)")
    print(f"(load average {os.getloadavg()[0]:.2f} after the step timings)")
    contest.print_memory(__file__, [n for n in ("compiled", "torch") if n in names], ms)
    with tempfile.TemporaryDirectory(prefix="knetc-bench-cache-") as cache:
        cold, cold_wall = first_step(cache)
        warm, warm_wall = first_step(cache)
    print("\ntime to the first compiled step (fresh process; in parentheses the whole process incl. imports):")
    print(f"  cold cache (empty KNETC_CACHE_DIR): {cold:6.2f} s  ({cold_wall:.2f} s)")
    print(f"  warm cache (same KNETC_CACHE_DIR):  {warm:6.2f} s  ({warm_wall:.2f} s)")


if __name__ == "__main__":
    main()
