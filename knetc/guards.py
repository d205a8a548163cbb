"""What a compiled program depends on from outside its function, and how a call checks it.

The translator (knetc/frontend/translate.py) guards every read from outside: a global, a
closure variable, an attribute or item reached through them. Before each call the compiled
function checks its guards; when one no longer holds, the specialization is stale and the
function is traced again (KNETC_LOG=compile says which guard failed).
"""
import array
import collections
import functools
import operator

import numpy as np

from . import pytree
from .ir.core import SNAPSHOT_MAX

_SCALARS = (int, float, bool, complex, str, bytes, type(None), np.generic, range, slice, type(Ellipsis))
_MISSING = object()

# Arrays read from outside with at most this many entries are guarded by their contents (a
# compare per call: a few microseconds; the program holds a copy of them); larger ones
# (weights, data sets) only by identity, shape and dtype: they are the program's operands as
# soon as they are read (Translation.live), their entries read at each run.
CONTENT_GUARD_MAX = SNAPSHOT_MAX


def is_static(value):
    """Immutable Python values a guard compares by value: numbers, strings, None and tuples of them."""
    return isinstance(value, _SCALARS) or type(value) is tuple and all(is_static(v) for v in value)


def container_kind(value):
    """How a mutable container is guarded, by a snapshot of its items: "list" (lists and
    deques), "dict" (and OrderedDict, defaultdict, Counter), "set", "bytes" (bytearray and
    array.array, by their bytes); None for anything else."""
    return "dict" if isinstance(value, dict) else "list" if isinstance(value, (list, collections.deque)) \
        else "set" if isinstance(value, set) else "bytes" if isinstance(value, (bytearray, array.array)) else None


class Guard:
    """A read from outside the function that the compiled program depends on: root (a module's
    globals dict or a closure cell) -> name -> path of attributes (True, name) and items (False,
    key). check() reads the chain again; when it no longer yields what it did (kind "is": the
    same object; "value": an equal immutable value of the same type; "array": the same array
    with the same shape and dtype, and up to CONTENT_GUARD_MAX entries the same contents;
    "list"/"dict"/"set": the same container holding the same items, compared by identity;
    "bytes": the same buffer with the same bytes), the specialization is stale and is traced again."""
    __slots__ = ("root", "name", "path", "kind", "check")

    def __init__(self, root, name, path, value):
        kind = "value" if is_static(value) else "array" if isinstance(value, np.ndarray) else container_kind(value) or "is"
        self.root, self.name, self.path, self.kind = root, name, path, kind
        # check() runs before every compiled call, so it is made for speed (a global name, the common
        # case, is read without a walk); it raises when the chain is gone. Snapshots are taken now.
        read = functools.partial(root.get, name, _MISSING) if name is not None and not path else self.read
        if kind == "value":  # (zeros: and of the same sign)
            kind_of, signs = type(value), pytree.zero_signs(value)
            self.check = lambda: (now := read()) is value or type(now) is kind_of and now == value and pytree.zero_signs(now) == signs
        elif kind == "array":
            # Small arrays by their contents too: the trace may have used them as numbers (labels,
            # an index, a mask, numpy code), which the program then holds; an in-place change retraces.
            shape, dtype, nan = value.shape, value.dtype, value.dtype.kind in "fc"
            contents = value.copy() if value.size <= CONTENT_GUARD_MAX else None
            self.check = lambda: read() is value and value.shape == shape and value.dtype == dtype and (
                contents is None or np.array_equal(value, contents, equal_nan=nan))
        elif kind == "list":
            items = tuple(value)
            self.check = lambda: read() is value and len(value) == len(items) and all(map(operator.is_, value, items))
        elif kind == "dict":
            keys, values = tuple(value), tuple(value.values())
            self.check = lambda: read() is value and tuple(value) == keys and all(map(operator.is_, value.values(), values))
        elif kind == "set":
            items = frozenset(value)
            self.check = lambda: read() is value and value == items
        elif kind == "bytes":
            contents = bytes(memoryview(value))
            self.check = lambda: read() is value and bytes(memoryview(value)) == contents
        else:
            self.check = lambda: read() is value

    def read(self):
        value = self.root.get(self.name, _MISSING) if self.name is not None else self.root.cell_contents
        for is_attribute, key in self.path:
            value = getattr(value, key) if is_attribute else value[key]
        return value

    def holds(self):
        try:
            return self.check()
        except Exception:  # a name, attribute or item that is gone (or an emptied cell)
            return False

    def describe(self):
        """The chain as the user would write it (for messages): `model[0].w`."""
        return (self.name if self.name is not None else "<closure variable>") + "".join(
            f".{key}" if is_attribute else f"[{key!r}]" for is_attribute, key in self.path)
