"""kn.parallel: data-parallel training on MPI, checked with 2-rank jobs (mpirun -np 2).

This file is also the program the ranks run (`python tests/test_parallel.py MODE`): each
job prints one `RESULT {json}` line from rank 0, which the tests read. Several checks share
one launch, since starting MPI and knetc (and compiling) costs seconds per job. Without
mpi4py or an mpirun the MPI tests skip, saying so; `minibatch(shard=...)` is tested here
without MPI.
"""
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import knetc as kn

HERE = os.path.abspath(__file__)
RANKS = 2
STEPS = 20          # SGD/Adam steps compared
BATCH = 32          # one process's batch; each of the 2 ranks gets 16
TOLERANCE = {"float64": 1e-6, "float32": 1e-5}  # relative, on the final parameters


# ---------------------------------------------------------------- minibatch(shard=...), no MPI
def test_shards_of_every_batch_make_up_the_batch():
    x, y = np.arange(50), np.arange(50) * 10
    whole = list(kn.minibatch(x, y, 10, shuffle=True, rng=3))
    parts = [list(kn.minibatch(x, y, 10, shuffle=True, rng=3, shard=(r, 2))) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 5
    for k, (xb, yb) in enumerate(whole):
        assert np.array_equal(np.concatenate([parts[0][k][0], parts[1][k][0]]), xb)  # contiguous halves
        assert np.array_equal(np.concatenate([parts[0][k][1], parts[1][k][1]]), yb)


def test_shards_shuffle_alike_with_knetc_generator_and_reshuffle_each_epoch():
    x = np.arange(40)
    kn.seed_(5)
    a = kn.minibatch(x, 8, shuffle=True, shard=(0, 4))
    first = [b.copy() for b in a]
    second = [b.copy() for b in a]
    kn.seed_(5)
    whole = list(kn.minibatch(x, 8, shuffle=True))
    assert [b.tolist() for b in first] == [b[:2].tolist() for b in whole]
    assert [b.tolist() for b in first] != [b.tolist() for b in second]  # a new order per epoch


def test_sharded_partial_batch_keeps_a_multiple_of_the_ranks():
    x = np.arange(27)  # 2 full batches of 10 and 7 left: 6 kept, 3 per rank
    parts = [list(kn.minibatch(x, 10, partial=True, shard=(r, 2))) for r in range(2)]
    assert [len(p) for p in parts] == [3, 3]
    assert parts[0][2].tolist() == [20, 21, 22] and parts[1][2].tolist() == [23, 24, 25]
    assert len(kn.minibatch(x, 10, shard=(0, 2))) == 2  # without partial: dropped as before
    assert len(kn.minibatch(np.arange(21), 10, partial=True, shard=(0, 2))) == 2  # 1 left: < 2 ranks


def test_shard_is_checked():
    x = np.arange(20)
    with pytest.raises(ValueError, match="multiple of 3"):
        kn.minibatch(x, 10, shard=(0, 3))
    with pytest.raises(ValueError, match="0 <= rank < size"):
        kn.minibatch(x, 10, shard=(2, 2))
    with pytest.raises(TypeError, match=r"\(rank, size\)"):
        kn.minibatch(x, 10, shard=2)
    assert "shard=(1, 2)" in repr(kn.minibatch(x, 10, shard=(1, 2)))
    assert list(map(list, kn.minibatch(x, 10, shard=(0, 1)))) == list(map(list, kn.minibatch(x, 10)))


def test_outside_a_context_parallel_is_one_process():
    assert (kn.parallel.rank(), kn.parallel.size(), kn.parallel.shard(), kn.parallel.active()) == (0, 1, (0, 1), False)
    g = [np.ones(3)]
    assert kn.parallel.allreduce_grads(g) is g and kn.parallel.average(2.5) == 2.5


def test_import_knetc_does_not_import_mpi4py():
    code = "import sys, knetc; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------- 2-rank jobs
def _mpirun_command(n):
    """[mpirun, flags...] or a reason to skip."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None, "mpi4py is not installed (pip install -e .[mpi]): the 2-rank MPI checks did not run"
    scripts = os.path.dirname(sys.executable)  # (where pip put the Open MPI wheel's mpirun, if not on PATH)
    launcher = next(filter(None, (shutil.which(name) or shutil.which(name, path=scripts)
                                  for name in ("mpirun", "mpiexec"))), None)
    if launcher is None:
        return None, "no mpirun/mpiexec on PATH (pip install -e .[mpi] brings Open MPI): the 2-rank checks did not run"
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True, timeout=60)
    command = [launcher, "-np", str(n)]
    if "Open MPI" in version.stdout + version.stderr or "OpenRTE" in version.stdout + version.stderr:
        command.append("--oversubscribe")  # more ranks than cores is fine for a test
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command, None


def run_ranks(mode, n=RANKS, timeout=240, program=None):
    """Run `python tests/test_parallel.py MODE` (or `python program...`) on n ranks:
    (returncode, output, seconds)."""
    command, reason = _mpirun_command(n)
    if command is None:
        pytest.skip(reason)
    # One thread per rank, and waiting ranks yield the core: ranks sharing the cores
    # otherwise fight over them (kn.parallel.init splits the cores where these are unset).
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONUNBUFFERED="1", NUMBA_NUM_THREADS="1", KNETC_BLAS_THREADS="1",
               OMPI_MCA_mpi_yield_when_idle="1")
    started = time.monotonic()
    try:
        proc = subprocess.run(command + [sys.executable] + (program or [HERE, mode]), capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the {n}-rank job '{mode}' did not end within {timeout} s (a hang):\n{e.stdout}\n{e.stderr}")
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def _result(output):
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in the job's output:\n{output}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    """The equivalence job's results, run once per session: under pytest-xdist the
    workers share them through a file (the job takes 2 cores for half a minute)."""
    folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = folder.parent  # this session's folder, shared by its workers
    shared = folder / "knetc-parallel-equivalence.json"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not shared.exists():
            code, output, _ = run_ranks("equivalence")
            assert code == 0, output
            shared.write_text(json.dumps(_result(output)))
    return json.loads(shared.read_text())


@pytest.mark.parametrize("path", ["eager", "compiled"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_two_ranks_with_half_batches_end_where_one_process_does(equivalence, path, optimizer, dtype):
    case = equivalence["training"][f"{optimizer} {path} {dtype}"]
    assert case["steps"] == STEPS
    assert case["parameters"] <= TOLERANCE[dtype], case     # relative difference, worst parameter
    assert case["losses"] <= TOLERANCE[dtype] * 10, case    # the yielded losses are the mean over the ranks
    assert case["moved"] > 1e-3, case                       # training did change the parameters
    assert case["ranks_agree"] == 0.0, case                 # both ranks hold the same parameters


def test_broadcast_sends_rank0s_parameters_and_optimizer_state(equivalence):
    assert equivalence["broadcast"] == {"values": True, "adam_t": 7, "adam_state": True, "sgd_lr": 0.25}


def test_broadcast_of_models_that_differ_raises_on_every_rank(equivalence):
    rank0, rank1 = equivalence["mismatch"]
    assert "differ between ranks" in rank0 and "differ between ranks" in rank1
    assert "((4,), 'float64') here, ((3,), 'float64') there" in rank1


def test_allreduce_grads_averages_any_structure_in_buckets(equivalence):
    assert equivalence["allreduce"] == {"mean": True, "structure": True, "none_kept": True}


def test_device_arrays_are_averaged_and_broadcast(equivalence):
    # Under the CUDA simulator (no GPU here): the host path MPI takes when NCCL cannot run.
    assert equivalence["device"] == {"mean": [1.5, 1.5, 1.5], "type": "KnetArray", "ranks_agree": True, "adam_t": 1}


@pytest.mark.parametrize("where", ["with", "top"])
def test_a_rank_that_raises_stops_every_rank(where):
    # Rank 1 raises at its third step while rank 0 waits in an allreduce: MPI_Abort must
    # end both, with the error shown, well before the timeout.
    code, output, seconds = run_ranks(f"fault-{where}", timeout=120)
    assert code != 0, output
    assert "rank 1 fails on purpose" in output, output
    assert "aborting all ranks" in output, output
    assert seconds < 100, f"took {seconds:.0f} s"


def test_the_mnist_example_trains_on_two_ranks():
    example = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "mnist_mlp.py")
    code, output, _ = run_ranks("example", program=[example, "--parallel", "--epochs", "1", "--no-progress"])
    assert code == 0, output
    assert output.count("knetc ") == 1 and "batch 100, 2 ranks of 50" in output, output  # rank 0 alone prints
    accuracy = float(output.split("test accuracy")[1].split()[0])
    assert accuracy >= 0.85, output


# ---------------------------------------------------------------- what the ranks run
@kn.compile
def mlp_loss(model, x, y):
    for w, b in model[:-1]:
        x = kn.tanh(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, y)


def _model(seed, dtype):
    kn.seed_(seed)
    return [(kn.param(12, 16, atype=dtype), kn.param(16, atype=dtype)),
            (kn.param(16, 5, atype=dtype), kn.param0(5, atype=dtype))]


def _data(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * STEPS // 2, 12)).astype(dtype)
    y = rng.integers(0, 5, BATCH * STEPS // 2)
    return x, y


def _train(optimizer, path, dtype, shard):
    """20 steps (2 epochs, reshuffled) from rank 0's initial model; (model, losses)."""
    x, y = _data(dtype)
    model = _model(1 if shard[0] == 0 else 100 + shard[0], dtype)  # other ranks start elsewhere
    data = kn.minibatch(x, y, BATCH, shuffle=True, rng=np.random.default_rng(42), shard=shard)
    steps = itertools.chain.from_iterable(itertools.repeat(data, 2))
    loss = mlp_loss if path == "compiled" else mlp_loss.fn
    f = lambda x, y: loss(model, x, y)  # noqa: E731  (Knet's style: the model is closed over)
    train = kn.sgd(f, steps, lr=0.1) if optimizer == "sgd" else kn.adam(f, steps, lr=0.01)
    return model, [float(loss) for loss in train]


def _leaves(model):
    return [np.array(p.value, dtype=np.float64) for layer in model for p in layer]


def _relative(a, b):
    return max(float(np.linalg.norm(u - v) / max(np.linalg.norm(v), 1e-30)) for u, v in zip(a, b))


def _equivalence_job():
    from mpi4py import MPI
    comm, results = MPI.COMM_WORLD, {"training": {}}
    for optimizer, path, dtype in itertools.product(["sgd", "adam"], ["eager", "compiled"], ["float64", "float32"]):
        dt = np.dtype(dtype).type
        reference, ref_losses = _train(optimizer, path, dt, (0, 1))  # one process, batch 32, no context
        start = _leaves(_model(1, dt))
        with kn.parallel.init():
            model, losses = _train(optimizer, path, dt, kn.parallel.shard())  # 16 each, averaged
        mine = _leaves(model)
        other = comm.bcast(mine, root=1)
        results["training"][f"{optimizer} {path} {dtype}"] = {
            "steps": len(losses), "parameters": _relative(mine, _leaves(reference)),
            "losses": max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses)),
            "moved": max(float(np.abs(u - v).max()) for u, v in zip(mine, start)),
            "ranks_agree": _relative(mine, other)}

    with kn.parallel.init() as context:
        r = context.rank
        # broadcast_: rank 0's values and its Adam state (t, moments) reach every rank.
        w = kn.Param(np.full((3, 2), float(r)), kn.Adam(t=7 if r == 0 else 0))
        if r == 0:
            w.opt.fstm, w.opt.scndm = np.ones((3, 2)), np.full((3, 2), 2.0)
        v = kn.Param(np.full(4, float(r), np.float32), kn.SGD(lr=0.25 if r == 0 else 1.0))
        kn.parallel.broadcast_([w, {"v": v}])
        got = comm.gather((w.value.tolist(), w.opt.t, np.asarray(w.opt.fstm).tolist(),
                           np.asarray(w.opt.scndm).tolist(), v.opt.lr), root=0)
        if r == 0:
            results["broadcast"] = {
                "values": all(g[0] == np.zeros((3, 2)).tolist() for g in got), "adam_t": got[1][1],
                "adam_state": all(g[2] == np.ones((3, 2)).tolist() and g[3] == np.full((3, 2), 2.0).tolist()
                                  for g in got),
                "sgd_lr": got[1][4]}
        # Models that differ: every rank raises (none waits in a broadcast), and goes on.
        try:
            kn.parallel.broadcast_([np.zeros(3 + r)])
            raised = ""
        except ValueError as e:
            raised = str(e)
        kn.parallel.broadcast_([np.zeros(3)])
        raised = comm.gather(raised, root=0)
        if r == 0:
            results["mismatch"] = raised
    # allreduce_grads by hand, with tiny buckets (several per dtype) and a None.
    with kn.parallel.init(bucket_mb=1e-4) as context:
        r = context.rank
        grads = [(np.full((20, 3), r + 1.0), None), {"b": np.arange(5, dtype=np.float32) * (r + 1)},
                 np.float64(r)]
        mean = kn.parallel.allreduce_grads(grads)
        # Device arrays (KnetArrays; under the CUDA simulator here, so through the host).
        device = kn.parallel.allreduce_grads([kn.KnetArray(np.full(3, r + 1.0, np.float32))])[0]
        p = kn.Param(kn.KnetArray(np.full(2, float(r))), kn.Adam())
        if r == 0:
            kn.update_(p, kn.KnetArray(np.ones(2)))
        kn.parallel.broadcast_(p)
        sent = comm.gather((np.asarray(p.value).tolist(), p.opt.t, np.asarray(p.opt.fstm.copy_to_host()).tolist()))
        if r == 0:
            results["device"] = {"mean": np.asarray(device).tolist(), "type": type(device).__name__,
                                 "ranks_agree": sent[0] == sent[1], "adam_t": sent[1][1]}
        if r == 0:
            results["allreduce"] = {
                "mean": bool(np.allclose(mean[0][0], 1.5) and np.allclose(mean[1]["b"], np.arange(5) * 1.5)
                             and np.isclose(mean[2], 0.5)),
                "structure": isinstance(mean[0], tuple) and isinstance(mean[1], dict)
                and mean[1]["b"].dtype == np.float32,
                "none_kept": mean[0][1] is None}
    if comm.rank == 0:
        print("RESULT " + json.dumps(results), flush=True)


def _fault_job(where):
    x, y = _data(np.float64)
    context = kn.parallel.init()
    model = _model(1, np.float64)

    def steps():
        for k, batch in enumerate(kn.minibatch(x, y, BATCH, shard=kn.parallel.shard())):
            if k == 2 and kn.parallel.rank() == 1:
                raise RuntimeError("rank 1 fails on purpose")
            yield batch

    if where == "with":
        with context:
            kn.sgd_(lambda x, y: mlp_loss.fn(model, x, y), steps())
    else:  # no with block: the exception reaches the top, where kn.parallel's excepthook aborts
        kn.sgd_(lambda x, y: mlp_loss.fn(model, x, y), steps())


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "equivalence":
        _equivalence_job()
    elif mode.startswith("fault-"):
        _fault_job(mode[len("fault-"):])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
