"""Cold compile time: the first call of a compiled gradient, knetc against JAX, each in a fresh process.

    python benchmarks/compile.py [--cases mnist,rnn_T8,...] [--quick] [--frameworks knetc,jit,scan]
                                 [--timeout 600] [--json]

Every figure comes from a fresh process (`--child FRAMEWORK CASE`, one JSON line on stdout)
with an empty kernel cache (KNETC_CACHE_DIR a new temporary directory, NUMBA_ENABLE_CUDASIM
and KNETC_LOG unset). Inside the child, the time of a case is the first call of the compiled
gradient, from just before the call to just after it (JAX: `jax.block_until_ready`), wall
and CPU seconds; the imports (knetc or jax, reported apart) and the set-up (models, data)
are outside it. JAX runs with JAX_PLATFORMS=cpu unless set; knetc with its default target.
A child that runs past --timeout seconds is killed and reported as a timeout.

Cases (knetc: `kn.grad` of an `@kn.compile` function; JAX: `jax.jit(jax.grad(loss))`, and
for the RNN also a `lax.scan` version of the loop):

  mnist        examples/mnist_mlp.py's loss and mlp, 784-64-10 ReLU, batch 100 (random data)
  mnist_built  the same in a process whose cache was filled first: knetc by
               `knetc build examples/mnist_mlp.py -- --epochs 1`, JAX by a previous process
               with the same persistent compilation cache (jax_compilation_cache_dir)
  mlp_depthN   the same loss, N hidden ReLU layers of 64 (input 64, 10 classes), batch 32; N = 1, 4, 16
  rnn_TN       tanh RNN `for t in range(T): h = tanh(xs[t] @ W + h @ R + b)`, loss mean(h^2),
               batch 32, input 32, hidden 64, gradient w.r.t. (W, R, b); T = 8, 32, 128
  lenet        examples/lenet.py's first training step: the gradient and an Adam update
               (knetc: kn.update_ per Param; JAX: one jitted grad + Adam step)
  new_batch    the MNIST MLP after its first call at batch 100: calls at batches 37, 1, 64,
               the time of each and whether the compilation count moved
  memory       the MNIST MLP after its first call at batch 100: one call at each of 50
               batch sizes (1..50), the resident set size (VmRSS) after each

--quick: a smoke run (no mlp_depth16, no rnn_T128, 10 batch sizes in `memory`). Ratio in
the table: knetc's time / the fastest JAX column (> 1: knetc is slower).
"""
import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MNIST_EXAMPLE = os.path.join(ROOT, "examples", "mnist_mlp.py")
LENET_EXAMPLE = os.path.join(ROOT, "examples", "lenet.py")

FRAMEWORKS = ("knetc", "jit", "scan")
NEW_BATCHES = (37, 1, 64)
MEMORY_SIZES, MEMORY_SIZES_QUICK = 50, 10
RNN_BATCH, RNN_INPUT, RNN_HIDDEN = 32, 32, 64
MLP_BATCH, MLP_WIDTH = 32, 64


def _case(label, kind, frameworks=("knetc", "jit"), quick=True, **params):
    return {"label": label, "kind": kind, "frameworks": frameworks, "quick": quick, "params": params}


def _deep(depth):
    """Layer sizes of an MLP with `depth` hidden layers: input 64, hidden 64, 10 classes."""
    return (MLP_WIDTH,) * (depth + 1) + (10,)


CASES = {
    "mnist": _case("MNIST MLP 784-64-10, batch 100", "mlp", sizes=(784, 64, 10), batch=100),
    "mnist_built": _case("  the same after a build (warm cache)", "mlp", sizes=(784, 64, 10), batch=100),
    "mlp_depth1": _case("MLP depth 1 (64 wide, batch 32)", "mlp", sizes=_deep(1), batch=MLP_BATCH),
    "mlp_depth4": _case("MLP depth 4", "mlp", sizes=_deep(4), batch=MLP_BATCH),
    "mlp_depth16": _case("MLP depth 16", "mlp", quick=False, sizes=_deep(16), batch=MLP_BATCH),
    "rnn_T8": _case("tanh RNN T=8 (B32 X32 H64)", "rnn", FRAMEWORKS, T=8),
    "rnn_T32": _case("tanh RNN T=32", "rnn", FRAMEWORKS, T=32),
    "rnn_T128": _case("tanh RNN T=128", "rnn", FRAMEWORKS, quick=False, T=128),
    "lenet": _case("LeNet first training step, batch 100", "lenet"),
    "new_batch": _case("MNIST MLP, new batch size", "new_batch"),
    "memory": _case("MNIST MLP, batch sizes 1..{n}", "memory"),
}


# ---------------------------------------------------------------------------------------
# The child: one framework, one case, one JSON line.

def rss_mb(field="VmRSS"):
    """This process's resident set size (or, with field="VmHWM", its peak) in MB, from /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def timed(call):
    t0 = time.perf_counter()
    value = call()
    return time.perf_counter() - t0, value


def timed_cpu(call):
    """(wall seconds, CPU seconds of this process, value): the CPU time, all threads together,
    moves less than the wall time when other jobs load the machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    value = call()
    return time.perf_counter() - t0, time.process_time() - c0, value


def mlp_data(np, sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((batch, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], batch)


class KnetcRunner:
    def __init__(self):
        import numpy as np
        import knetc as kn
        self.np, self.kn = np, kn

    def compilations(self):
        return self.kn.stats()["compilations"]

    def mlp(self, sizes):
        import runpy
        example = runpy.run_path(MNIST_EXAMPLE, run_name="mnist_mlp")  # loss, mlp; main() does not run
        self.kn.seed_(1)
        return self.kn.grad(example["loss"]), example["mlp"](*sizes)

    def first_call(self, grad, *args):
        first, cpu, _ = timed_cpu(lambda: grad(*args))
        compiled = self.compilations()
        second, _ = timed(lambda: grad(*args))
        return {"first": first, "first_cpu": cpu, "second": second, "compilations": compiled}

    def case_mlp(self, sizes, batch, quick):
        grad, model = self.mlp(sizes)
        x, y = mlp_data(self.np, sizes, batch)
        return self.first_call(grad, model, x, y)

    def case_rnn(self, T, quick):
        from compile_models import rnn_loss, rnn_weights
        self.kn.seed_(1)
        w = rnn_weights(RNN_INPUT, RNN_HIDDEN)
        rng = self.np.random.default_rng(0)
        xs = rng.standard_normal((T, RNN_BATCH, RNN_INPUT), dtype=self.np.float32)
        h = self.np.zeros((RNN_BATCH, RNN_HIDDEN), self.np.float32)
        return self.first_call(self.kn.grad(rnn_loss), w, xs, h)

    def case_lenet(self, quick):
        import runpy
        kn, np = self.kn, self.np
        example = runpy.run_path(LENET_EXAMPLE, run_name="lenet_example")
        kn.seed_(1)
        w = example["lenet"]()
        optimizers = [kn.Adam(lr=0.001) for _ in w]
        grad = kn.grad(example["loss"])
        rng = np.random.default_rng(0)
        x, y = rng.random((100, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 100)

        def step():
            t0 = time.perf_counter()
            grads = grad(w, x, y)
            t1 = time.perf_counter()
            for p, g, opt in zip(w, grads, optimizers):
                kn.update_(p, g, opt)
            return t1 - t0, time.perf_counter() - t1
        first, cpu, (first_grad, first_update) = timed_cpu(step)
        compiled = self.compilations()
        second = sum(step())
        return {"first": first, "first_cpu": cpu, "first_grad": first_grad, "first_update": first_update,
                "second": second, "compilations": compiled}

    def batch_calls(self, batches):
        """The MNIST MLP's gradient at batch 100, then at each batch: times, compilation counts, RSS."""
        grad, model = self.mlp((784, 64, 10))
        return batch_calls(lambda x, y: grad(model, x, y), self.np, batches, self.compilations)

    def case_new_batch(self, quick):
        return self.batch_calls(NEW_BATCHES)

    def case_memory(self, quick):
        return memory_summary(self.batch_calls(range(1, 1 + (MEMORY_SIZES_QUICK if quick else MEMORY_SIZES))))


def batch_calls(call, np, batches, compilations, block=lambda value: value):
    x0, y0 = mlp_data(np, (784, 10), 100)
    first, cpu, _ = timed_cpu(lambda: block(call(x0, y0)))
    gc.collect()
    result = {"first": first, "first_cpu": cpu, "compilations": compilations(), "rss_after_first": rss_mb(),
              "calls": []}
    for n in batches:
        x, y = mlp_data(np, (784, 10), n, seed=n)
        before = compilations()
        elapsed, cpu, _ = timed_cpu(lambda: block(call(x, y)))
        gc.collect()
        result["calls"].append({"batch": n, "time": elapsed, "cpu": cpu, "compilations_moved": compilations() - before,
                                "rss": rss_mb()})
    again, _ = timed(lambda: block(call(x0, y0)))
    result["again_at_100"] = again
    return result


def memory_summary(result):
    calls = result["calls"]
    growth = calls[-1]["rss"] - result["rss_after_first"]
    result.update(sizes=len(calls), growth_mb=growth, growth_per_size_mb=growth / len(calls),
                  time_per_size=statistics.mean(c["time"] for c in calls),
                  cpu_per_size=statistics.mean(c["cpu"] for c in calls),
                  compilations_per_size=statistics.mean(c["compilations_moved"] for c in calls))
    return result


class JaxRunner:
    def __init__(self, scan=False, cache_dir=None):
        import numpy as np
        import jax
        import jax.numpy as jnp
        if cache_dir:  # a persistent compilation cache, kept for every entry however fast it compiled
            jax.config.update("jax_compilation_cache_dir", cache_dir)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        from compile_models import jax_models
        self.np, self.jax, self.jnp, self.scan = np, jax, jnp, scan
        self.models = jax_models()
        self.jitted = None

    def compilations(self):
        try:  # the jitted function's cache of compiled specialisations (a private method)
            return self.jitted._cache_size()
        except Exception:
            return -1

    def block(self, value):
        return self.jax.block_until_ready(value)

    def first_call(self, loss, *args):
        self.jitted = self.jax.jit(self.jax.grad(loss))
        args = self.block(self.jax.device_put(args))
        first, cpu, _ = timed_cpu(lambda: self.block(self.jitted(*args)))
        second, _ = timed(lambda: self.block(self.jitted(*args)))
        return {"first": first, "first_cpu": cpu, "second": second, "compilations": self.compilations()}

    def mlp_model(self, sizes):
        rng = self.np.random.default_rng(1)
        return [(rng.uniform(-0.1, 0.1, (i, o)).astype(self.np.float32), self.np.zeros(o, self.np.float32))
                for i, o in zip(sizes[:-1], sizes[1:])]

    def case_mlp(self, sizes, batch, quick):
        return self.first_call(self.models["mlp_loss"], self.mlp_model(sizes), *mlp_data(self.np, sizes, batch))

    def case_rnn(self, T, quick):
        np = self.np
        rng = np.random.default_rng(0)
        w = [rng.uniform(-0.2, 0.2, (RNN_INPUT, RNN_HIDDEN)).astype(np.float32),
             rng.uniform(-0.2, 0.2, (RNN_HIDDEN, RNN_HIDDEN)).astype(np.float32), np.zeros(RNN_HIDDEN, np.float32)]
        xs = rng.standard_normal((T, RNN_BATCH, RNN_INPUT), dtype=np.float32)
        h = np.zeros((RNN_BATCH, RNN_HIDDEN), np.float32)
        return self.first_call(self.models["rnn_scan_loss" if self.scan else "rnn_loss"], w, xs, h)

    def case_lenet(self, quick):
        np, jax = self.np, self.jax
        rng = np.random.default_rng(1)
        shapes = [(20, 1, 5, 5), (1, 20, 1, 1), (50, 20, 5, 5), (1, 50, 1, 1), (800, 500), (500,), (500, 10), (10,)]
        w = [rng.uniform(-0.1, 0.1, s).astype(np.float32) for s in shapes]
        zeros = [np.zeros(s, np.float32) for s in shapes]
        x, y = rng.random((100, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 100)
        self.jitted = jax.jit(self.models["adam_step"])
        state = self.block(jax.device_put((w, zeros, zeros, np.float32(0), x, y)))
        first, cpu, new = timed_cpu(lambda: self.block(self.jitted(*state)))
        second, _ = timed(lambda: self.block(self.jitted(*new, *state[4:])))
        return {"first": first, "first_cpu": cpu, "second": second, "compilations": self.compilations()}

    def batch_calls(self, batches):
        self.jitted = self.jax.jit(self.jax.grad(self.models["mlp_loss"]))
        model = self.jax.device_put(self.mlp_model((784, 64, 10)))
        return batch_calls(lambda x, y: self.jitted(model, x, y), self.np, batches, self.compilations, self.block)

    def case_new_batch(self, quick):
        return self.batch_calls(NEW_BATCHES)

    def case_memory(self, quick):
        return memory_summary(self.batch_calls(range(1, 1 + (MEMORY_SIZES_QUICK if quick else MEMORY_SIZES))))


def child(framework, case, quick, jax_cache=None):
    """Run one case in this (fresh) process and print its result as one JSON line."""
    sys.path.insert(0, HERE)  # compile_models
    started = time.perf_counter()
    if framework == "knetc":
        import_s, runner = timed(KnetcRunner)
        version = runner.kn.__version__
    else:
        import_s, runner = timed(lambda: JaxRunner(scan=framework == "scan", cache_dir=jax_cache))
        version = runner.jax.__version__
    spec = CASES[case]
    run = getattr(runner, "case_" + spec["kind"])
    result = run(**spec["params"], quick=quick)
    result.update(framework=framework, case=case, version=version, import_s=import_s,
                  process_s=time.perf_counter() - started, peak_rss_mb=rss_mb("VmHWM"))
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------
# The parent: a fresh process per case and framework, then the table.

def child_env(cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "KNETC_LOG")}
    env["KNETC_CACHE_DIR"] = cache_dir
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def run_child(framework, case, quick, timeout, cache_dir=None, jax_cache=None):
    """One fresh process; its JSON result, with status "ok", "timeout" or "error"."""
    with tempfile.TemporaryDirectory(prefix="knetc-compile-bench-") as empty:
        command = [sys.executable, os.path.abspath(__file__), "--child", framework, case]
        command += ["--quick"] if quick else []
        command += ["--jax-cache", jax_cache] if jax_cache else []
        started = time.perf_counter()
        try:
            out = subprocess.run(command, env=child_env(cache_dir or empty), capture_output=True, text=True,
                                 timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "wall": time.perf_counter() - started}
        wall = time.perf_counter() - started
    if out.returncode:
        return {"status": "error", "wall": wall, "stderr": out.stderr[-3000:]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(status="ok", wall=wall)
    return result


def run_built(framework, quick, timeout):
    """mnist_built: fill a cache in one process, then time the first call in another."""
    with tempfile.TemporaryDirectory(prefix="knetc-compile-bench-built-") as cache:
        started = time.perf_counter()
        if framework == "knetc":
            knetc = shutil.which("knetc")
            if knetc is None:
                return {"status": "error", "stderr": "the knetc command is not installed (pip install -e .)"}
            try:
                build = subprocess.run([knetc, "build", MNIST_EXAMPLE, "--", "--epochs", "1"], env=child_env(cache),
                                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            except subprocess.TimeoutExpired:
                return {"status": "timeout", "wall": time.perf_counter() - started}
            if build.returncode:
                return {"status": "error", "stderr": build.stderr[-3000:]}
            result = run_child(framework, "mnist_built", quick, timeout, cache_dir=cache)
        else:
            fill = run_child(framework, "mnist", quick, timeout, jax_cache=cache)
            if fill["status"] != "ok":
                return fill
            result = run_child(framework, "mnist_built", quick, timeout, jax_cache=cache)
        result["build_s"] = time.perf_counter() - started - result.get("wall", 0)
    return result


def versions():
    from importlib import metadata
    found = []
    for name in ("numpy", "numba", "llvmlite", "knetc", "jax", "jaxlib"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return f"python {platform.python_version()}, " + ", ".join(found)


def fmt_s(result, key="first"):
    if result is None:
        return ""
    if result["status"] != "ok":
        return result["status"]
    value = result[key]
    return f"{value * 1e3:.1f} ms" if value < 0.1 else f"{value:.2f} s"


def fastest_jax(row, key="first"):
    times = [r[key] for name, r in row.items() if name != "knetc" and r and r["status"] == "ok"]
    return min(times) if times else None


def ratio(row, key="first"):
    jax_time, knetc = fastest_jax(row, key), row.get("knetc")
    if jax_time is None or not knetc or knetc["status"] != "ok" or knetc[key] is None:
        return ""
    return f"{knetc[key] / jax_time:.1f}x"


def table_rows(results):
    """(case, knetc, JAX jit, JAX scan, ratio) for each figure of the results."""
    rows = []
    for case, row in results.items():
        spec = CASES[case]
        cell = {name: row.get(name) for name in FRAMEWORKS}

        def each(show, cells=cell):
            return tuple(show(cells[name]) for name in FRAMEWORKS)
        if spec["kind"] in ("mlp", "rnn", "lenet"):
            rows.append((spec["label"], *each(_with_count), ratio(row)))
        elif spec["kind"] == "new_batch":
            rows.append((spec["label"] + ": first call at 100", *each(fmt_s), ratio(row)))
            for i, n in enumerate(NEW_BATCHES):
                calls = {name: _call(r, i) for name, r in cell.items()}
                rows.append((f"  then batch {n}", *each(lambda r: _with_count(r, "time", "compilations_moved", "+"),
                                                        calls), ratio(calls, "time")))
            rows.append(("  then batch 100 again", *each(lambda r: fmt_s(r, "again_at_100")),
                         ratio(row, "again_at_100")))
        elif spec["kind"] == "memory":
            sizes = next((r["sizes"] for r in cell.values() if r and r["status"] == "ok"), "N")
            rows.append((spec["label"].format(n=sizes) + ": RSS growth", *each(lambda r: _mb(r, "growth_mb")),
                         _mb_ratio(cell, "growth_mb")))
            rows.append(("  growth per batch size", *each(lambda r: _mb(r, "growth_per_size_mb")),
                         _mb_ratio(cell, "growth_per_size_mb")))
            rows.append(("  time per new batch size",
                         *each(lambda r: _with_count(r, "time_per_size", "compilations_per_size", each=True)),
                         ratio(row, "time_per_size")))
    return rows


def _call(result, i):
    if not result or result["status"] != "ok":
        return result
    return dict(result["calls"][i], status="ok")


def _with_count(result, key="first", count="compilations", sign="", each=False):
    """The time, and the compilation count where it says something: a count other than 1,
    a change (sign "+"), or a mean per call (each)."""
    text = fmt_s(result, key)
    if result and result["status"] == "ok" and result.get(count, -1) >= 0:
        value = result[count]
        if each:
            text += f" ({value:g} comp. each)"
        elif sign or value != 1:
            text += f" ({sign}{value:g} comp.)"
    return text


def _mb(result, key):
    if result is None:
        return ""
    return f"{result[key]:+.1f} MB" if result["status"] == "ok" else result["status"]


def _mb_ratio(cell, key):
    knetc, jit = cell.get("knetc"), cell.get("jit")
    if not (knetc and jit and knetc["status"] == jit["status"] == "ok") or abs(jit[key]) < 1e-9:
        return ""
    return f"{knetc[key] / jit[key]:.1f}x"


def print_table(results):
    header = ("case", "knetc", "JAX jit", "JAX scan", "ratio")
    rows = [header] + table_rows(results)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for k, r in enumerate(rows):
        print("| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                                enumerate(zip(r, widths))) + " |")
        if k == 0:
            print("| " + " | ".join("-" * w for w in widths) + " |")


def print_notes(results):
    imports = {}
    for row in results.values():
        for name, r in row.items():
            if r and r["status"] == "ok":
                imports.setdefault("knetc" if name == "knetc" else "jax", []).append(r["import_s"])
    for name, values in imports.items():
        print(f"import {name} (and numpy, and the models): median {statistics.median(values):.2f} s "
              f"over {len(values)} processes")
    for case, row in results.items():
        for name, r in row.items():
            if not r:
                continue
            if r["status"] == "error":
                print(f"{case} {name}: error\n{r['stderr']}")
            elif r["status"] == "timeout":
                print(f"{case} {name}: killed after {r['wall']:.0f} s (timeout)")
            elif case == "mnist_built":
                print(f"{case} {name}: filling the cache took {r['build_s']:.1f} s in earlier processes")
            elif case == "lenet" and name == "knetc":
                print(f"lenet knetc: gradient {r['first_grad']:.2f} s + Adam updates {r['first_update']:.2f} s")
    cpu = [(case, name, r["first_cpu"]) for case, row in results.items() for name, r in row.items()
           if r and r["status"] == "ok" and "first_cpu" in r]
    if cpu:
        print("first call, CPU seconds of the process (all threads; moves less with the load): "
              + ", ".join(f"{c} {n} {s:.2f}" for c, n, s in cpu))
    seconds = [(case, name, r["second"]) for case, row in results.items() for name, r in row.items()
               if r and r["status"] == "ok" and "second" in r]
    if seconds:
        print("second call (steady state): " + ", ".join(f"{c} {n} {s * 1e3:.2f} ms" for c, n, s in seconds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer and smaller cases")
    parser.add_argument("--frameworks", default="knetc,jit,scan", help="a subset of knetc,jit,scan")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a child is killed")
    parser.add_argument("--json", action="store_true", help="also print all results as one JSON line at the end")
    parser.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--jax-cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child, quick=args.quick, jax_cache=args.jax_cache)

    cases = args.cases.split(",") if args.cases else [c for c in CASES if CASES[c]["quick"] or not args.quick]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    frameworks = args.frameworks.split(",")
    import importlib.util
    have_jax = importlib.util.find_spec("jax") is not None
    if not have_jax:
        frameworks = [f for f in frameworks if f == "knetc"]

    print(f"cold compile time, each figure a fresh process with an empty cache; {versions()}; "
          f"{os.cpu_count()} CPUs, {platform.machine()}, load average {os.getloadavg()[0]:.2f} at start"
          + ("" if have_jax else "; JAX not installed: knetc only"), flush=True)
    results = {}
    started = time.perf_counter()
    for case in cases:
        results[case] = {}
        for framework in CASES[case]["frameworks"]:
            if framework not in frameworks:
                continue
            if case == "mnist_built":
                result = run_built(framework, args.quick, args.timeout)
            else:
                result = run_child(framework, case, args.quick, args.timeout)
            results[case][framework] = result
            what = fmt_s(result, "first") if "first" in result or result["status"] != "ok" else ""
            print(f"  {case} {framework}: {what} ({result.get('wall', 0):.1f} s process)", file=sys.stderr, flush=True)
    print()
    print_table(results)
    print()
    print_notes(results)
    print(f"total {time.perf_counter() - started:.0f} s; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"at the end")
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
