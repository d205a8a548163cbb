"""The op table: every primitive defined once (see core.Op), grouped by family."""
from . import broadcast, elementwise, indexing, linalg, nn, numpy_more, numpy_stats, reduce, shape  # noqa: F401  (registers the ops)
from .core import OPS, Aval, Op, aval_of, bind  # noqa: F401
from .docs import document as _document
_document(OPS)  # each public op's own docstring, for help(kn.relu)
