"""The CPU convolutions' split of the batch across threads (kernels/conv.py, run_calls in
runtime/threads.py), against float64 references: batches smaller than the thread count,
chunks that do not divide evenly among the threads, groups, and results that do not depend
on the number of threads (the chunks, not the threads, fix the GEMMs and the order of the
filter gradient's sums)."""
import threading

import numpy as np
import pytest

from knetc.kernels import conv as kconv
from knetc.runtime import threads

from numgrad import assert_close
from test_conv import ref_conv, ref_deconv
from test_conv_speed_paths import _osize, _run, _tup, ref_conv_dw

rng = np.random.default_rng(23)


@pytest.fixture
def thread_count(monkeypatch):
    """set(n): run with n threads (a pool of its own, shut down after the test), splitting
    even the small convolutions here."""
    made = []

    def set_threads(n):
        monkeypatch.setattr(threads, "THREADS", n)
        monkeypatch.setattr(threads, "_pool", None)
        monkeypatch.setattr(kconv, "MIN_SPLIT_WORK", 0)
        made.append(threads._the_pool())
    yield set_threads
    for pool in made:
        pool.close()


def _all_three(xs, ws, kw, dtype):
    """(y, dx, dw) from the CPU routines for random x, w, dy, and the float64 references."""
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    nsp = len(xs) - 2
    p, s, d = (_tup(kw.get(k, v), nsp) for k, v in (("padding", 0), ("stride", 1), ("dilation", 1)))
    ys = (xs[0], ws[0]) + tuple(_osize(*t) for t in zip(xs[2:], ws[2:], p, s, d))
    dy = rng.standard_normal(ys)
    xt, wt, dyt = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
    got = (_run(kconv.conv4_cpu, ys, wt, xt, kw), _run(kconv.deconv4_cpu, xs, wt, dyt, kw, (xs[2:],)),
           _run(kconv.conv4_dw_cpu, ws, xt, dyt, kw, (ws[2:],)))
    full = ref_deconv(w, dy, **dict(kw, padding=0))  # over the padded input, cropped to x
    dx = np.zeros(xs)
    crop = tuple(slice(0, min(n, f - q)) for n, f, q in zip(xs[2:], full.shape[2:], p))
    dx[(slice(None), slice(None)) + crop] = full[(slice(None), slice(None)) + tuple(
        slice(q, q + c.stop) for q, c in zip(p, crop))]
    return got, (ref_conv(w, x, **kw), dx, ref_conv_dw(x, dy, ws, **kw))


CASES = [  # threads, x shape, w shape, params
    (4, (1, 3, 7, 6), (4, 3, 3, 3), dict(padding=1)),                          # 1 sample, 4 threads
    (5, (3, 4, 6, 7), (6, 2, 3, 2), dict(group=2, stride=(2, 1))),            # 3 samples, 5 threads
    (3, (7, 6, 6, 5), (6, 2, 3, 3), dict(group=3, padding=(1, 0), mode=1)),  # 7 chunks on 3 threads
    (2, (17, 4, 5, 6), (4, 1, 2, 3), dict(group=4, dilation=(2, 1), alpha=0.5)),  # depthwise, 16 chunks of 1-2
    (3, (11, 2, 3, 4, 5), (4, 2, 2, 2, 3), dict(padding=(0, 1, 1), stride=(1, 1, 2))),  # 3-D
    (2, (40, 6, 9, 9), (8, 6, 3, 3), dict(padding=1)),   # several samples per GEMM in each chunk
    (2, (50, 3, 16, 16), (2, 3, 7, 7), dict(padding=3)),  # several GEMMs per chunk (3 + 1 samples)
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,xs,ws,kw", CASES)
def test_split_batches_match_float64_references(thread_count, n, xs, ws, kw, dtype):
    thread_count(n)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-4)
    got, want = _all_three(xs, ws, kw, dtype)
    for g, r in zip(got, want):
        assert g.dtype == dtype
        assert_close(g, r, **tol)


def test_chunks_and_gemm_steps():
    cv = kconv._Conv((40, 6, 1, 9, 9), (8, 6, 1, 3, 3), (40, 8, 1, 9, 9), (1, 1), (1, 1), (1, 1), 1)
    sizes = [hi - lo for lo, hi in map(cv.chunk, range(cv.T))]
    assert cv.T == kconv.MAX_CHUNKS and sizes == [2, 3] * 8 and cv.B == 3  # a chunk: one GEMM
    cv = kconv._Conv((50, 3, 1, 16, 16), (2, 3, 1, 7, 7), (50, 2, 1, 16, 16), (3, 3), (1, 1), (1, 1), 1)
    assert cv.B == 3 and max(hi - lo for lo, hi in map(cv.chunk, range(cv.T))) == 4  # 3 + 1 samples


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_results_do_not_depend_on_the_thread_count(thread_count, dtype):
    xs, ws, kw = (23, 4, 8, 7), (6, 2, 3, 3), dict(group=2, padding=1, stride=(1, 2))
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    ys = (23, 6, 8, 4)
    dy = rng.standard_normal(ys).astype(dtype)
    results = []
    for n in (1, 2, 3, 7):
        thread_count(n)
        results.append((_run(kconv.conv4_cpu, ys, w, x, kw), _run(kconv.deconv4_cpu, xs, w, dy, kw, (xs[2:],)),
                        _run(kconv.conv4_dw_cpu, ws, x, dy, kw, (ws[2:],))))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)  # bit for bit


def test_a_strided_output_is_written():
    x, w = rng.standard_normal((5, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    big = np.full((5, 6, 4, 4), np.nan)
    kconv.conv4_cpu(w, x, big[:, ::2], (0, 0), (1, 1), (1, 1), 0, 1.0, 1)
    assert_close(big[:, ::2], ref_conv(w, x), rtol=1e-12, atol=1e-12)
    assert np.isnan(big[:, 1::2]).all()


def test_run_calls_runs_each_call_once_the_first_on_the_caller(thread_count):
    thread_count(3)
    seen, lock = [], threading.Lock()

    def record(i):
        with lock:
            seen.append((i, threading.current_thread() is threading.main_thread()))
    threads.run_calls([(record, (i,)) for i in range(5)])
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3, 4]
    assert (0, True) in seen


def test_run_calls_raises_an_error_after_all_calls_finished(thread_count):
    thread_count(2)
    done = []

    def fail():
        raise ValueError("piece failed")

    def slow():
        threading.Event().wait(0.05)
        done.append(1)
    with pytest.raises(ValueError, match="piece failed"):
        threads.run_calls([(fail, ()), (slow, ())])
    assert done == [1]


def test_run_calls_from_a_pool_thread_runs_inline(thread_count):
    thread_count(2)  # one worker: a nested run_calls that waited on the pool would never end
    out = []

    def inner(i):
        out.append((i, threading.current_thread().name))

    def outer():
        threads.run_calls([(inner, (i,)) for i in range(3)])
    threads.run_calls([(lambda: None, ()), (outer, ())])  # outer on the pool's thread
    assert [i for i, _ in out] == [0, 1, 2] and {name for _, name in out} == {"knetc-kernel-0"}
