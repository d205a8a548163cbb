"""cuBLAS GEMM through ctypes, on C-contiguous (row-major) Numba device arrays.

The library comes from the ``nvidia-cublas`` wheel (or a CUDA toolkit) and is found by
``cuda.pathfinder``; it is optional: ``available()`` says whether it can be used, and
callers fall back to knetc.kernels.gemm otherwise.

cuBLAS is column-major. A row-major m x n buffer read as column-major is its n x m
transpose, so ``C = op(A) @ op(B)`` (row-major) is computed as the column-major
``C^T = op(B)^T @ op(A)^T``: swap the operands, swap m and n, keep each trans flag
with its own operand, and use each buffer's row length as its leading dimension.

Math mode: CUBLAS_DEFAULT_MATH (full float32, no TF32) unless ``knetc.allow_tf32(True)``
(then CUBLAS_TF32_TENSOR_OP_MATH), set on a handle only when it changes. Handles are kept per
(Numba context, thread) and destroyed with their context (see knetc.runtime.handles).

Example: ``if available(): gemm(a_dev, b_dev, c_dev, trans_b=True)  # c = a @ b.T``
"""
import ctypes

import numpy as np

from .device import gpu_available, simulator_active
from .handles import HandleCache, tf32_allowed

CUBLAS_STATUS_SUCCESS = 0
CUBLAS_OP_N = 0
CUBLAS_OP_T = 1
# cublasMath_t (cublas_api.h)
CUBLAS_DEFAULT_MATH = 0
CUBLAS_PEDANTIC_MATH = 2
CUBLAS_TF32_TENSOR_OP_MATH = 3

_lib = None          # the ctypes CDLL, once loaded


class CublasError(RuntimeError):
    """A cuBLAS call returned a status other than CUBLAS_STATUS_SUCCESS."""


def _load():
    """Load libcublas once and declare the argument types of the functions we call."""
    global _lib
    if _lib is not None:
        return _lib
    from cuda.pathfinder import load_nvidia_dynamic_lib
    # pathfinder has dlopen()ed it; wrap its handle (never close it: it is shared).
    loaded = load_nvidia_dynamic_lib("cublas")
    lib = ctypes.CDLL(loaded.abs_path, handle=loaded._handle_uint)
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.cublasCreate_v2.argtypes = [ctypes.POINTER(p)]
    lib.cublasDestroy_v2.argtypes = [p]
    lib.cublasSetStream_v2.argtypes = [p, p]
    lib.cublasSetMathMode.argtypes = [p, i]
    lib.cublasGetMathMode.argtypes = [p, ctypes.POINTER(i)]
    for name in ("cublasSgemm_v2", "cublasDgemm_v2"):
        # handle, transa, transb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc
        getattr(lib, name).argtypes = [p, i, i, i, i, i, p, p, i, p, i, p, p, i]
    for fn in (lib.cublasCreate_v2, lib.cublasDestroy_v2, lib.cublasSetStream_v2,
               lib.cublasSetMathMode, lib.cublasGetMathMode, lib.cublasSgemm_v2, lib.cublasDgemm_v2):
        fn.restype = i
    _lib = lib
    return lib


def _check(status, what):
    if status != CUBLAS_STATUS_SUCCESS:
        raise CublasError("%s failed with cuBLAS status %d" % (what, status))


_available = None


def available():
    """True if cuBLAS can run here: a real GPU, not the simulator, and the library loads.

    Never raises; the answer is cached. Example: ``use_cublas = available()``
    """
    global _available
    if _available is None:
        ok = False
        if not simulator_active() and gpu_available():
            try:
                _load()
                ok = True
            except Exception:  # not installed, wrong platform, missing symbol, ...
                ok = False
        _available = ok
    return _available


def _create_handle():
    h = ctypes.c_void_p()
    _check(_load().cublasCreate_v2(ctypes.byref(h)), "cublasCreate")
    return h


def _destroy_handle(h):
    return _load().cublasDestroy_v2(h)


_HANDLES = HandleCache("cuBLAS", _create_handle, _destroy_handle)


def math_mode():
    """The cublasMath_t for knetc's GEMMs: CUBLAS_DEFAULT_MATH (no TF32), or
    CUBLAS_TF32_TENSOR_OP_MATH after ``knetc.allow_tf32(True)``."""
    return CUBLAS_TF32_TENSOR_OP_MATH if tf32_allowed() else CUBLAS_DEFAULT_MATH


def _entry(stream=0):
    """This thread's handle entry for the current context, with its stream and math mode set
    (each only when it differs from what was last set on that handle)."""
    e = _HANDLES.entry()
    lib = _load()
    s = _stream_handle(stream)
    if e.state.get("stream") != s:
        _check(lib.cublasSetStream_v2(e.value, s), "cublasSetStream")
        e.state["stream"] = s
    mode = math_mode()
    if e.state.get("math") != mode:
        _check(lib.cublasSetMathMode(e.value, mode), "cublasSetMathMode")
        e.state["math"] = mode
    return e


def handle():
    """This thread's cuBLAS handle for the current CUDA context (created on first use), with
    knetc's math mode set. cuBLAS handles are bound to the context current at creation and
    are best not shared between threads, hence one per (context, thread); it is destroyed
    when the context is reset (numba.cuda.close()), when the thread ends, and at exit.
    Example: ``h = handle()``
    """
    return _entry().value


def release_handles(context=None):
    """Destroy the cuBLAS handles of ``context`` (default: Numba's current one) now."""
    _HANDLES.release(context)


def _stream_handle(stream):
    """The CUstream address of a Numba stream (0 / None: the legacy default stream)."""
    if stream is None or isinstance(stream, int):
        return stream or 0
    h = getattr(stream, "handle", stream)
    return int(getattr(h, "value", h) or 0)  # ctypes c_void_p or a cuda-python CUstream


def _device_pointer(arr):
    iface = getattr(arr, "__cuda_array_interface__", None)
    if iface is None and simulator_active():  # the simulator's host buffer (tests with a fake cuBLAS)
        iface = arr.__array_interface__
    return iface["data"][0]


def gemm(a, b, out, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, stream=0):
    """``out = alpha * op(a) @ op(b) + beta * out`` with cuBLAS; returns ``out``.

    a, b, out: C-contiguous 2-D Numba device arrays, all float32 or all float64.
    Asynchronous on ``stream``. Raises ValueError on bad shapes, dtypes or layouts.
    Example: ``gemm(a, b, c, trans_a=True)  # c = a.T @ b``
    """
    dtype = np.dtype(a.dtype)
    if dtype not in (np.float32, np.float64) or b.dtype != dtype or out.dtype != dtype:
        raise ValueError("cublas.gemm: a, b, out must all be float32 or all float64, got "
                         "%s, %s, %s" % (a.dtype, b.dtype, out.dtype))
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        raise ValueError("cublas.gemm: a, b, out must be 2-D")
    for name, x in (("a", a), ("b", b), ("out", out)):
        if not x.is_c_contiguous():
            raise ValueError("cublas.gemm: %s must be C-contiguous" % name)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb or tuple(out.shape) != (m, n):
        raise ValueError("cublas.gemm: op(a) %dx%d @ op(b) %dx%d does not fit out %s"
                         % (m, k, kb, n, tuple(out.shape)))
    if m == 0 or n == 0:
        return out  # k == 0 is fine: cuBLAS then computes out = beta * out, as BLAS does

    lib = _load()
    h = _entry(stream).value
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    fn = lib.cublasSgemm_v2 if dtype == np.float32 else lib.cublasDgemm_v2
    al, be = scalar(alpha), scalar(beta)  # host scalars: the default pointer mode
    # Column-major C^T (n x m, ld n) = op(B)^T (n x k) @ op(A)^T (k x m); see module doc.
    # A row-major buffer's leading dimension is its row length, shape[1] (>= 1 for cuBLAS).
    status = fn(h,
                CUBLAS_OP_T if trans_b else CUBLAS_OP_N,
                CUBLAS_OP_T if trans_a else CUBLAS_OP_N,
                n, m, k,
                ctypes.byref(al),
                _device_pointer(b), max(1, b.shape[1]),
                _device_pointer(a), max(1, a.shape[1]),
                ctypes.byref(be),
                _device_pointer(out), max(1, n))
    _check(status, "cublas%sgemm" % ("S" if dtype == np.float32 else "D"))
    return out
