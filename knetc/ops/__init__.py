"""The op table: every primitive defined once (see core.Op), grouped by family."""
from . import broadcast, elementwise, indexing, linalg, nn, reduce, shape  # noqa: F401  (registers the ops)
from .core import OPS, Aval, Op, aval_of, bind  # noqa: F401
