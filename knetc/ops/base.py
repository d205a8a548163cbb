"""Names the seeds list that are Julia Base functions on arrays or older Knet spellings:
sumabs, sumabs2, maxabs, minabs, countnz, vecnorm (Knet 0.x reductions), isapprox, first,
copyto_ (Julia's `copyto!`; `rand!` and `randn!` are train/init.py's rand_ and randn_).
Python's own `x.shape`, `len(x)`, `x.ndim`, `x.dtype` and `x.size` stand for size, length,
ndims, eltype and isempty. Each is written with knetc's ops, so it records and compiles like them.
"""
import numpy as np

from .. import context
from .core import aval_of
from .elementwise import abs as abs_, abs2, ne
from .linalg import norm
from .reduce import maximum, minimum, sum

__all__ = ["sumabs", "sumabs2", "maxabs", "minabs", "countnz", "vecnorm", "isapprox", "first", "copyto_"]


def sumabs(x, dims=None):
    """sum(abs(x), dims) (Knet 0.x's sumabs; reduced axes kept with dims).

    >>> import numpy as np, knetc as kn
    >>> float(kn.sumabs(np.array([1.0, -2.0])))
    3.0
    """
    return sum(abs_(x), dims)


def sumabs2(x, dims=None):
    """sum(abs2(x), dims): the sum of squares (Knet 0.x's sumabs2).

    >>> import numpy as np, knetc as kn
    >>> float(kn.sumabs2(np.array([1.0, -2.0])))
    5.0
    """
    return sum(abs2(x), dims)


def maxabs(x, dims=None):
    """maximum(abs(x), dims).

    >>> import numpy as np, knetc as kn
    >>> float(kn.maxabs(np.array([1.0, -2.0])))
    2.0
    """
    return maximum(abs_(x), dims)


def minabs(x, dims=None):
    """minimum(abs(x), dims).

    >>> import numpy as np, knetc as kn
    >>> float(kn.minabs(np.array([1.0, -2.0])))
    1.0
    """
    return minimum(abs_(x), dims)


def countnz(x, dims=None):
    """The number of nonzero entries (over dims, kept as size 1), an integer (Knet 0.x's countnz).

    >>> import numpy as np, knetc as kn
    >>> int(kn.countnz(np.array([0.0, 3.0, -1.0])))
    2
    """
    return sum(ne(x, 0).astype(np.int64), dims)


def vecnorm(x, p=2):
    """The p-norm of all entries (Knet 0.x's vecnorm; today's `norm`).

    >>> import numpy as np, knetc as kn
    >>> float(kn.vecnorm(np.array([3.0, -4.0])))
    5.0
    """
    return norm(x, p)


def isapprox(x, y, rtol=None, atol=0.0):
    """Julia's isapprox for arrays: norm(x - y) <= max(atol, rtol * max(norm(x), norm(y))),
    rtol sqrt(eps) of the wider float dtype by default (a Python bool).

    >>> import numpy as np, knetc as kn
    >>> kn.isapprox(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-10]))
    True
    """
    a, b = np.asarray(x), np.asarray(y)
    if rtol is None:
        kinds = [d for d in (a.dtype, b.dtype) if d.kind == "f"]
        rtol = 0.0 if atol > 0 else float(np.sqrt(np.finfo(max(kinds, key=lambda d: d.itemsize) if kinds
                                                            else np.float64).eps))
    difference = float(np.linalg.norm((a - b).ravel()))
    return bool(difference <= max(atol, rtol * max(float(np.linalg.norm(a.ravel())), float(np.linalg.norm(b.ravel())))))


def first(x):
    """The first entry of x in memory order (Julia's `first`), differentiable as indexing.

    >>> import numpy as np, knetc as kn
    >>> float(kn.first(np.array([[3.0, 4.0], [5.0, 6.0]])))
    3.0
    """
    return x[(0,) * len(aval_of(x).shape)]


def copyto_(dest, src):
    """Copy src's entries into dest in place (Julia's `copyto!`; numpy arrays, KnetArrays and
    Params' values; src is broadcast to dest's shape) and return dest.

    >>> import numpy as np, knetc as kn
    >>> kn.copyto_(np.zeros(2), np.array([1.0, 2.0]))
    array([1., 2.])
    """
    target = getattr(dest, "value", dest)
    if context.kind(target) == "device":  # a KnetArray: copied on the device
        target[...] = src
    else:
        np.copyto(target, np.asarray(getattr(src, "value", src)), casting="same_kind")
    return dest
