"""cuDNN's RNN v8 API on Numba device arrays, for knetc.kernels.rnn_cuda.

cudnnSetRNNDescriptor_v8, RNN data descriptors (time-major packed: knetc's x with
batch_sizes), cudnnRNNForward, cudnnRNNBackwardData_v8 and cudnnRNNBackwardWeights_v8
(the v6/v7 calls are gone in cuDNN 9). knetc's cell modes are cuDNN's cudnnRNNMode_t values
(0 relu, 1 tanh, 2 lstm, 3 gru) and its weight vector is laid out as cuDNN's weight space
(per pseudo-layer: input matrices, recurrent matrices, input biases, recurrent biases, gates
in cuDNN's order, see knetc.runtime.rnn_layout), so the same Param serves both paths.
`plan()` chooses: it checks that layout against cudnnGetRNNWeightParams once per
configuration; when it does not hold (or with dropout, which knetc draws itself, or
without a GPU), it returns None and the routines in knetc.kernels.rnn_cuda use their
Numba kernels instead.

Descriptors, as the v8 API documents them: x and y are time-major packed RNN data
descriptors (maxSeqLength T, batchSize B, one sequence length per batch entry, sorted
longest first as knetc's batch_sizes imply); h and c share one fully packed 3-D tensor
descriptor (layers * dirs, B, hidden); the RNN descriptor has double biases, no
projection (projSize = hiddenSize), padded IO disabled, and ``cudnn.math_type(dtype)``
as its math type (FMA: no TF32 unless ``knetc.allow_tf32(True)``).

The reserve space. cudnnRNNForward (training) fills a reserve space that the two backward
calls read. It is an allocation of its own (``reserve_space``: 256-byte aligned, like
cudaMalloc's), not part of knetc's packed forward vector `out`. It travels from the forward
to the backward call beside `out`: ``forward`` records it under the memory that holds
`out` (``saved_reserve`` looks it up by that memory and address), and it is freed when that
memory is (the packed vector is what the backward op receives, so the reserve lives exactly
as long as the saved forward result). A backward call whose packed vector was not written
by ``forward`` here (copied, or uploaded from the host) runs the forward again for a fresh
reserve space: slower, never wrong.

Loading the library and declaring signatures needs no GPU; everything with a handle does.

Example::

    p = cudnn_rnn.plan(w, x, h0, mode, hidden, layers, dirs, skip, batch_sizes, dropout)
    if p is not None:
        cudnn_rnn.forward(p, w, x, h0, c0, out, 0, hy_at, cy_at, lstm)
"""
import ctypes
import threading
import weakref

import numpy as np

from ..report import report
from . import cudnn, rnn_layout
from .cudnn import available

_p, _i, _sz, _u32, _u64, _f = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint32,
                               ctypes.c_ulonglong, ctypes.c_float)
_pp, _pi, _psz = ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_size_t)

# enums (cudnn_adv.h)
CUDNN_RNN_ALGO_STANDARD = 0
CUDNN_RNN_DOUBLE_BIAS = 2
CUDNN_UNIDIRECTIONAL, CUDNN_BIDIRECTIONAL = 0, 1
CUDNN_LINEAR_INPUT, CUDNN_SKIP_INPUT = 0, 1
CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED = 1
CUDNN_FWD_MODE_INFERENCE, CUDNN_FWD_MODE_TRAINING = 0, 1
CUDNN_WGRAD_MODE_ADD = 0
CUDNN_RNN_PADDED_IO_DISABLED = 0

# name -> (restype, argtypes); every status-returning function returns int (cudnnStatus_t)
SIGNATURES = {
    "cudnnCreateRNNDescriptor": (_i, [_pp]),
    "cudnnDestroyRNNDescriptor": (_i, [_p]),
    # desc, algo, cellMode, biasMode, dirMode, inputMode, dataType, mathPrec, mathType,
    # inputSize, hiddenSize, projSize, numLayers, dropoutDesc, auxFlags
    "cudnnSetRNNDescriptor_v8": (_i, [_p, _i, _i, _i, _i, _i, _i, _i, _i, ctypes.c_int32, ctypes.c_int32,
                                      ctypes.c_int32, ctypes.c_int32, _p, _u32]),
    "cudnnCreateRNNDataDescriptor": (_i, [_pp]),
    "cudnnDestroyRNNDataDescriptor": (_i, [_p]),
    # desc, dataType, layout, maxSeqLength, batchSize, vectorSize, seqLengthArray[], paddingFill
    "cudnnSetRNNDataDescriptor": (_i, [_p, _i, _i, _i, _i, _i, _pi, _p]),
    "cudnnCreateDropoutDescriptor": (_i, [_pp]),
    "cudnnDestroyDropoutDescriptor": (_i, [_p]),
    # desc, handle, dropout, states, stateSizeInBytes, seed
    "cudnnSetDropoutDescriptor": (_i, [_p, _p, _f, _p, _sz, _u64]),
    # handle, rnnDesc, *weightSpaceSize
    "cudnnGetRNNWeightSpaceSize": (_i, [_p, _p, _psz]),
    # handle, rnnDesc, fwdMode, xDesc, *workSpaceSize, *reserveSpaceSize
    "cudnnGetRNNTempSpaceSizes": (_i, [_p, _p, _i, _p, _psz, _psz]),
    # handle, rnnDesc, pseudoLayer, weightSpaceSize, weightSpace, linLayerID, mDesc, *mAddr, bDesc, *bAddr
    "cudnnGetRNNWeightParams": (_i, [_p, _p, ctypes.c_int32, _sz, _p, ctypes.c_int32, _p, _pp, _p, _pp]),
    # handle, rnnDesc, fwdMode, devSeqLengths, xDesc, x, yDesc, y, hDesc, hx, hy, cDesc, cx, cy,
    # weightSpaceSize, weightSpace, workSpaceSize, workSpace, reserveSpaceSize, reserveSpace
    "cudnnRNNForward": (_i, [_p, _p, _i, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p,
                             _sz, _p, _sz, _p, _sz, _p]),
    # handle, rnnDesc, devSeqLengths, yDesc, y, dy, xDesc, dx, hDesc, hx, dhy, dhx, cDesc, cx,
    # dcy, dcx, weightSpaceSize, weightSpace, workSpaceSize, workSpace, reserveSpaceSize, reserveSpace
    "cudnnRNNBackwardData_v8": (_i, [_p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p,
                                     _sz, _p, _sz, _p, _sz, _p]),
    # handle, rnnDesc, addGrad, devSeqLengths, xDesc, x, hDesc, hx, yDesc, y,
    # weightSpaceSize, dweightSpace, workSpaceSize, workSpace, reserveSpaceSize, reserveSpace
    "cudnnRNNBackwardWeights_v8": (_i, [_p, _p, _i, _p, _p, _p, _p, _p, _p, _p, _sz, _p, _sz, _p, _sz, _p]),
}

def lib():
    """libcudnn with this module's signatures declared (no GPU needed). Raises if not installed."""
    return cudnn.lib_with(SIGNATURES)


def seq_lengths(batch_sizes):
    """Per-sequence lengths from time-major batch sizes: [3, 2, 2, 1] -> [4, 3, 1]."""
    sizes = np.asarray(batch_sizes)
    return np.array([int(np.sum(sizes > b)) for b in range(int(sizes[0]))], np.int32)


def rnn_descriptor(mode, input_size, hidden, layers, dirs, skip, dtype, dropout_desc):
    """An RNN descriptor (v8) for knetc's settings: double bias, no projection, no padding,
    math type ``cudnn.math_type(dtype)``. Creating and setting it needs no handle. Example:
    ``d = rnn_descriptor(2, 3, 4, 1, 1, False, np.float32, dropout_descriptor(h))``"""
    lib()
    desc = cudnn.Descriptor("RNN")
    dt = cudnn.data_type(dtype)
    cudnn.check(lib().cudnnSetRNNDescriptor_v8(
        desc.value, CUDNN_RNN_ALGO_STANDARD, int(mode), CUDNN_RNN_DOUBLE_BIAS,
        CUDNN_BIDIRECTIONAL if dirs == 2 else CUDNN_UNIDIRECTIONAL,
        CUDNN_SKIP_INPUT if skip else CUDNN_LINEAR_INPUT, dt, dt, cudnn.math_type(dtype),
        int(input_size), int(hidden), int(hidden), int(layers), dropout_desc, CUDNN_RNN_PADDED_IO_DISABLED),
        "cudnnSetRNNDescriptor_v8")
    return desc


def data_descriptor(batch_sizes, vector_size, dtype):
    """A time-major packed RNN data descriptor: x (sum(batch_sizes), vector_size) as knetc
    stores it. Needs no handle."""
    lib()
    lengths = seq_lengths(batch_sizes)
    desc = cudnn.Descriptor("RNNData")
    cudnn.check(lib().cudnnSetRNNDataDescriptor(
        desc.value, cudnn.data_type(dtype), CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, len(batch_sizes),
        int(batch_sizes[0]), int(vector_size), (ctypes.c_int * len(lengths))(*lengths.tolist()), None),
        "cudnnSetRNNDataDescriptor")
    return desc


def dropout_descriptor(handle=None):
    """A dropout descriptor with probability 0 (knetc draws its own masks; cuDNN needs one)."""
    lib()
    desc = cudnn.Descriptor("Dropout")
    cudnn.check(lib().cudnnSetDropoutDescriptor(desc.value, handle, 0.0, None, 0, 0), "cudnnSetDropoutDescriptor")
    return desc


class Plan:
    """Descriptors, buffer sizes and the sequence lengths on the device for one configuration."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


_plans = {}


def state_descriptor(layers, dirs, batch, hidden, dtype):
    """The hDesc/cDesc of cudnnRNNForward and the backward calls: a fully packed 3-D tensor
    (layers * dirs, batch, hidden) -- not padded to 4-D as the legacy API's descriptors are."""
    return cudnn.tensor_descriptor((layers * dirs, int(batch), hidden), dtype, pad=False)


def plan(w, x, h0, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    """The cuDNN plan for this call, or None when cuDNN cannot serve it: with dropout, without
    a GPU and cuDNN, or when its weight layout differs from knetc's. Cached per configuration
    (and math type: ``knetc.allow_tf32`` changes the plan); cleared with the handles."""
    if dropout > 0 or not available():
        return None
    from numba import cuda
    dtype = np.dtype(x.dtype)
    key = (mode, x.shape[1], hidden, layers, dirs, bool(skip), tuple(batch_sizes), dtype.str,
           cudnn.math_type(dtype))
    if key in _plans:
        return _plans[key]
    h = cudnn.handle()
    drop = dropout_descriptor(h)
    rd = rnn_descriptor(mode, x.shape[1], hidden, layers, dirs, skip, dtype, drop)
    xd = data_descriptor(batch_sizes, x.shape[1], dtype)
    yd = data_descriptor(batch_sizes, dirs * hidden, dtype)
    hd = state_descriptor(layers, dirs, batch_sizes[0], hidden, dtype)
    wsize, work, reserve = ctypes.c_size_t(0), ctypes.c_size_t(0), ctypes.c_size_t(0)
    cudnn.check(lib().cudnnGetRNNWeightSpaceSize(h, rd, ctypes.byref(wsize)), "cudnnGetRNNWeightSpaceSize")
    cudnn.check(lib().cudnnGetRNNTempSpaceSizes(h, rd, CUDNN_FWD_MODE_TRAINING, xd, ctypes.byref(work),
                                                ctypes.byref(reserve)), "cudnnGetRNNTempSpaceSizes")
    result = None
    if wsize.value == w.size * dtype.itemsize \
            and _layout_matches(h, rd, w, mode, x.shape[1], hidden, layers, dirs, skip):
        result = Plan(rnn=rd, dropout=drop, x=xd, y=yd, h=hd, weight_bytes=wsize.value, work_bytes=work.value,
                      reserve_bytes=reserve.value, lengths=cuda.to_device(seq_lengths(batch_sizes)), key=key)
    report("cudnn", "rnn mode %d X%d H%d L%d D%d: %s" % (mode, x.shape[1], hidden, layers, dirs,
                                                         "cuDNN" if result else "Numba kernels (layout mismatch)"))
    _plans[key] = result
    return result


def _layout_matches(h, rd, w, mode, X, H, layers, dirs, skip):
    """cudnnGetRNNWeightParams' addresses equal knetc's offsets for every matrix and bias."""
    itemsize = np.dtype(w.dtype).itemsize
    base = cudnn.device_pointer(w)
    md, bd = cudnn.Descriptor("Tensor"), cudnn.Descriptor("Tensor")
    for p in range(layers * dirs):
        for lin in range(2 * rnn_layout.ngates(mode)):
            maddr, baddr = ctypes.c_void_p(), ctypes.c_void_p()
            cudnn.check(lib().cudnnGetRNNWeightParams(h, rd, p, w.size * itemsize, base, lin, md, ctypes.byref(maddr),
                                                      bd, ctypes.byref(baddr)), "cudnnGetRNNWeightParams")
            matrix = rnn_layout.param_location(mode, X, H, layers, dirs, skip, p, lin, 0)
            bias = rnn_layout.param_location(mode, X, H, layers, dirs, skip, p, lin, 1)
            if matrix is not None and (maddr.value or 0) != base + matrix[0] * itemsize:
                return False
            if (baddr.value or 0) != base + bias[0] * itemsize:
                return False
    return True


def _at(arr, elements=0):
    """The device address `elements` into a contiguous device array."""
    return cudnn.device_pointer(arr) + int(elements) * np.dtype(arr.dtype).itemsize


# ----------------------------------------------------------------------------- reserve space

RESERVE_ALIGNMENT = 256  # bytes: what cudaMalloc guarantees, more than any cuDNN kernel needs


def reserve_space(nbytes, align=RESERVE_ALIGNMENT):
    """A device buffer of `nbytes` (at least 1) starting at a multiple of `align` bytes: a uint8
    view into an allocation `align` bytes larger (the view keeps the allocation alive).
    Example: ``r = reserve_space(p.reserve_bytes); cudnn.device_pointer(r) % 256 == 0``"""
    from .pool import device_array
    nbytes = max(int(nbytes), 1)
    raw = device_array((nbytes + align,), np.uint8)
    shift = (-cudnn.device_pointer(raw)) % align
    return raw[shift:shift + nbytes]


def _storage(arr):
    """The object that owns `arr`'s memory (shared by its views; dies when the memory is
    freed): a Numba device array's allocation, or under the simulator the base host array."""
    data = getattr(arr, "gpu_data", None)
    if data is not None:
        return getattr(data, "owner", data)
    ary = getattr(arr, "_ary", arr)  # the simulator's FakeCUDAArray wraps a numpy array
    while isinstance(getattr(ary, "base", None), np.ndarray):
        ary = ary.base
    return ary


class _Saved:
    """A reserve space recorded for one packed forward vector."""
    __slots__ = ("storage", "key", "reserve", "nbytes", "__weakref__")

    def __init__(self, storage, key, reserve, nbytes):
        self.storage, self.key, self.reserve, self.nbytes = storage, key, reserve, nbytes


_saved = {}          # (address, nbytes) of a packed forward vector -> _Saved
_saved_lock = threading.Lock()


def _slot(packed):
    return cudnn.device_pointer(packed), int(packed.size) * np.dtype(packed.dtype).itemsize


def _remember(packed, key, reserve, nbytes):
    """Record `reserve` as the reserve space of the forward that wrote `packed`; the record
    goes when packed's memory is freed (a weak reference to its owner) or is overwritten by
    the next forward into the same memory."""
    slot = _slot(packed)
    storage = _storage(packed)
    try:
        ref = weakref.ref(storage, lambda _r, slot=slot: _drop(slot, _r))
    except TypeError:  # an owner that cannot be referenced weakly: never found again
        return
    with _saved_lock:
        _saved[slot] = _Saved(ref, key, reserve, nbytes)


def _drop(slot, ref):
    with _saved_lock:
        record = _saved.get(slot)
        if record is not None and record.storage is ref:
            del _saved[slot]


def saved_reserve(p, packed):
    """The reserve space ``forward(p, ...)`` recorded for `packed`, or None when `packed` is
    not memory that such a forward wrote (or its plan differs)."""
    record = _saved.get(_slot(packed))
    if record is None or record.key != p.key or record.nbytes != p.reserve_bytes:
        return None
    if record.storage() is not _storage(packed):
        return None
    return record.reserve


def saved_count():
    """How many reserve spaces are held (tests)."""
    return len(_saved)


def _clear():
    _plans.clear()
    with _saved_lock:
        _saved.clear()


cudnn.on_release(_clear)  # plans hold descriptors and device arrays of the released context


def forward(p, w, x, h0, c0, out, y_at, hy_at, cy_at, lstm):
    """cudnnRNNForward (training mode) writing y, hy and cy into `out` at the given element
    offsets, and its reserve space into an aligned allocation of its own, recorded for the
    backward call on `out` (see the module docstring). Returns the reserve space."""
    from .pool import device_array
    work = device_array((max(p.work_bytes, 1),), np.uint8)
    reserve = reserve_space(p.reserve_bytes)
    cudnn.check(lib().cudnnRNNForward(
        cudnn.handle(), p.rnn, CUDNN_FWD_MODE_TRAINING, cudnn.device_pointer(p.lengths),
        p.x, _at(x), p.y, _at(out, y_at), p.h, _at(h0), _at(out, hy_at),
        p.h, _at(c0) if lstm else None, _at(out, cy_at) if lstm else None,
        p.weight_bytes, _at(w), p.work_bytes, _at(work), p.reserve_bytes, _at(reserve)),
        "cudnnRNNForward")
    _remember(out, p.key, reserve, p.reserve_bytes)
    return reserve


def backward(p, w, x, h0, c0, packed, dpacked, out, y_at, hy_at, cy_at, lstm):
    """cudnnRNNBackwardData_v8 then cudnnRNNBackwardWeights_v8: out = dw | dx | dh0 | dc0
    (dw accumulated into zeros: cuDNN 9 only adds). The reserve space is the one the forward
    call recorded for `packed`; without one, the forward runs again (into scratch memory)."""
    from .pool import device_array
    reserve = saved_reserve(p, packed)
    if reserve is None:
        report("cudnn", "rnn backward: no reserve space recorded for this forward result; "
                        "running the forward again")
        packed = device_array(packed.shape, packed.dtype)
        reserve = forward(p, w, x, h0, c0, packed, y_at, hy_at, cy_at, lstm)
    work = device_array((max(p.work_bytes, 1),), np.uint8)
    nw, nx, nh = w.size, x.size, h0.size
    h = cudnn.handle()
    cudnn.check(lib().cudnnRNNBackwardData_v8(
        h, p.rnn, cudnn.device_pointer(p.lengths), p.y, _at(packed, y_at), _at(dpacked, y_at),
        p.x, _at(out, nw), p.h, _at(h0), _at(dpacked, hy_at), _at(out, nw + nx),
        p.h, _at(c0) if lstm else None, _at(dpacked, cy_at) if lstm else None, _at(out, nw + nx + nh) if lstm else None,
        p.weight_bytes, _at(w), p.work_bytes, _at(work), p.reserve_bytes, _at(reserve)),
        "cudnnRNNBackwardData_v8")
    cudnn.check(lib().cudnnRNNBackwardWeights_v8(
        h, p.rnn, CUDNN_WGRAD_MODE_ADD, cudnn.device_pointer(p.lengths), p.x, _at(x), p.h, _at(h0),
        p.y, _at(packed, y_at), p.weight_bytes, _at(out, 0), p.work_bytes, _at(work),
        p.reserve_bytes, _at(reserve)), "cudnnRNNBackwardWeights_v8")
