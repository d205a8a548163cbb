"""knetc.runtime.nccl: the ctypes binding checked against the real libnccl, without a GPU.

Each declared signature is compared with NCCL's documented C prototype (written out below)
and, when the wheel ships it, with the prototype in its nccl.h; the symbols must exist in
the library; error codes must map to NCCL's strings. Without the nvidia-nccl-cu13 wheel
(`pip install -e .[nccl]`) these skip, saying what went unchecked. A real collective needs
a GPU: the last test runs a one-rank communicator with KNETC_TEST_GPU=1 on a GPU machine.
"""
import ctypes
import os
import re

import numpy as np
import pytest

from knetc.runtime import nccl

# From the NCCL API documentation (docs.nvidia.com/deeplearning/nccl, "API"), as in nccl.h.
DOCUMENTED = {
    "ncclGetVersion": "ncclResult_t ncclGetVersion(int* version)",
    "ncclGetErrorString": "const char* ncclGetErrorString(ncclResult_t result)",
    "ncclGetUniqueId": "ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId)",
    "ncclCommInitRank": "ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank)",
    "ncclCommDestroy": "ncclResult_t ncclCommDestroy(ncclComm_t comm)",
    "ncclAllReduce": "ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, "
                     "ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)",
    "ncclBroadcast": "ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, "
                     "ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream)",
    "ncclGroupStart": "ncclResult_t ncclGroupStart()",
    "ncclGroupEnd": "ncclResult_t ncclGroupEnd()",
}

# The ctypes type each C type must be declared as (enums are ints, handles and streams pointers).
C_TO_CTYPES = {
    "ncclResult_t": ctypes.c_int, "ncclDataType_t": ctypes.c_int, "ncclRedOp_t": ctypes.c_int,
    "int": ctypes.c_int, "size_t": ctypes.c_size_t, "void*": ctypes.c_void_p, "const void*": ctypes.c_void_p,
    "ncclComm_t": ctypes.c_void_p, "cudaStream_t": ctypes.c_void_p, "const char*": ctypes.c_char_p,
    "int*": ctypes.POINTER(ctypes.c_int), "ncclComm_t*": ctypes.POINTER(ctypes.c_void_p),
    "ncclUniqueId": nccl.UniqueId, "ncclUniqueId*": ctypes.POINTER(nccl.UniqueId),
}


def _library():
    try:
        return nccl.lib()
    except OSError as e:
        pytest.skip(f"libnccl not installed (pip install -e .[nccl]): the NCCL signatures, symbols and "
                    f"error strings went unchecked ({e})")


def _parse(prototype):
    """(return type, [argument types]) of a C prototype, spaces normalised."""
    prototype = " ".join(prototype.replace("*", "* ").split()).replace(" *", "*")
    match = re.fullmatch(r"(.+?)\s*(\w+)\((.*)\);?", prototype)
    restype, args = match.group(1).strip(), match.group(3).strip()
    types = [] if args in ("", "void") else [a.strip().rsplit(" ", 1)[0] for a in args.split(",")]
    return restype, types


def _header():
    """The text of nccl.h shipped next to the loaded library, or None."""
    _library()
    path = os.path.join(os.path.dirname(os.path.dirname(nccl._site_packages_library())), "include", "nccl.h")
    return open(path).read() if os.path.isfile(path) else None


def test_every_declared_function_is_in_the_library_and_documented():
    library = _library()
    assert set(nccl.SIGNATURES) == set(DOCUMENTED)
    for name in nccl.SIGNATURES:
        assert getattr(library, name) is not None  # AttributeError if the symbol is missing


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_declared_ctypes_match_the_documented_c_signature(name):
    _library()
    restype, argtypes = nccl.SIGNATURES[name]
    c_restype, c_args = _parse(DOCUMENTED[name])
    assert restype == C_TO_CTYPES[c_restype], (name, c_restype)
    assert len(argtypes) == len(c_args), (name, c_args)
    for declared, c_type in zip(argtypes, c_args):
        assert declared == C_TO_CTYPES[c_type], (name, c_type, declared)


def test_the_headers_prototypes_are_the_documented_ones():
    text = _header()
    if text is None:
        pytest.skip("the NCCL wheel has no include/nccl.h: checked against the documented prototypes only")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    for name, documented in DOCUMENTED.items():
        found = re.search(r"^\s*([\w ]+\*?\s*)\b" + name + r"\(([^)]*)\);", text, flags=re.M)
        assert found, f"{name} not declared in nccl.h"
        assert _parse(f"{found.group(1)} {name}({found.group(2)})") == _parse(documented), name


def test_the_unique_id_and_the_enums_match_the_header():
    text = _header()
    assert ctypes.sizeof(nccl.UniqueId) == nccl.UNIQUE_ID_BYTES == 128
    if text is None:
        pytest.skip("no nccl.h: the enum values were not compared")
    assert re.search(r"#define NCCL_UNIQUE_ID_BYTES 128\b", text)
    for c_name, value in [("ncclSum", nccl.SUM), ("ncclAvg", nccl.AVG), ("ncclMax", nccl.MAX), ("ncclMin", nccl.MIN),
                          ("ncclFloat32", nccl._DATA_TYPES[np.dtype(np.float32)]),
                          ("ncclFloat64", nccl._DATA_TYPES[np.dtype(np.float64)]),
                          ("ncclFloat16", nccl._DATA_TYPES[np.dtype(np.float16)]),
                          ("ncclInt64", nccl._DATA_TYPES[np.dtype(np.int64)]), ("ncclSuccess", nccl.SUCCESS)]:
        assert re.search(rf"\b{c_name}\s*=\s*{value}\b", text), c_name


def test_error_codes_map_to_nccls_strings():
    _library()
    assert nccl.error_string(0) == "no error"
    assert nccl.error_string(4).startswith("invalid argument")
    with pytest.raises(nccl.NcclError, match=r"ncclAllReduce failed: invalid argument.*ncclResult_t 4"):
        nccl.check(4, "ncclAllReduce")
    nccl.check(0, "ncclAllReduce")  # success: nothing raised


def test_version_and_unique_id_without_a_gpu():
    _library()
    v = nccl.version()
    assert v >= 22000, v  # NCCL 2.20 or later (ncclAvg since 2.10)
    uid = nccl.unique_id()
    assert isinstance(uid, bytes) and len(uid) == 128 and uid != nccl.unique_id()
    with pytest.raises(ValueError, match="128 bytes"):
        nccl.Communicator(1, b"short", 0)


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("KNETC_TEST_GPU") != "1", reason="needs a real GPU (KNETC_TEST_GPU=1): a one-rank "
                    "NCCL communicator's allreduce and broadcast went unchecked")
def test_one_rank_communicator_on_a_gpu():
    from numba import cuda
    _library()
    comm = nccl.Communicator(1, nccl.unique_id(), 0)
    try:
        a = cuda.to_device(np.arange(6, dtype=np.float32))
        b = cuda.to_device(np.arange(4, dtype=np.float64))
        comm.allreduce_([a, b], op=nccl.AVG)
        comm.broadcast_(a, root=0)
        cuda.synchronize()
        assert np.array_equal(a.copy_to_host(), np.arange(6)) and np.array_equal(b.copy_to_host(), np.arange(4))
    finally:
        comm.destroy()
