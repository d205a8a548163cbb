"""The recurrent-network ops (relu, tanh, LSTM and GRU cells, several layers, bidirectional,
variable-length batches, dropout between layers) under Knet's `RNN` layer, which lives in
knetc.layers with `rnnparam` and `rnnparams`.

The whole sequence runs in one library routine (knetc.kernels.rnn_cpu and rnn_cuda, a
"call" op): the time loop stays a loop in compiled code. Its result is one packed vector
(y | hy | cy | what backpropagation needs) from which y, hy and cy are sliced; the adjoint
is another call (backpropagation through time) whose packed result is sliced into dw, dx,
dh0 and dc0.

The weights are one vector laid out as cuDNN lays out its weight space (see
knetc.runtime.rnn_layout).
"""
import numpy as np

from ..errors import ShapeError
from ..runtime.rnn_layout import packed_offsets, weight_size
from .core import Aval, Op, aval_of, no_second_derivative, register

__all__ = []  # no public names: the layer over these ops is knetc.layers.RNN

_CPU, _CUDA = "knetc.kernels.rnn_cpu:", "knetc.kernels.rnn_cuda:"


def _kernels():
    from knetc.kernels import rnn_cpu  # imported lazily: numba compiles on first use
    return rnn_cpu


# ----------------------------------------------------------------------------- ops
def _check(w, x, h0, c0, mode, hidden, layers, dirs, skip, batch_sizes):
    N, X = x.shape
    B = h0.shape[1]
    if w.shape != (weight_size(mode, X, hidden, layers, dirs, skip),):
        raise ShapeError(f"rnn: weights {w} do not fit an input size of {X}")
    if w.dtype is not None and np.dtype(w.dtype) not in (np.float32, np.float64):
        raise ShapeError(f"rnn: the weights are {w}: RNNs compute in float32 or float64 (atype=np.float32 or np.float64)")
    for name, a in (("x", x), ("h", h0), ("c", c0)):
        if a.dtype != w.dtype:
            raise ShapeError(f"rnn: {name} is {a} but the weights are {w}; use the same element type")
    if h0.shape != (layers * dirs, B, hidden) or c0.shape != h0.shape:
        raise ShapeError(f"rnn: hidden states {h0} and {c0} must have shape {(layers * dirs, B, hidden)}")
    if sum(batch_sizes) != N or batch_sizes[0] != B:
        raise ShapeError(f"rnn: batch sizes {batch_sizes} do not match x {x} and h {h0}")


def _forward_rule(w, x, h0, c0, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    _check(w, x, h0, c0, mode, hidden, layers, dirs, skip, batch_sizes)
    total = packed_offsets(mode, x.shape[0], h0.shape[1], hidden, layers, dirs, dropout)[5]
    return Aval((total,), w.dtype)


def _contiguous(*arrays):
    return [np.ascontiguousarray(np.asarray(a)) for a in arrays]


def _forward_impl(w, x, h0, c0, **p):
    w, x, h0, c0 = _contiguous(w, x, h0, c0)
    out = np.empty(_forward_rule(*map(aval_of, (w, x, h0, c0)), **p).shape, w.dtype)
    _kernels().rnn_forward_cpu(w, x, h0, c0, out, **p)
    return out


def _backward_rule(w, x, h0, c0, packed, dpacked, **p):
    _check(w, x, h0, c0, p["mode"], p["hidden"], p["layers"], p["dirs"], p["skip"], p["batch_sizes"])
    return Aval((w.shape[0] + x.shape[0] * x.shape[1] + 2 * int(np.prod(h0.shape)),), w.dtype)


_LAST_BACKWARD = [None, None]  # (inputs, result): the eager adjoint runs once for all four grads


def _backward_impl(w, x, h0, c0, packed, dpacked, **p):
    args = (w, x, h0, c0, packed, dpacked)
    key, result = _LAST_BACKWARD
    if key is not None and len(key) == len(args) and all(a is b for a, b in zip(key, args)):
        return result
    arrays = _contiguous(*args)
    out = np.empty(_backward_rule(*map(aval_of, arrays), **p).shape, arrays[0].dtype)
    _kernels().rnn_backward_cpu(*arrays, out, **p)
    _LAST_BACKWARD[:] = [args, out]  # holding the inputs keeps their ids from being reused
    return out


def _gradient_part(index):
    """The gradient rule for input `index` (w, x, h0, c0): a slice of the packed adjoint."""
    def rule(dy, y, w, x, h0, c0, **p):
        sizes = [aval_of(a).shape for a in (w, x, h0, c0)]
        start = sum(int(np.prod(s)) for s in sizes[:index])
        total = sum(int(np.prod(s)) for s in sizes)
        return rnn_slice(rnn_backward(w, x, h0, c0, y, dy, **p), start=start, shape=sizes[index], head=total)
    return rule


rnn_forward = register(Op(
    "rnn_forward", _forward_rule, _forward_impl, tuple(_gradient_part(i) for i in range(4)), "call",
    lowering={"cpu": _CPU + "rnn_forward_cpu", "cuda": _CUDA + "rnn_forward_cuda"}, blas="threads"))

rnn_backward = register(Op(
    "rnn_backward", _backward_rule, _backward_impl, (no_second_derivative("kn.RNN"),) * 6, "call",
    lowering={"cpu": _CPU + "rnn_backward_cpu", "cuda": _CUDA + "rnn_backward_cuda"}, blas="threads"))


def _slice_rule(packed, start, shape, head):
    if packed.ndim != 1 or start + int(np.prod(shape)) > min(head, packed.shape[0]):
        raise ShapeError(f"rnn_slice: {shape} at {start} does not fit in {packed}")
    return Aval(tuple(shape), packed.dtype)


def _embed_rule(part, start, size):
    if start + int(np.prod(part.shape)) > size:
        raise ShapeError(f"rnn_embed: {part} at {start} does not fit in {size} elements")
    return Aval((size,), part.dtype)


def _embed_impl(part, start, size):
    out = np.zeros(size, np.asarray(part).dtype)
    out[start:start + np.size(part)] = np.ravel(part)
    return out


# Slicing y, hy or cy from the packed vector: its cotangent is only `head` elements long
# (y | hy | cy), since nothing reads the saved gates but the adjoint itself.
rnn_slice = register(Op(
    "rnn_slice", _slice_rule,
    lambda packed, start, shape, head: np.asarray(packed)[start:start + int(np.prod(shape))].reshape(shape).copy(),
    (lambda dy, y, packed, start, shape, head: rnn_embed(dy, start=start, size=head),), "call",
    lowering={"cpu": _CPU + "rnn_slice_cpu", "cuda": _CUDA + "rnn_slice_cuda"}))

rnn_embed = register(Op(
    "rnn_embed", _embed_rule, _embed_impl,
    (lambda dy, y, part, start, size: rnn_slice(dy, start=start, shape=aval_of(part).shape, head=size),), "call",
    lowering={"cpu": _CPU + "rnn_embed_cpu", "cuda": _CUDA + "rnn_embed_cuda"}))
