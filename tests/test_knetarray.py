"""KnetArray: every op family on the device (the CUDA code, under Numba's simulator here)
equals numpy in float64; conversions, __cuda_array_interface__, gradients with KnetArray
Params, compiled CUDA functions, optimizers, save/load, the one-op program cache, mixing
with numpy, errors; atype, gpu, gc, dir; the generated kernels compile to PTX for sm_90."""
import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import knetc as kn
from knetc import knetarray
from knetc.runtime import device
from knetc.runtime.device import simulator_active
from ptx import compile_ptx_many

RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal((3, 4))
ROW = RNG.standard_normal((4,))
POS = RNG.uniform(0.5, 2.0, (3, 4))
T3 = RNG.standard_normal((2, 3, 4))


def K(a):
    return kn.KnetArray(a)


def same(k, expected, tol=1e-12):
    """k is a KnetArray holding `expected` (float64 numpy reference)."""
    assert isinstance(k, kn.KnetArray), type(k)
    got = np.asarray(k)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------- op families

ELEMENTWISE = [
    ("add", lambda a, b: a + b, lambda a, b: a + b, (X, Y)),
    ("sub broadcast row", lambda a, b: a - b, lambda a, b: a - b, (X, ROW)),
    ("mul scalar", lambda a: a * 2.5, lambda a: a * 2.5, (X,)),
    ("rdiv scalar", lambda a: 1 / a, lambda a: 1 / a, (POS,)),
    ("power", lambda a: a ** 3, lambda a: a ** 3, (X,)),
    ("exp", np.exp, np.exp, (X,)),
    ("log", kn.log, np.log, (POS,)),
    ("tanh", kn.tanh, np.tanh, (X,)),
    ("sqrt", np.sqrt, np.sqrt, (POS,)),
    ("relu", kn.relu, lambda a: np.maximum(a, 0), (X,)),
    ("sigm", kn.sigm, lambda a: 1 / (1 + np.exp(-a)), (X,)),
    ("gt is float", lambda a, b: a > b, lambda a, b: (a > b).astype(np.float64), (X, Y)),
    ("neg abs", lambda a: -abs(a), lambda a: -np.abs(a), (X,)),
]


@pytest.mark.parametrize("name,f,ref,args", ELEMENTWISE, ids=[e[0] for e in ELEMENTWISE])
def test_elementwise_ops_on_knetarrays_equal_numpy(name, f, ref, args):
    same(f(*map(K, args)), ref(*args))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), st.data())
def test_broadcasting_shapes_and_dims_property(shapes, data):
    (sa, sb), out = shapes
    a, b = RNG.standard_normal(sa), RNG.standard_normal(sb)
    if not out:  # 0-d results come back as numbers
        assert K(a).shape == () and np.isclose(K(a) * K(b) - b, a * b - b)
        return
    same(K(a) * K(b) - b, a * b - b)
    dims = data.draw(st.lists(st.integers(-len(out), len(out) - 1), min_size=1, max_size=len(out)))
    same(kn.sum(K(a) + K(b), dims=tuple(dims)), np.sum(a + b, axis=tuple({d % len(out) for d in dims}),
                                                       keepdims=True))


def test_reductions_with_dims_keep_axes_and_full_reductions_return_scalars():
    k = K(T3)
    same(kn.sum(k, dims=1), T3.sum(1, keepdims=True))
    same(kn.sum(k, dims=(0, 2)), T3.sum((0, 2), keepdims=True))
    same(kn.maximum(k, dims=-1), T3.max(-1, keepdims=True))
    same(kn.mean(k, dims=0), T3.mean(0, keepdims=True))
    same(np.sum(k, axis=1), T3.sum(1))  # numpy's semantics through the numpy function
    total = kn.sum(k)
    assert isinstance(total, np.float64) and np.isclose(total, T3.sum())  # Knet: sum(x) is a number
    assert np.isclose(kn.mean(k), T3.mean()) and np.isclose(kn.maximum(k), T3.max())


def test_matmul_shapes_and_mixed_dtypes():
    w = RNG.standard_normal((4, 5))
    same(K(X) @ K(w), X @ w)
    same(K(T3) @ K(w), T3 @ w)  # N-D @ 2-D folds the leading axes
    same(K(ROW) @ K(w), ROW @ w)  # a vector
    same(K(X) @ w, X @ w)  # numpy operand moved to the device
    got = K(X.astype(np.float32)) @ K(w)  # float32 @ float64 promotes as numpy
    assert got.dtype == np.float64
    np.testing.assert_allclose(np.asarray(got), X.astype(np.float32).astype(np.float64) @ w, rtol=1e-12)


def test_softmax_family_and_nll():
    k = K(X)
    e = np.exp(X - X.max(1, keepdims=True))
    same(kn.softmax(k, dims=1), e / e.sum(1, keepdims=True))
    lse = np.log(np.exp(X).sum(0, keepdims=True))
    same(kn.logsumexp(k, dims=0), lse)
    same(kn.logsoftmax(k, dims=0), X - lse)
    labels = np.array([0, 3, -1])
    lp = X - np.log(np.exp(X).sum(1, keepdims=True))
    expected = -(lp[0, 0] + lp[1, 3]) / 2  # label -1 is skipped
    assert np.isclose(kn.nll(k, labels), expected, rtol=1e-12, atol=0)


def test_reshape_transpose_views():
    k = K(T3)
    same(k.reshape(4, 6), T3.reshape(4, 6))
    same(kn.reshape(k, (-1, 2)), T3.reshape(-1, 2))
    same(kn.transpose(k, (2, 0, 1)), T3.transpose(2, 0, 1))
    same(K(X).T, X.T)
    same(np.transpose(k), T3.T)


def test_indexing_reads_and_writes():
    k = K(X)
    same(k[1, 1:3], X[1, 1:3])
    same(k[:, np.array([3, 0, 0])], X[:, [3, 0, 0]])  # a gather kernel
    same(k[:, 1], X[:, 1])  # a strided selection: a kernel, a copy
    same(k[..., -1], X[..., -1])
    assert k[1, 2] == X[1, 2] and isinstance(k[-1, -1], np.float64)  # one entry: a number
    with pytest.raises(IndexError):
        k[3]
    t = K(T3)
    block = t[1, 1:3]  # contiguous: a view sharing memory, as Knet's ranges and numpy's views
    same(block, T3[1, 1:3])
    block += 100
    assert np.allclose(np.asarray(t)[1, 1:3], T3[1, 1:3] + 100)
    k = K(X)
    k[0, 0] = 7.0
    expected = X.copy()
    expected[0, 0] = 7.0
    same(k, expected)


# ---------------------------------------------------------------- conversions

def test_conversions_round_trip_and_share_device_memory():
    x32 = X.astype(np.float32)
    k = kn.KnetArray(x32)
    assert k.shape == (3, 4) and k.dtype == np.float32 and k.ndim == 2 and k.size == 12 and len(k) == 3
    back = np.asarray(k)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32 and np.array_equal(back, x32)
    assert np.array_equal(kn.cpucopy(k), x32) and isinstance(kn.cpucopy(k), np.ndarray)
    with pytest.raises(ValueError):
        np.asarray(k, copy=False)  # device memory cannot be viewed from the host
    k64 = kn.KnetArray(k, dtype=np.float64)  # converted on the device
    assert k64.dtype == np.float64 and np.array_equal(np.asarray(k64), x32.astype(np.float64))
    shared, copied = kn.KnetArray(k), kn.KnetArray(k, copy=True)
    k[0, 0] = 5.0
    assert np.asarray(shared)[0, 0] == 5.0 and np.asarray(copied)[0, 0] == x32[0, 0]
    assert kn.KnetArray([1.0, 2.0]).shape == (2,) and float(kn.KnetArray(3.5)) == 3.5
    empty = kn.KnetArray.empty((2, 5), np.float64)
    assert empty.shape == (2, 5) and empty.dtype == np.float64
    with pytest.raises(TypeError):
        kn.KnetArray(np.array([{}, 1], dtype=object))
    assert np.array_equal(np.asarray(pickle.loads(pickle.dumps(k))), np.asarray(k))
    deep = copy.deepcopy(k)
    assert deep.data is not k.data and np.array_equal(np.asarray(deep), np.asarray(k))
    assert "KnetArray(array(" in repr(k)
    assert np.allclose(k, np.asarray(k)) and np.shape(k) == (3, 4)  # numpy functions outside the table


def test_gpucopy_and_cpucopy_copy_whole_models():
    class Dense:
        def __init__(self, w, b):
            self.w, self.b = kn.Param(w), kn.Param(b)
    model = [Dense(X, ROW[:3]), {"scale": np.float32(2), "labels": np.array([1, 2]), "name": "out"}]
    model.append(model[0])  # shared objects stay shared
    g = kn.gpucopy(model)
    assert isinstance(g[0], Dense) and isinstance(g[0].w, kn.Param) and isinstance(g[0].w.value, kn.KnetArray)
    assert isinstance(g[1]["labels"], kn.KnetArray) and g[1]["name"] == "out" and g[2] is g[0]
    assert np.array_equal(np.asarray(g[0].w.value), X) and model[0].w.value is X  # the original is untouched
    c = kn.cpucopy(g)
    assert isinstance(c[0].w.value, np.ndarray) and np.array_equal(c[0].w.value, X) and c[2] is c[0]
    assert isinstance(c[1]["labels"], np.ndarray) and c[1]["labels"].dtype == np.int64


def test_cuda_array_interface_is_valid_and_shares_memory():
    k = K(X.astype(np.float32))
    cai = k.__cuda_array_interface__
    assert cai["version"] >= 2 and tuple(cai["shape"]) == (3, 4) and cai["typestr"] == "<f4"
    pointer, read_only = cai["data"]
    assert isinstance(pointer, int) and pointer and read_only is False
    assert cai.get("strides") in (None, (16, 4))
    if simulator_active():
        # The simulator's device memory is host memory: view the same address through numpy.
        class View:
            __array_interface__ = {**cai, "strides": None}
        view = np.asarray(View())
        view[2, 3] = 42.0
    else:
        from numba import cuda
        view = cuda.as_cuda_array(k)
        view[2:3, 3:4].copy_to_device(np.full((1, 1), 42.0, np.float32))
    assert np.asarray(k)[2, 3] == 42.0  # written through the interface, seen by the KnetArray


# ---------------------------------------------------------------- autograd, compile, optimizers

def loss(w, b, x, labels):
    return kn.nll(kn.relu(x @ w) + b, labels)


W0, B0 = RNG.standard_normal((4, 3)), RNG.standard_normal((3,))
LABELS = np.array([2, 0, 1])


def test_grad_with_knetarray_params_equals_numpy():
    p, q = kn.Param(W0), kn.Param(B0)
    y = kn.diff(loss, p, q, X, LABELS)
    pk, qk = kn.Param(K(W0)), kn.Param(K(B0))
    yk = kn.diff(loss, pk, qk, K(X), LABELS)
    assert np.isclose(kn.value(yk), kn.value(y), rtol=1e-12)
    same(kn.grad(yk, pk), kn.grad(y, p))
    same(kn.grad(yk, qk), kn.grad(y, q))
    gw = kn.grad(lambda w: kn.sum(kn.tanh(K(X) @ w)))(K(W0))  # grad(f) with a KnetArray argument
    same(gw, X.T @ (1 - np.tanh(X @ W0) ** 2))


def test_compiled_cuda_function_takes_and_returns_knetarrays():
    @kn.compile(target="cuda")
    def layer(w, b, x):
        return kn.sigm(x @ w + b), kn.sum(x @ w)
    out, total = layer(K(W0), K(B0), K(X))
    same(out, 1 / (1 + np.exp(-(X @ W0 + B0))))
    assert np.isclose(total, (X @ W0).sum())  # a 0-d output: a host scalar, as eager
    compiled_loss = kn.compile(loss, target="cuda")
    p, pk = kn.Param(B0), kn.Param(K(B0))
    y = kn.diff(loss, W0, p, X, LABELS)
    yk = kn.diff(compiled_loss, K(W0), pk, K(X), LABELS)  # recorded: the compiled adjoint runs on the device
    assert np.isclose(kn.value(yk), kn.value(y), rtol=1e-12)
    same(kn.grad(yk, pk), kn.grad(y, p))
    gw, value = kn.gradloss(compiled_loss)(K(W0), K(B0), K(X), LABELS)  # the compiled gradient program
    same(gw, kn.grad(loss)(W0, B0, X, LABELS))
    assert np.isclose(value, kn.value(y), rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: kn.SGD(lr=0.1), lambda: kn.Adam(lr=0.01, gclip=0.5)], ids=["sgd", "adam"])
def test_optimizer_steps_on_knetarray_params_match_numpy(make):
    host, dev = kn.Param(W0.copy(), make()), kn.Param(K(W0), make())
    data = dev.value.data
    for _ in range(2):
        for p in (host, dev):
            y = kn.diff(loss, p, B0, X if p is host else K(X), LABELS)
            kn.update_(p, kn.grad(y, p))
    assert dev.value.data is data  # updated in place on the device
    same(dev.value, host.value, tol=1e-10)
    w = K(W0)
    kn.update_(w, np.ones_like(W0), lr=0.5)  # a host gradient for a device weight
    same(w, W0 - 0.5)


def test_save_stores_numpy_and_load_restores_knetarrays_when_a_gpu_is_active(tmp_path, monkeypatch):
    path = tmp_path / "model.knetc"
    p = kn.Param(K(W0), kn.Momentum())
    kn.update_(p, K(np.ones_like(W0)))  # device optimizer state
    kn.save(path, model=[p, K(ROW)], plain=X)
    monkeypatch.setattr(knetarray, "gpu", lambda device=None: -1)  # no GPU active
    model, plain = kn.load(path, "model", "plain")
    assert isinstance(model[0].value, np.ndarray) and np.allclose(model[0].value, np.asarray(p.value))
    assert isinstance(plain, np.ndarray)  # numpy, as Knet without a GPU
    monkeypatch.setattr(knetarray, "gpu", lambda device=None: 0)
    model = kn.load(path, "model")
    assert isinstance(model[1], kn.KnetArray) and np.array_equal(np.asarray(model[1]), ROW)
    assert isinstance(kn.load(path, "plain"), np.ndarray)  # saved from the host: stays numpy
    kn.update_(model[0], K(np.ones_like(W0)))  # the restored device state keeps working
    assert isinstance(model[0].opt.velocity, kn.KnetArray)


# ---------------------------------------------------------------- dispatch

def test_one_op_programs_are_cached_numbers_included():
    a, b = K(X), K(Y)
    kn.exp(a * 3.0 + b)  # warm
    before, stats = knetarray.program_cache_info(), kn.stats()
    for c in (3.0, 0.25, -7.0):  # other numbers reuse the same programs (they are kernel inputs)
        same(kn.exp(a * c + b), np.exp(X * c + Y))
    after = knetarray.program_cache_info()
    assert after["misses"] == before["misses"] and after["programs"] == before["programs"]
    assert after["hits"] == before["hits"] + 9
    assert kn.stats()["compilations"] == stats["compilations"]
    assert {e.target for e in knetarray._PROGRAMS.values()} == {"cuda"}  # the CUDA code, simulated
    kn.exp(K(X[:2]))  # a new shape is a new program
    assert knetarray.program_cache_info()["misses"] == before["misses"] + 1


def test_mixing_knetarrays_numpy_and_numbers():
    k = K(X)
    same(X + k, X + X)  # numpy on the left defers to the KnetArray
    same(k * Y, X * Y)
    same(np.float32(2) * k, 2 * X)  # numpy scalars too
    same(2 - k, 2 - X)
    same(kn.relu(k) + ROW, np.maximum(X, 0) + ROW)
    assert isinstance(np.sin(k), kn.KnetArray)  # a ufunc of the op table: on the device
    assert isinstance(np.hypot(k, k), kn.KnetArray) and np.allclose(np.hypot(k, k), np.hypot(X, X))
    assert isinstance(np.fmod(k, 0.3), kn.KnetArray) and np.allclose(np.fmod(k, 0.3), np.fmod(X, 0.3))
    assert isinstance(np.nextafter(k, 2.0), np.ndarray)  # a ufunc outside the op table: on the host, numpy
    k2 = K(X)
    data = k2.data
    k2 += 1
    k2 *= K(Y)
    k2 -= ROW
    assert k2.data is data  # in place, in the array's own memory
    same(k2, (X + 1) * Y - ROW)
    i = K(np.array([1, 2, 3]))
    assert i.dtype == np.int64 and isinstance(i + 1, kn.KnetArray) and np.array_equal(np.asarray(i + 1), [2, 3, 4])


def test_shape_mismatch_raises_shape_error_at_the_users_line():
    with pytest.raises(kn.ShapeError, match="do not broadcast") as info:
        K(X) + K(np.ones((2, 2)))
    assert info.value.filename == __file__
    with pytest.raises(kn.ShapeError, match="inner dimensions"):
        K(X) @ K(X)
    with pytest.raises(kn.ShapeError):
        kn.nll(K(X), np.array([0, 1]))


# ---------------------------------------------------------------- atype, gpu, gc, dir

def test_atype_is_numpy_without_a_gpu_and_knetarray_with_one(monkeypatch):
    if simulator_active():
        assert kn.gpu() == -1  # the simulator does not count as a GPU
        assert kn.atype().array_type is np.ndarray and isinstance(kn.param(3, 2).value, np.ndarray)
    monkeypatch.setattr(knetarray, "gpu", lambda device=None: -1)
    assert kn.atype().array_type is np.ndarray and kn.atype().dtype == np.float32
    monkeypatch.setattr(knetarray, "gpu", lambda device=None: 0)
    t = kn.atype()
    assert t.array_type is kn.KnetArray and t.dtype == np.float32
    w = kn.param(4, 3)
    assert isinstance(w.value, kn.KnetArray) and w.value.dtype == np.float32
    converted = t(K(X))
    assert converted.dtype == np.float32 and np.allclose(np.asarray(converted), X.astype(np.float32))


def test_gpu_gc_and_dir():
    if simulator_active():
        assert kn.gpu() == -1 and kn.gpu(-1) == -1 and kn.gpu(0) == -1 and kn.gpu(True) == -1
    else:  # a real GPU
        assert kn.gpu() == 0 and kn.gpu(-1) == -1 and kn.atype().array_type is np.ndarray and kn.gpu(0) == 0
    from knetc.runtime.pool import get_pool
    pool = get_pool(0)
    pool.free(pool.alloc(4096))  # one cached block
    assert pool.stats()["bytes_cached"] > 0
    assert kn.gc() >= 4096 and pool.stats()["bytes_cached"] == 0
    assert kn.dir("examples", "mnist_mlp.py") == os.path.join(os.path.dirname(os.path.dirname(kn.__file__)),
                                                                "examples", "mnist_mlp.py")
    assert os.path.exists(kn.dir("examples", "mnist_mlp.py")) and os.path.isdir(kn.dir("knetc"))


def test_the_generated_kernels_compile_to_ptx_for_sm90():
    before = set(knetarray._PROGRAMS)
    k = K(RNG.standard_normal((5, 2)).astype(np.float32))  # a shape no other test uses: new programs
    kn.softmax(k * 2 + 1, dims=1)
    kn.sum(k, dims=0)
    kn.relu(k @ k.T)
    jobs = {}
    for key, executable in knetarray._PROGRAMS.items():
        for module in executable.kernel_modules if key not in before else ():
            jobs[module.__knetc_path__] = module.PTX_SIGNATURES
    assert len(jobs) >= 4
    reports = compile_ptx_many(sorted(jobs.items()))
    assert all(r["target"] and r["entry"] for report in reports for r in report.values())


def test_op_the_cuda_generator_refuses_runs_on_the_host_like_eager(monkeypatch):
    """The host fallback is the eager path: same result, the shape rule checked, and BLAS
    threads set from the op table (a conv keeps BLAS on one thread)."""
    from knetc.runtime import threads

    def refuse(*args):
        raise NotImplementedError("refused for the test")
    monkeypatch.setattr(knetarray, "_build", refuse)
    monkeypatch.setattr(knetarray, "_PROGRAMS", {})
    seen = []
    monkeypatch.setattr(threads, "use_threads", seen.append)
    w, x = np.arange(18.0).reshape(2, 1, 3, 3), np.arange(25.0).reshape(1, 1, 5, 5)
    y = kn.conv4(K(w), K(x))
    if threads.threads_for() is not None:
        assert seen == [1]
    assert isinstance(y, kn.KnetArray)
    np.testing.assert_allclose(np.asarray(y), kn.conv4(w, x), rtol=1e-12)
    with pytest.raises(kn.ShapeError):
        kn.conv4(K(w), K(np.ones((1, 2, 5, 5))))  # channel mismatch


def test_moves_between_host_and_device_inside_diff_are_recorded():
    """Knet's karray.jl cpu2gpu checks: gradcheck(x -> Array(sin.(KnetArray(x)))) and back.
    KnetArray(p), kn.gpucopy(p) and kn.cpucopy(t) of recorded values are recorded moves whose
    gradients move back (they were None)."""
    a = np.random.default_rng(3).random((3, 4))
    p = kn.Param(a.copy())
    y = kn.diff(lambda: kn.sum(kn.cpucopy(np.sin(kn.KnetArray(p)))))
    g = kn.grad(y, p)
    assert type(g) is np.ndarray and np.allclose(g, np.cos(a))
    y = kn.diff(lambda: kn.sum(np.sin(kn.gpucopy(p)) * 2))
    assert np.allclose(np.asarray(kn.grad(y, p)), 2 * np.cos(a))
    pk = kn.Param(kn.KnetArray(a))
    y = kn.diff(lambda: kn.sum(kn.KnetArray(np.sin(kn.cpucopy(pk)))))
    g = kn.grad(y, pk)
    assert isinstance(g, kn.KnetArray) and np.allclose(np.asarray(g), np.cos(a))
    assert kn.gradcheck(lambda x: kn.cpucopy(np.sin(kn.KnetArray(x))), a)
    assert type(kn.KnetArray(a)) is kn.KnetArray and type(kn.cpucopy(pk)) is kn.Param  # (outside diff: copies)


def test_numpy_writes_into_a_knetarray_reach_it_or_raise():
    k = kn.KnetArray(np.zeros((2, 3)))
    np.copyto(k, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(np.asarray(k), np.arange(6.0).reshape(2, 3))
    kn.copyto_(k, np.ones((2, 3)))
    np.testing.assert_array_equal(np.asarray(k), np.ones((2, 3)))
    with pytest.raises(TypeError, match="cannot write into a KnetArray"):
        np.put(k, [0], [5.0])
    np.testing.assert_array_equal(np.asarray(k), np.ones((2, 3)))


def test_similar_keeps_the_kind_of_array_and_takes_julias_forms():
    k = kn.KnetArray(np.ones((2, 3), np.float32))
    s = kn.similar(k)
    assert isinstance(s, kn.KnetArray) and s.shape == (2, 3) and s.dtype == np.float32
    s = kn.similar(k, np.float64, 4, 5)
    assert isinstance(s, kn.KnetArray) and s.shape == (4, 5) and s.dtype == np.float64
    assert isinstance(kn.similar(k, (2, 6)), kn.KnetArray) and kn.similar(k, (2, 6)).shape == (2, 6)
    a = kn.similar(np.ones(3, np.int32), np.float32, (2,))
    assert type(a) is np.ndarray and a.shape == (2,) and a.dtype == np.float32
    with pytest.raises(TypeError, match="twice"):
        kn.similar(k, np.float64, 2, dtype=np.float32)


def test_blas1_updates_work_in_place_on_knetarrays():
    """Knet's linalg.jl: axpy!, lmul!, rmul! on KnetArrays (they raised TypeError)."""
    x, y = np.arange(4.0), np.ones(4)
    k = kn.KnetArray(y)
    assert kn.axpy_(2.0, kn.KnetArray(x), k) is k
    np.testing.assert_allclose(np.asarray(k), y + 2 * x)
    kn.axpy_(0.5, x, k)  # a host x too
    np.testing.assert_allclose(np.asarray(k), y + 2.5 * x)
    assert kn.lmul_(2.0, k) is k and kn.rmul_(k, 0.5) is k
    np.testing.assert_allclose(np.asarray(k), y + 2.5 * x)
    np.testing.assert_allclose(kn.rmul_(np.array([1.0, 2.0]), 3.0), [3.0, 6.0])


def test_numpy_scalars_keep_their_dtype_beside_a_knetarray():
    # NEP 50: np.float64(2.5) is not a weak Python float (numpy and Params give float64); a
    # float32 KnetArray gave float32.
    x = X.astype(np.float32)
    k = K(x)
    for got, want in ((k * np.float64(2.5), x * np.float64(2.5)), (k ** np.float64(2.0), x ** np.float64(2.0)),
                      (k * 2.5, x * 2.5), (k + np.float32(1), x + np.float32(1))):
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        same(got, want, tol=1e-6)


def test_assigning_through_a_comparison_mask():
    # Knet's comparisons give 0/1 floats, which index as masks: k[k > 0] reads, and
    # k[k > 0] = v wrote nothing but an IndexError (numpy takes no float index).
    k = K(X)
    k[k > 0] = 0.0
    same(k, np.minimum(X, 0))
    k[kn.KnetArray(np.array([1.0, 0.0, 1.0]))] = 7.0
    expected = np.minimum(X, 0)
    expected[[0, 2]] = 7.0
    same(k, expected)


@pytest.mark.skipif(device._driver_library_present(), reason="needs a machine without a CUDA driver")
def test_device_arrays_without_a_gpu_say_so():
    # Numba's CudaSupportError ("CUDA driver library cannot be found") came from deep inside.
    code = ("import numpy as np, knetc as kn\n"
            "for f in (lambda: kn.KnetArray(np.ones(3)), lambda: kn.gpucopy([np.ones(2)]),\n"
            "          lambda: kn.param(3, 4, atype=kn.KnetArray)):\n"
            "    try:\n        f()\n    except RuntimeError as e:\n        print('refused:', e)\n")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("refused: no CUDA GPU here (kn.gpu() is -1)") == 3, done.stdout
