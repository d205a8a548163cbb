"""Where a compiled training step's time goes: each kernel, GEMM and library call of the
generated drivers, timed inside the step and attributed to the user's source line.

    python benchmarks/profile_step.py mlp|lenet|rnn|transformer [--steps 30] [--warmup 5] [--top 25]
    python benchmarks/profile_step.py mlp|lenet --eager      # the eager step, by Python function

The step is the benchmark's own knetc contestant (benchmarks/mlp.py's "compiled",
lenet.py's "compiled", rnn.py's "knetc", transformer.py's "compiled"), run `--warmup` times
(compiling), then `--steps` times with every callable the generated drivers bind (the
kernels `k_*`, `matmul`, the library routines, `in_parallel`'s kernel) wrapped by a
timer. A kernel that `in_parallel` splits across threads is timed once, around the split.
Rows are (callee, driver line), with the user's line the driver's comment names; "outside
the drivers" is the rest of the step (Python around the drivers: kn.adam or kn.grad,
argument checks, allocations in the drivers, the optimizer update). The timers add about a
microsecond per call, so the total is a little above the benchmark's step time. GB/s: the
bytes of a call's array arguments (its inputs and output, each counted once) per second of
it. A pass over arrays larger than the caches that moves nothing else runs at the memory's
speed (10-20 GB/s on the 2-core VM of RESULTS.md); far below that, the call computes (erf,
GEMMs) or reads some entries many times.

--eager profiles the benchmark's eager contestant (`kn.grad(loss.fn)`: the tape) with
cProfile instead: the functions with the most time of their own, per step. cProfile's
overhead inflates the Python share; read the shares, not the total.
"""
import cProfile
import argparse
import collections
import functools
import importlib.util
import os
import pstats
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SETUPS = {"mlp": "compiled", "lenet": "compiled", "rnn": "knetc", "transformer": "compiled"}
GENERATED = "knetc_generated_"
NOT_TIMED = {"np", "math", "kernel", "in_parallel"}


def load_benchmark(name):
    sys.path.insert(0, HERE)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Timers:
    """Seconds and calls per (callee, driver module, driver line), from the calling thread only."""

    def __init__(self):
        self.seconds, self.calls, self.bytes = collections.Counter(), collections.Counter(), collections.Counter()
        self.thread = threading.main_thread()
        self.splitting = False  # inside in_parallel: its blocks are not timed apart

    def wrap(self, name, function, module):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            if self.splitting or threading.current_thread() is not self.thread:
                return function(*args, **kwargs)
            line = sys._getframe(1).f_lineno
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.record((name, module, line), time.perf_counter() - started, args)
        return timed

    def wrap_split(self, in_parallel, module, names):
        def timed(kernel, rows, *args):
            line = sys._getframe(1).f_lineno
            started = time.perf_counter()
            self.splitting = True
            try:
                return in_parallel(kernel, rows, *args)
            finally:
                self.splitting = False
                self.record((names.get(id(kernel), "kernel"), module, line), time.perf_counter() - started, args)
        return timed

    def record(self, key, seconds, args):
        self.seconds[key] += seconds
        self.calls[key] += 1
        self.bytes[key] += sum(a.nbytes for a in args if isinstance(a, np.ndarray))  # (inputs and output)


def instrument(timers, done):
    """Wrap the callables of every generated driver module loaded so far (once each)."""
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith(GENERATED) or "_kernel_" in module_name or module_name in done:
            continue
        done.add(module_name)
        names = {}
        for name, value in list(vars(module).items()):
            if callable(value) and not name.startswith("_") and name not in NOT_TIMED and name != "driver" \
                    and not isinstance(value, type):
                wrapped = timers.wrap(name, value, module)
                names[id(wrapped)] = names[id(value)] = name
                setattr(module, name, wrapped)
        if "in_parallel" in vars(module):
            module.in_parallel = timers.wrap_split(module.in_parallel, module, names)


def user_line(module, line):
    """The user's source line a driver line belongs to: the nearest `# file:line  source`
    comment above it."""
    lines = open(module.__file__).read().splitlines()
    for text in reversed(lines[:line - 1]):
        text = text.strip()
        if text.startswith("# ") and ":" in text.split()[1]:
            return text[2:]
        if text.startswith("def "):
            break
    return ""


def profile_eager(step, steps, top):
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(lambda: [step() for _ in range(steps)])
    total = (time.perf_counter() - started) / steps
    stats = pstats.Stats(profiler).stats  # {(file, line, function): (calls, _, own seconds, cumulative, _)}
    rows = sorted(((own, calls, key) for key, (calls, _, own, _, _) in stats.items()), reverse=True)[:top]
    print(f"eager step under cProfile: {total * 1e3:.2f} ms")
    print(f"{'ms/step':>8} {'share':>6} {'calls':>5}  function (file:line)")
    for own, calls, (path, line, function) in rows:
        where = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}:{line}" if line else path
        print(f"{own / steps * 1e3:8.3f} {own / steps / total:6.1%} {calls // steps:5d}  {function} ({where})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(SETUPS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--eager", action="store_true", help="profile the eager step (mlp, lenet)")
    args, rest = parser.parse_known_args(argv)
    if args.eager and args.model not in ("mlp", "lenet"):
        parser.error("--eager: mlp or lenet")
    sys.argv = [os.path.join(HERE, f"{args.model}.py"), *rest]  # the benchmark's own options
    benchmark = load_benchmark(args.model)
    _, step = benchmark.contestants(benchmark.parse_args(rest))["eager" if args.eager else SETUPS[args.model]]()
    for _ in range(args.warmup):
        step()
    if args.eager:
        return profile_eager(step, args.steps, args.top)
    timers, done = Timers(), set()
    instrument(timers, done)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    total = (time.perf_counter() - started) / args.steps
    if any(k for k in sys.modules if k.startswith(GENERATED) and k not in done and "_kernel_" not in k):
        print("note: a driver was loaded during the timed steps (it compiled again): raise --warmup")
    per_step = {key: seconds / args.steps for key, seconds in timers.seconds.items()}
    inside = sum(per_step.values())
    print(f"{args.model}: {total * 1e3:.2f} ms a step over {args.steps} steps; in the drivers' calls "
          f"{inside * 1e3:.2f} ms, outside them {(total - inside) * 1e3:.2f} ms")
    print(f"{'ms/step':>8} {'share':>6} {'calls':>5} {'GB/s':>6}  callee (driver line)  user line")
    for key, seconds in sorted(per_step.items(), key=lambda item: -item[1])[:args.top]:
        name, module, line = key
        gbps = timers.bytes[key] / args.steps / seconds / 1e9 if seconds else 0.0
        print(f"{seconds * 1e3:8.3f} {seconds / total:6.1%} {timers.calls[key] // args.steps:5d} {gbps:6.1f}  "
              f"{name} ({line})  {user_line(module, line)}")
    by_callee = collections.Counter()
    for (name, _, _), seconds in per_step.items():
        by_callee["matmul (GEMMs)" if name.startswith("matmul") else "kernels" if name.startswith("k_")
                  else name] += seconds
    print("by kind: " + ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in by_callee.most_common()))


if __name__ == "__main__":
    main()
