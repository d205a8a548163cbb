"""The cuDNN binding base (knetc.runtime.cudnn): what runs without a GPU (the library, its
version, error strings, descriptors, declared signatures); handle and convolutions on a GPU."""
import ctypes
import os
import re

import numpy as np
import pytest

import knetc as kn
from knetc.runtime import cudnn

needs_library = pytest.mark.skipif(not cudnn.loadable(), reason="libcudnn.so.9 not installed")
needs_gpu = pytest.mark.skipif(os.environ.get("KNETC_TEST_GPU") != "1", reason="needs a real GPU")


@needs_library
def test_library_loads_and_reports_a_version_9():
    assert 90000 <= cudnn.version() < 100000
    assert cudnn.lib() is cudnn.lib()  # loaded once


def test_not_available_under_the_simulator():
    # the test session runs Numba's CUDA simulator: cuDNN must not be chosen
    if os.environ.get("KNETC_TEST_GPU") != "1":
        assert cudnn.available() is False


@needs_library
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


@needs_library
@pytest.mark.parametrize("xs,ws,kw", [
    ((2, 3, 11, 9), (4, 3, 3, 2), dict(padding=(1, 2), stride=(2, 3), dilation=(2, 1), group=1)),
    ((1, 6, 8, 8), (6, 2, 3, 3), dict(padding=(0, 0), stride=(1, 1), dilation=(1, 1), group=3)),
    ((2, 2, 5, 6, 7), (3, 2, 2, 3, 2), dict(padding=(1, 0, 1), stride=(1, 2, 1), dilation=(1, 1, 2), group=1)),
])
def test_descriptors_give_conv4_output_shapes(xs, ws, kw):
    """cuDNN, reading our descriptors, computes the same output shape as conv4's rule."""
    expected = kn.conv4(np.zeros(ws, np.float32), np.zeros(xs, np.float32), **kw).shape
    assert _forward_dims(xs, ws, kw["padding"], kw["stride"], kw["dilation"], kw["group"]) == expected


@needs_library
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


@needs_library
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
