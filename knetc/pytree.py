"""Nested containers of arrays (pytrees): lists, tuples, dicts, and objects holding arrays.

A pytree flattens to its leaves (arrays, Params, numbers, ...) and a hashable treedef that
records the structure, so `unflatten(treedef, leaves)` rebuilds it."""


class ObjectNode:
    """An object whose attributes hold leaves (a layer holding Params): rebuilt as the same class."""


def _is_object(x):
    return hasattr(x, "__dict__") and not isinstance(x, type) and not callable(getattr(x, "__array__", None)) \
        and type(x).__module__ not in ("builtins", "numpy") and not _is_leaf_type(x)


def _is_leaf_type(x):
    from .autograd import Param, Tracked
    return isinstance(x, (Param, Tracked)) or hasattr(x, "__cuda_array_interface__") or hasattr(x, "aval")


def flatten(tree):
    leaves = []
    return leaves, _flatten(tree, leaves)


def _flatten(x, leaves):
    if isinstance(x, (list, tuple)) and not _is_leaf_type(x):
        kind = "list" if isinstance(x, list) else ("tuple" if type(x) is tuple else type(x))
        return (kind, tuple(_flatten(v, leaves) for v in x))
    if isinstance(x, dict):
        keys = tuple(x)
        return ("dict", keys, tuple(_flatten(x[k], leaves) for k in keys))
    if _is_object(x):
        keys = tuple(vars(x))
        return ("object", type(x), keys, tuple(_flatten(getattr(x, k), leaves) for k in keys))
    leaves.append(x)
    return None


def unflatten(treedef, leaves):
    it = iter(leaves)
    return _unflatten(treedef, it)


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
    if kind == "object":
        obj = object.__new__(node[1])
        for k, n in zip(node[2], node[3]):
            object.__setattr__(obj, k, _unflatten(n, it))
        return obj
    return kind(*(_unflatten(n, it) for n in node[1]))  # a namedtuple
