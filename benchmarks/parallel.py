"""Data-parallel training on MPI: allreduce bandwidth and the MNIST MLP's throughput.

    python benchmarks/parallel.py [--sizes 1,10,100] [--reps 10] [--epochs 3]

Launches its own jobs with mpirun (`pip install -e .[mpi]`):

1. Allreduce, 2 ranks: for buffers of 1-100 MB (float32), the median time of knetc's path
   (`kn.parallel.allreduce_grads([g])`: MPI allreduce in place, then the division by the
   number of ranks) against raw mpi4py (`comm.Allreduce(send, recv)`, a sum, nothing
   else) in alternating rounds of the same run, as bandwidth (MB/s: buffer bytes / time)
   and the ratio (target: knetc within 10%). Also the MLP's 4 gradients (200 KB):
   knetc's one bucket against 4 raw allreduces.
2. Throughput: examples/mnist_mlp.py's compiled training step (global batch 100) on 1
   process and on 2 ranks of 50, in images per second after a warm-up epoch. Each rank
   gets 1 thread (NUMBA_NUM_THREADS=1, KNETC_BLAS_THREADS=1) and Open MPI's waiting ranks
   yield their core (OMPI_MCA_mpi_yield_when_idle=1); the single process is timed with 1
   and with 2 threads. On a 2-core machine 2 ranks are only a check of the
   overhead (the cores are the same; the MLP's step is a fraction of a millisecond), not
   of scaling.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples")


# ---------------------------------------------------------------- what the ranks run
def allreduce_job(sizes_mb, reps):
    import knetc as kn
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    results = []
    with kn.parallel.init():
        def timed(fn):
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            return comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)  # the slowest rank

        cases = [(f"{mb:g} MB", [np.full(int(mb * 2 ** 20) // 4, comm.rank + 1.0, np.float32)]) for mb in sizes_mb]
        rng = np.random.default_rng(0)
        mlp_grads = [rng.random(s, dtype=np.float32) for s in ((784, 64), (64,), (64, 10), (10,))]
        cases.append(("MLP grads (4 arrays, 200 KB)", mlp_grads))
        for name, arrays in cases:
            receive = [np.empty_like(a) for a in arrays]

            def raw():
                for a, r in zip(arrays, receive):
                    comm.Allreduce(a, r, op=MPI.SUM)

            def knetc():
                kn.parallel.allreduce_grads(arrays)

            raw(), knetc()  # warm-up: first-touch of the buffers, MPI's connections
            times = {"raw": [], "knetc": []}
            for _ in range(reps):  # alternating, so that a change of load hits both
                times["raw"].append(timed(raw))
                times["knetc"].append(timed(knetc))
            nbytes = sum(a.nbytes for a in arrays)
            results.append({"case": name, "bytes": nbytes, **{k: float(np.median(v)) for k, v in times.items()}})
    if comm.rank == 0:
        print("RESULT " + json.dumps(results), flush=True)


def throughput_job(epochs):
    sys.path.insert(0, EXAMPLES)
    import knetc as kn
    from knetc.train.data import mnist
    from mnist_mlp import DATA, loss, mlp, train  # the example's own step
    parallel = os.environ.get("BENCH_PARALLEL") == "1"
    context = kn.parallel.init() if parallel else None
    kn.seed_(1)
    xtrn, ytrn, _, _ = mnist(DATA)
    model = mlp(784, 64, 10, atype=np.float32)
    kn.parallel.broadcast_(model)
    gradloss = kn.gradloss(kn.compile(loss.fn, target="cpu"))
    rates = []
    for epoch in range(epochs + 1):  # epoch 0 compiles: not timed
        data = kn.minibatch(xtrn, ytrn, 100, shuffle=True, shard=kn.parallel.shard())
        kn.parallel.barrier()
        t0 = time.perf_counter()
        losses = list(train(model, gradloss, data, 0.2))
        seconds = time.perf_counter() - t0
        if epoch:
            rates.append(len(data) * 100 / seconds)  # global images per second
    if kn.parallel.rank() == 0:
        print("RESULT " + json.dumps({"images_per_s": float(np.median(rates)), "loss": float(np.mean(losses)),
                                      "steps_per_epoch": len(data)}), flush=True)
    if context is not None:
        kn.parallel.finish()


# ---------------------------------------------------------------- the launcher
def mpirun(n):
    launcher = shutil.which("mpirun") or shutil.which("mpiexec")
    if launcher is None:
        raise SystemExit("no mpirun: pip install -e .[mpi]")
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    command = [launcher, "-np", str(n)]
    if "Open MPI" in version:
        command.append("--oversubscribe")
        if os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command


def run(command, env_extra):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **env_extra)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,16,64,100", help="buffer sizes in MB")
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--job", help=argparse.SUPPRESS)  # what a rank runs
    args = parser.parse_args()
    if args.job == "allreduce":
        return allreduce_job([float(s) for s in args.sizes.split(",")], args.reps)
    if args.job == "throughput":
        return throughput_job(args.epochs)

    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} cores")
    # One thread per rank, and MPI's waiting ranks yield the core (busy polling costs a
    # time slice per step when the cores are shared: 2 ranks here 6,600 -> 23,700 images/s).
    one_thread = {"NUMBA_NUM_THREADS": "1", "KNETC_BLAS_THREADS": "1", "OMPI_MCA_mpi_yield_when_idle": "1"}
    rows = run(mpirun(2) + [sys.executable, HERE, "--job", "allreduce", "--sizes", args.sizes,
                            "--reps", str(args.reps)], one_thread)
    print("\nAllreduce across 2 ranks, median of %d alternating rounds (MB/s = buffer bytes / time):" % args.reps)
    print(f"{'buffer':>30}  {'raw mpi4py':>18}  {'knetc (mean)':>18}  knetc/raw time")
    for r in rows:
        mbs = {k: r["bytes"] / r[k] / 1e6 for k in ("raw", "knetc")}
        print(f"{r['case']:>30}  {r['raw'] * 1e3:8.2f} ms {mbs['raw']:6.0f}  {r['knetc'] * 1e3:8.2f} ms "
              f"{mbs['knetc']:6.0f}  {r['knetc'] / r['raw']:.2f}")

    print(f"\nMNIST MLP training throughput, global batch 100, median of {args.epochs} epochs after a warm-up:")
    job = [sys.executable, HERE, "--job", "throughput", "--epochs", str(args.epochs)]
    for label, command, env in [("1 process, 2 threads", job, {}),
                                ("1 process, 1 thread", job, one_thread),
                                ("2 ranks x 50, 1 thread each", mpirun(2) + job, dict(one_thread, BENCH_PARALLEL="1"))]:
        r = run(command, env)
        print(f"{label:>30}: {r['images_per_s']:8.0f} images/s ({r['steps_per_epoch']} steps/epoch, "
              f"last epoch's loss {r['loss']:.4f})")
    print("\n(two cores: the 2-rank figure checks the overhead of averaging, not scaling)")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
