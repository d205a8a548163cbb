"""Data: the MNIST loader used by the examples and Knet's `minibatch` iterator.

MNIST here is the official test set (10,000 digits, the only part shipped with knetc, see
examples/data/README.md), split by the project's convention: the first 8,000 images train,
the last 2,000 test.
"""
import gzip
import numbers
import os
import zlib

import numpy as np

from .init import rng as knetc_rng

MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TRAIN = 8000  # the first 8,000 of the 10,000 images train, the last 2,000 test
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801  # IDX: ubyte, 3 dims / 1 dim


def _default_mnist_dir():
    """$KNETC_MNIST, else examples/data/mnist of the source tree this package lives in."""
    env = os.environ.get("KNETC_MNIST")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, "examples", "data", "mnist")


def _read_gz(path):
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: not a readable gzip file (corrupt or truncated?): {e}") from None


def _read_idx(path, magic, ndims):
    """The ubyte array in an IDX file, after checking its magic number and sizes."""
    data = _read_gz(path)
    header = 4 + 4 * ndims
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, the header alone is {header})")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: bad IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndims))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(f"{path}: IDX header says {dims} ({expected} bytes) but the file has "
                         f"{len(data)} bytes (corrupt or truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def mnist(path=None):
    """Load MNIST as (xtrn, ytrn, xtst, ytst).

    `path` is the folder holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz
    (default: $KNETC_MNIST, else examples/data/mnist in the knetc source tree). x are
    float32 arrays (N, 784) with values in [0, 1], instances first; y are int64 labels
    0..9. Train: the first 8,000 digits; test: the last 2,000. A missing file raises
    FileNotFoundError; a corrupt or truncated one raises ValueError naming the file."""
    folder = _default_mnist_dir() if path is None else os.fspath(path)
    images_path, labels_path = (os.path.join(folder, name) for name in MNIST_FILES)
    for p in (images_path, labels_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"mnist: {p} not found (pass mnist(path=folder) or set KNETC_MNIST)")
    images = _read_idx(images_path, _IMAGES_MAGIC, 3)
    labels = _read_idx(labels_path, _LABELS_MAGIC, 1)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: images are {images.shape[1:]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    if images.shape[0] <= MNIST_TRAIN:
        raise ValueError(f"{images_path}: {images.shape[0]} images, need more than {MNIST_TRAIN} to split")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range 0..9")
    x = images.reshape(images.shape[0], 28 * 28).astype(np.float32) / np.float32(255)
    y = labels.astype(np.int64)
    return x[:MNIST_TRAIN], y[:MNIST_TRAIN], x[MNIST_TRAIN:], y[MNIST_TRAIN:]


class Data:
    """Knet's `Data`: the minibatches `minibatch` returns. Iterating it is one epoch; it is
    re-iterable (each new iteration starts from the first batch and, with `shuffle`, draws a
    new order); `len()` is the number of batches."""

    def __init__(self, x, y=None, batchsize=100, shuffle=False, partial=False,
                 xtype=None, ytype=None, xsize=None, ysize=None, rng=None, shard=None):
        if not isinstance(batchsize, numbers.Integral) or isinstance(batchsize, bool) or batchsize < 1:
            raise ValueError(f"minibatch: batchsize must be a positive integer, got {batchsize!r}")
        self.shard = _shard(shard, batchsize)
        x = _as_data("x", x)
        n = x.shape[0]
        if y is not None:
            y = _as_data("y", y)
            if y.shape[0] != n:
                raise ValueError(f"minibatch: x has {n} instances but y has {y.shape[0]} "
                                 f"(instances are on the first axis)")
        self.x, self.y, self.n = x, y, n
        self.batchsize, self.shuffle, self.partial = int(batchsize), bool(shuffle), bool(partial)
        self.xtype, self.ytype = _converter("xtype", xtype), _converter("ytype", ytype)
        self.xsize = _batch_shape("xsize", xsize, x)
        self.ysize = None if y is None else _batch_shape("ysize", ysize, y)
        if ysize is not None and y is None:
            raise ValueError("minibatch: ysize given but there is no y")
        if rng is None or isinstance(rng, np.random.Generator):
            self._rng = rng
        elif isinstance(rng, numbers.Integral):
            self._rng = np.random.default_rng(int(rng))
        else:
            raise TypeError(f"minibatch: rng must be a numpy Generator, an integer seed or None, got {rng!r}")

    def __len__(self):
        full, rest = divmod(self.n, self.batchsize)
        rest -= rest % self.shard[1]  # a sharded partial batch keeps a multiple of the ranks
        return full + (1 if self.partial and rest else 0)

    def __iter__(self):
        order = None
        if self.shuffle:  # a new order for every epoch, drawn when the epoch starts
            order = (self._rng or knetc_rng()).permutation(self.n)
        rank, ranks = self.shard
        for k in range(len(self)):
            start = k * self.batchsize
            stop = min(start + self.batchsize, self.n)
            if ranks > 1:  # this rank's contiguous part of the batch, all parts of one size
                part = (stop - start) // ranks
                start, stop = start + rank * part, start + (rank + 1) * part
            index = slice(start, stop) if order is None else order[start:stop]
            xb = _batch(_take(self.x, index), self.xsize, self.xtype)
            if self.y is None:
                yield xb
            else:
                yield xb, _batch(_take(self.y, index), self.ysize, self.ytype)

    def __repr__(self):
        what = "x" if self.y is None else "(x, y)"
        shard = "" if self.shard == (0, 1) else f", shard={self.shard}"
        return (f"<minibatch: {len(self)} batches of {what}, batchsize={self.batchsize}, "
                f"{self.n} instances, shuffle={self.shuffle}, partial={self.partial}{shard}>")


def _shard(shard, batchsize):
    """shard=(rank, size) checked: 0 <= rank < size, and batchsize a multiple of size (so
    every rank's part, and so its weight in the averaged gradient, is the same)."""
    if shard is None:
        return 0, 1
    try:
        rank, size = shard
    except (TypeError, ValueError):
        raise TypeError(f"minibatch: shard must be (rank, size), e.g. kn.parallel.shard(), got {shard!r}") from None
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (rank, size)) \
            or size < 1 or not 0 <= rank < size:
        raise ValueError(f"minibatch: shard=(rank, size) needs integers 0 <= rank < size, got {shard!r}")
    if batchsize % size:
        raise ValueError(f"minibatch: batchsize {batchsize} does not split into {size} equal parts "
                         f"(shard={tuple(shard)!r}); use a multiple of {size}")
    return int(rank), int(size)


def _as_data(name, a):
    """An array-like with instances on its first axis (lists become numpy arrays)."""
    if not (hasattr(a, "shape") and hasattr(a, "__getitem__")):
        a = np.asarray(a)
    if len(a.shape) == 0:
        raise ValueError(f"minibatch: {name} must have at least one axis (instances first)")
    return a


def _converter(name, t):
    """xtype/ytype: None (keep the batch as sliced), a dtype (np.float32, "float32", float),
    np.ndarray (a numpy array of the batch's dtype), or a callable applied to each batch (kn.atype(), np.ascontiguousarray, a GPU array
    constructor, ...). Returns None or a function."""
    if t is None:
        return None
    if t is np.ndarray:  # Knet's xtype=Array: a numpy array of the batch's own dtype
        return np.asarray
    if isinstance(t, (str, np.dtype)) or (isinstance(t, type) and issubclass(t, (np.generic, bool, int, float, complex))):
        dtype = np.dtype(t)
        return lambda a: _as_dtype(a, dtype)
    if callable(t):
        return t
    raise TypeError(f"minibatch: {name} must be a dtype or a callable converting a batch, got {t!r}")


def _as_dtype(batch, dtype):
    """The batch in dtype, where it is (a KnetArray stays on the device)."""
    if getattr(batch, "dtype", None) == dtype:
        return batch
    return batch.astype(dtype) if hasattr(batch, "astype") else np.asarray(batch, dtype)


def _batch_shape(name, size, a):
    """xsize/ysize as Knet's (the whole data's shape, the instance axis adjusted for each
    batch): checked against the data's shape; returns the per-instance shape or None."""
    if size is None:
        return None
    if isinstance(size, numbers.Integral):
        size = (size,)
    size = tuple(size)
    if not size or not all(isinstance(d, numbers.Integral) for d in size):
        raise ValueError(f"minibatch: {name} must be a tuple of integers (N, d1, d2, ...), got {size!r}")
    inner = tuple(int(d) for d in size[1:])
    per_instance = int(np.prod(a.shape[1:]))
    known = int(np.prod([d for d in inner if d != -1]))
    free = inner.count(-1)  # one -1 allowed, as in numpy's reshape
    fits = (known == per_instance) if free == 0 else (free == 1 and known > 0 and per_instance % known == 0)
    if not fits or any(d < -1 for d in inner):
        raise ValueError(f"minibatch: {name}={size} does not fit instances of shape {tuple(a.shape[1:])} "
                         f"({name} is the whole data's shape, the first dimension replaced by "
                         f"the batch size)") from None
    return inner


def _take(a, index):
    """The instances `index` of the data, a copy (as Knet's getindex): editing a batch in place
    must not edit the data set. (A slice of a numpy array or a KnetArray may be a view; a
    gather already copies.)"""
    batch = a[index]
    return batch.copy() if isinstance(index, slice) and hasattr(batch, "copy") else batch


def _batch(a, inner, convert):
    if inner is not None:
        a = a.reshape((a.shape[0],) + inner)  # Knet adjusts the last (instance) dimension
    return a if convert is None else convert(a)


def minibatch(x, y=None, batchsize=None, shuffle=False, partial=False,
              xtype=None, ytype=None, xsize=None, ysize=None, rng=None, shard=None):
    """Minibatches of instances along the first axis (Knet's `minibatch`, whose instances
    are on the last axis):

        for xb, yb in minibatch(x, y, 100, shuffle=True): ...
        for xb in minibatch(x, 100): ...      # without y: batches of x alone

    - `batchsize` (default 100); the last, partial batch is dropped unless `partial=True`.
    - `shuffle`: a new order for every epoch, i.e. every new iteration over the returned
      object, drawn from `rng` (a Generator or a seed; default knetc's generator, which
      `kn.seed_` seeds, so shuffling is reproducible).
    - `xtype`/`ytype`: convert each batch, with a dtype (`np.float32`) or a callable
      (`kn.atype()`, an array constructor).
    - `xsize`/`ysize`: reshape each batch to this shape with the first dimension adjusted to
      the batch size: `minibatch(x, y, 100, xsize=(-1, 1, 28, 28))` for x of shape (N, 784).
    - x and y must agree on the number of instances (ValueError).
    - `shard=(rank, size)` (data-parallel training, `shard=kn.parallel.shard()`): every
      batch is split into `size` contiguous parts of `batchsize // size` instances and this
      rank gets part `rank`, so `size` ranks together see the batches one process would
      (the same order on every rank when they shuffle with the same seed). `batchsize` must
      be a multiple of `size`; a partial last batch (`partial=True`) loses its last
      `len % size` instances, so every rank has as many batches, of one size.

    The result has `len()` (the number of batches) and is re-iterable: Knet's
    `repeat(d, n)` is `itertools.chain.from_iterable(itertools.repeat(d, n))` (reshuffled
    each epoch), `take(d, n)` is `itertools.islice(d, n)`; `itertools.cycle(d)` works but,
    as Python's cycle does, replays the first epoch's batches (same order) rather than
    reshuffling; `itertools.chain.from_iterable(itertools.repeat(d))` cycles with a new
    order each epoch. Knet's `Iterators.Stateful(d)` is `iter(d)`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
        >>> d = kn.minibatch(x, y, 4)             # the partial last batch (2 instances) is dropped
        >>> len(d), [yb.tolist() for _, yb in d]
        (2, [[0, 1, 2, 3], [4, 5, 6, 7]])
        >>> [len(yb) for _, yb in kn.minibatch(x, y, 4, partial=True)]
        [4, 4, 2]
    """
    if isinstance(y, numbers.Integral) and not isinstance(y, bool):
        if batchsize is not None:
            raise TypeError(f"minibatch: y={y!r} is an integer (taken as the batch size) but "
                            f"batchsize={batchsize!r} is given too")
        y, batchsize = None, y  # minibatch(x, batchsize)
    return Data(x, y, 100 if batchsize is None else batchsize, shuffle=shuffle, partial=partial,
                xtype=xtype, ytype=ytype, xsize=xsize, ysize=ysize, rng=rng, shard=shard)
