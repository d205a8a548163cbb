"""Layers built from ops: Knet's `RNN` (with `rnnparam`, `rnnparams`) and batchnorm's user
state (`BNMoments`, `bnmoments`, `bnparams`).

A layer is not a primitive: it holds Params and state for the user and calls ops
(knetc.ops.rnn's rnn_forward/rnn_slice, knetc.ops.normalization's batchnorm). This module
sits above the op table, the context and autograd (Param) and training's initialisers
(xavier), and imports them; nothing below imports it.

    rnn = kn.RNN(28, 64, rnn_type="lstm", num_layers=2)
    y = rnn(x)                      # x (T, B, 28) -> y (T, B, 64); rnn.h, rnn.c (2, B, 64)

The RNN's weights are one Param vector `rnn.w` laid out as cuDNN lays out its weight space
(see knetc.runtime.rnn_layout), so `rnnparam` returns views into it.

    moments, w = kn.bnmoments(), kn.Param(kn.bnparams(np.float32, 16))
    y = kn.batchnorm(x, moments, w)          # x (N, 16, H, W); moments updated while training
"""
import numbers
import sys

import numpy as np

from . import pytree
from .autograd import Param
from .context import training, value_of
from .errors import ShapeError
from .ops.arrays import ones, zeros
from .ops.core import aval_of
from .ops.normalization import dropout
from .ops.rnn import rnn_forward, rnn_slice
from .ops.shape import reshape
from .runtime.device_state import on_host
from .runtime.rnn_layout import MODES, ngates, packed_offsets, param_location, weight_size
from .train import init
from .train.init import _converter, xavier
from .train.io import serializable

__all__ = ["RNN", "rnnparam", "rnnparams", "BNMoments", "bnmoments", "bnparams"]


def _rnn_kernels():
    first = "knetc.kernels.rnn_cpu" not in sys.modules
    from knetc.kernels import rnn_cpu  # imported lazily: numba compiles on first use
    if first and init.SEED[0] is not None:  # kn.seed_ came first: its dropout masks follow it
        rnn_cpu.seed(init.SEED[0] % 2 ** 32)
    return rnn_cpu


# ----------------------------------------------------------------------------- RNN
@serializable
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


@serializable
class RNN:
    """A recurrent network (Knet's RNN): `rnn = RNN(input_size, hidden_size, **opts)`, then
    `y = rnn(x)` or `rnn(x, batch_sizes=[...])`.

    x is (T, B, X) (a sequence of minibatches), (B, X) (one step) or (X,); y has the same
    number of axes with H (2H when bidirectional) last: the last layer's hidden states.
    With batch_sizes (non-increasing, summing to the rows of x), x is (sum, X): step t holds
    the first batch_sizes[t] sequences; y has x's axes then too.

    rnn.h and rnn.c are the hidden and cell states (L or 2L, B, H): None (start at zero,
    keep nothing), 0 (start at zero, keep the final state) or an array/Param (start there,
    replaced by the final state). Only the eager call updates them; a compiled function
    works on a copy of the object.

    Options: rnn_type "lstm" | "gru" | "relu" | "tanh", num_layers, bidirectional, dropout
    (of the input and between layers, while training, as Knet), skip_input (x is added to each gate instead of
    multiplied by a matrix: needs input_size == hidden_size), winit/binit/finit(dtype, dims)
    (dims a tuple, as Knet calls them; knetc's initialisers take it) for matrices, biases and
    the LSTM forget-gate biases, atype (element type, float32).
    algo is accepted for Knet compatibility (cuDNN chooses); seed (0: none) seeds the generator of
    the dropout between layers when the RNN is made (one generator for every RNN, as cuDNN's
    per-handle state); the input's dropout is `kn.dropout`'s, as in Knet, so `kn.seed_(n)`
    makes both repeatable.

    >>> rnn = kn.RNN(3, 5, rnn_type="gru"); rnn(np.zeros((7, 2, 3), np.float32)).shape
    (7, 2, 5)
    """

    def __init__(self, input_size, hidden_size, h=None, c=None, rnn_type="lstm", num_layers=1,
                 bidirectional=False, dropout=0, skip_input=False, algo=0, seed=0,
                 winit=xavier, binit=zeros, finit=ones, atype=None):
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
                    m[...] = winit(dtype, m.shape)
                b = rnnparam(self, layer, id, 1)
                b[...] = (finit if lstm and id % 4 == 1 else binit)(dtype, b.shape)
        self.w.value = convert(w)
        if seed:
            _rnn_kernels().seed(int(seed))

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
        if not int(np.prod(xa.shape)):
            raise ShapeError(f"RNN: x of shape {xa.shape} is empty (no time steps, sequences or features)")
        N, B = sum(sizes), sizes[0]
        dtype = aval_of(self.w).dtype
        if xa.dtype != dtype:  # (here, with the shape given; the kernels' check sees x as rows)
            raise ShapeError(f"RNN: x is {xa} but the weights are {np.dtype(dtype).name}; use the same element type "
                             f"(x.astype(np.{np.dtype(dtype).name}), or an RNN made with atype=np.{xa.dtype})")
        shape = (LD, B, H)
        h0, c0 = self._state(self.h, "h", shape, dtype), self._state(self.c, "c", shape, dtype)
        between = self.dropout if self.num_layers > 1 and training() else 0.0  # (the kernels drop between layers)
        params = dict(mode=self._mode, hidden=H, layers=self.num_layers, dirs=self._dirs, skip=self.skip_input,
                      batch_sizes=sizes, dropout=between)
        x = dropout(x, self.dropout)  # Knet drops the input too (while training)
        x2 = x if xa.shape == (N, X) else reshape(x, shape=(N, X))
        packed = rnn_forward(self.w, x2, h0, c0, **params)
        DH = self._dirs * H
        # the packed vector starts y | hy | cy: `head` elements
        hy_at, cy_at, head = packed_offsets(self._mode, N, B, H, self.num_layers, self._dirs, between)[:3]
        y = rnn_slice(packed, start=0, shape=xa.shape[:-1] + (DH,), head=head)  # (as many axes as x, as Knet)
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
        if a.ndim > 3 or (1,) * (3 - a.ndim) + tuple(a.shape) != shape:  # (fewer axes: as Knet, leading ones left out)
            raise ShapeError(f"RNN: {name} has shape {tuple(a.shape)}, expected {shape} (layers x directions, batch, hidden)")
        return s if a.ndim == 3 else reshape(s, shape=shape)


def rnnparam(r, layer, id, param):
    """One weight matrix (param=0) or bias vector (param=1) of RNN `r`, a view into r.w.

    layer: 0..L-1 (0..2L-1 when bidirectional: forward and backward layers alternate).
    id: relu/tanh 0 input, 1 hidden; gru reset 0,3, update 1,4, new 2,5; lstm input gate 0,4,
    forget 1,5, new 2,6, output 3,7 (the first half multiplies the input, the second h).
    A matrix has shape (H, X) for the input (Knet's (X, H) transposed, reversed to Python),
    (H, H) for the hidden state; the input matrices of the first layer are None with
    skip_input.

    >>> kn.rnnparam(kn.RNN(3, 5), 0, 1, 1)   # the forget-gate input bias, ones
    array([1., 1., 1., 1., 1.], dtype=float32)
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
    """All of r's matrices (sorted by layer, id), then all its biases: a list of views.

    Example:
        >>> import knetc as kn
        >>> r = kn.RNN(3, 4, rnn_type="relu")     # one layer: W (input), R (hidden), then two biases
        >>> [p.shape for p in kn.rnnparams(r)]
        [(4, 3), (4, 4), (4,), (4,)]
    """
    n = r.num_layers * r._dirs
    ids = range(2 * ngates(r._mode))
    return [rnnparam(r, l, i, 0) for l in range(n) for i in ids] + [rnnparam(r, l, i, 1) for l in range(n) for i in ids]


# ----------------------------------------------------------------------------- batchnorm's state
@serializable
@pytree.register_leaf_type  # state, not a container of inputs: compiled code updates its arrays
class BNMoments:
    """Running mean and variance for batchnorm (Knet's BNMoments): `bnmoments()` makes one.

    mean and var are arrays of shape (1, C) or (1, C, 1, 1[, 1]) (the batch statistics'
    shape), created by meaninit/varinit(dtype, shape) on the first batchnorm call. They are
    updated in place (assigning `moments.mean = a` copies into the existing array when the
    shapes agree), so compiled functions that captured them stay in sync."""

    def __init__(self, momentum=0.1, mean=None, var=None, meaninit=None, varinit=None):
        if not 0 <= momentum <= 1:
            raise ValueError(f"bnmoments: momentum={momentum} must lie in [0, 1]")
        self.momentum, self.meaninit, self.varinit = float(momentum), meaninit, varinit
        self._mean = self._var = None
        self.mean, self.var = mean, var

    @staticmethod
    def _store(current, value):
        if value is None:
            return None
        value = np.asarray(value)
        if current is not None and current.shape == value.shape:
            current[...] = value
            return current
        return np.array(value, copy=True, order="C")

    # (on_host: a compiled CUDA run may have left newer values in the device copy)
    mean = property(lambda self: on_host(self._mean),
                    lambda self, v: setattr(self, "_mean", self._store(on_host(self._mean), v)))
    var = property(lambda self: on_host(self._var),
                   lambda self, v: setattr(self, "_var", self._store(on_host(self._var), v)))

    def initialize(self, dtype, shape):
        """Create mean and var (if missing) for statistics of this dtype and shape."""
        if self._mean is None:
            self._mean = self._make(self.meaninit, np.zeros, dtype, shape)
        if self._var is None:
            self._var = self._make(self.varinit, np.ones, dtype, shape)

    @staticmethod
    def _make(init, default, dtype, shape):
        if init in _NUMPY_CREATORS:  # numpy's own (np.zeros): called as numpy does, f(shape, dtype)
            init, default = None, init
        value = default(shape, dtype) if init is None else np.asarray(init(dtype, *shape))
        if value.shape != tuple(shape):
            value = value.reshape(shape)
        return np.array(value, dtype=value.dtype, copy=True, order="C")

    def __repr__(self):
        return f"BNMoments(momentum={self.momentum}, mean={self.mean!r}, var={self.var!r})"


_NUMPY_CREATORS = (np.zeros, np.ones, np.empty)


def bnmoments(momentum=0.1, mean=None, var=None, meaninit=None, varinit=None):
    """Running statistics for batchnorm: new = momentum * batch + (1 - momentum) * old.

    meaninit/varinit (default zeros/ones) are called as f(dtype, *shape) on first use, as
    Knet's initialisers (kn.zeros, kn.ones); numpy's np.zeros, np.ones and np.empty work too.
    >>> moments = kn.bnmoments(momentum=0.1)
    """
    return BNMoments(momentum, mean, var, meaninit, varinit)


def bnparams(etype, channels=None):
    """One vector of 2C entries: the scale (ones) then the bias (zeros), as Knet.

    bnparams(C) is bnparams(np.float64, C).

    >>> kn.bnparams(np.float32, 3)
    array([1., 1., 1., 0., 0., 0.], dtype=float32)
    """
    if channels is None:
        etype, channels = np.float64, etype
    if not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"bnparams: channels must be a positive int, got {channels!r}")
    return np.concatenate([np.ones(channels, etype), np.zeros(channels, etype)])
