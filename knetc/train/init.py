"""Parameter initialisation, as Knet's: `param`, `param0`, `xavier` (`xavier_uniform`),
`xavier_normal`, `gaussian`, `bilinear` (deconvolution filters), the default array type
`atype()` and `seed_`.

Every random initialiser draws from one module-level `numpy.random.Generator` (see `rng()`),
so `seed_(n)` makes a whole model's initialisation (and anything else drawing from it, such
as `minibatch(..., shuffle=True)`) reproducible.

Shapes are Python shapes (C order, instances first), the reverse of Knet's Julia shapes:
a dense weight used as `x @ w` is `(in, out)` here where Knet's `w * x` has `(out, in)`, and
a conv weight is `(Cout, Cin, KH, KW)` here where Knet has `(KW, KH, Cin, Cout)`.
"""
import numbers
import sys

import numpy as np

from .. import knetarray  # knetarray.gpu() read when called: tests stand in for a GPU with it
from ..autograd import Param, value_of
from ..ops.base import copyto_
from ..ops.normalization import reseed_dropout

_RNG = np.random.default_rng()
SEED = [None]  # the last seed_(n), for generators loaded later (the RNN kernels')


def rng():
    """The generator every knetc initialiser draws from (the same object after `seed_`)."""
    return _RNG


def seed_(n):
    """Seed knetc's random number generator (Knet's `seed!`): after `seed_(n)` the same calls
    give the same numbers: initialisers, shuffled minibatches, and dropout masks (kn.dropout
    and an RNN's dropout). Returns the generator.

    Example: ``kn.seed_(1); w = kn.param(10, 5)  # the same w in every run``"""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool):
        raise TypeError(f"seed_: the seed must be an integer, got {n!r}")
    if n < 0:
        raise ValueError(f"seed_: the seed must be 0 or more, got {n}")
    # Reseed in place, so that code holding `rng()` sees the new stream too.
    _RNG.bit_generator.state = np.random.PCG64(int(n)).state  # (any size of int; the rest cannot fail)
    reseed_dropout(int(n))
    SEED[0] = int(n)
    rnn_kernels = sys.modules.get("knetc.kernels.rnn_cpu")  # (once loaded: layers._rnn_kernels seeds it then)
    if rnn_kernels is not None:
        rnn_kernels.seed(int(n) % 2 ** 32)
    return _RNG


# ---------------------------------------------------------------- array type
class ArrayType:
    """An array type with its element type, as Knet's `Array{Float32}` or `KnetArray{Float32}`:
    calling it converts an array (a copy, as Julia's `Array{T}(x)`)."""

    def __init__(self, array_type=np.ndarray, dtype=np.float32):
        self.array_type, self.dtype = array_type, np.dtype(dtype)

    def __call__(self, x):
        if self.array_type is not np.ndarray:  # KnetArray: a device copy in this dtype
            return self.array_type(value_of(x), dtype=self.dtype, copy=True)
        return np.array(value_of(x), dtype=self.dtype, copy=True)

    def __eq__(self, other):
        return isinstance(other, ArrayType) and (self.array_type, self.dtype) == (other.array_type, other.dtype)

    def __hash__(self):
        return hash((self.array_type, self.dtype))

    def __repr__(self):
        return f"{self.array_type.__module__}.{self.array_type.__name__}{{{self.dtype.name}}}"


_ATYPE = ArrayType(np.ndarray, np.float32)
_GPU_ATYPE = ArrayType(knetarray.KnetArray, np.float32)


def atype():
    """The default array type (Knet's `atype()`): KnetArray{float32} when a GPU is active
    (`kn.gpu() >= 0`), else numpy float32 arrays (also under Numba's CUDA simulator, which
    does not count as a GPU). `atype()(x)` converts x (a copy); `atype().dtype` is the
    element type: `w = kn.atype()(np.zeros((3, 4)))`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> a = kn.atype()(np.zeros((3, 4)))   # a float32 numpy array, or a KnetArray on a GPU
        >>> a.shape, a.dtype
        ((3, 4), dtype('float32'))
    """
    return _ATYPE if knetarray.gpu() < 0 else _GPU_ATYPE


def _converter(atype_):
    """`atype=` as given to param: None (the default), a dtype (np.float64, "float16"),
    np.ndarray (numpy, the data's dtype), or a callable converting an array (an ArrayType,
    or any function)."""
    if atype_ is None:
        return atype()
    if isinstance(atype_, ArrayType):
        return atype_
    if atype_ is np.ndarray:  # Knet's atype=Array: a numpy array of the data's own dtype (a copy)
        return np.array
    if isinstance(atype_, (str, np.dtype)) or (isinstance(atype_, type) and issubclass(atype_, np.generic)):
        return ArrayType(np.ndarray, atype_)
    if callable(atype_):
        return atype_
    raise TypeError(f"atype must be a dtype or a callable converting arrays, got {atype_!r}")


# ---------------------------------------------------------------- dims and dtypes
def _dims(name, a):
    """Knet's `a...` passed to rand: an optional leading element type, then the dims (or one
    tuple of dims). Returns (dtype, shape)."""
    dtype = np.float64  # Julia's rand default; param converts to atype() afterwards
    a = list(a)
    if a and not isinstance(a[0], numbers.Integral) and not isinstance(a[0], tuple):
        try:
            dtype = np.dtype(a.pop(0))
        except TypeError:
            raise TypeError(f"{name}: expected an optional dtype then integer dims, got {tuple(a)!r}") from None
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"{name}: the element type must be a floating type, got {dtype}")
    if len(a) == 1 and isinstance(a[0], tuple):
        a = list(a[0])
    if not a:
        raise ValueError(f"{name}: give at least one dimension, e.g. {name}(784, 64)")
    for d in a:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool) or d < 0:
            raise ValueError(f"{name}: dimensions must be non-negative integers, got {tuple(a)!r}")
    return np.dtype(dtype), tuple(int(d) for d in a)


def _uniform(shape, dtype):
    if dtype in (np.float32, np.float64):
        return _RNG.random(shape, dtype=dtype)
    return _RNG.random(shape).astype(dtype)


def _normal(shape, dtype):
    if dtype in (np.float32, np.float64):
        return _RNG.standard_normal(shape, dtype=dtype)
    return _RNG.standard_normal(shape).astype(dtype)


def fans(shape):
    """(fan_in, fan_out) of a weight of Python shape `shape`, by Knet's rule translated.

    Knet (Julia shapes): 1-D: fanin = length, fanout = 1; 2-D `(out, in)`: fanout = size(w, 1),
    fanin = size(w, 2); N-D `(..., Cin, Cout)`: fanin = length ÷ Cout, fanout = length ÷ Cin
    (as PyTorch: a 3x3 conv from 16 to 8 channels has fanin 3*3*16, fanout 3*3*8). The
    Python shape is the Julia shape reversed, so: 1-D `(n,)`: (n, 1); 2-D `(in, out)`:
    (in, out); N-D, e.g. conv `(Cout, Cin, KH, KW)`: (Cin*KH*KW, Cout*KH*KW), i.e.
    (size // shape[0], size // shape[1]).
    """
    shape = tuple(shape)
    if len(shape) == 0:
        raise ValueError("xavier: a 0-dimensional weight has no fan-in/fan-out")
    if len(shape) == 1:
        return shape[0], 1
    if len(shape) == 2:
        return shape[0], shape[1]
    size = int(np.prod(shape))
    return (size // shape[0] if shape[0] else 0), (size // shape[1] if shape[1] else 0)


def xavier_uniform(*a, gain=1):
    """Uniform random weights in ±gain*sqrt(6/(fan_in+fan_out)) (Glorot & Bengio 2010, eq. 16).

    `a` is what Knet passes to rand: an optional element type then the dims,
    `xavier_uniform(784, 64)` or `xavier_uniform(np.float32, 784, 64)` (float64 by default).
    Fans follow Knet's rule on the reversed (Python) shape, see `fans`: a dense `(in, out)`
    weight has fan_in = in, fan_out = out; a conv `(Cout, Cin, KH, KW)` weight has
    fan_in = Cin*KH*KW, fan_out = Cout*KH*KW; a 1-D `(n,)` has fan_in = n, fan_out = 1.
    `xavier` is an alias.

    Example:
        >>> import numpy as np, knetc as kn
        >>> w = kn.xavier_uniform(np.float32, 784, 64)
        >>> w.shape, w.dtype, bool(np.abs(w).max() <= np.sqrt(6 / (784 + 64)))
        ((784, 64), dtype('float32'), True)
    """
    dtype, shape = _dims("xavier_uniform", a)
    fan_in, fan_out = fans(shape)
    s = gain * np.sqrt(6.0 / max(fan_in + fan_out, 1))
    w = _uniform(shape, dtype)
    return (dtype.type(2 * s) * w - dtype.type(s)).astype(dtype, copy=False)


xavier = xavier_uniform


def xavier_normal(*a, gain=1):
    """Normal random weights with mean 0 and std gain*sqrt(2/(fan_in+fan_out)); arguments and
    fans as `xavier_uniform`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> _ = kn.seed_(1)
        >>> w = kn.xavier_normal(400, 600)
        >>> w.dtype, bool(abs(w.std() - np.sqrt(2 / (400 + 600))) < 1e-3)
        (dtype('float64'), True)
    """
    dtype, shape = _dims("xavier_normal", a)
    fan_in, fan_out = fans(shape)
    std = gain * np.sqrt(2.0 / max(fan_in + fan_out, 1))
    return (dtype.type(std) * _normal(shape, dtype)).astype(dtype, copy=False)


def gaussian(*a, mean=0.0, std=0.01):
    """Gaussian random array with the given mean and standard deviation (Knet's `gaussian`):
    `gaussian(64, 10)` or `gaussian(np.float32, 64, 10, std=0.1)`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> _ = kn.seed_(1)
        >>> g = kn.gaussian(np.float32, 500, 400, mean=1.0, std=0.1)
        >>> g.dtype, bool(abs(g.mean() - 1) < 1e-2 and abs(g.std() - 0.1) < 1e-3)
        (dtype('float32'), True)
    """
    dtype, shape = _dims("gaussian", a)
    return (dtype.type(mean) + dtype.type(std) * _normal(shape, dtype)).astype(dtype, copy=False)


def _bilinear_1d(f):
    """The 1-D bilinear upsampling kernel for factor f (FCN's upsample_filt, which Knet adapts):
    length 2f - f%2, a triangle peaking at its center; f=2 gives [.25, .75, .75, .25]."""
    size = 2 * f - f % 2
    center = f - 1 if size % 2 == 1 else f - 0.5
    return 1 - np.abs(np.arange(size) - center) / f


def bilinear(T, fw, fh, IN, ON):
    """Bilinear-interpolation weights for a deconvolution (Knet's `bilinear`), upsampling
    each channel by fw x fh: `w = bilinear(np.float32, 2, 2, 128, 128)`.

    T is the element type, fw/fh the width/height factors, IN/ON the numbers of input and
    output channels (equal, as in Knet: output channel c is the bilinear kernel applied to
    input channel c, and every other input channel has a zero filter). The result has
    knetc's deconv weight layout `(Cx, Cy, KH, KW)` = `(IN, ON, 2fh - fh%2, 2fw - fw%2)`,
    Knet's `(W1, W2, Cy, Cx)` reversed: `w[c, c]` is the kernel and `w[i, j]` is zero for
    i != j. (Knet also requires fw == fh; a rectangular factor here gives the separable
    product of the two 1-D kernels.)

    Example:
        >>> import numpy as np, knetc as kn
        >>> w = kn.bilinear(np.float32, 2, 2, 1, 1)
        >>> w.shape
        (1, 1, 4, 4)
        >>> w[0, 0, 0]   # the outer product of [.25, .75, .75, .25] with itself
        array([0.0625, 0.1875, 0.1875, 0.0625], dtype=float32)
    """
    dtype = np.dtype(T)
    for name, v in (("fw", fw), ("fh", fh), ("IN", IN), ("ON", ON)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"bilinear: {name} must be a positive integer, got {v!r}")
    if IN != ON:
        raise ValueError(f"bilinear: the numbers of input and output channels must be equal, got IN={IN}, ON={ON}")
    kernel = np.outer(_bilinear_1d(int(fh)), _bilinear_1d(int(fw)))  # (KH, KW)
    w = np.zeros((int(IN), int(ON)) + kernel.shape, dtype=dtype)
    channels = np.arange(int(IN))
    w[channels, channels] = kernel  # the diagonal: channel c -> channel c
    return w


def _zeros(*a):
    dtype, shape = _dims("param0", a)
    return np.zeros(shape, dtype)


# ---------------------------------------------------------------- param
def param(*dims_or_array, init=xavier_uniform, atype=None):
    """A Param to train, as Knet's `param`:

    - `param(array)`: `Param(atype(array))`, a converted copy of the array;
    - `param(d1, d2, ...)` (or `param((d1, d2, ...))`): `Param(atype(init(d1, d2, ...)))`,
      by default Xavier-uniform weights (see `xavier_uniform` for the fans of Python shapes).

    `atype` defaults to `atype()` (numpy float32); it may be a dtype (`np.float64`) or a
    function converting an array. `param(784, 64)` is the weight of `x @ w` for x (N, 784).

    Example:
        >>> import numpy as np, knetc as kn
        >>> w = kn.param(784, 64)             # Xavier-uniform float32 weights
        >>> type(w).__name__, w.shape, w.dtype
        ('Param', (784, 64), dtype('float32'))
        >>> kn.param(np.arange(3), atype=np.float64).value
        array([0., 1., 2.])
    """
    convert = _converter(atype)
    if not dims_or_array:
        raise ValueError("param: give an array or the dimensions, e.g. param(784, 64)")
    first = dims_or_array[0]
    if len(dims_or_array) == 1 and not isinstance(first, (numbers.Integral, tuple)):
        if isinstance(first, (str, bytes)) or first is None:
            raise TypeError(f"param: expected an array or integer dims, got {first!r}")
        return Param(convert(first))
    return Param(convert(init(*dims_or_array)))


def param0(*dims, atype=None):
    """`param(dims...; init=zeros)`: a Param of zeros, `param0(64)` for a bias.

    Example:
        >>> import knetc as kn
        >>> kn.param0(3).value
        array([0., 0., 0.], dtype=float32)
    """
    return param(*dims, init=_zeros, atype=atype)


# Julia's rand! and randn!: fill an array in place from knetc's generator (kn.seed_ repeats them).

def _fill(dest, draw):
    target = getattr(dest, "value", dest)
    values = draw(_RNG, np.shape(target)).astype(np.asarray(target).dtype if isinstance(target, np.ndarray)
                                                 else np.dtype(target.dtype))
    return copyto_(dest, values)


def rand_(x):
    """Fill x in place with uniform random numbers in [0, 1) from knetc's generator (Julia's
    `rand!`) and return x.

    >>> import numpy as np, knetc as kn
    >>> a = kn.rand_(np.empty(3)); bool(((0 <= a) & (a < 1)).all())
    True
    """
    return _fill(x, lambda g, shape: g.random(shape))


def randn_(x):
    """Fill x in place with standard normal random numbers from knetc's generator (Julia's
    `randn!`) and return x.

    >>> import numpy as np, knetc as kn
    >>> kn.randn_(np.empty((2, 2))).shape
    (2, 2)
    """
    return _fill(x, lambda g, shape: g.standard_normal(shape))
