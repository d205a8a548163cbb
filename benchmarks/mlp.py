"""MLP training step: knetc eager vs knetc compiled (CPU) vs PyTorch eager, in one process.

    python benchmarks/mlp.py [--steps 500] [--warmup 50]

One step = forward + backward + SGD update of all 4 parameters of a 784-64-10 ReLU MLP on a
batch of 100 (float32, mean NLL / cross-entropy), as examples/mnist_mlp.py trains it.
Reported: the median milliseconds per step after a warm-up, and the ratio to PyTorch (lower
is better; < 1 is faster than PyTorch). Then the time to the first compiled step in fresh
processes: cold (an empty KNETC_CACHE_DIR: trace, differentiate, generate, Numba-compile)
and warm (a second process on the same cache dir: trace, differentiate, generate, load
Numba's cached machine code).
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import knetc as kn

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


def median_ms(step, steps, warmup):
    """Median milliseconds per call of step() over `steps` calls, after `warmup` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def interleaved_ms(steps_by_name, steps, warmup, rounds=10):
    """Median ms per step of each function, measured in `rounds` interleaved rounds (on a
    shared machine the load changes over time; interleaving gives each the same share).
    A value is a step function, or (step, before, after) run around each block of steps."""
    blocks = {name: v if isinstance(v, tuple) else (v, None, None) for name, v in steps_by_name.items()}
    times = {name: [] for name in blocks}
    per_round = max(1, steps // rounds)
    for r in range(rounds + 1):
        for name, (step, before, after) in blocks.items():
            if before:
                before()
            for _ in range(warmup if r == 0 else per_round):  # round 0: warm-up
                t0 = time.perf_counter()
                step()
                if r:
                    times[name].append(time.perf_counter() - t0)
            if after:
                after()
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--first-step-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_step_child:
        return first_step_child()

    x, y = make_data()
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, float32, SGD step (fwd + bwd + update); "
          f"median of {args.steps} steps per row, in 10 interleaved rounds, after {args.warmup} warm-up")
    print(f"python {platform.python_version()}, numpy {np.__version__}, knetc {kn.__version__}, "
          f"{os.cpu_count()} CPUs, {platform.machine()}, load average {os.getloadavg()[0]:.2f} at start")

    steps = {}
    eager_model, compiled_model = make_model(), make_model()
    eager, compiled = knetc_step(kn.grad(loss.fn)), knetc_step(kn.grad(loss))
    steps["knetc eager (kn.grad(loss.fn))"] = lambda: eager(eager_model, x, y)
    steps["knetc compiled cpu (kn.grad(loss))"] = lambda: compiled(compiled_model, x, y)
    compiled(compiled_model, x, y)  # compile before looking at the specialization
    # Breakdown of the compiled step: the kn.grad(loss) call, and the generated driver alone
    # (all kernels and BLAS calls, no Python around them).
    try:
        spec = [s for s in loss.specializations() if hasattr(s, "grad_slots")][0]
        runner = spec.executable._runner
        arrays = [np.ascontiguousarray(p.value) for layer in compiled_model for p in layer] + [x, y] \
            + list(spec.executable.constants)
        grad = kn.grad(loss)
        steps["  of which: kn.grad(loss) call"] = lambda: grad(compiled_model, x, y)
        steps["  of which: generated driver (kernels)"] = lambda: runner.driver(*arrays)
    except Exception as e:  # internals moved: skip the breakdown
        print(f"(no breakdown: {e!r})")
    torch = None
    try:
        step, torch = torch_setup(make_model(), x, y)
        default_threads = torch.get_num_threads()
        steps[f"PyTorch {torch.__version__} eager ({default_threads} threads, default)"] = step
        steps["PyTorch eager, 1 thread (for reference)"] = (
            step, lambda: torch.set_num_threads(1), lambda: torch.set_num_threads(default_threads))
    except ImportError:
        print("(PyTorch not installed: no comparison)")
    ms = interleaved_ms(steps, args.steps, args.warmup)
    rows = list(ms.items())
    torch_ms = ms[f"PyTorch {torch.__version__} eager ({default_threads} threads, default)"] if torch else None

    width = max(len(name) for name, _ in rows)
    print(f"\n{'':{width}}  ms/step  vs PyTorch")
    for name, ms in rows:
        ratio = f"{ms / torch_ms:8.2f}x" if torch_ms else ""
        print(f"{name:{width}}  {ms:7.3f}  {ratio}")

    print(f"(load average {os.getloadavg()[0]:.2f} after the step timings)")
    with tempfile.TemporaryDirectory(prefix="knetc-bench-cache-") as cache:
        cold, cold_wall = first_step(cache)
        warm, warm_wall = first_step(cache)
    print("\ntime to the first compiled step (fresh process; in parentheses the whole process incl. imports):")
    print(f"  cold cache (empty KNETC_CACHE_DIR): {cold:6.2f} s  ({cold_wall:.2f} s)")
    print(f"  warm cache (same KNETC_CACHE_DIR):  {warm:6.2f} s  ({warm_wall:.2f} s)")


if __name__ == "__main__":
    main()
