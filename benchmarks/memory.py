"""Memory of the LeNet training step's compiled schedule, before and after plan_memory.

    python benchmarks/memory.py [--batch 100] [--mode grad|forward]

The program is the gradient of examples/lenet.py's loss (what `kn.grad(loss)` compiles,
as benchmarks/lenet.py times it: batch 100, float32), built through the compiler's stages
up to fuse (no kernels are generated or compiled). --mode forward: the forward and backward
halves that `kn.diff` (examples/lenet.py's Adam loop) compiles instead.

Reported, from knetc.ir.memory.peak_bytes (allocated buffers only: parameters, images and
labels are inputs and not counted), as the peak bytes of:
  held             no plan: nothing is freed before the step returns (every local kept)
  release          plan_memory(reuse=False): the driver drops schedule.release's names
                   after each step, every output in a fresh buffer
  release+reuse    plan_memory: the same, outputs written into dead buffers (held while
                   they wait to be taken, only where that keeps the peak)
  held+reuse       the reuse plan with nothing freed before the return
"""
import argparse
import os
import sys

import numpy as np

import knetc as kn
from knetc.compiler import differentiate, fuse, split_joint, trace_in_mode
from knetc.ir.fuse import Call, Kernel, Matmul
from knetc.ir.memory import peak_bytes, plan_memory
from knetc.ir.passes import optimize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from lenet import lenet, loss  # noqa: E402  (the example's model and loss)

BATCH = 100  # as benchmarks/lenet.py


def schedules(batch, mode):
    kn.seed_(0)
    w = [np.asarray(kn.value(p)) for p in lenet()]
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)
    program, _, _ = trace_in_mode(("grad", 0) if mode == "grad" else ("forward", None), "cpu", loss.fn, (w, x, y), {})
    parts = split_joint(optimize(differentiate(program, mode, list(range(len(w))))), mode, len(program.inputs))
    return {name: fuse(part) for name, part in parts.items()}


def mb(n):
    return f"{n / 2**20:8.2f} MiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--mode", choices=("grad", "forward"), default="grad")
    args = parser.parse_args(argv)
    print(f"LeNet loss gradient ({args.mode}), batch {args.batch}, float32")
    results = {}
    for name, schedule in schedules(args.batch, args.mode).items():
        reuse = plan_memory(schedule).reuse
        peaks = {"held": peak_bytes(schedule, release=False),
                 "release": peak_bytes(schedule),
                 "release+reuse": peak_bytes(schedule, reuse),
                 "held+reuse": peak_bytes(schedule, reuse, release=False)}
        allocated = sum(isinstance(s, (Kernel, Matmul, Call)) for s in schedule.steps)
        print(f"{name}: {schedule.summary()}; {allocated} allocations, {len(reuse)} reuse a dead buffer, "
              f"{sum(map(len, schedule.release.values()))} names released")
        for model, peak in peaks.items():
            print(f"  {model:<14} {peak:>12,d} ({mb(peak)})  {peak / peaks['held']:.3f}x held")
        results[name] = peaks
    return results


if __name__ == "__main__":
    main()
