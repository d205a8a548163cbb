"""NCCL through ctypes: allreduce and broadcast of device arrays across ranks, one GPU each.

The library is ``libnccl.so.2`` from the ``nvidia-nccl-cu13`` wheel (``pip install -e
.[nccl]``), found by ``cuda.pathfinder`` (which knows "nccl"), else under site-packages'
``nvidia/nccl/lib``. It is loaded on first use: ``import knetc`` never loads it. Loading,
the version and the error strings work without a GPU (tests/test_nccl.py checks the
signatures below against the library and its nccl.h there); a communicator needs one GPU
per rank.

The ranks agree on a communicator through a unique id that rank 0 makes and sends to the
others (knetc.train.parallel sends it with MPI):

    uid = nccl.unique_id() if rank == 0 else None       # 128 bytes
    comm = nccl.Communicator(size, mpi_comm.bcast(uid), rank)
    comm.allreduce_([g1, g2], op=nccl.AVG)               # in place, one grouped launch
    comm.broadcast_(w, root=0)
    comm.destroy()

Collectives are enqueued on knetc's stream (Numba's default stream, 0, the one the
generated kernels, cuBLAS and cuDNN use), so they are ordered after the backward pass
that wrote the gradients and before the update kernels that read them.
"""
import ctypes
import glob
import os
import sys
import threading

import numpy as np

__all__ = ["NcclError", "lib", "loadable", "version", "error_string", "check", "unique_id",
           "Communicator", "SUM", "AVG", "MAX", "MIN", "UNIQUE_ID_BYTES"]

UNIQUE_ID_BYTES = 128  # NCCL_UNIQUE_ID_BYTES
SUCCESS = 0            # ncclSuccess
# ncclRedOp_t
SUM, PROD, MAX, MIN, AVG = 0, 1, 2, 3, 4
# ncclDataType_t
_DATA_TYPES = {np.dtype(np.int8): 0, np.dtype(np.uint8): 1, np.dtype(np.int32): 2, np.dtype(np.uint32): 3,
               np.dtype(np.int64): 4, np.dtype(np.uint64): 5, np.dtype(np.float16): 6,
               np.dtype(np.float32): 7, np.dtype(np.float64): 8}


class UniqueId(ctypes.Structure):
    """ncclUniqueId: passed by value to ncclCommInitRank."""
    _fields_ = [("internal", ctypes.c_char * UNIQUE_ID_BYTES)]


_p, _i, _sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t

# name -> (restype, argtypes), as declared in nccl.h. ncclResult_t, ncclDataType_t and
# ncclRedOp_t are C enums (int); ncclComm_t and cudaStream_t are pointers.
SIGNATURES = {
    "ncclGetVersion": (_i, [ctypes.POINTER(_i)]),
    "ncclGetErrorString": (ctypes.c_char_p, [_i]),
    "ncclGetUniqueId": (_i, [ctypes.POINTER(UniqueId)]),
    "ncclCommInitRank": (_i, [ctypes.POINTER(_p), _i, UniqueId, _i]),
    "ncclCommDestroy": (_i, [_p]),
    "ncclAllReduce": (_i, [_p, _p, _sz, _i, _i, _p, _p]),
    "ncclBroadcast": (_i, [_p, _p, _sz, _i, _i, _p, _p]),
    "ncclGroupStart": (_i, []),
    "ncclGroupEnd": (_i, []),
}


class NcclError(RuntimeError):
    """A failed NCCL call, with NCCL's own message."""


_lib = None
_lock = threading.Lock()


def _site_packages_library():
    """libnccl.so.2 of an nvidia-nccl wheel on sys.path (when pathfinder does not know nccl)."""
    for folder in sys.path:
        found = sorted(glob.glob(os.path.join(folder, "nvidia", "nccl", "lib", "libnccl.so*")))
        if found:
            return found[0]
    raise OSError("libnccl.so.2 not found: install it with `pip install -e .[nccl]` (nvidia-nccl-cu13)")


def lib():
    """The loaded libnccl with every signature in SIGNATURES declared (loads once).
    Raises OSError when NCCL is not installed. Example: ``lib().ncclGetVersion(ctypes.byref(v))``"""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            try:
                from cuda.pathfinder import load_nvidia_dynamic_lib
                loaded = load_nvidia_dynamic_lib("nccl")
                handle = getattr(loaded, "_handle_uint", None)  # pathfinder dlopen()ed it: share that
                cdll = ctypes.CDLL(loaded.abs_path, handle=handle) if handle else ctypes.CDLL(loaded.abs_path)
            except Exception:  # an older pathfinder, or NCCL outside its search path
                cdll = ctypes.CDLL(_site_packages_library())
            for name, (restype, argtypes) in SIGNATURES.items():
                fn = getattr(cdll, name)
                fn.restype, fn.argtypes = restype, argtypes
            _lib = cdll
    return _lib


def loadable():
    """Can libnccl be loaded here (no GPU needed)?"""
    try:
        lib()
        return True
    except OSError:
        return False


def error_string(status):
    """NCCL's message for a ncclResult_t, e.g. error_string(4) -> 'invalid argument ...'."""
    return lib().ncclGetErrorString(int(status)).decode(errors="replace")


def check(status, what):
    if status != SUCCESS:
        raise NcclError(f"{what} failed: {error_string(status)} (ncclResult_t {status})")


def version():
    """NCCL's version as an integer, e.g. 23203 for 2.32.3."""
    v = ctypes.c_int()
    check(lib().ncclGetVersion(ctypes.byref(v)), "ncclGetVersion")
    return v.value


def unique_id():
    """A new ncclUniqueId as bytes (made on one rank, sent to the others)."""
    uid = UniqueId()
    check(lib().ncclGetUniqueId(ctypes.byref(uid)), "ncclGetUniqueId")
    return ctypes.string_at(ctypes.addressof(uid), UNIQUE_ID_BYTES)


def _pointer(a):
    """The device address of a contiguous CUDA array (anything with __cuda_array_interface__,
    or a KnetArray, through its Numba array)."""
    if not hasattr(a, "__cuda_array_interface__"):
        a = a.data
    interface = a.__cuda_array_interface__
    if interface.get("strides") is not None and not getattr(a, "is_c_contiguous", lambda: True)():
        raise ValueError("nccl: the array is not contiguous")
    return interface["data"][0]


def _dtype_of(a):
    dtype = np.dtype(a.dtype)
    if dtype not in _DATA_TYPES:
        raise TypeError(f"nccl: no NCCL data type for {dtype}")
    return _DATA_TYPES[dtype]


def _stream(stream):
    """The CUstream address of a Numba stream (0 / None: the legacy default stream)."""
    if stream is None or isinstance(stream, int):
        return stream or 0
    h = getattr(stream, "handle", stream)
    return int(getattr(h, "value", h) or 0)


class Communicator:
    """An NCCL communicator of `nranks` ranks, this one being `rank` (one GPU each: the
    current CUDA device). Needs a GPU."""

    def __init__(self, nranks, uid, rank):
        if len(uid) != UNIQUE_ID_BYTES:
            raise ValueError(f"nccl: a unique id has {UNIQUE_ID_BYTES} bytes, got {len(uid)}")
        self.nranks, self.rank = int(nranks), int(rank)
        self.handle = ctypes.c_void_p()
        check(lib().ncclCommInitRank(ctypes.byref(self.handle), self.nranks, UniqueId(uid), self.rank),
              "ncclCommInitRank")

    def allreduce_(self, arrays, op=SUM, stream=0):
        """Reduce each device array in place across the ranks (AVG: the mean), grouped into
        one NCCL launch. Contiguous arrays only. Returns arrays."""
        library = lib()
        check(library.ncclGroupStart(), "ncclGroupStart")
        try:
            for a in arrays:
                ptr = _pointer(a)
                check(library.ncclAllReduce(ptr, ptr, int(a.size), _dtype_of(a), op, self.handle, _stream(stream)),
                      "ncclAllReduce")
        finally:
            check(library.ncclGroupEnd(), "ncclGroupEnd")
        return arrays

    def broadcast_(self, a, root=0, stream=0):
        """Overwrite the device array `a` with root's, in place. Returns a."""
        ptr = _pointer(a)
        check(lib().ncclBroadcast(ptr, ptr, int(a.size), _dtype_of(a), int(root), self.handle, _stream(stream)),
              "ncclBroadcast")
        return a

    def destroy(self):
        if self.handle:
            check(lib().ncclCommDestroy(self.handle), "ncclCommDestroy")
            self.handle = ctypes.c_void_p()
