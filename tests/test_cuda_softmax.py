"""softmax, logsoftmax and logsumexp over rows on CUDA (issue 16): one kernel each, whose
threads compute a row's max and sum of exp(x - max) in one pass (online: backend/cuda.py
ReductionBody, a tree of (max, sum) pairs), so the row is read twice: once for the pair,
once to store. Under the simulator against float64 numpy, the CPU target and eager
kn.softmax, with special values (-inf, NaN, +inf, 1e4), gradients, and PTX for sm_90.

Blocks of 32 threads (as tests/test_cuda_reductions.py): short rows then take the
several-rows-per-block path, long ones the rows-longer-than-the-group path.
"""
import re
import sys

import numpy as np
import pytest

import knetc as kn
from knetc.backend import cuda as cuda_backend

from ptx import assert_modules_compile_to_ptx, kernel_modules


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(cuda_backend, "THREADS", 32)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the simulator's barriers wait on Python threads
    yield
    sys.setswitchinterval(interval)


def softmax(x):
    return kn.softmax(x, dims=-1)


def logsoftmax(x):
    return kn.logsoftmax(x, dims=-1)


def logsumexp(x):
    return kn.logsumexp(x, dims=-1)


def scaled_softmax(x, b):
    return kn.softmax(x * 0.5 + b, dims=-1)  # its elementwise producers fused in


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _logsumexp(x):
    m = x.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _logsoftmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)  # (exact near the max: x - logsumexp(x) is not at 1e4)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


REFERENCES = {"softmax": _softmax, "logsoftmax": _logsoftmax, "logsumexp": _logsumexp}
FUNCTIONS = {f.__name__: f for f in (softmax, logsoftmax, logsumexp)}
CUDA = {name: kn.compile(f, target="cuda") for name, f in FUNCTIONS.items()}
CPU = {name: kn.compile(f, target="cpu") for name, f in FUNCTIONS.items()}
RNG = np.random.default_rng(16)


def _kernels(compiled):
    return compiled.specializations()[-1].executables()[0].schedule.kernels()


def _texts(compiled):
    return [open(m.__knetc_path__).read() for m in kernel_modules(compiled.generated_modules())]


# (7, 1): rows of one entry; (9, 5): several rows per block, the last block part empty;
# (3, 70): rows longer than the group of 32; (2, 3, 37): rows of a 3-d array, odd length.
@pytest.mark.parametrize("shape", [(7, 1), (9, 5), (3, 70), (2, 3, 37)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_matches_float64_numpy_in_one_kernel(name, shape, dtype):
    x = (RNG.standard_normal(shape) * 4).astype(dtype)
    got = np.asarray(CUDA[name](x))
    want = REFERENCES[name](x.astype(np.float64))
    tight = dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12 if tight else 3e-6, atol=1e-14 if tight else 1e-6)
    assert got.dtype == dtype
    (kernel,) = _kernels(CUDA[name])  # the max, the sum and the result: one kernel
    assert kernel.per_row == (name != "logsumexp" and shape[-1] > 1)


def test_softmax_is_one_kernel_on_cuda_and_still_two_on_the_cpu():
    x = RNG.standard_normal((4, 6))
    CPU["softmax"](x), CUDA["softmax"](x)
    assert len(_kernels(CPU["softmax"])) == 2
    assert [k.per_row for k in _kernels(CUDA["softmax"])] == [True]  # (the CPU's one exp per entry: test_row_fusion)


def test_the_row_is_read_twice_online_pair_then_store():
    """One strided loop over the row for the (max, sum) pair, then the tree of pairs, then one
    loop along the row storing: the input is loaded in exactly two places."""
    f = kn.compile(softmax, target="cuda")
    f(np.ones((3, 5), np.float32))
    (text,) = _texts(f)
    body = text.split("def ")[1]
    assert len(re.findall(r"\bfor \w+ in range\(", body)) == 2
    assert len(re.findall(r"x0\[", body)) == 2
    assert "Online max and sum" in body and body.count("cuda.shared.array") == 2
    assert len(re.findall(r"math\.exp\(\w+ - \w+\)", body)) == 4  # rescale / add: per entry, and in the tree
    loop, tree = body.split("for j")[1].split("cuda.shared.array")[0], body.split("while s > 0:")[1]
    assert "if t" in loop and "> t" in loop and "elif" in loop and "elif" in tree.split("cuda.syncthreads()")[0]


SPECIAL = np.array([[1., 2., 3., 4., 5.],
                    [-np.inf, 0., 1., -np.inf, 2.],      # some -inf: probability 0
                    [-np.inf] * 5,                       # all -inf: NaN (softmax), -inf (logsumexp)
                    [np.inf, 0., 1., 2., 3.],            # +inf
                    [np.inf, np.inf, 0., -np.inf, 1.],
                    [np.nan, 0., 1., 2., 3.],            # NaN: the row is NaN
                    [-np.inf, np.nan, 1., np.inf, 0.],
                    [1e4, 1e4 - 1, 0., -1e4, 1e4 - 3]])  # large: no overflow


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("length", [5, 45])  # (45: each thread of the group takes one or two entries)
def test_special_values_as_the_cpu_target(name, dtype, length):
    x = np.tile(SPECIAL, (1, length // 5)).astype(dtype)
    x[:, 5:] = np.where(np.isnan(x[:, 5:]), 0, x[:, 5:])  # (one NaN per row at most, at the front)
    x = np.concatenate([x, np.roll(x, 3, axis=1)])  # the special entries at other lanes too
    with np.errstate(all="ignore"):
        got, want = np.asarray(CUDA[name](x)), np.asarray(CPU[name](x))
        reference = REFERENCES[name](x.astype(np.float64))
    # (the online pair on CUDA; the CPU's loop nests take log-softmax in one kernel too)
    assert len(_kernels(CUDA[name])) == 1 and len(_kernels(CPU[name])) == {"softmax": 2, "logsoftmax": 1}.get(name, 2)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=3e-6 if dtype == np.float32 else 1e-12, atol=1e-30)
    finite_max = np.isfinite(x).all(axis=-1) | (np.isneginf(x) & ~np.isneginf(x).all(axis=-1, keepdims=True)).any(axis=-1)
    finite_max &= ~np.isnan(x).any(axis=-1) & ~np.isposinf(x).any(axis=-1)
    np.testing.assert_allclose(got[finite_max], reference[finite_max], rtol=3e-6 if dtype == np.float32 else 1e-12,
                               atol=1e-30)
    if name == "softmax":  # eager kn.softmax too, where it agrees with the compiled form (no +inf)
        eager = np.asarray(kn.softmax(x, dims=-1))
        rows = ~np.isposinf(x).any(axis=-1)
        np.testing.assert_array_equal(np.isnan(got[rows]), np.isnan(eager[rows]))
        np.testing.assert_allclose(got[rows], eager[rows], rtol=3e-6 if dtype == np.float32 else 1e-12, atol=1e-30)


def test_fused_producers_stay_in_the_one_kernel():
    f = kn.compile(scaled_softmax, target="cuda")
    x, b = RNG.standard_normal((6, 40)), RNG.standard_normal(40)
    np.testing.assert_allclose(np.asarray(f(x, b)), _softmax(x * 0.5 + b), rtol=1e-12, atol=1e-14)
    (kernel,) = _kernels(f)
    assert "Online max and sum" in "".join(_texts(f))


LOSSES = {"softmax": lambda x, w: kn.sum(softmax(x) * w), "logsoftmax": lambda x, w: kn.sum(logsoftmax(x) * w),
          "logsumexp": lambda x, w: kn.sum(logsumexp(x) * w[..., :1])}


def _numpy_gradient(name, x, w):
    p = _softmax(x)
    if name == "softmax":
        return p * (w - (w * p).sum(axis=-1, keepdims=True))
    if name == "logsoftmax":
        return w - p * w.sum(axis=-1, keepdims=True)
    return p * w[..., :1]


@pytest.mark.parametrize("shape", [(5, 37), (2, 3, 8)])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_gradients_match_numpy_and_the_cpu_target(name, shape):
    x, w = RNG.standard_normal(shape) * 3, RNG.standard_normal(shape)
    compiled = kn.compile(LOSSES[name], target="cuda")
    got = np.asarray(kn.grad(compiled)(x, w))
    # (logsumexp's max is stored for its gradient, softmax(x): no pair there)
    assert ("Online max and sum" in "".join(_texts(compiled))) == (name != "logsumexp")
    np.testing.assert_allclose(got, _numpy_gradient(name, x, w), rtol=1e-10, atol=1e-12)
    cpu = kn.compile(LOSSES[name], target="cpu")
    np.testing.assert_allclose(got, kn.grad(cpu)(x, w), rtol=1e-10, atol=1e-12)
    count = lambda f: sum(len(e.schedule.kernels()) for s in f.specializations() for e in s.executables())  # noqa: E731
    # (the forward's max, sum and result in one kernel; the CPU's loop nests too, but for softmax)
    assert count(compiled) < count(cpu) if name == "softmax" else count(compiled) <= count(cpu)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    got32 = np.asarray(kn.grad(kn.compile(LOSSES[name], target="cuda"))(x32, w32))
    np.testing.assert_allclose(got32, _numpy_gradient(name, x, w), rtol=1e-4, atol=1e-5)


def test_inspect_says_online():
    text = kn.inspect(softmax, np.ones((13, 300), np.float32), stage="kernels,driver", target="cuda", mode="call")
    assert text.count("# knetc kernel (cuda):") == 1 and "1 kernel launches of 1 kernels" in text
    assert "# Online max and sum, one pass: each thread keeps" in text and "# combines the threads' pairs alike." in text


def test_kernels_compile_to_ptx():
    modules = []
    for name in sorted(FUNCTIONS):
        for dtype in (np.float32, np.float64):
            CUDA[name](np.ones((2, 3), dtype))
        modules += kernel_modules(CUDA[name].generated_modules())
    f = kn.compile(scaled_softmax, target="cuda")
    f(np.ones((2, 3), np.float32), np.ones(3, np.float32))
    modules += kernel_modules(f.generated_modules())
    assert sum("Online max and sum" in open(m.__knetc_path__).read() for m in modules) >= 7
    assert_modules_compile_to_ptx(modules)
