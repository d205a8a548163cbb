"""Which calls compiled code refuses, and why (the translator asks, knetc/frontend/translate.py).

Two kinds: calls whose effect or result would happen once, while knetc traces the function,
and then never again (random numbers, the clock, files, changing an object from outside);
and calls that need an array value's data, which exists only when the kernels run
(float(x), np.asarray(x), numpy functions knetc has no op for). Each raises CompileError with
a hint; the translator places it at the user's line.

It also says which library functions call the Python functions they are given (map, sorted's
key, functools.reduce, kn.grad): the translator inlines those when called, and guards what they read."""
import collections.abc
import functools
import itertools
import operator
import random
import types
import warnings

import numpy as np

from .errors import CompileError
from .ir.core import Var, current_builder
from .ops.methods import FUNCTIONS, UFUNCS

_RANDOM_OWNERS = (random.Random, np.random.RandomState, np.random.Generator)
_RANDOM_INIT = {"seed_", "param", "xavier", "xavier_uniform", "xavier_normal", "gaussian"}  # knetc.train.init
_IMPURE_BUILTINS = {input: "reads input", open: "opens a file", exec: "runs code", eval: "runs code",
                    breakpoint: "stops in the debugger", setattr: "changes an object", delattr: "changes an object"}
_INTROSPECTION = (locals, globals, vars, dir)  # (inside compiled code they would see the translator's own)
_SYSTEM_MODULES = ("time", "datetime", "os", "posix", "nt", "uuid")  # clocks, random bytes, files
# Methods that change their object, by the names Python's and numpy's mutable types give them
# (list, dict, set, deque, array.array, bytearray, ndarray, files): refused on objects from outside.
_MUTATORS = set("append appendleft extend extendleft insert pop popleft popitem remove clear sort reverse rotate update "
                "setdefault add discard difference_update intersection_update symmetric_difference_update move_to_end fill "
                "resize put itemset partition setfield setflags byteswap frombytes fromlist fromfile write writelines send "
                "throw close __setitem__ __delitem__ __setattr__ __delattr__".split()) | {
    f"__i{op}__" for op in "add sub mul matmul truediv floordiv mod pow lshift rshift and xor or".split()}
_NUMPY_WRITERS = (np.copyto, np.put, np.place, np.putmask, np.fill_diagonal)
_NUMPY_CONVERSIONS = (np.asarray, np.array, np.asanyarray, np.ascontiguousarray, np.asfortranarray, np.copy,
                      np.frombuffer, np.fromiter)
DATA_METHODS = {"item", "tolist", "tobytes", "__float__", "__int__", "__index__"}
_TEXT = (str, repr, ascii, format)
_PRINT_WARNED = set()  # (file, line) of each print warned about
# Builtins that call the functions and callable objects they are given (other builtins, such as isinstance or id,
# look at them); knetc's and numpy's functions given a Python function call it (kn.grad(f)), and these of knetc's
# call a model object given first (kn.nll(model, x, y)): elsewhere a model is data (kn.params(model)).
_HIGHER_ORDER = (map, filter, sorted, min, max, functools.reduce, itertools.accumulate, itertools.starmap,
                 itertools.filterfalse, itertools.takewhile, itertools.dropwhile, itertools.groupby,
                 functools.cmp_to_key, collections.defaultdict)  # (the last two: a key or a factory called later)
_CALL_THEIR_MODEL = {"nll", "accuracy", "grad", "gradloss", "diff", "sum", "prod", "maximum", "minimum", "mean"}


def calls_functions(fn, position):
    """What library function fn may call of its argument at `position` (None: a keyword):
    "objects" (Python functions and callable objects), "functions" (Python functions) or None."""
    if any(fn is f for f in _HIGHER_ORDER) or getattr(fn, "__name__", "") == "sort" and type(getattr(fn, "__self__", None)) is list:
        return "objects"
    module = getattr(fn, "__module__", None) or ""  # (kn.compile and kn.inspect read its source instead)
    if module.split(".")[0] not in ("knetc", "numpy") or module in ("knetc.compiler", "knetc.inspection"):
        return None
    return "objects" if position == 0 and module.startswith("knetc") and getattr(fn, "__name__", "") in _CALL_THEIR_MODEL \
        else "functions"


def refuse_text(what):
    """str(x), f"{x}", "%s" % x, "{}".format(x) of an array value, or of a container holding
    one: the text shows the data, which exists only when the kernels run (while tracing, the
    value is an IR value: its text would be its name, once, on every call)."""
    raise CompileError(f"{what} of an array value: its text shows its data, which is only known when the kernels run",
                       hint="format results outside the compiled function (x.shape and x.dtype are known inside it)")


def refuse_iterator(value):
    """An iterator read from outside (`next(counter)`, a generator): reading it changes it."""
    if isinstance(value, collections.abc.Iterator):
        raise CompileError(f"a {type(value).__name__} (an iterator) from outside the compiled function: compiled code "
                           "would read it once, while tracing", hint="pass the values it gives as arguments")


# Python's containers find a key or an item by its value (hash and ==); an array value has
# none while tracing (an ndarray is unhashable, a numpy scalar hashes its number).
_LOOKUPS = {"get", "pop", "setdefault", "__getitem__", "__contains__", "count", "index", "remove", "discard", "add"}
_HASHING = (hash, id, set, frozenset, collections.Counter, operator.contains, operator.countOf,
            operator.indexOf)


def _looks_up(fn, args):
    owner = getattr(fn, "__self__", None)
    if any(fn is f for f in _HASHING):
        return True
    return isinstance(owner, (dict, list, tuple, set, frozenset, collections.deque)) \
        and getattr(fn, "__name__", "") in _LOOKUPS and bool(args) and _holds_var(args[0])


def _holds_var(x):
    return isinstance(x, Var) or isinstance(x, (list, tuple)) and any(map(_holds_var, x))


def refuse_data_access(fn, name, args=()):
    """Calls that need an array value's data (float(x), np.asarray(x), x.item()), a lookup by
    an array value (its hash or ==: `table.get(s)`, `xs.index(x)`, `hash(x)`) or a numpy
    function knetc has no op for: refused by name, not with Python's message about a `Var`."""
    if _looks_up(fn, args):
        raise CompileError(f"`{name}` hashes, compares or identifies an array value (Python looks up by value; an "
                           "ndarray has no hash), which compiled code knows only when the kernels run",
                           hint="look up by a Python number or string known while tracing, or use array operations "
                                "(np.where, masks)")
    if any(fn is f for f in _TEXT) or isinstance(getattr(fn, "__self__", None), str):  # str(x), "{}".format(x)
        refuse_text(f"`{name}`")
    if any(fn is f for f in (float, int, complex, bool, round, range)) \
            or isinstance(fn, type) and issubclass(fn, np.generic) \
            or getattr(fn, "__name__", None) in DATA_METHODS and isinstance(getattr(fn, "__self__", None), Var):
        raise CompileError(f"`{name}` of an array value: its data is only known when the kernels run",
                           hint="keep it an array (a 0-d array broadcasts like a number), or do this outside "
                                "the compiled function")
    if getattr(fn, "__module__", None) == "math":  # (Python's "must be real number, not Var")
        raise CompileError(f"`math.{getattr(fn, '__name__', name)}` of an array value: the math module takes Python "
                           "numbers", hint=f"use np.{getattr(fn, '__name__', name)} (numpy's functions work on arrays)")
    numpy = isinstance(fn, np.ufunc) or (getattr(fn, "__module__", None) or "").split(".")[0] == "numpy"
    conversion = any(fn is f for f in _NUMPY_CONVERSIONS)
    if numpy and (conversion or not any(fn is f for f in (*UFUNCS, *FUNCTIONS))):
        raise CompileError(f"`np.{name}` of an array value inside compiled code: numpy would need its data, which "
                           "is only known when the kernels run" if conversion else f"`np.{name}` is not supported "
                           "on array values in compiled code (knetc compiles only the numpy functions in its op "
                           "table)", hint="use the kn. functions (kn.sum, kn.reshape, kn.max(x, lo), ...) or the "
                           "value itself, or call numpy outside the compiled function")


def refuse_side_effects(fn, name, args, kwargs, is_external):
    """Calls whose effect or result would happen once, at trace time, and then never
    again: compiled code refuses them rather than differ from Python on later calls (print
    is only warned about, once per line)."""
    owner = getattr(fn, "__self__", None)  # (a module, or the class of a classmethod: datetime.now)
    module = getattr(fn, "__module__", None) or getattr(owner, "__name__" if isinstance(owner, types.ModuleType)
                                                        else "__module__" if isinstance(owner, type) else "", "")
    top = module.split(".")[0]
    random = isinstance(owner, _RANDOM_OWNERS) or module.startswith("numpy.random") or top in ("random", "secrets") \
        or (module == "knetc.train.init" and getattr(fn, "__name__", "") in _RANDOM_INIT)
    impure = "draws random numbers" if random else next((what for f, what in _IMPURE_BUILTINS.items() if fn is f),
                                                        "asks the system (the clock, files, random bytes)")
    if random or top in _SYSTEM_MODULES or any(fn is f for f in _IMPURE_BUILTINS):
        raise CompileError(f"`{name}` {impure}: compiled code would do it once, while tracing, and reuse the "
                           "result on every call", hint="do it outside and pass the result in as an argument"
                           + " (kn.dropout draws a new mask on every call)" * random)
    if fn is print and (where := current_builder().loc or ("<unknown>", 0)) not in _PRINT_WARNED:
        _PRINT_WARNED.add(where)  # (warned once per line)
        warnings.warn_explicit("print runs only while knetc traces the function (once per specialization) and shows "
                               "IR values (shapes, dtypes), not data; compiled calls print nothing. hint: print results "
                               "outside the compiled function, or call its .fn (the plain Python function) to debug",
                               UserWarning, where[0] or "<unknown>", where[1] or 0)
    if any(fn is f for f in _INTROSPECTION):
        raise CompileError(f"`{name}()` is not supported in compiled code (it would see the compiler's variables)")
    writer = any(fn is f for f in _NUMPY_WRITERS)  # (or a method of a builtin type: its Python ones are inlined)
    target = owner if isinstance(fn, (types.BuiltinMethodType, types.MethodWrapperType)) else args[0] if args and (
        writer or isinstance(fn, (types.MethodDescriptorType, types.WrapperDescriptorType))) else None  # hs.append
    if (writer or getattr(fn, "__name__", "") in _MUTATORS) and not isinstance(target, (types.ModuleType, type)) \
            and target is not None and is_external(target):
        raise CompileError(f"`{name}` changes a {type(target).__name__} from outside the compiled function (a "
                           "global, closure value or argument): compiled code would do it once, while tracing, "
                           "not on every call",
                           hint="build a new list or dict inside the function and return it "
                                "(containers created inside the function may be changed freely)")
    out = kwargs.get("out")
    if out is not None and (isinstance(out, Var) or any(is_external(o) for o in
                                                        (out if isinstance(out, tuple) else (out,)))):
        raise CompileError(f"`{name}(..., out=...)` writes into an existing array: compiled code would do it "
                           "once, while tracing", hint="use the returned array instead of out=")
