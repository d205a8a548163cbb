"""Nested containers of arrays (pytrees): lists, tuples, dicts (their subclasses too: OrderedDict,
defaultdict), and objects holding arrays.

A pytree flattens to its leaves (arrays, Params, numbers, ...) and a hashable treedef that
records the structure, so `unflatten(treedef, leaves)` rebuilds it. This runs on every
call of a compiled function, so the common cases are tested first."""
import collections
import enum
import functools
import math
import types

import numpy as np

_LEAF_TYPES = (np.ndarray, int, float, bool, str, type(None), complex)
_ARRAY_LIKE_TYPES = []  # Param, Tracked, Var: registered by their modules


_LOST = {True: "`*` (a matrix product)", False: "mask"}  # what an np.matrix or a masked array means more


def register_leaf_type(cls):
    _ARRAY_LIKE_TYPES.append(cls)
    return cls


def _is_object(x):
    # Callable objects are containers only when their class defines __call__ in Python (a
    # layer holding Params); functions, ufuncs and partials are leaves.
    return hasattr(x, "__dict__") and not isinstance(x, type) \
        and (not callable(x) or isinstance(getattr(type(x), "__call__", None), types.FunctionType)) \
        and not hasattr(x, "__cuda_array_interface__") and not getattr(x, "__cuda_ndarray__", False) and type(x).__module__ not in ("builtins", "numpy")


def flatten(tree):
    leaves = []
    return leaves, _flatten(tree, leaves)


def _flatten(x, leaves):
    t = type(x)
    if t in _LEAF_TYPES or t in _ARRAY_LIKE_TYPES:
        leaves.append(x)
        return None
    if t is list:
        return ("list", tuple(_flatten(v, leaves) for v in x))
    if t is tuple:
        return ("tuple", tuple(_flatten(v, leaves) for v in x))
    if t is dict:  # (keys other than strings with their types: 1, 1.0 and True are equal keys, not the same)
        node = ("dict", tuple(x), tuple(_flatten(v, leaves) for v in x.values()))
        return node if all(type(k) is str for k in x) else node + (tuple(map(type, x)),)
    if isinstance(x, dict):  # a subclass (OrderedDict, defaultdict): rebuilt by its class
        make = (t, x.default_factory) if isinstance(x, collections.defaultdict) else (t,)
        return ("mapping", make, tuple(x), tuple(_flatten(v, leaves) for v in x.values()))
    if isinstance(x, list):
        return ("sequence", t, tuple(_flatten(v, leaves) for v in x))
    if isinstance(x, (np.matrix, np.ma.MaskedArray)):
        raise TypeError(f"knetc takes plain numpy arrays, not a {t.__name__}: its {_LOST[t is np.matrix]} would be "
                        "lost (pass np.asarray(x), or x.filled(value) for a masked array)")
    if isinstance(x, np.ndarray):  # a subclass (np.memmap, a view class): its entries, as an array
        leaves.append(x.view(np.ndarray))
        return None
    if isinstance(x, enum.Enum):  # a constant, compared by identity
        leaves.append(x)
        return None
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple
        return (t, tuple(_flatten(v, leaves) for v in x))
    if _is_object(x) and not isinstance(x, tuple(_ARRAY_LIKE_TYPES)):
        stored = vars(x)  # (as stored: the class's own __getattribute__ runs when the function reads them)
        return ("object", t, tuple(stored), tuple(_flatten(v, leaves) for v in stored.values()))
    keys = _slots(x)
    if keys is not None:
        return ("object", t, keys, tuple(_flatten(object.__getattribute__(x, k), leaves) for k in keys))
    leaves.append(x)
    return None


def _slots(x):
    """The attributes set on an object whose class has __slots__ (no __dict__) and compares by
    identity: its contents, as another object's `vars` (a key by identity would miss a change of
    them); None for anything else (a value-like class hashes by its value)."""
    t = type(x)
    if hasattr(x, "__dict__") or t.__hash__ is not object.__hash__ or t.__module__ in ("builtins", "numpy") \
            or isinstance(x, tuple(_ARRAY_LIKE_TYPES)) or not (names := slot_names(t)):
        return None
    return tuple(n for n in names if hasattr(x, n))


@functools.lru_cache(maxsize=None)
def slot_names(cls):
    """The attribute names a class's __slots__ (its own and its bases') declare, each once."""
    declared = [c.__dict__.get("__slots__", ()) for c in cls.__mro__]
    return tuple(dict.fromkeys(n for d in declared for n in ((d,) if isinstance(d, str) else d)
                               if n not in ("__weakref__", "__dict__")))


def unflatten(treedef, leaves):
    return _unflatten(treedef, iter(leaves))


def _unflatten(node, it):
    if node is None:
        return next(it)
    kind = node[0]
    if kind == "list":
        return [_unflatten(n, it) for n in node[1]]
    if kind == "tuple":
        return tuple(_unflatten(n, it) for n in node[1])
    if kind == "dict":
        return {k: _unflatten(n, it) for k, n in zip(node[1], node[2])}
    if kind == "mapping":
        mapping = node[1][0](*node[1][1:])
        mapping.update(zip(node[2], [_unflatten(n, it) for n in node[3]]))
        return mapping
    if kind == "sequence":
        return node[1]([_unflatten(n, it) for n in node[2]])
    if kind == "object":  # (a built-in base such as types.SimpleNamespace allocates through its own __new__)
        obj = node[1].__new__(node[1]) if node[1].__new__ is not object.__new__ else object.__new__(node[1])
        for k, n in zip(node[2], node[3]):
            object.__setattr__(obj, k, _unflatten(n, it))
        return obj
    return kind(*(_unflatten(n, it) for n in node[1]))  # a namedtuple


def class_namespace(x, name, libraries=("builtins", "numpy", "knetc")):
    """The namespace (`vars` of a class) that x's attribute `name` comes from when it is not
    one of x's own (which flatten() reads): a class attribute or method of x's class, to be
    guarded there; None for x's own attributes, and for classes of the `libraries`."""
    t = type(x)
    if name in getattr(x, "__dict__", ()) or name in slot_names(t) or (t.__module__ or "").split(".")[0] in libraries:
        return None
    return next((vars(c) for c in t.__mro__[:-1] if name in vars(c)), None)


def zero_signs(value):
    """The signs of the zeros in a number or a tuple of them. 0.0 == -0.0, but a function
    may tell them apart (1 / x, copysign): compiled functions' signatures and guards compare
    this too."""
    if type(value) is tuple:
        return tuple(map(zero_signs, value))
    return math.copysign(1.0, value) if isinstance(value, (float, np.floating)) and value == 0 else None
