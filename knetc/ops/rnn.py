"""Recurrent networks (Knet's `RNN`, `rnnparam`, `rnnparams`): relu, tanh, LSTM and GRU
cells, several layers, bidirectional, variable-length batches, dropout between layers.

    rnn = kn.RNN(28, 64, rnn_type="lstm", num_layers=2)
    y = rnn(x)                      # x (T, B, 28) -> y (T, B, 64); rnn.h, rnn.c (2, B, 64)

The whole sequence runs in one library routine (knetc.kernels.rnn_cpu and rnn_cuda, a
"call" op): the time loop stays a loop in compiled code. Its result is one packed vector
(y | hy | cy | what backpropagation needs) from which y, hy and cy are sliced; the adjoint
is another call (backpropagation through time) whose packed result is sliced into dw, dx,
dh0 and dc0.

The weights are one Param vector `rnn.w` laid out as cuDNN lays out its weight space (see
knetc.runtime.rnn_layout), so `rnnparam` returns views into it.
"""
import numbers

import numpy as np

from ..context import training, value_of
from ..errors import ShapeError
from ..runtime.rnn_layout import MODES, ngates, packed_offsets, param_location, weight_size
from .core import Aval, Op, aval_of, register
from .shape import reshape

__all__ = ["RNN", "rnnparam", "rnnparams"]

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
    lowering={"cpu": _CPU + "rnn_forward_cpu", "cuda": _CUDA + "rnn_forward_cuda"}))

rnn_backward = register(Op(
    "rnn_backward", _backward_rule, _backward_impl, (None,) * 6, "call",
    lowering={"cpu": _CPU + "rnn_backward_cpu", "cuda": _CUDA + "rnn_backward_cuda"}))


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


# ----------------------------------------------------------------------------- the layer
def _zeros(*a):
    return np.zeros(a[1:], a[0])


def _ones(*a):
    return np.ones(a[1:], a[0])


def _xavier(*a):
    from ..train.init import xavier
    return xavier(*a)


class _Config:
    """An RNN's fixed settings (hashable, compared by value)."""
    __slots__ = ("input_size", "hidden_size", "rnn_type", "num_layers", "bidirectional", "dropout",
                 "skip_input", "algo", "seed")

    def __init__(self, *values):
        for name, v in zip(self.__slots__, values):
            object.__setattr__(self, name, v)

    def _key(self):
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other):
        return isinstance(other, _Config) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"RNNConfig{self._key()}"


class RNN:
    """A recurrent network (Knet's RNN): `rnn = RNN(input_size, hidden_size, **opts)`, then
    `y = rnn(x)` or `rnn(x, batch_sizes=[...])`.

    x is (T, B, X) (a sequence of minibatches), (B, X) (one step) or (X,); y has the same
    number of axes with H (2H when bidirectional) last: the last layer's hidden states.
    With batch_sizes (non-increasing, summing to the rows of x), x is (sum, X): step t holds
    the first batch_sizes[t] sequences.

    rnn.h and rnn.c are the hidden and cell states (L or 2L, B, H): None (start at zero,
    keep nothing), 0 (start at zero, keep the final state) or an array/Param (start there,
    replaced by the final state). Only the eager call updates them; a compiled function
    works on a copy of the object.

    Options: rnn_type "lstm" | "gru" | "relu" | "tanh", num_layers, bidirectional, dropout
    (between layers, while training), skip_input (x is added to each gate instead of
    multiplied by a matrix: needs input_size == hidden_size), winit/binit/finit(dtype, *dims)
    for matrices, biases and the LSTM forget-gate biases, atype (element type, float32).
    algo is accepted for Knet compatibility (cuDNN chooses), seed seeds dropout (0: not seeded).

    >>> rnn = kn.RNN(3, 5, rnn_type="gru"); rnn(np.zeros((7, 2, 3), np.float32)).shape
    (7, 2, 5)
    """

    def __init__(self, input_size, hidden_size, h=None, c=None, rnn_type="lstm", num_layers=1,
                 bidirectional=False, dropout=0, skip_input=False, algo=0, seed=0,
                 winit=_xavier, binit=_zeros, finit=_ones, atype=None):
        from ..autograd import Param
        from ..train.init import _converter
        if rnn_type not in MODES:
            raise ValueError(f"RNN: rnn_type must be one of {sorted(MODES)}, got {rnn_type!r}")
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"RNN: {name} must be a positive integer, got {v!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"RNN: dropout must be in [0, 1), got {dropout!r}")
        if skip_input and input_size != hidden_size:
            raise ValueError(f"RNN: skip_input needs input_size == hidden_size, got {input_size} and {hidden_size}")
        # Settings live in one hashable leaf: kn.grad(f)(rnn, ...) differentiates every number
        # it finds in an argument, and compiled functions specialise on hashable leaves.
        self.config = _Config(int(input_size), int(hidden_size), rnn_type, int(num_layers), bool(bidirectional),
                              float(dropout), bool(skip_input), algo, seed)
        self.h, self.c = h, c
        convert = _converter(atype)
        dtype = convert(np.zeros(1)).dtype
        w = np.zeros(weight_size(self._mode, self.input_size, self.hidden_size, self.num_layers,
                                 self._dirs, self.skip_input), dtype)
        self.w = Param(w)
        lstm = rnn_type == "lstm"
        for layer in range(self.num_layers * self._dirs):
            for id in range(2 * ngates(self._mode)):
                m = rnnparam(self, layer, id, 0)
                if m is not None:
                    m[...] = winit(dtype, *m.shape)
                b = rnnparam(self, layer, id, 1)
                b[...] = (finit if lstm and id % 4 == 1 else binit)(dtype, *b.shape)
        self.w.value = convert(w)
        if seed:
            _kernels().seed(int(seed))

    input_size = property(lambda self: self.config.input_size)
    hidden_size = property(lambda self: self.config.hidden_size)
    rnn_type = property(lambda self: self.config.rnn_type)
    num_layers = property(lambda self: self.config.num_layers)
    bidirectional = property(lambda self: self.config.bidirectional)
    dropout = property(lambda self: self.config.dropout)
    skip_input = property(lambda self: self.config.skip_input)

    @property
    def _mode(self):
        return MODES[self.rnn_type]

    @property
    def _dirs(self):
        return 2 if self.bidirectional else 1

    def __repr__(self):
        return (f"RNN({self.input_size}, {self.hidden_size}, rnn_type={self.rnn_type!r}, num_layers={self.num_layers}"
                f"{', bidirectional=True' if self.bidirectional else ''})")

    def __call__(self, x, batch_sizes=None):
        xa = aval_of(x)
        X, H, LD = self.input_size, self.hidden_size, self.num_layers * self._dirs
        if xa.ndim not in (1, 2, 3) or xa.shape[-1] != X:
            raise ShapeError(f"RNN: x of shape {xa.shape} does not fit: expected (T, B, {X}), (B, {X}) or ({X},)")
        if batch_sizes is None:
            T, B = (1, 1) if xa.ndim == 1 else (1, xa.shape[0]) if xa.ndim == 2 else xa.shape[:2]
            sizes = (int(B),) * int(T)
        else:
            sizes = tuple(int(b) for b in np.asarray(batch_sizes).ravel())
            rows = int(np.prod(xa.shape[:-1]))
            if not sizes or any(b < 1 for b in sizes) or any(a < b for a, b in zip(sizes, sizes[1:])):
                raise ShapeError(f"RNN: batch_sizes must be positive and non-increasing, got {list(sizes)}")
            if sum(sizes) != rows:
                raise ShapeError(f"RNN: batch_sizes sum to {sum(sizes)} but x has {rows} rows of {X}")
        N, B = sum(sizes), sizes[0]
        dtype = aval_of(self.w).dtype
        shape = (LD, B, H)
        h0, c0 = self._state(self.h, "h", shape, dtype), self._state(self.c, "c", shape, dtype)
        dropout = self.dropout if self.num_layers > 1 and training() else 0.0
        params = dict(mode=self._mode, hidden=H, layers=self.num_layers, dirs=self._dirs, skip=self.skip_input,
                      batch_sizes=sizes, dropout=dropout)
        x2 = x if xa.shape == (N, X) else reshape(x, shape=(N, X))
        packed = rnn_forward(self.w, x2, h0, c0, **params)
        DH = self._dirs * H
        # the packed vector starts y | hy | cy: `head` elements
        hy_at, cy_at, head = packed_offsets(self._mode, N, B, H, self.num_layers, self._dirs, dropout)[:3]
        y = rnn_slice(packed, start=0, shape=xa.shape[:-1] + (DH,) if batch_sizes is None else (N, DH), head=head)
        if self.h is not None:
            self.h = rnn_slice(packed, start=hy_at, shape=shape, head=head)
        if self.c is not None and self.rnn_type == "lstm":
            self.c = rnn_slice(packed, start=cy_at, shape=shape, head=head)
        return y

    def _state(self, s, name, shape, dtype):
        if s is None or (isinstance(s, numbers.Number) and s == 0):
            return np.zeros(shape, dtype)
        a = aval_of(s)
        if a.shape == ():  # 0 made a Param by kn.grad(f)(rnn): still "start at zero"
            return np.zeros(shape, dtype)
        if tuple(a.shape) != shape:
            raise ShapeError(f"RNN: {name} has shape {tuple(a.shape)}, expected {shape} (layers x directions, batch, hidden)")
        return s


def rnnparam(r, layer, id, param):
    """One weight matrix (param=0) or bias vector (param=1) of RNN `r`, a view into r.w.

    layer: 0..L-1 (0..2L-1 when bidirectional: forward and backward layers alternate).
    id: relu/tanh 0 input, 1 hidden; gru reset 0,3, update 1,4, new 2,5; lstm input gate 0,4,
    forget 1,5, new 2,6, output 3,7 (the first half multiplies the input, the second h).
    A matrix has shape (H, X) for the input (Knet's (X, H) transposed, reversed to Python),
    (H, H) for the hidden state; the input matrices of the first layer are None with
    skip_input.

    >>> rnnparam(kn.RNN(3, 5), 0, 1, 1)   # the forget-gate input bias, ones
    """
    mode, X, H, D = r._mode, r.input_size, r.hidden_size, r._dirs
    ng = ngates(mode)
    if not 0 <= layer < r.num_layers * D:
        raise ValueError(f"rnnparam: layer must be in 0..{r.num_layers * D - 1}, got {layer}")
    if not 0 <= id < 2 * ng:
        raise ValueError(f"rnnparam: id must be in 0..{2 * ng - 1} for {r.rnn_type}, got {id}")
    if param not in (0, 1):
        raise ValueError(f"rnnparam: param must be 0 (matrix) or 1 (bias), got {param}")
    location = param_location(mode, X, H, r.num_layers, D, r.skip_input, layer, id, param)
    if location is None:
        return None
    at, shape = location
    return value_of(r.w)[at:at + int(np.prod(shape))].reshape(shape)


def rnnparams(r):
    """All of r's matrices (sorted by layer, id), then all its biases: a list of views."""
    n = r.num_layers * r._dirs
    ids = range(2 * ngates(r._mode))
    return [rnnparam(r, l, i, 0) for l in range(n) for i in ids] + [rnnparam(r, l, i, 1) for l in range(n) for i in ids]
