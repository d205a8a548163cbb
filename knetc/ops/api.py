"""Public wrappers with Knet's (translated) signatures for ops whose primitives take keywords."""
import numpy as np

from .core import aval_of
from .shape import reshape as reshape_op, resolve_shape, transpose as transpose_op


def reshape(x, *shape):
    """reshape(x, (2, -1)) or reshape(x, 2, -1): numpy order, at most one -1.

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.reshape(np.arange(6.0), 2, -1)
        array([[0., 1., 2.],
               [3., 4., 5.]])
    """
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return reshape_op(x, shape=resolve_shape(int(np.prod(aval_of(x).shape)), shape))


def transpose(x, perm=None):
    """Reverse the axes (a matrix transpose), or permute them by `perm`.

    Example:
        >>> import numpy as np, knetc as kn
        >>> kn.transpose(np.array([[1.0, 2.0, 3.0]]))
        array([[1.],
               [2.],
               [3.]])
    """
    ndim = len(aval_of(x).shape)
    return transpose_op(x, perm=tuple(reversed(range(ndim))) if perm is None else tuple(perm))
