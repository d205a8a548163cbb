"""The CPU thread pools (runtime/threads.py): BLAS's thread count per program and per eager
call, knetc's pool (rounds of calls, errors, callers that find it busy), GEMMs split across
it (kernels/matmul.py), and the cores a data-parallel rank may use."""
import os
import subprocess
import sys

import numpy as np
import pytest

from knetc.runtime import threads


def test_blas_thread_choice(monkeypatch):
    if threads.threads_for() is None:
        pytest.skip("SciPy's OpenBLAS not found")
    monkeypatch.delenv("KNETC_BLAS_THREADS", raising=False)
    large, small = threads.SPLIT_GEMMS_MIN, threads.SPLIT_GEMMS_MIN // 8
    assert threads.threads_for("split") == 1 and threads.threads_for("split", [small]) == 1
    assert threads.threads_for() == threads._default and threads.threads_for(None, [small] * 3) == threads._default
    assert threads.threads_for(None, [large, large, small]) == threads._default  # (the mean decides)
    assert threads.threads_for(None, [large * 2, small]) == 1  # large GEMMs: knetc splits them
    assert threads.threads_for("threads", [large * 2]) == threads._default  # (an RNN's GEMMs want BLAS's)


def test_blas_threads_override(monkeypatch):
    if threads.threads_for() is None:
        pytest.skip("SciPy's OpenBLAS not found")
    monkeypatch.setenv("KNETC_BLAS_THREADS", "3")
    assert threads.threads_for() == 3 and threads.threads_for("split") == 3


def test_eager_library_calls_set_blas_threads_per_op(monkeypatch):
    """An eager conv (BLAS inside its parallel loops) must not leave BLAS on one thread for
    the next eager library call, an RNN here, that runs plain GEMMs."""
    import numpy as np
    import knetc as kn
    if threads.threads_for() is None:
        pytest.skip("SciPy's OpenBLAS not found")
    monkeypatch.delenv("KNETC_BLAS_THREADS", raising=False)
    seen = []
    monkeypatch.setattr(threads, "use_threads", seen.append)
    kn.conv4(np.ones((2, 1, 3, 3)), np.ones((1, 1, 5, 5)))
    kn.RNN(3, 4)(np.ones((2, 1, 3), np.float32))
    assert seen[0] == 1 and seen[-1] == threads._default


def test_share_cores_limits_every_pool_unless_the_user_set_one():
    # (in a fresh process: the pools are process-wide)
    script = (
        "import knetc\n"
        "from knetc.runtime import threads\n"
        "threads.share_cores(1)\n"
        "print(threads.threads_for(), threads.THREADS)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "KNETC_BLAS_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    blas, rows = out.stdout.split()
    assert rows == "1" and blas in ("1", "None")  # (None: no SciPy OpenBLAS found)
    env.update(NUMBA_NUM_THREADS="2", KNETC_BLAS_THREADS="2")  # the user's choice stands
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    blas, rows = out.stdout.split()
    assert rows == "2" and blas in ("2", "None")


@pytest.mark.parametrize("threads_, blas, blocks", [(2, 1, 2), (2, 2, 1), (4, 1, 4), (4, 2, 2), (4, None, 4)])
def test_rows_take_half_the_threads_while_blas_runs_on_several(monkeypatch, threads_, blas, blocks):
    """BLAS's workers spin on their cores between GEMMs: a kernel split across all of knetc's
    threads beside them waits for cores (row_threads)."""
    import numpy as np
    monkeypatch.setattr(threads, "THREADS", threads_)
    monkeypatch.setattr(threads, "_current", blas)
    monkeypatch.setattr(threads, "_pool", None)  # a pool of THREADS - 1 threads, closed below
    seen, out = [], np.zeros(40, np.int64)

    def kernel(out, lo, hi):
        seen.append((lo, hi))
        out[lo:hi] += 1
    try:
        threads.in_parallel(kernel, 40, out)
    finally:
        if threads._pool is not None:
            threads._pool.close()
    assert len(seen) == blocks and out.tolist() == [1] * 40  # every row once


@pytest.fixture
def pool_of(monkeypatch):
    """pool_of(n): knetc's pool with n threads (the caller's and n - 1 workers), closed after."""
    made = []

    def make(n):
        monkeypatch.setattr(threads, "THREADS", n)
        monkeypatch.setattr(threads, "_pool", None)
        made.append(threads._the_pool())
    yield make
    for pool in made:
        pool.close()


def test_rounds_run_every_call_once_on_every_thread(pool_of):
    import threading
    pool_of(3)
    for calls in (2, 3, 7):  # fewer calls than threads, as many, more
        seen, lock = [], threading.Lock()

        def record(i):
            with lock:
                seen.append((i, threading.current_thread().name))
        threads.run_calls([(record, (i,)) for i in range(calls)])
        assert sorted(i for i, _ in seen) == list(range(calls))
        assert len({name for _, name in seen}) == min(calls, 3)
        assert (0, threading.current_thread().name) in seen


def test_a_worker_that_slept_takes_the_next_round(pool_of, monkeypatch):
    """Idle workers spin for SPIN_SECONDS, then sleep until the next round wakes them."""
    import time
    monkeypatch.setattr(threads, "SPIN_SECONDS", 1e-5)
    pool_of(2)
    out = np.zeros(8)
    for _ in range(3):
        time.sleep(0.05)  # (the worker is asleep by now)
        threads.in_parallel(lambda o, lo, hi: o.__setitem__(slice(lo, hi), o[lo:hi] + 1), 8, out)
    assert out.tolist() == [3] * 8


def test_callers_from_two_threads_each_get_their_rows(pool_of):
    """A user's threads may call compiled code at once: a caller that finds the pool busy
    runs its calls itself."""
    import threading
    pool_of(2)
    outs, errors = [np.zeros(2000) for _ in range(4)], []

    def add_one(o, lo, hi):
        for i in range(lo, hi):
            o[i] += 1

    def caller(o):
        try:
            for _ in range(20):
                threads.in_parallel(add_one, len(o), o)
        except BaseException as error:
            errors.append(error)
    workers = [threading.Thread(target=caller, args=(o,)) for o in outs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors and all(o.tolist() == [20] * 2000 for o in outs)


def _operands(rng, m, k, n, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return (a.T if trans_a else a), (b.T if trans_b else b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_blocks_of_rows_and_columns(dtype, trans_a, trans_b):
    """gemm_block writes its block of out and nothing else, for transposed views too (BLAS's
    leading dimensions: no copies), against a float64 product."""
    from knetc.kernels.matmul import gemm_block
    rng = np.random.default_rng(5)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for m, k, n in [(37, 19, 23), (1, 5, 7), (6, 4, 1), (1, 1, 1), (3, 0, 4)]:
        a, b = _operands(rng, m, k, n, trans_a, trans_b, dtype)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        out = np.full((m, n), np.nan, dtype)
        gemm_block(a, b, out, True, 0, m)
        np.testing.assert_allclose(out, ref, **tol)
        for by_rows, length in ((True, m), (False, n)):
            out = np.full((m, n), np.nan, dtype)
            lo, hi = length // 3, length - length // 4
            gemm_block(a, b, out, by_rows, lo, hi)
            block = (slice(lo, hi), slice(None)) if by_rows else (slice(None), slice(lo, hi))
            np.testing.assert_allclose(out[block], ref[block], **tol)
            rest = np.ones((m, n), bool)
            rest[block] = False
            assert np.isnan(out[rest]).all()


def test_matmul_of_other_views_and_its_out():
    """An operand strided on both axes is copied (BLAS reads a matrix through one leading
    dimension); an out that is not C-contiguous is refused (the drivers allocate theirs)."""
    from knetc.kernels.matmul import matmul
    a = np.arange(64, dtype=np.float32).reshape(8, 8)
    out = np.empty((4, 4), np.float32)
    matmul(a[::2, ::2], a[:4, 1:5].T, out)
    np.testing.assert_allclose(out, a[::2, ::2].astype(np.float64) @ a[:4, 1:5].T, rtol=1e-6)
    with pytest.raises(ValueError, match="C-contiguous"):
        matmul(a[:4, :4], a[:4, :4], np.empty((4, 8), np.float32)[:, ::2])


@pytest.mark.parametrize("m,k,n", [(300, 200, 150), (150, 200, 301), (2, 3000, 1500)])
def test_matmul_splits_large_gemms_across_the_pool(pool_of, monkeypatch, m, k, n):
    """While BLAS runs on one thread, a large GEMM is split by its longer side across
    knetc's threads: each block is computed by its own thread, and the whole is a @ b."""
    from knetc.kernels import matmul as kmatmul
    if threads.threads_for() is None:
        pytest.skip("SciPy's OpenBLAS not found")
    pool_of(3)
    monkeypatch.setattr(threads, "_current", None)
    threads.use_threads(1)
    blocks = []
    block = kmatmul._gemm

    def recorded(*args):
        blocks.append(args[-2:])
        block(*args)
    monkeypatch.setattr(kmatmul, "_gemm", recorded)
    assert threads.splits_gemms() and m * k * n >= kmatmul.SPLIT_MIN
    a, b = _operands(np.random.default_rng(6), m, k, n, True, False, np.float32)
    out = np.empty((m, n), np.float32)
    kmatmul.matmul(a, b, out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    longer = max(m, n)
    assert sorted(blocks) == [(longer * i // 3, longer * (i + 1) // 3) for i in range(3)]


def test_programs_with_large_gemms_split_them(monkeypatch):
    """The compiled program's BLAS thread count follows its GEMMs' sizes (threads_for), and a
    program whose GEMMs knetc splits computes what the eager function does, gradient too."""
    import knetc as kn
    if threads.threads_for() is None:
        pytest.skip("SciPy's OpenBLAS not found")
    monkeypatch.delenv("KNETC_BLAS_THREADS", raising=False)

    def loss(w, x):
        return kn.sum(kn.relu(x @ w) * x)
    f = kn.compile(loss)
    rng = np.random.default_rng(8)
    chosen = {}
    for size in (16, 512):
        x, w = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
        value, grad = float(f(w, x)), kn.grad(f)(w, x)
        spec = [s for s in f.specializations() if s.executables()][-1]
        chosen[size] = spec.executables()[-1]._runner.blas_threads
        np.testing.assert_allclose(value, float(loss(w, x)), rtol=1e-4)
        np.testing.assert_allclose(grad, kn.grad(loss)(w, x), rtol=1e-4, atol=1e-3)
    assert chosen[16] == threads._default and chosen[512] == 1
