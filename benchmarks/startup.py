"""Time to the first training step of examples/mnist_mlp.py: cold versus built ahead of time.

    python benchmarks/startup.py [--repeats 3]

Each figure is a fresh process that imports knetc and the example, loads the digits and
runs one compiled training step (`kn.gradloss(loss)` on a batch of 100). "cold": an empty
KNETC_CACHE_DIR (trace, differentiate, generate, Numba-compile); "built": a cache filled
by `knetc build examples/mnist_mlp.py -- --epochs 1` beforehand (trace, differentiate,
generate, load the compiled code). Reported: the median over the repeats of the time from
the process's first line to the end of the first step, the process's whole wall time, and
the number of Numba compilations the process did (`kn.stats()`).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "mnist_mlp.py")


def child():
    started = time.perf_counter()
    import runpy
    import knetc as kn
    example = runpy.run_path(EXAMPLE, run_name="mnist_mlp")  # defines loss, predict; main() does not run
    from knetc.train.data import mnist
    xtrn, ytrn, _, _ = mnist()
    kn.seed_(1)
    model = example["mlp"](784, 64, 10)
    kn.gradloss(example["loss"])(model, xtrn[:100], ytrn[:100])
    print(json.dumps({"first_step": time.perf_counter() - started, "compilations": kn.stats()["compilations"]}))


def measure(cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("KNETC_LOG", "NUMBA_ENABLE_CUDASIM")}
    env["KNETC_CACHE_DIR"] = cache_dir
    started = time.perf_counter()
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], env=env, capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - started
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    cold, built = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as empty:
            cold.append(measure(empty))
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, KNETC_CACHE_DIR=cache)
            env.pop("NUMBA_ENABLE_CUDASIM", None)
            knetc = shutil.which("knetc") or sys.exit("the knetc command is not installed (pip install -e .)")
            subprocess.run([knetc, "build", EXAMPLE, "--", "--epochs", "1"], env=env, check=True,
                           capture_output=True, cwd=ROOT)
            built.append(measure(cache))
    print(f"time to the first training step of examples/mnist_mlp.py, median of {args.repeats} fresh processes")
    print(f"{'':8} {'first step':>10} {'process':>9} {'compilations':>13}")
    for name, runs in (("cold", cold), ("built", built)):
        first = statistics.median(r["first_step"] for r in runs)
        wall = statistics.median(r["wall"] for r in runs)
        print(f"{name:8} {first:9.2f}s {wall:8.2f}s {max(r['compilations'] for r in runs):13d}")
    ratio = statistics.median(r["first_step"] for r in cold) / statistics.median(r["first_step"] for r in built)
    print(f"built is {ratio:.1f}x faster to the first step")


if __name__ == "__main__":
    main()
