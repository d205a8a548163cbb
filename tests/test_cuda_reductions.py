"""CUDA reductions by blocks of threads (backend/cuda.py ReductionBody): row reductions with
a group of threads per output and a tree in shared memory, full reductions in two passes
(partial results per block, then one block), under the simulator against float64 numpy.

The simulator runs every GPU thread as a Python thread and a barrier costs milliseconds,
so this module launches blocks of 32 threads with at most 4 partial blocks (the launch
choices are the driver's: the kernel text is the same as with the defaults), which makes
small sizes take the multi-block, several-outputs-per-block and non-power-of-two paths.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import knetc as kn
from knetc.backend import cuda as cuda_backend
from knetc.backend.cuda import full_launch, pow2, row_launch

from ptx import assert_modules_compile_to_ptx, kernel_modules


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(cuda_backend, "THREADS", 32)
    monkeypatch.setattr(cuda_backend, "PARTIALS", 4)
    monkeypatch.setattr(cuda_backend, "PER_THREAD", 4)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the simulator's barriers wait on Python threads
    yield
    sys.setswitchinterval(interval)


def _sum(x, dims):
    return kn.sum(x) if dims is None else kn.sum(x, dims=dims)


def _max(x, dims):
    return kn.maximum(x) if dims is None else kn.maximum(x, dims=dims)


def _min(x, dims):
    return kn.minimum(x) if dims is None else kn.minimum(x, dims=dims)


def _prod(x, dims):
    return kn.prod(x) if dims is None else kn.prod(x, dims=dims)


def _mean(x, dims):
    return kn.mean(x) if dims is None else kn.mean(x, dims=dims)


OPS = {"sum": (_sum, np.sum), "max": (_max, np.max), "min": (_min, np.min), "prod": (_prod, np.prod),
       "mean": (_mean, np.mean)}
COMPILED = {name: kn.compile(f, target="cuda") for name, (f, _) in OPS.items()}

# (shape, dims): all entries (one and two axes, several blocks), the last axis (one
# group of 32 threads per row, non-power-of-two length), the first axis (adjacent threads
# on adjacent columns, 16 outputs per block), the middle axis of a 3-d array, two axes.
CASES = [((3001,), None), ((61, 53), None), ((13, 300), 1), ((300, 13), 0), ((5, 70, 3), 1), ((5, 21, 3), (0, 2))]
DTYPES = [np.float32, np.float64, np.int64]


def _data(shape, dtype, op, seed=0):
    r = np.random.default_rng(seed)
    if op == "prod":  # near 1, so that products stay finite (integers: a few -1s and 2s among 1s)
        if dtype == np.int64:
            return r.choice(np.array([1, -1, 2]), p=[0.985, 0.01, 0.005], size=shape).astype(dtype)
        return (1 + 0.002 * r.standard_normal(shape)).astype(dtype)
    if dtype == np.int64:
        return r.integers(-10 ** 12, 10 ** 12, size=shape)
    return (10 * r.standard_normal(shape)).astype(dtype)


def _expected(op, x, dims):
    axis = dims if dims is None or isinstance(dims, int) else tuple(dims)
    if np.issubdtype(x.dtype, np.integer) and op != "mean":
        return OPS[op][1](x, axis=axis, keepdims=dims is not None)  # exact integer arithmetic
    return OPS[op][1](x.astype(np.float64), axis=axis, keepdims=dims is not None)


def _check(actual, expected, dtype):
    actual = np.asarray(actual)
    assert actual.shape == np.shape(expected)
    if np.issubdtype(actual.dtype, np.integer):
        np.testing.assert_array_equal(actual, expected)
    else:
        rtol = 2e-5 if dtype == np.float32 else 1e-12
        scale = max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,dims", CASES, ids=[f"{s}-{d}" for s, d in CASES])
@pytest.mark.parametrize("op", list(OPS))
def test_reduction_matches_numpy(op, shape, dims, dtype):
    x = _data(shape, dtype, op)
    y = COMPILED[op](x, dims)
    expected = _expected(op, x, dims)
    assert np.asarray(y).dtype == OPS[op][0](x, dims).dtype  # as the eager path: int sums stay int64
    _check(y, expected, dtype)


def test_a_large_full_sum_takes_several_blocks():
    x = np.random.default_rng(3).standard_normal(70_001).astype(np.float32)
    _check(COMPILED["sum"](x, None), np.sum(x.astype(np.float64)), np.float32)
    driver = _driver_of(COMPILED["sum"], x, None)
    assert "k_reduce_sum[4, 32](v0, v1, 70001, part1, 0)" in driver
    assert "k_reduce_sum[1, 4](v0, v1, 70001, part1, 1)" in driver


def test_integer_and_bool_sums_are_exact_int64():
    x = np.full((3, 4001), 2 ** 40 + 1, np.int64)
    y = COMPILED["sum"](x, None)
    assert np.asarray(y).dtype == np.int64 and int(y) == 12003 * (2 ** 40 + 1)  # float64 would round it
    b = np.random.default_rng(1).random((40, 33)) > 0.5
    counts = COMPILED["sum"](b, 1)
    assert np.asarray(counts).dtype == np.int64
    np.testing.assert_array_equal(counts, b.sum(axis=1, keepdims=True))


@kn.compile(target="cuda")
def nan_extremes(x):
    return kn.maximum(x, dims=1), kn.minimum(x, dims=0), kn.maximum(x)


def test_nan_propagates_through_max_and_min():
    x = np.random.default_rng(2).standard_normal((9, 200))
    x[4, 177] = np.nan  # the last entries: another thread, and (full) another block, than the first
    x[7, 3] = np.nan
    rows, columns, total = nan_extremes(x)
    np.testing.assert_array_equal(np.isnan(rows[:, 0]), [i in (4, 7) for i in range(9)])
    np.testing.assert_array_equal(np.isnan(columns[0]), [j in (3, 177) for j in range(200)])
    assert np.isnan(total)
    clean = ~np.isnan(rows[:, 0])
    np.testing.assert_array_equal(rows[clean], np.max(x, axis=1, keepdims=True)[clean])


def test_empty_reductions_give_the_identity():
    assert float(COMPILED["sum"](np.zeros(0), None)) == 0.0
    np.testing.assert_array_equal(COMPILED["prod"](np.zeros((3, 0)), 1), np.ones((3, 1)))


# ----------------------------------------------------------------------------- fusion

@kn.compile(target="cuda")
def sum_of_squares(x):
    return kn.sum(x * x)


@kn.compile(target="cuda")
def shifted_exp(x):
    return kn.exp(x - kn.maximum(x, dims=1))


@kn.compile(target="cuda")
def row_softmax(x):
    e = kn.exp(x - kn.maximum(x, dims=1))
    return e / kn.sum(e, dims=1)


@kn.compile(target="cuda")
def epilogues(x, y):
    # two reductions of different lengths in one kernel's epilogue, and a full one with three
    rows = kn.sum(x * 2, dims=1) + kn.maximum(y, dims=1) * 0.5     # (n, 1)
    return kn.sum(rows * rows) + kn.maximum(x) - kn.mean(y * y)


def test_fused_prologues_and_epilogues():
    r = np.random.default_rng(4)
    x, y = r.standard_normal((13, 150)), r.standard_normal((13, 77))
    _check(sum_of_squares(x), np.sum(x * x), np.float64)
    _check(shifted_exp(x), np.exp(x - x.max(axis=1, keepdims=True)), np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    _check(row_softmax(x), e / e.sum(axis=1, keepdims=True), np.float64)
    rows = (x * 2).sum(axis=1, keepdims=True) + y.max(axis=1, keepdims=True) * 0.5
    _check(epilogues(x, y), np.sum(rows * rows) + x.max() - np.mean(y * y), np.float64)
    kernels = _kernel_texts(sum_of_squares, x)
    assert any("t3 = t2 * t2" in text and "tree" not in text.split("def ")[0] for text in kernels)
    texts = _kernel_texts(epilogues, x, y)
    (text,) = [t for t in texts if "(r a power of two" in t]
    assert "reduce_max" in text and "sh2" in text  # one kernel: both row reductions, then the epilogue
    assert len(texts) == 2  # and one for the three full reductions, read as numbers


@kn.compile(target="cuda")
def reduction_loss(x, w):
    h = kn.tanh(x * w)
    return kn.sum(kn.maximum(h, dims=1)) + kn.mean(kn.sum(h * h, dims=0)) + kn.sum(kn.logsumexp(h, dims=1))


def test_gradients_through_reductions_match_numpy():
    r = np.random.default_rng(5)
    x, w = r.standard_normal((11, 90)), r.standard_normal(90)
    grads = kn.grad(reduction_loss)(x, w)
    h = np.tanh(x * w)
    # d/dh of each term, then through tanh
    dh = np.zeros_like(h)
    dh[np.arange(11), h.argmax(axis=1)] += 1
    dh += 2 * h / h.shape[1]
    s = np.exp(h - h.max(axis=1, keepdims=True))
    dh += s / s.sum(axis=1, keepdims=True)
    dz = dh * (1 - h * h)
    _check(grads, (dz * w).astype(np.float64), np.float64)
    _check(kn.grad(reduction_loss, argnum=1)(x, w), (dz * x).sum(axis=0), np.float64)
    cpu = kn.compile(reduction_loss.fn, target="cpu")
    _check(reduction_loss(x, w), cpu(x, w), np.float64)


# ----------------------------------------------------------------------------- launches and text

def test_launch_choices():
    assert [pow2(n) for n in (0, 1, 2, 3, 300, 256)] == [1, 1, 2, 4, 512, 256]
    assert row_launch(1000, 300, True) == (1000, 32, 32)        # a group of 32 per row (THREADS = 32 here)
    assert row_launch(1000, 6, True) == (250, 32, 8)            # 4 rows per block
    assert row_launch(300, 1000, False) == (10, 32, 1)          # columns: a warp on 32 adjacent columns
    assert row_launch(4, 1000, False) == (1, 32, 8)             # few columns: more threads each
    assert full_launch(70_001) == ((4, 32), 4)
    assert full_launch(100) == ((1, 32), None) and full_launch(0) == ((1, 1), None)


def test_defaults_for_a_gpu(monkeypatch):
    monkeypatch.setattr(cuda_backend, "THREADS", 256)
    monkeypatch.setattr(cuda_backend, "PARTIALS", 1024)
    monkeypatch.setattr(cuda_backend, "PER_THREAD", 16)
    assert full_launch(10 ** 7) == ((1024, 256), 256)
    assert full_launch(3000) == ((1, 256), None)
    assert row_launch(4096, 32000, True) == (4096, 256, 256)
    assert row_launch(4096, 10, True) == (256, 256, 16)
    assert row_launch(32000, 4096, False) == (1000, 256, 8)


def test_inspect_shows_the_block_structure():
    x = np.ones((13, 300), np.float32)
    text = kn.inspect(row_softmax, x, stage="kernels,driver", target="cuda", mode="call")
    assert "# Rows: a group of r threads per row" in text and "then strides along the row" in text
    assert "cuda.shared.array(256, float32)" in text and "cuda.syncthreads()" in text
    assert "# 13 rows of 300: 1 per block, 32 threads each, sharing the row's reductions" in text
    text = kn.inspect(epilogues, x, x, stage="kernels,driver", target="cuda", mode="call")
    assert "# Row reduction: a group of r threads per output element" in text
    assert "then a tree reduction in shared memory" in text
    assert "# 13 outputs of 300 entries: 1 per block, 32 threads each, tree reduction in shared memory" in text
    total = kn.inspect(sum_of_squares, np.ones(70_001), stage="kernels,driver", target="cuda", mode="call")
    assert "# Full reduction, two passes" in total
    assert "4 blocks of 32 threads write partial results" in total


def _driver_of(f, *args):
    return kn.inspect(f, *args, stage="driver", target="cuda", mode="call")


def _kernel_texts(f, *args):
    text = kn.inspect(f, *args, stage="kernels", target="cuda", mode="call")
    return text.split("# knetc kernel (cuda):")[1:]


# ----------------------------------------------------------------------------- PTX

_RESOURCES = r"""
import importlib.util, json, sys
from numba import cuda
from knetc.inspection import ptxas_resources
out = {}
for n, (path, kernels) in enumerate(json.loads(sys.argv[1])):
    spec = importlib.util.spec_from_file_location("ptx_resources_%d" % n, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, signature in kernels.items():
        fn = getattr(module, name)
        ptx, _ = cuda.compile_ptx(getattr(fn, "py_func", fn), signature, cc=(9, 0))
        r = ptxas_resources(ptx)
        r.pop("log")
        r["shared"] = "_cudapy_smem" in ptx and "st.shared" in ptx and "bar.sync" in ptx
        out[name + " " + path] = r
print(json.dumps(out))
"""


def test_every_reduction_kernel_compiles_to_ptx_without_spills():
    for op in OPS:
        for dtype in DTYPES:
            for shape, dims in CASES[:4]:
                COMPILED[op](_data(shape, dtype, op)[(slice(0, 3),) * len(shape)], dims)  # the same kernels, small
    functions = list(COMPILED.values()) + [sum_of_squares, shifted_exp, row_softmax, epilogues, reduction_loss,
                                           nan_extremes]
    for f, args in [(sum_of_squares, (np.ones(5),)), (shifted_exp, (np.ones((2, 3)),)),
                    (row_softmax, (np.ones((2, 3)),)), (epilogues, (np.ones((2, 3)), np.ones((2, 4)))),
                    (nan_extremes, (np.ones((2, 3)),))]:
        f(*args)
    kn.grad(reduction_loss)(np.ones((2, 3)), np.ones(3))
    modules = {m.__knetc_path__: m for f in functions for m in kernel_modules(f.generated_modules())}
    reduction_modules = [m for m in modules.values() if "cuda.syncthreads()" in open(m.__knetc_path__).read()]
    assert len(reduction_modules) >= 20
    assert_modules_compile_to_ptx(list(modules.values()))
    try:
        import cuda.bindings.nvjitlink  # noqa: F401  (ptxas through nvJitLink, no GPU)
    except ImportError:
        pytest.skip("no nvJitLink: the register and spill report is not available")
    jobs = [(m.__knetc_path__, m.PTX_SIGNATURES) for m in reduction_modules]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", _RESOURCES, json.dumps(jobs)], capture_output=True, text=True,
                          env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == len(jobs)
    for kernel, r in report.items():
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0 and r["stack"] == 0, (kernel, r)
        assert r["registers"] > 0 and r["shared"], (kernel, r)  # (static shared memory: not in ptxas's smem)
