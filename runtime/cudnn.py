"""cuDNN through ctypes: the shared binding base (library, handle, errors, descriptors).

The library is ``libcudnn.so.9`` from the ``nvidia-cudnn-cu13`` wheel (or a CUDA install),
found by ``cuda.pathfinder``. It is optional: ``available()`` says whether cuDNN can run
here (the library loads, a real GPU is present, the simulator is off); callers fall back
to knetc's Numba kernels otherwise. Loading the library and creating descriptors works
without a GPU; anything needing a handle needs one.

Handles are kept per (Numba context, thread) and destroyed when the context is reset
(``numba.cuda.close()``), when their thread ends and at exit (knetc.runtime.handles);
``on_release`` lets other modules drop per-context caches with them. Math: convolutions and
RNNs use ``math_type(dtype)``: CUDNN_FMA_MATH (no TF32) unless ``knetc.allow_tf32(True)``.

Every function this module (or a user of ``lib()``) calls has its ctypes signature declared
in ``_SIGNATURES``; add new ones there (cudnn_ops and cudnn_rnn declare theirs through
``lib_with``). Errors raise ``CudnnError`` with cuDNN's own message.

Example::

    from knetc.runtime import cudnn
    if cudnn.available():
        h = cudnn.handle()
        xd = cudnn.tensor_descriptor((n, c, h, w), np.float32)
        cudnn.check(cudnn.lib().cudnnSetStream(h, 0), "cudnnSetStream")
"""
import ctypes
import threading

import numpy as np

from ..report import report
from .device import gpu_available, simulator_active
from .handles import HandleCache, tf32_allowed

__all__ = ["CudnnError", "available", "loadable", "lib", "version", "handle", "check",
           "error_string", "data_type", "math_type", "Descriptor", "tensor_descriptor",
           "filter_descriptor", "convolution_descriptor", "device_pointer", "scalar_pointer",
           "on_release", "release_handles"]

# cudnnDataType_t
CUDNN_DATA_FLOAT = 0
CUDNN_DATA_DOUBLE = 1
CUDNN_DATA_HALF = 2
# cudnnTensorFormat_t
CUDNN_TENSOR_NCHW = 0
# cudnnConvolutionMode_t: CUDNN_CONVOLUTION flips the filter (Knet's mode=0)
CUDNN_CONVOLUTION = 0
CUDNN_CROSS_CORRELATION = 1
# cudnnMathType_t (cudnn_graph.h)
CUDNN_DEFAULT_MATH = 0                     # lets cuDNN use TF32 for float32 on Ampere and later
CUDNN_TENSOR_OP_MATH = 1
CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION = 2
CUDNN_FMA_MATH = 3                         # FMA kernels only: float32 stays float32
CUDNN_STATUS_SUCCESS = 0

_DATA_TYPES = {np.dtype(np.float32): CUDNN_DATA_FLOAT, np.dtype(np.float64): CUDNN_DATA_DOUBLE,
               np.dtype(np.float16): CUDNN_DATA_HALF}

_p, _i, _sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_pp, _pi = ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int)


class _AlgoPerf(ctypes.Structure):
    """cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t (the three share one layout)."""
    _fields_ = [("algo", ctypes.c_int), ("status", ctypes.c_int), ("time", ctypes.c_float),
                ("memory", ctypes.c_size_t), ("determinism", ctypes.c_int),
                ("mathType", ctypes.c_int), ("reserved", ctypes.c_int * 3)]


AlgoPerf = _AlgoPerf
_PERF = ctypes.POINTER(_AlgoPerf)

# name -> (restype, argtypes). Status-returning functions return int (cudnnStatus_t).
_SIGNATURES = {
    "cudnnGetVersion": (_sz, []),
    "cudnnGetErrorString": (ctypes.c_char_p, [_i]),
    "cudnnCreate": (_i, [_pp]),
    "cudnnDestroy": (_i, [_p]),
    "cudnnSetStream": (_i, [_p, _p]),
    # tensor descriptors: desc, dtype, nbDims, dims[], strides[]
    "cudnnCreateTensorDescriptor": (_i, [_pp]),
    "cudnnDestroyTensorDescriptor": (_i, [_p]),
    "cudnnSetTensorNdDescriptor": (_i, [_p, _i, _i, _pi, _pi]),
    # desc, nbDimsRequested, *dataType, *nbDims, dims[], strides[]
    "cudnnGetTensorNdDescriptor": (_i, [_p, _i, _pi, _pi, _pi, _pi]),
    # filter descriptors: desc, dtype, format, nbDims, dims[]
    "cudnnCreateFilterDescriptor": (_i, [_pp]),
    "cudnnDestroyFilterDescriptor": (_i, [_p]),
    "cudnnSetFilterNdDescriptor": (_i, [_p, _i, _i, _i, _pi]),
    # convolution descriptors: desc, arrayLength, pad[], stride[], dilation[], mode, computeType
    "cudnnCreateConvolutionDescriptor": (_i, [_pp]),
    "cudnnDestroyConvolutionDescriptor": (_i, [_p]),
    "cudnnSetConvolutionNdDescriptor": (_i, [_p, _i, _pi, _pi, _pi, _i, _i]),
    "cudnnSetConvolutionGroupCount": (_i, [_p, _i]),
    "cudnnSetConvolutionMathType": (_i, [_p, _i]),
    "cudnnGetConvolutionMathType": (_i, [_p, _pi]),
    "cudnnGetConvolutionNdForwardOutputDim": (_i, [_p, _p, _p, _i, _pi]),
    # algorithm choice: handle, descriptors..., requested, *returned, perf[]
    "cudnnFindConvolutionForwardAlgorithm": (_i, [_p, _p, _p, _p, _p, _i, _pi, _PERF]),
    "cudnnGetConvolutionForwardAlgorithm_v7": (_i, [_p, _p, _p, _p, _p, _i, _pi, _PERF]),
    "cudnnFindConvolutionBackwardDataAlgorithm": (_i, [_p, _p, _p, _p, _p, _i, _pi, _PERF]),
    "cudnnGetConvolutionBackwardDataAlgorithm_v7": (_i, [_p, _p, _p, _p, _p, _i, _pi, _PERF]),
    "cudnnFindConvolutionBackwardFilterAlgorithm": (_i, [_p, _p, _p, _p, _p, _i, _pi, _PERF]),
    "cudnnGetConvolutionBackwardFilterAlgorithm_v7": (_i, [_p, _p, _p, _p, _p, _i, _pi, _PERF]),
    # workspace sizes: handle, in desc, in desc, conv desc, out desc, algo, *size
    "cudnnGetConvolutionForwardWorkspaceSize": (_i, [_p, _p, _p, _p, _p, _i, ctypes.POINTER(_sz)]),
    "cudnnGetConvolutionBackwardDataWorkspaceSize": (_i, [_p, _p, _p, _p, _p, _i, ctypes.POINTER(_sz)]),
    "cudnnGetConvolutionBackwardFilterWorkspaceSize": (_i, [_p, _p, _p, _p, _p, _i, ctypes.POINTER(_sz)]),
    # handle, *alpha, xDesc, x, wDesc, w, convDesc, algo, work, workSize, *beta, yDesc, y
    "cudnnConvolutionForward": (_i, [_p, _p, _p, _p, _p, _p, _p, _i, _p, _sz, _p, _p, _p]),
    # handle, *alpha, wDesc, w, dyDesc, dy, convDesc, algo, work, workSize, *beta, dxDesc, dx
    "cudnnConvolutionBackwardData": (_i, [_p, _p, _p, _p, _p, _p, _p, _i, _p, _sz, _p, _p, _p]),
    # handle, *alpha, xDesc, x, dyDesc, dy, convDesc, algo, work, workSize, *beta, dwDesc, dw
    "cudnnConvolutionBackwardFilter": (_i, [_p, _p, _p, _p, _p, _p, _p, _i, _p, _sz, _p, _p, _p]),
}


class CudnnError(RuntimeError):
    """A cuDNN call returned a status other than CUDNN_STATUS_SUCCESS."""

    def __init__(self, call_name, status, message):
        super().__init__("%s failed: %s (cuDNN status %d)" % (call_name, message, status))
        self.call_name, self.status = call_name, status


_lib = None
_lock = threading.RLock()


def lib():
    """The loaded libcudnn ctypes library with every known signature declared (loads once).

    Raises OSError/ImportError when cuDNN is not installed. Example: ``lib().cudnnGetVersion()``
    """
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            from cuda.pathfinder import load_nvidia_dynamic_lib
            # pathfinder has dlopen()ed it; wrap its handle (never close it: it is shared)
            loaded = load_nvidia_dynamic_lib("cudnn")
            handle_ = getattr(loaded, "_handle_uint", None)
            cdll = (ctypes.CDLL(loaded.abs_path, handle=handle_) if handle_
                    else ctypes.CDLL(loaded.abs_path))
            _declare(cdll, _SIGNATURES)
            _lib = cdll
    return _lib


def _declare(library, signatures):
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(library, name)
        fn.restype, fn.argtypes = restype, argtypes


_declared = set()  # ids of the signature tables declared by lib_with


def lib_with(signatures):
    """lib() with `signatures` ({name: (restype, argtypes)}) declared too, once per table:
    how cudnn_ops and cudnn_rnn bind their functions. Example: ``lib_with(SIGNATURES)``"""
    library = lib()
    if id(signatures) not in _declared:
        with _lock:
            _declare(library, signatures)
            _declared.add(id(signatures))
    return library


def loadable():
    """True if the cuDNN library loads (no GPU needed). Never raises. Example: ``loadable()``"""
    try:
        lib()
        return True
    except Exception:  # not installed, wrong platform, missing symbol, ...
        return False


def version():
    """cuDNN's version number, e.g. 92801 for 9.28.1 (no GPU needed). Example: ``version()``"""
    return int(lib().cudnnGetVersion())


_available = None


def available():
    """True when cuDNN can run: the library loads, a real GPU is present, not the simulator.

    Never raises; the answer is cached. Example: ``if available(): conv_with_cudnn()``
    """
    global _available
    if _available is None:
        _available = bool(not simulator_active() and gpu_available() and loadable())
    return _available


def error_string(status):
    """cuDNN's name for a status code. Example: ``error_string(0) == 'CUDNN_STATUS_SUCCESS'``"""
    text = lib().cudnnGetErrorString(int(status))
    return text.decode() if text else "unknown cuDNN status"


def check(status, call_name):
    """Raise CudnnError naming ``call_name`` and cuDNN's message unless ``status`` is success.

    Example: ``check(lib().cudnnCreate(ctypes.byref(h)), "cudnnCreate")``
    """
    if status != CUDNN_STATUS_SUCCESS:
        raise CudnnError(call_name, int(status), error_string(status))


def _create_handle():
    h = ctypes.c_void_p()
    check(lib().cudnnCreate(ctypes.byref(h)), "cudnnCreate")
    return h


def _destroy_handle(h):
    return lib().cudnnDestroy(h)


# one handle per (Numba context, thread), destroyed when the context is reset (numba.cuda.close()),
# when its thread ends and at exit; plan caches holding per-context objects are cleared with them
_HANDLES = HandleCache("cuDNN", _create_handle, _destroy_handle,
                       on_release=[lambda: _plans.clear()])


def on_release(callback):
    """Call ``callback()`` whenever a context's cuDNN handles are released (its reset, exit):
    how modules drop caches that hold descriptors or device arrays of that context."""
    _HANDLES.on_release.append(callback)


def release_handles(context=None):
    """Destroy the cuDNN handles of ``context`` (default: Numba's current one) now; the next
    handle() creates new ones. A context's reset does this by itself."""
    _HANDLES.release(context)


def _stream_handle(stream):
    """The CUstream address of a Numba stream (0 / None: the legacy default stream)."""
    if stream is None or isinstance(stream, int):
        return stream or 0
    h = getattr(stream, "handle", stream)
    return int(getattr(h, "value", h) or 0)  # ctypes c_void_p or a cuda-python CUstream


def handle(stream=0):
    """This thread's cuDNN handle for Numba's current CUDA context, bound to ``stream``.

    knetc issues all work on one stream (Numba's default stream, 0), so the default
    binding keeps cuDNN calls ordered with the Numba kernels and cuBLAS GEMMs around them.
    cudnnSetStream is called only when the handle's stream changes. The handle is destroyed
    with its context (see knetc.runtime.handles). Needs a GPU.
    Example: ``h = handle(); check(lib().cudnnConvolutionForward(h, ...), ...)``
    """
    entry = _HANDLES.entry()
    s = _stream_handle(stream)
    if entry.state.get("stream") != s:
        check(lib().cudnnSetStream(entry.value, s), "cudnnSetStream")
        entry.state["stream"] = s
    return entry.value


def data_type(dtype):
    """cudnnDataType_t for a numpy dtype; ValueError for an unsupported one.

    Example: ``data_type(np.float32) == CUDNN_DATA_FLOAT``
    """
    try:
        return _DATA_TYPES[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ValueError("cuDNN supports float16, float32 and float64 arrays, not %s" % (dtype,)) from None


def math_type(dtype):
    """The cudnnMathType_t knetc asks for: CUDNN_FMA_MATH (no TF32: float32 results agree
    with the Numba kernels to float32 rounding) unless ``knetc.allow_tf32(True)``, which gives
    float32 CUDNN_DEFAULT_MATH (cuDNN may use TF32 tensor cores). float16 data computes in
    float32 on tensor cores (CUDNN_TENSOR_OP_MATH: no precision lost); float64 always FMA.
    Example: ``math_type(np.float32) == CUDNN_FMA_MATH``
    """
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return CUDNN_TENSOR_OP_MATH
    if dtype == np.float32 and tf32_allowed():
        return CUDNN_DEFAULT_MATH
    return CUDNN_FMA_MATH


def device_pointer(arr):
    """The device address of a Numba device array (or anything with __cuda_array_interface__);
    under the CUDA simulator, the address of the host buffer that stands in for device memory
    (what tests with a fake cuDNN see)."""
    iface = getattr(arr, "__cuda_array_interface__", None)
    if iface is None and simulator_active():
        iface = arr.__array_interface__
    if iface is None:
        raise TypeError("device_pointer: %r is not a device array" % (type(arr).__name__,))
    return iface["data"][0]


def scalar_pointer(value, dtype):
    """A host scalar for alpha/beta arguments: float for float16/float32 data, double for float64.

    Keep the returned object alive during the call. Example: ``a = scalar_pointer(1.0, np.float32)``
    """
    ctype = ctypes.c_double if np.dtype(dtype) == np.float64 else ctypes.c_float
    return ctypes.pointer(ctype(value))


def _ints(values):
    values = [int(v) for v in values]
    return (ctypes.c_int * len(values))(*values)


class Descriptor:
    """Owns one cuDNN descriptor; destroyed on ``close()``, ``with`` exit or garbage collection.

    ``value`` is the raw cudnn*Descriptor_t to pass to cuDNN calls.
    Example: ``with tensor_descriptor((2, 3, 4, 5), np.float32) as d: use(d.value)``
    """

    def __init__(self, kind):
        self.kind = kind  # "Tensor", "Filter", "Convolution", ... (the cudnnCreate*Descriptor infix)
        self.value = ctypes.c_void_p()
        self._destroy = getattr(lib(), "cudnnDestroy%sDescriptor" % kind)
        check(getattr(lib(), "cudnnCreate%sDescriptor" % kind)(ctypes.byref(self.value)),
              "cudnnCreate%sDescriptor" % kind)

    def close(self):
        """Destroy the descriptor (idempotent)."""
        if self.value is not None and self.value.value:
            status = self._destroy(self.value)
            self.value = None
            check(status, "cudnnDestroy%sDescriptor" % self.kind)
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown or a failed destroy: nothing useful to do
            pass

    @property
    def _as_parameter_(self):  # lets a Descriptor be passed straight to a ctypes call
        return self.value


def _padded(shape):
    """cuDNN Nd descriptors need at least 4 dimensions: pad trailing 1s (keeps the layout)."""
    shape = tuple(int(s) for s in shape)
    return shape + (1,) * (4 - len(shape)) if len(shape) < 4 else shape


def _c_strides(shape):
    strides, step = [], 1
    for s in reversed(shape):
        strides.append(step)
        step *= max(s, 1)
    return tuple(reversed(strides))


def tensor_descriptor(shape, dtype, strides=None, pad=True):
    """A tensor descriptor for an array of ``shape`` (N, C, H, W[, ...]), C-contiguous by default.

    strides are in elements. With ``pad`` (the default), shapes with fewer than 4 dims get
    trailing 1s, as cuDNN's legacy (convolution, pooling, batchnorm) API needs; ``pad=False``
    keeps the dims as given, e.g. the 3-D (layers*dirs, batch, hidden) state descriptors of
    the RNN v8 API. Example: ``xd = tensor_descriptor(x.shape, x.dtype)``
    """
    dims = _padded(shape) if pad else tuple(int(s) for s in shape)
    if strides is None:
        strides = _c_strides(dims)
    else:
        strides = tuple(int(s) for s in strides) + (1,) * (len(dims) - len(strides))
    desc = Descriptor("Tensor")
    check(lib().cudnnSetTensorNdDescriptor(desc.value, data_type(dtype), len(dims),
                                           _ints(dims), _ints(strides)),
          "cudnnSetTensorNdDescriptor")
    return desc


def filter_descriptor(shape, dtype):
    """A filter descriptor for weights of ``shape`` (K, C/group, KH, KW[, ...]) in NCHW layout.

    Example: ``wd = filter_descriptor(w.shape, w.dtype)``
    """
    dims = _padded(shape)
    desc = Descriptor("Filter")
    check(lib().cudnnSetFilterNdDescriptor(desc.value, data_type(dtype), CUDNN_TENSOR_NCHW,
                                           len(dims), _ints(dims)),
          "cudnnSetFilterNdDescriptor")
    return desc


def convolution_descriptor(padding, stride, dilation, mode, dtype, group=1, math=None):
    """A convolution descriptor: per-spatial-dim tuples, ``mode`` 0 convolution, 1 cross-correlation.

    The compute type is the data type (float16 data computes in float32). ``math`` defaults
    to ``math_type(dtype)``: FMA math, so float32 results match the Numba kernels (no TF32
    rounding) unless ``knetc.allow_tf32(True)``.
    Example: ``cd = convolution_descriptor((1, 1), (1, 1), (1, 1), 0, np.float32)``
    """
    if math is None:
        math = math_type(dtype)
    padding, stride, dilation = tuple(padding), tuple(stride), tuple(dilation)
    if not len(padding) == len(stride) == len(dilation) >= 1:
        raise ValueError("convolution_descriptor: padding, stride, dilation need one entry per "
                         "spatial dimension, got %s, %s, %s" % (padding, stride, dilation))
    if len(padding) == 1:  # a 1-d convolution as a 2-d one of height 1 (descriptors are >= 4-d)
        padding, stride, dilation = (0,) + padding, (1,) + stride, (1,) + dilation
    compute = data_type(np.float32 if np.dtype(dtype) == np.float16 else dtype)
    desc = Descriptor("Convolution")
    check(lib().cudnnSetConvolutionNdDescriptor(
        desc.value, len(padding), _ints(padding), _ints(stride), _ints(dilation),
        CUDNN_CONVOLUTION if int(mode) == 0 else CUDNN_CROSS_CORRELATION, compute),
        "cudnnSetConvolutionNdDescriptor")
    if group != 1:
        check(lib().cudnnSetConvolutionGroupCount(desc.value, int(group)),
              "cudnnSetConvolutionGroupCount")
    check(lib().cudnnSetConvolutionMathType(desc.value, int(math)), "cudnnSetConvolutionMathType")
    return desc


# ------------------------------------------------------------------ convolution

# direction -> (Find, Get_v7, workspace size, run) function names
_CONV_CALLS = {
    "forward": ("cudnnFindConvolutionForwardAlgorithm", "cudnnGetConvolutionForwardAlgorithm_v7",
                "cudnnGetConvolutionForwardWorkspaceSize", "cudnnConvolutionForward"),
    "backward_data": ("cudnnFindConvolutionBackwardDataAlgorithm",
                      "cudnnGetConvolutionBackwardDataAlgorithm_v7",
                      "cudnnGetConvolutionBackwardDataWorkspaceSize", "cudnnConvolutionBackwardData"),
    "backward_filter": ("cudnnFindConvolutionBackwardFilterAlgorithm",
                        "cudnnGetConvolutionBackwardFilterAlgorithm_v7",
                        "cudnnGetConvolutionBackwardFilterWorkspaceSize",
                        "cudnnConvolutionBackwardFilter"),
}
_ALGO_COUNT = 8           # more than any direction has algorithms
WORKSPACE_LIMIT = 1 << 30  # bytes; faster algorithms needing more are skipped
_plans = {}               # shape/params key -> (descriptors, algo, workspace bytes)


def _spatial(t, n):
    t = tuple(int(v) for v in t)
    return t if len(t) == n else (t[0],) * n


def _conv_plan(direction, w, x, y, padding, stride, dilation, mode, group):
    """Descriptors and algorithm for one convolution shape, chosen once and cached."""
    dtype = np.dtype(x.dtype)
    math = math_type(dtype)  # part of the key: allow_tf32() changes the plan
    key = (direction, tuple(w.shape), tuple(x.shape), tuple(y.shape), tuple(padding), tuple(stride),
           tuple(dilation), int(mode), int(group), dtype.str, math, handle().value)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    nsp = len(x.shape) - 2
    wd, xd, yd = filter_descriptor(w.shape, dtype), tensor_descriptor(x.shape, dtype), \
        tensor_descriptor(y.shape, dtype)
    cd = convolution_descriptor(_spatial(padding, nsp), _spatial(stride, nsp),
                                _spatial(dilation, nsp), mode, dtype, group, math)
    find, get, wsize, _ = _CONV_CALLS[direction]
    # descriptor order of the Find/Get calls: forward (x, w, conv, y); backward data
    # (w, dy, conv, dx); backward filter (x, dy, conv, dw)
    order = {"forward": (xd, wd, cd, yd), "backward_data": (wd, yd, cd, xd),
             "backward_filter": (xd, yd, cd, wd)}[direction]
    perf, count = (AlgoPerf * _ALGO_COUNT)(), ctypes.c_int(0)
    h, how = handle(), "find"
    # Find times the algorithms on the GPU (once per shape); Get_v7 is the heuristic fallback
    status = getattr(lib(), find)(h, *order, _ALGO_COUNT, ctypes.byref(count), perf)
    if status != CUDNN_STATUS_SUCCESS:
        how = "heuristic"
        check(getattr(lib(), get)(h, *order, _ALGO_COUNT, ctypes.byref(count), perf), get)
    choice = None
    for p in perf[:count.value]:
        if p.status == CUDNN_STATUS_SUCCESS and p.memory <= WORKSPACE_LIMIT:
            choice = p
            break
    if choice is None:
        raise CudnnError(find, -1, "no usable algorithm for %s" % (key[:4],))
    nbytes = ctypes.c_size_t(0)
    check(getattr(lib(), wsize)(h, *order, choice.algo, ctypes.byref(nbytes)), wsize)
    report("cudnn", "conv %s w%s x%s y%s: algo %d (%s, %.3f ms, workspace %d bytes)"
           % (direction, tuple(w.shape), tuple(x.shape), tuple(y.shape), choice.algo, how,
              choice.time, nbytes.value))
    plan = ((wd, xd, yd, cd), order, int(choice.algo), int(nbytes.value))
    _plans[key] = plan
    return plan


def convolution(direction, w, x, y, padding, stride, dilation, mode, alpha, group):
    """One cuDNN convolution pass on C-contiguous Numba device arrays (shapes as in conv4).

    direction "forward": y = alpha*conv(w, x); "backward_data": x = alpha*conv^T(w, y);
    "backward_filter": w = alpha*dconv/dw(x, y). mode 0 flips the filter (CUDNN_CONVOLUTION).
    The workspace comes from knetc's memory pool. Needs ``available()``.
    Example: ``convolution("forward", w, x, y, (0, 0), (1, 1), (1, 1), 0, 1.0, 1)``
    """
    from .pool import device_array
    _descs, order, algo, nbytes = _conv_plan(direction, w, x, y, padding, stride, dilation,
                                             mode, group)
    work = device_array((max(nbytes, 1),), np.uint8)
    dtype = np.dtype(x.dtype)
    a, b = scalar_pointer(alpha, dtype), scalar_pointer(0.0, dtype)
    run = _CONV_CALLS[direction][3]
    # argument pairs (descriptor, data): forward x, w -> y; backward data w, dy -> dx;
    # backward filter x, dy -> dw
    arrays = {"forward": (x, w, y), "backward_data": (w, y, x), "backward_filter": (x, y, w)}[direction]
    d_in1, d_in2, _cd, d_out = order
    check(getattr(lib(), run)(handle(), a, d_in1, device_pointer(arrays[0]), d_in2,
                              device_pointer(arrays[1]), _cd, algo, device_pointer(work), nbytes,
                              b, d_out, device_pointer(arrays[2])), run)
