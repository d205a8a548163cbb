"""Data: the MNIST loader used by the examples and a small `minibatch` iterator.

MNIST here is the official test set (10,000 digits, the only part shipped with knetc, see
examples/data/README.md), split by the project's convention: the first 8,000 images train,
the last 2,000 test.
"""
import gzip
import numbers
import os
import zlib

import numpy as np

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
    """Minibatches of (x, y), or of x alone, along the first axis; iterate it once per epoch
    (it is re-iterable, and reshuffles each time when `shuffle`). `len()` is the number of
    batches."""

    def __init__(self, x, y, batchsize, shuffle=False, partial=False, rng=None):
        if not isinstance(batchsize, numbers.Integral) or isinstance(batchsize, bool) or batchsize < 1:
            raise ValueError(f"minibatch: batchsize must be a positive integer, got {batchsize!r}")
        n = _instances("x", x)
        if y is not None and _instances("y", y) != n:
            raise ValueError(f"minibatch: x has {n} instances but y has {_instances('y', y)} "
                             f"(instances are on the first axis)")
        self.x, self.y, self.n = x, y, n
        self.batchsize, self.shuffle, self.partial = int(batchsize), bool(shuffle), bool(partial)
        if rng is None or isinstance(rng, np.random.Generator):
            self._rng = rng
        elif isinstance(rng, numbers.Integral):
            self._rng = np.random.default_rng(int(rng))
        else:
            raise TypeError(f"minibatch: rng must be a numpy Generator, an integer seed or None, got {rng!r}")

    def __len__(self):
        full, rest = divmod(self.n, self.batchsize)
        return full + (1 if self.partial and rest else 0)

    def __iter__(self):
        if self.shuffle:
            from .init import rng
            order = (self._rng or rng()).permutation(self.n)
        else:
            order = None
        for k in range(len(self)):
            start = k * self.batchsize
            stop = min(start + self.batchsize, self.n)
            index = slice(start, stop) if order is None else order[start:stop]
            xb = self.x[index]
            yield xb if self.y is None else (xb, self.y[index])


def _instances(name, a):
    shape = np.shape(a)
    if not shape:
        raise ValueError(f"minibatch: {name} must have at least one axis (instances first)")
    return shape[0]


def minibatch(x, y=None, batchsize=None, shuffle=False, partial=False, rng=None):
    """Iterate over minibatches of instances along the first axis (Knet's `minibatch`):

        for xb, yb in minibatch(x, y, 100, shuffle=True): ...
        for xb in minibatch(x, 100): ...

    The last, partial batch is dropped unless `partial=True`. With `shuffle` the order is
    drawn anew for each pass from `rng` (a Generator or a seed; default knetc's generator,
    which `seed_` seeds). x and y must agree on the number of instances (ValueError)."""
    if batchsize is None:
        if isinstance(y, numbers.Integral) and not isinstance(y, bool):
            x, y, batchsize = x, None, y  # minibatch(x, batchsize)
        else:
            raise TypeError("minibatch: give the batch size, minibatch(x, y, batchsize) or minibatch(x, batchsize)")
    return Data(x, y, batchsize, shuffle=shuffle, partial=partial, rng=rng)
