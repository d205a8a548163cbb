"""The cuDNN binding base (knetc.runtime.cudnn): what runs without a GPU (the library, its
version, error strings, descriptors, declared signatures); handle and convolutions on a GPU."""
import ctypes
import os
import re

import numpy as np
import pytest

import knetc as kn
from knetc.runtime import cudnn

NOT_INSTALLED = "not checked: libcudnn.so.9 is not installed (the `cuda` extra: pip install -e .[test,cuda])"


def needs_library(what):
    """Skip without libcudnn.so.9 (the `cuda` extra), saying what went unchecked."""
    return pytest.mark.skipif(not cudnn.loadable(), reason=f"{what} {NOT_INSTALLED}")


needs_gpu = pytest.mark.skipif(os.environ.get("KNETC_TEST_GPU") != "1", reason="needs a real GPU")


@needs_library("loading cuDNN and its version (9.x)")
def test_library_loads_and_reports_a_version_9():
    assert 90000 <= cudnn.version() < 100000
    assert cudnn.lib() is cudnn.lib()  # loaded once


def test_not_available_under_the_simulator():
    # the test session runs Numba's CUDA simulator: cuDNN must not be chosen
    if os.environ.get("KNETC_TEST_GPU") != "1":
        assert cudnn.available() is False


@needs_library("cuDNN's status strings and check()")
def test_error_strings_and_check():
    assert cudnn.error_string(0) == "CUDNN_STATUS_SUCCESS"
    assert cudnn.error_string(2000) == "CUDNN_STATUS_BAD_PARAM"
    cudnn.check(0, "cudnnNothing")  # success: no error
    with pytest.raises(cudnn.CudnnError, match=r"cudnnFoo failed: CUDNN_STATUS_BAD_PARAM \(cuDNN status 2000\)"):
        cudnn.check(2000, "cudnnFoo")


def test_data_types():
    assert cudnn.data_type(np.float32) == cudnn.CUDNN_DATA_FLOAT
    assert cudnn.data_type("float64") == cudnn.CUDNN_DATA_DOUBLE
    assert cudnn.data_type(np.float16) == cudnn.CUDNN_DATA_HALF
    with pytest.raises(ValueError, match="float16, float32 and float64"):
        cudnn.data_type(np.int64)


def _forward_dims(x_shape, w_shape, padding, stride, dilation, group, dtype=np.float32):
    nd = len(x_shape)
    with cudnn.tensor_descriptor(x_shape, dtype) as xd, cudnn.filter_descriptor(w_shape, dtype) as wd, \
            cudnn.convolution_descriptor(padding, stride, dilation, 0, dtype, group) as cd:
        dims = (ctypes.c_int * nd)()
        cudnn.check(cudnn.lib().cudnnGetConvolutionNdForwardOutputDim(cd, xd, wd, nd, dims),
                    "cudnnGetConvolutionNdForwardOutputDim")
        return tuple(dims)


@needs_library("cuDNN's tensor, filter and convolution descriptors against conv4's output shapes")
@pytest.mark.parametrize("xs,ws,kw", [
    ((2, 3, 11, 9), (4, 3, 3, 2), dict(padding=(1, 2), stride=(2, 3), dilation=(2, 1), group=1)),
    ((1, 6, 8, 8), (6, 2, 3, 3), dict(padding=(0, 0), stride=(1, 1), dilation=(1, 1), group=3)),
    ((2, 2, 5, 6, 7), (3, 2, 2, 3, 2), dict(padding=(1, 0, 1), stride=(1, 2, 1), dilation=(1, 1, 2), group=1)),
])
def test_descriptors_give_conv4_output_shapes(xs, ws, kw):
    """cuDNN, reading our descriptors, computes the same output shape as conv4's rule."""
    expected = kn.conv4(np.zeros(ws, np.float32), np.zeros(xs, np.float32), **kw).shape
    assert _forward_dims(xs, ws, kw["padding"], kw["stride"], kw["dilation"], kw["group"]) == expected


@needs_library("creating and destroying cuDNN descriptors, and cuDNN's errors for bad ones")
def test_descriptors_are_destroyed_once_and_bad_ones_raise():
    d = cudnn.tensor_descriptor((2, 3, 4, 5), np.float64)
    assert d.value.value
    d.close()
    d.close()  # idempotent
    assert d.value is None
    with pytest.raises(cudnn.CudnnError, match="cudnnSetTensorNdDescriptor failed: CUDNN_STATUS_BAD_PARAM"):
        cudnn.tensor_descriptor((2, 3, 4, 5), np.float32, strides=(0, 0, 0, 0))
    with pytest.raises(cudnn.CudnnError, match="cudnnSetFilterNdDescriptor"):
        cudnn.filter_descriptor((0, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="one entry per spatial dimension"):
        cudnn.convolution_descriptor((1, 1), (1,), (1, 1), 0, np.float32)
    # fewer than 4 dims are padded with trailing 1s (cuDNN's minimum), e.g. (N, C) for batchnorm
    with cudnn.tensor_descriptor((5, 7), np.float32) as d2:
        assert d2.value.value


@needs_library("that every cuDNN function knetc calls exists with its declared ctypes signature")
def test_every_called_function_has_a_declared_signature():
    """Every cudnn* symbol the sources call is in _SIGNATURES (ctypes would guess int args otherwise)
    and exists in the library."""
    here = os.path.dirname(os.path.abspath(__file__))
    called = set()
    for path in (cudnn.__file__, os.path.join(here, os.pardir, "kernels", "conv.py")):
        called |= set(re.findall(r"lib\(\)\.(cudnn\w+)", open(path).read()))  # lib().cudnnX calls
    called |= {name for names in cudnn._CONV_CALLS.values() for name in names}  # called by name
    called |= {"cudnn%s%sDescriptor" % (verb, kind) for verb in ("Create", "Destroy")
               for kind in ("Tensor", "Filter", "Convolution")}
    assert len(called) > 20
    missing = called - set(cudnn._SIGNATURES)
    assert not missing, missing
    for name, (restype, argtypes) in cudnn._SIGNATURES.items():
        fn = getattr(cudnn.lib(), name)
        assert fn.argtypes == argtypes and fn.restype == restype, name


def test_algo_perf_struct_layout():
    # cudnnConvolutionFwdAlgoPerf_t: algo, status, time, memory (size_t), determinism, mathType, int[3]
    assert ctypes.sizeof(cudnn.AlgoPerf) == 48
    assert cudnn.AlgoPerf.memory.offset == 16


@needs_gpu
def test_handle_and_convolution_on_a_gpu():
    from numba import cuda
    h = cudnn.handle()
    assert h.value and cudnn.handle().value == h.value  # one per context and thread
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 2)).astype(np.float32)
    y = cuda.device_array((2, 4, 4, 4), np.float32)
    cudnn.convolution("forward", cuda.to_device(w), cuda.to_device(x), y, (0, 0), (1, 1), (1, 1), 1, 1.0, 1)
    np.testing.assert_allclose(y.copy_to_host(), kn.conv4(w, x, mode=1), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ by the book, without a GPU
# A fake libcudnn/libcublas records every call (the arguments as the binding passes them) and
# a fake context stands in for Numba's, so the math types, descriptor dimensions, the RNN
# reserve space and the handles' lifetimes are checked under the simulator.

import gc
import subprocess
import sys
import threading

from knetc.runtime import cublas, cudnn_rnn, handles, rnn_layout


class FakeContext:
    """Stands in for a Numba context: reset(), push(), pop(), counted."""

    def __init__(self):
        self.resets = self.pushes = self.pops = 0

    def reset(self):
        self.resets += 1

    def push(self):
        self.pushes += 1

    def pop(self):
        self.pops += 1


class FakeLibrary:
    """Every attribute is a function that records (name, args) and returns 0 (success), or
    what the ``on_<name>`` method returns. Create* functions fill their out-pointer."""

    def __init__(self, prefix):
        self.prefix, self.calls, self._next = prefix, [], 0x1000

    def new_pointer(self):
        self._next += 0x10
        return self._next

    def __getattr__(self, name):
        if not name.startswith(self.prefix):
            raise AttributeError(name)

        def fn(*args):
            self.calls.append((name, args))
            if name.startswith(self.prefix + "Create"):
                args[0]._obj.value = self.new_pointer()
            handler = getattr(type(self), "on_" + name, None)
            return handler(self, *args) if handler else 0
        setattr(self, name, fn)  # declared argtypes/restype stick to it
        return fn

    def called(self, name):
        return [args for n, args in self.calls if n == name]


class FakeCudnn(FakeLibrary):
    reserve_bytes = 12345  # odd on purpose: the reserve space must still start aligned

    def __init__(self):
        super().__init__("cudnn")
        self.weights = None  # (w base address, mode, X, H, layers, dirs, skip, itemsize)

    def on_cudnnGetErrorString(self, status):
        return b"CUDNN_STATUS_FAKE"

    def on_cudnnFindConvolutionForwardAlgorithm(self, h, a, b, c, d, n, count, perf):
        count._obj.value = 1
        perf[0].algo, perf[0].status, perf[0].memory = 1, 0, 64
        return 0

    def on_cudnnGetConvolutionForwardWorkspaceSize(self, h, a, b, c, d, algo, size):
        size._obj.value = 64
        return 0

    def on_cudnnGetRNNWeightSpaceSize(self, h, rd, size):
        base, mode, X, H, layers, dirs, skip, itemsize = self.weights
        size._obj.value = rnn_layout.weight_size(mode, X, H, layers, dirs, skip) * itemsize
        return 0

    def on_cudnnGetRNNTempSpaceSizes(self, h, rd, fwd_mode, xd, work, reserve):
        work._obj.value, reserve._obj.value = 1000, self.reserve_bytes
        return 0

    def on_cudnnGetRNNWeightParams(self, h, rd, p, wsize, base, lin, md, maddr, bd, baddr):
        _, mode, X, H, layers, dirs, skip, itemsize = self.weights
        matrix = rnn_layout.param_location(mode, X, H, layers, dirs, skip, p, lin, 0)
        bias = rnn_layout.param_location(mode, X, H, layers, dirs, skip, p, lin, 1)
        maddr._obj.value = None if matrix is None else base + matrix[0] * itemsize
        baddr._obj.value = base + bias[0] * itemsize
        return 0


@pytest.fixture
def fake_cudnn(monkeypatch):
    """cuDNN 'available' with a fake library and a fake context; fresh handle and plan caches."""
    fake, ctx = FakeCudnn(), FakeContext()
    monkeypatch.setattr(cudnn, "_lib", fake)
    monkeypatch.setattr(cudnn, "_declared", set())
    monkeypatch.setattr(cudnn, "_available", True)
    monkeypatch.setattr(cudnn_rnn, "available", lambda: True)
    monkeypatch.setattr(handles, "_numba_context", lambda: ctx)
    cache = handles.HandleCache("cuDNN", cudnn._create_handle, cudnn._destroy_handle,
                                on_release=list(cudnn._HANDLES.on_release))
    monkeypatch.setattr(cudnn, "_HANDLES", cache)
    cudnn._plans.clear(), cudnn_rnn._plans.clear(), cudnn_rnn._saved.clear()
    previous = kn.allow_tf32()
    kn.allow_tf32(False)
    yield fake, ctx
    cache.release_all()  # with the fake library still in place (never the real one on fake handles)
    kn.allow_tf32(previous)
    cudnn._plans.clear(), cudnn_rnn._plans.clear(), cudnn_rnn._saved.clear()


def test_tf32_switch_defaults_off_and_sets_the_math_types():
    previous = kn.allow_tf32()
    try:
        assert kn.allow_tf32(False) is False and kn.allow_tf32() is False
        assert cudnn.math_type(np.float32) == cudnn.CUDNN_FMA_MATH == 3
        assert cudnn.math_type(np.float64) == cudnn.CUDNN_FMA_MATH
        assert cudnn.math_type(np.float16) == cudnn.CUDNN_TENSOR_OP_MATH == 1
        assert cublas.math_mode() == cublas.CUBLAS_DEFAULT_MATH == 0
        assert kn.allow_tf32(True) is True
        assert cudnn.math_type(np.float32) == cudnn.CUDNN_DEFAULT_MATH == 0
        assert cudnn.math_type(np.float64) == cudnn.CUDNN_FMA_MATH  # TF32 never touches float64
        assert cublas.math_mode() == cublas.CUBLAS_TF32_TENSOR_OP_MATH == 3
    finally:
        kn.allow_tf32(previous)


@pytest.mark.parametrize("value,expected", [("1", True), ("0", False), ("", False)])
def test_tf32_environment_variable(value, expected):
    env = dict(os.environ, KNETC_ALLOW_TF32=value)
    out = subprocess.run([sys.executable, "-c", "import knetc; print(knetc.allow_tf32())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(expected)


def test_convolution_uses_fma_math_unless_tf32_is_allowed(fake_cudnn):
    from numba import cuda
    fake, _ = fake_cudnn
    w, x = cuda.to_device(np.ones((4, 3, 3, 3), np.float32)), cuda.to_device(np.ones((2, 3, 6, 6), np.float32))
    y = cuda.device_array((2, 4, 4, 4), np.float32)
    cudnn.convolution("forward", w, x, y, (0, 0), (1, 1), (1, 1), 0, 1.0, 1)
    assert [a[1] for a in fake.called("cudnnSetConvolutionMathType")] == [cudnn.CUDNN_FMA_MATH]
    cudnn.convolution("forward", w, x, y, (0, 0), (1, 1), (1, 1), 0, 1.0, 1)  # the cached plan
    assert len(fake.called("cudnnSetConvolutionMathType")) == 1
    kn.allow_tf32(True)
    cudnn.convolution("forward", w, x, y, (0, 0), (1, 1), (1, 1), 0, 1.0, 1)  # a new plan
    assert [a[1] for a in fake.called("cudnnSetConvolutionMathType")] == [3, cudnn.CUDNN_DEFAULT_MATH]
    d64 = cuda.to_device(np.ones((2, 3, 6, 6)))
    cudnn.convolution("forward", cuda.to_device(np.ones((4, 3, 3, 3))), d64, cuda.device_array((2, 4, 4, 4)),
                      (0, 0), (1, 1), (1, 1), 0, 1.0, 1)
    assert fake.called("cudnnSetConvolutionMathType")[-1][1] == cudnn.CUDNN_FMA_MATH  # float64: FMA always
    assert len(fake.called("cudnnSetStream")) == 1  # bound once per handle, not per call


def _rnn_problem(fake, typ="lstm", layers=2, bi=True, sizes=(3, 2, 2, 1), dtype=np.float32, X=5, H=4):
    from numba import cuda
    mode, dirs = rnn_layout.MODES[typ], 2 if bi else 1
    rng = np.random.default_rng(3)
    N, B, LD = sum(sizes), sizes[0], layers * dirs
    w = rng.standard_normal(rnn_layout.weight_size(mode, X, H, layers, dirs, False)).astype(dtype)
    arrays = [cuda.to_device(a) for a in (w, rng.standard_normal((N, X)).astype(dtype),
                                          rng.standard_normal((LD, B, H)).astype(dtype),
                                          rng.standard_normal((LD, B, H)).astype(dtype))]
    fake.weights = (cudnn.device_pointer(arrays[0]), mode, X, H, layers, dirs, False, np.dtype(dtype).itemsize)
    p = dict(mode=mode, hidden=H, layers=layers, dirs=dirs, skip=False, batch_sizes=tuple(sizes), dropout=0.0)
    total = rnn_layout.packed_offsets(mode, N, B, H, layers, dirs, 0.0)[5]
    return arrays, p, total


def _set_tensor_calls(fake):
    """The (nbDims, dims, strides) of every cudnnSetTensorNdDescriptor call, by descriptor."""
    return {args[0].value: (args[2], list(args[3]), list(args[4])) for args in fake.called("cudnnSetTensorNdDescriptor")}


def test_rnn_descriptors_follow_the_v8_api(fake_cudnn):
    fake, _ = fake_cudnn
    (w, x, h0, c0), p, _ = _rnn_problem(fake, "lstm", layers=2, bi=True, sizes=(3, 2, 2, 1), X=5, H=4)
    plan = cudnn_rnn.plan(w, x, h0, **{k: p[k] for k in ("mode", "hidden", "layers", "dirs", "skip", "batch_sizes", "dropout")})
    assert plan is not None
    # hDesc/cDesc: fully packed 3-D (layers * dirs, batch, hidden)
    assert _set_tensor_calls(fake)[plan.h.value.value] == (3, [4, 3, 4], [12, 4, 1])
    # the RNN descriptor: LSTM, double bias, bidirectional, linear input, float32 data and math
    # precision, FMA math, input 5, hidden 4, projection = hidden (none), 2 layers, no padded IO
    (args,) = fake.called("cudnnSetRNNDescriptor_v8")
    assert args[0].value == plan.rnn.value.value
    assert args[1:] [:8] == (cudnn_rnn.CUDNN_RNN_ALGO_STANDARD, 2, cudnn_rnn.CUDNN_RNN_DOUBLE_BIAS,
                             cudnn_rnn.CUDNN_BIDIRECTIONAL, cudnn_rnn.CUDNN_LINEAR_INPUT,
                             cudnn.CUDNN_DATA_FLOAT, cudnn.CUDNN_DATA_FLOAT, cudnn.CUDNN_FMA_MATH)
    assert args[9:13] == (5, 4, 4, 2) and args[14] == cudnn_rnn.CUDNN_RNN_PADDED_IO_DISABLED
    # x and y: time-major packed, T = 4 steps, batch 3, the sequence lengths longest first
    data = {a[0].value: a for a in fake.called("cudnnSetRNNDataDescriptor")}
    for desc, vector in ((plan.x, 5), (plan.y, 8)):
        a = data[desc.value.value]
        assert a[1:6] == (cudnn.CUDNN_DATA_FLOAT, cudnn_rnn.CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, 4, 3, vector)
        assert list(a[6]) == [4, 3, 1]
    assert plan.lengths.copy_to_host().tolist() == [4, 3, 1]
    # TF32 allowed: a new plan whose RNN descriptor has cuDNN's default math (TF32 permitted)
    kn.allow_tf32(True)
    again = cudnn_rnn.plan(w, x, h0, **{k: p[k] for k in ("mode", "hidden", "layers", "dirs", "skip", "batch_sizes", "dropout")})
    assert again is not plan and fake.called("cudnnSetRNNDescriptor_v8")[-1][8] == cudnn.CUDNN_DEFAULT_MATH


@needs_library("that the real cuDNN accepts the RNN state and RNN descriptors")
def test_real_cudnn_accepts_the_3d_state_descriptor_and_fma_rnn_descriptors():
    """The real library (no GPU needed) takes the descriptors the fakes check."""
    with cudnn_rnn.state_descriptor(2, 2, 3, 4, np.float32) as d:
        dt, nb = ctypes.c_int(), ctypes.c_int()
        dims, strides = (ctypes.c_int * 8)(), (ctypes.c_int * 8)()
        cudnn.check(cudnn.lib().cudnnGetTensorNdDescriptor(d, 8, ctypes.byref(dt), ctypes.byref(nb), dims, strides),
                    "cudnnGetTensorNdDescriptor")
        assert (nb.value, list(dims)[:3], list(strides)[:3]) == (3, [4, 3, 4], [12, 4, 1])
    for dtype in (np.float32, np.float64):
        with cudnn.Descriptor("Dropout") as drop, \
                cudnn_rnn.rnn_descriptor(2, 3, 4, 2, 2, False, dtype, drop) as rd:
            assert rd.value.value
    with cudnn.convolution_descriptor((1, 1), (1, 1), (1, 1), 0, np.float32) as cd:
        math = ctypes.c_int(-1)
        cudnn.check(cudnn.lib().cudnnGetConvolutionMathType(cd, ctypes.byref(math)), "cudnnGetConvolutionMathType")
        assert math.value == cudnn.CUDNN_FMA_MATH


def _range(arr):
    start = cudnn.device_pointer(arr)
    return start, start + arr.size * np.dtype(arr.dtype).itemsize


def test_rnn_reserve_space_is_its_own_aligned_allocation(fake_cudnn):
    from numba import cuda
    from knetc.kernels.rnn_cuda import rnn_backward_cuda, rnn_forward_cuda
    fake, _ = fake_cudnn
    (w, x, h0, c0), p, total = _rnn_problem(fake)
    out = cuda.device_array((total,), np.float32)
    rnn_forward_cuda(w, x, h0, c0, out, **p)
    (fwd,) = fake.called("cudnnRNNForward")
    reserve_size, reserve_at = fwd[18], fwd[19]
    assert reserve_size == FakeCudnn.reserve_bytes
    assert reserve_at % cudnn_rnn.RESERVE_ALIGNMENT == 0
    lo, hi = _range(out)
    assert not (lo <= reserve_at < hi) and not (lo < reserve_at + reserve_size <= hi)  # not inside out
    assert fwd[8] == fwd[11]  # hDesc and cDesc: the one 3-D state descriptor
    assert cudnn_rnn.saved_count() == 1
    # the backward calls get that reserve space (no second forward)
    grads = cuda.device_array((w.size + x.size + 2 * h0.size,), np.float32)
    dpacked = cuda.to_device(np.ones(total, np.float32))
    rnn_backward_cuda(w, x, h0, c0, out, dpacked, grads, **p)
    (bd,), (bw,) = fake.called("cudnnRNNBackwardData_v8"), fake.called("cudnnRNNBackwardWeights_v8")
    assert (bd[20], bd[21]) == (reserve_size, reserve_at) and (bw[14], bw[15]) == (reserve_size, reserve_at)
    assert len(fake.called("cudnnRNNForward")) == 1
    # a packed vector the forward did not write here (e.g. back from the host): forward again
    copy = cuda.to_device(out.copy_to_host())
    rnn_backward_cuda(w, x, h0, c0, copy, dpacked, grads, **p)
    assert len(fake.called("cudnnRNNForward")) == 2
    again = fake.called("cudnnRNNForward")[-1][19]
    assert again % cudnn_rnn.RESERVE_ALIGNMENT == 0
    assert fake.called("cudnnRNNBackwardData_v8")[-1][21] == again
    # the reserve space lives as long as the packed vector it belongs to
    saved = cudnn_rnn.saved_count()
    del out
    gc.collect()
    assert cudnn_rnn.saved_count() == saved - 1


def test_reserve_space_alignment_helper():
    for n in (1, 7, 12345):
        r = cudnn_rnn.reserve_space(n)
        assert r.size == n and r.dtype == np.uint8
        assert cudnn.device_pointer(r) % 256 == 0


# ------------------------------------------------------------------ handles die with their context

class Recorder:
    def __init__(self):
        self.created, self.destroyed, self._n = [], [], 0

    def create(self):
        self._n += 1
        h = ctypes.c_void_p(0x100 + self._n)
        self.created.append(h.value)
        return h

    def destroy(self, h):
        self.destroyed.append(h.value)
        return 0


def test_handles_are_per_context_and_thread_and_die_with_the_context():
    rec, released = Recorder(), []
    cache = handles.HandleCache("test", rec.create, rec.destroy, on_release=[lambda: released.append(1)])
    ctx, other = FakeContext(), FakeContext()
    h = cache.get(ctx)
    assert cache.get(ctx) is h and len(rec.created) == 1  # cached per (context, thread)
    h2 = cache.get(other)
    assert h2.value != h.value and cache.live() == 2
    ctx.reset()  # Numba calls this before it destroys the context (numba.cuda.close())
    assert rec.destroyed == [h.value] and ctx.resets == 1 and released == [1]
    assert ctx.pushes == 1 and ctx.pops == 1  # destroyed with its context current
    assert cache.live() == 1
    h3 = cache.get(ctx)  # a new handle after the reset
    assert h3.value not in (h.value, h2.value)
    cache.release_all()
    assert sorted(rec.destroyed) == sorted([h.value, h2.value, h3.value]) and cache.live() == 0


def test_two_libraries_on_one_context_both_release_and_reset_runs_once():
    a, b = Recorder(), Recorder()
    ca, cb = handles.HandleCache("a", a.create, a.destroy), handles.HandleCache("b", b.create, b.destroy)
    ctx = FakeContext()
    ca.get(ctx), cb.get(ctx)
    ctx.reset()
    assert len(a.destroyed) == len(b.destroyed) == 1 and ctx.resets == 1
    ca.get(ctx), cb.get(ctx)
    ctx.reset()  # the wrappers stay in place for the next reset
    assert len(a.destroyed) == len(b.destroyed) == 2 and ctx.resets == 2


def test_a_threads_handle_dies_with_the_thread():
    rec = Recorder()
    cache = handles.HandleCache("test", rec.create, rec.destroy)
    ctx = FakeContext()
    main = cache.get(ctx)
    seen = []
    t = threading.Thread(target=lambda: seen.append(cache.get(ctx).value))
    t.start()
    t.join()
    gc.collect()
    assert seen and seen[0] != main.value
    assert rec.destroyed == [seen[0]] and cache.live() == 1


def test_handles_are_destroyed_at_exit():
    script = ("import ctypes\n"
              "from knetc.runtime import handles\n"
              "class C:\n"
              "    def reset(self): pass\n"
              "    def push(self): pass\n"
              "    def pop(self): pass\n"
              "ctx = C()\n"
              "cache = handles.HandleCache('t', lambda: ctypes.c_void_p(7), lambda h: print('destroyed', h.value))\n"
              "cache.get(ctx)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["destroyed", "7"]


def test_cudnn_handle_goes_with_its_context(fake_cudnn):
    fake, ctx = fake_cudnn
    h = cudnn.handle()
    assert cudnn.handle().value == h.value and len(fake.called("cudnnCreate")) == 1
    cudnn._plans["x"] = "a plan"
    ctx.reset()
    assert [a[0].value for a in fake.called("cudnnDestroy")] == [h.value]
    assert cudnn._plans == {}  # plans made with that context are gone too
    assert cudnn.handle().value != h.value


class FakeCublas(FakeLibrary):
    def __init__(self):
        super().__init__("cublas")

    def on_cublasCreate_v2(self, out):
        out._obj.value = self.new_pointer()
        return 0


def test_cublas_math_mode_follows_the_switch_and_is_set_once(monkeypatch):
    from numba import cuda
    fake, ctx = FakeCublas(), FakeContext()
    monkeypatch.setattr(cublas, "_lib", fake)
    monkeypatch.setattr(handles, "_numba_context", lambda: ctx)
    cache = handles.HandleCache("cuBLAS", cublas._create_handle, cublas._destroy_handle)
    monkeypatch.setattr(cublas, "_HANDLES", cache)
    previous = kn.allow_tf32()
    try:
        kn.allow_tf32(False)
        a, b = cuda.to_device(np.ones((2, 3), np.float32)), cuda.to_device(np.ones((3, 4), np.float32))
        c = cuda.device_array((2, 4), np.float32)
        cublas.gemm(a, b, c)
        cublas.gemm(a, b, c)
        assert [args[1] for args in fake.called("cublasSetMathMode")] == [cublas.CUBLAS_DEFAULT_MATH]
        assert len(fake.called("cublasSetStream_v2")) == 1 and len(fake.called("cublasSgemm_v2")) == 2
        kn.allow_tf32(True)
        cublas.gemm(a, b, c)
        assert [args[1] for args in fake.called("cublasSetMathMode")] == [0, cublas.CUBLAS_TF32_TENSOR_OP_MATH]
        (h,) = [args[0]._obj.value for args in fake.called("cublasCreate_v2")]
        ctx.reset()
        assert [args[0].value for args in fake.called("cublasDestroy_v2")] == [h]
    finally:
        cache.release_all()
        kn.allow_tf32(previous)
