"""AST -> IR: walk a function's source, evaluating at compile time everything that depends
only on shapes, dtypes, Python values and the structure of the arguments, and emitting IR
for array operations (which happen when ops are applied to Vars).

Loops over static iterables unroll, `if` on static values picks a branch, calls to plain
Python helpers (and methods of user objects) are inlined from their source. What cannot be
known at compile time raises CompileError at the user's line, with a hint."""
import ast
import builtins
import functools
import hashlib
import inspect
import operator
import sys
import types
from collections import ChainMap

import numpy as np

from .. import context, pytree
from ..autograd import Param, Tracked, value_of
from ..errors import CompileError, ShapeError
from ..guards import CONTENT_GUARD_MAX, Guard, container_kind, is_static as _is_static
from ..ir.core import Builder, Var, current_builder
from ..ops import elementwise as ew
from ..ops.core import astype, aval_of
from ..refusals import DATA_METHODS, calls_functions, refuse_data_access, refuse_iterator, refuse_side_effects, refuse_text
from .loops import LoopIndex, NotALoop, holds_loop_index, holds_var, subscript, trace_region
from .source import function_ast


# `return`, `break` and `continue` unwind the translator's own stack. They are no Exception,
# so that the handlers that place the user's errors at a line let them through.
class _Return(BaseException):
    """`return`: args[0] is the value."""


class _Break(BaseException):
    """`break`: leaves the innermost loop."""


class _Continue(BaseException):
    """`continue`: ends the innermost loop's step."""


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.MatMult: operator.matmul, ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv,
              ast.Mod: operator.mod, ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
              ast.LShift: operator.lshift, ast.RShift: operator.rshift,
              ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert}
# `x op= y` on a Python list, dict or set, or a numpy array made while tracing, changes it in place
# (as Python and numpy do: every name of it sees the change; numpy's casting rules apply).
_IN_PLACE = {op: getattr(operator, "i" + fn.__name__.rstrip("_")) for op, fn in _OPERATORS.items() if issubclass(op, ast.operator)}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: lambda a, b: _python_equal(a, b, True), ast.NotEq: lambda a, b: _python_equal(a, b, False),
            ast.Is: operator.is_, ast.IsNot: operator.is_not,
            ast.In: lambda a, b: _contains(b, a), ast.NotIn: lambda a, b: not _contains(b, a)}
_ARRAY_COMPARE = {**_COMPARE, ast.Eq: ew.eq, ast.NotEq: ew.ne}  # (a Var's == is identity: Vars are dict keys)
# Python operators with no op in the table: on an array value they are refused at the
# user's line (instead of Python's "unsupported operand type(s) ... 'Var'").
_NO_ARRAY_OPERATOR = {
    ast.LShift: ("`<<`", "multiply by 2 ** k"), ast.RShift: ("`>>`", "do bit operations outside the compiled function"),
}  # (`&`, `|`, `^`, `~` combine masks: ops/numpy_more.py)

_UNSUPPORTED = {
    **dict.fromkeys((ast.Try, getattr(ast, "TryStar", ast.Try)),  # (TryStar: Python 3.11)
                    ("`try`", "compiled code cannot catch exceptions; move the try outside the compiled function")),
    ast.With: ("`with`", "move the with-block outside the compiled function"),
    ast.Global: ("`global`", "pass the value as an argument"),
    ast.Nonlocal: ("`nonlocal`", "return the value instead"),
    ast.Delete: ("`del`", "leave the name unused instead"),
    **dict.fromkeys((ast.Import, ast.ImportFrom), ("`import`", "import at module level")),
    ast.ClassDef: ("a class definition", "define classes at module level"),
    ast.AsyncFunctionDef: ("`async def`", None), ast.AsyncFor: ("`async for`", None), ast.AsyncWith: ("`async with`", None),
    ast.Yield: ("`yield`", "return a list instead"), ast.YieldFrom: ("`yield from`", None), ast.Await: ("`await`", None),
    ast.NamedExpr: ("`:=`", "assign on its own line"),
    ast.Match: ("`match`", "use if/elif on static values"),
}

_ARRAY_KINDS = (np.ndarray, np.generic, Param, Tracked)  # what an array value can be when Python runs the function

_MAX_INLINE_DEPTH = 256  # helper calls nested inside each other (each inlined)
_FRAMES_PER_INLINE = 40  # Python frames the translator may use per inlined call (about 12 measured)
_MAX_WHILE_STEPS = 100_000

_LIBRARY_ROOTS = ("knetc", "numpy", "builtins", "math", "operator", "functools", "itertools")
_MISSING = object()
BUILTINS = vars(builtins)


def _is_library(value):
    """Modules and functions of knetc, numpy and the standard helpers: functions are called
    as they are (they apply ops to Vars) instead of inlined, and need no guard."""
    module = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None) or ""
    return module.split(".")[0] in _LIBRARY_ROOTS and not isinstance(value, functools.partial)  # (it holds the user's values)


@functools.lru_cache(maxsize=None)
def _local_names(node):
    """The names local to a function in all of its body (Python's rule): those its body binds, not
    counting nested functions' and comprehensions' own (its parameters are always bound)."""
    names, todo = set(), list(node.body) if isinstance(node, ast.FunctionDef) else []
    while todo:
        child = todo.pop()
        if isinstance(child, ast.Name) and not isinstance(child.ctx, ast.Load):
            names.add(child.id)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(child.name)
        elif not isinstance(child, (ast.Lambda, ast.comprehension)):
            todo.extend(ast.iter_child_nodes(child))
    return names


def _equal(x, y):
    """`x == y` as Python answers it for lists, tuples and dicts (item by item, by identity and
    then by `==`): True, False, or None where an array value's `==` (its data) would decide."""
    if x is y or isinstance(x, Var) or isinstance(y, Var):
        return True if x is y else None
    if isinstance(x, dict) and isinstance(y, dict):
        pairs = [(x[k], y[k]) for k in x] if x.keys() == y.keys() else None
    elif isinstance(x, list) and isinstance(y, list) or isinstance(x, tuple) and isinstance(y, tuple):
        pairs = list(zip(x, y)) if len(x) == len(y) else None
    else:
        return bool(x == y)
    answers = [False] if pairs is None else [_equal(a, b) for a, b in pairs]
    return False if False in answers else None if None in answers else True


def _python_equal(a, b, equal):
    """`a == b` (or, equal False, `a != b`) of values known now, containers of array values too."""
    if isinstance(a, (list, tuple, dict)):
        return _decided(_equal(a, b), "`==` of containers") == equal
    return a == b if equal else a != b


def _decided(answer, what):
    if answer is None:
        raise CompileError(f"{what} with an array value: Python compares it with `==`, whose answer is only known "
                           "when the kernels run", hint="compare identities with `is`, or shapes and dtypes")
    return answer


def _contains(container, item):
    """`item in container` as Python answers it: a list or tuple item by item (_equal); a dict
    or set would hash an array value."""
    answers = [_equal(x, item) for x in container] if isinstance(container, (list, tuple)) else [
        None if isinstance(item, Var) or isinstance(container, Var) else bool(item in container)]
    return _decided(True if True in answers else None if None in answers else False, "`in`")


def _bind(signature, args, kwargs, what=""):
    try:
        return signature.bind(*args, **kwargs)
    except TypeError as error:
        raise CompileError(f"{what}{error}") from None


def _updated_in_place(array, value):
    """numpy's `x op= y` on an array writes the result into x: it keeps x's shape, and its
    dtype when the result's casts to it by numpy's `same_kind` rule (float64 into float32),
    else numpy raises (an int array += 1.5; a (3,) array += a (2, 3) one)."""
    a, v = array.aval, aval_of(value)
    if v.shape != a.shape or not np.can_cast(v.dtype, a.dtype, "same_kind"):
        raise ShapeError(f"augmented assignment: numpy cannot store the {v} result in the {a} array it updates "
                         "in place (the shape must stay, the dtype cast by the rule 'same_kind')")
    return value if v.dtype == a.dtype else astype(value, dtype=a.dtype)


class Translation:
    """State shared by every function inlined into one compiled program."""

    def __init__(self, mode=None):
        self.mode = mode  # "call", ("grad", argnum) or ("forward", flags): how the compiler traces it
        self.captures = []  # (Param, Var): Params read from globals/closures, implicit inputs
        self.guards = []
        self._guarded = set()  # (id(root), name, path) of every guard
        self.origins = {}  # id(object read from outside) -> (object, root, name, path)
        self.external = {}  # id -> object: the argument containers (changing them would change the caller's)
        self.arguments = {}  # input Var -> the argument leaf it stands for
        self.inlining = []  # code objects of the functions being inlined, outermost first
        self.functions = set()  # code objects of everything translated (for the cache key)
        self.regions = []  # the loop regions being traced, outermost first (loops.py)
        self.defaults = {}  # function -> {"": function}: the root the guards on its defaults read from

    def source_key(self):
        """A digest of the source of every function translated into the program."""
        text = "".join(f"{code.co_name}\n{ast.dump(function_ast(code))}\n"
                       for code in sorted(self.functions, key=lambda c: (c.co_name, c.co_firstlineno)))
        return hashlib.sha256(text.encode()).hexdigest()

    def failed_guard(self):
        """What no longer holds of the values the program was traced with (a guarded chain, or
        the shape or dtype of a captured Param's value), as text for messages, or None."""
        for guard in self.guards:
            if not guard.holds():
                return guard.describe()
        for param, var in self.captures:
            value = value_of(param)  # (rare: a Param holding a Param)
            if getattr(value, "shape", _MISSING) != var.aval.shape or getattr(value, "dtype", _MISSING) != var.aval.dtype:
                return f"the value of a captured Param (traced as {var.aval})"

    def holds(self):
        """Do the values the program was traced with still hold? It runs before every compiled
        call, so it is made for speed: failed_guard's walk only when a Param's value looks changed."""
        try:
            for param, var in self.captures:
                if param.value.shape != var.aval.shape or param.value.dtype != var.aval.dtype:
                    return self.failed_guard() is None  # (a Param holding a Param: compared by its value)
            return all(guard.check() for guard in self.guards)
        except Exception:  # a name, attribute or item that is gone, an emptied cell, a value that is no array
            return False

    # ---------------------------------------------------------------- reads from outside
    def depend(self, value, root, name, path=()):
        """Guard the program's read of `value` through root -> name -> path, and remember where it (and a
        container's items) came from, so that reads of their attributes and items are guarded too."""
        refuse_iterator(value)
        if self._guard(value, root, name, path):
            self._observe(value, root, name, path)
        return self.live(value)

    @staticmethod
    def live(value):
        """A large array read from outside as a Var that reads its entries at each run: numpy
        code in the trace must not bake them in (only small arrays are guarded by contents)."""
        return current_builder().constant(value) if type(value) is np.ndarray and value.size > CONTENT_GUARD_MAX else value

    def _guard(self, value, root, name, path):
        """Guard root -> name -> path once. False for a property that computes a new object from
        its (guarded) owner on each read: that object is neither guarded nor observed."""
        key = (id(root), name, path)
        if key not in self._guarded:
            self._guarded.add(key)
            guard = Guard(root, name, path, value)
            if guard.kind != "value" and path and guard.read() is not value:
                return False
            self.guards.append(guard)
        return True

    def _observe(self, value, root, name, path):
        if _is_static(value) or (callable(value) or isinstance(value, types.ModuleType)) and _is_library(value) \
                or id(value) in self.origins:
            return
        self.origins[id(value)] = (value, root, name, path)
        if container_kind(value) or isinstance(value, np.ndarray):  # an item of a container: it may change
            self._guard(value, root, name, path)
        items = value.items() if isinstance(value, dict) else enumerate(value) if container_kind(value) == "list" or type(value) is tuple else ()
        for key, item in items:
            self._observe(item, root, name, path + ((False, key),))

    def lowered(self, value):
        """A Param (or taped value) read from outside: the program's input for it. A Param
        holding an IR value (a gradient taken inside compiled code) stays as it is."""
        if isinstance(value_of(value), Var):
            return value
        var = next((v for p, v in self.captures if p is value), None)
        if var is None:
            var = Var(value.aval)
            self.captures.append((value, var))
        return var

    def lowered_tree(self, x):  # (in nested lists, tuples and dicts)
        if isinstance(x, (Param, Tracked)):
            return self.lowered(x)
        if type(x) in (list, tuple):
            items = [self.lowered_tree(v) for v in x]
            return x if all(a is b for a, b in zip(items, x)) else type(x)(items)
        if type(x) is dict:
            items = {k: self.lowered_tree(v) for k, v in x.items()}
            return x if all(items[k] is v for k, v in x.items()) else items
        return x

    def lowered_object(self, obj):
        """A library object holding Params from outside (a kn.RNN called in compiled code): a copy
        holding the program's inputs instead, whose state is not written back; else obj."""
        leaves, treedef = pytree.flatten(obj)
        return obj if (lowered := self.lowered_tree(leaves)) is leaves else pytree.unflatten(treedef, lowered)

    def origin(self, obj):
        """(root, name, path) through which `obj` was read from outside, or None."""
        found = self.origins.get(id(obj))
        return found[1:] if found is not None and found[0] is obj else None

    def is_external(self, obj):
        """Was `obj`, or the array it is a view of, read from outside (a global, closure or argument container)?"""
        return self.origin(obj) is not None or self.external.get(id(obj)) is obj or (
            isinstance(obj, np.ndarray) and obj.base is not None and self.is_external(obj.base))

    def mark_arguments(self, tree):
        """The containers of the (abstract) arguments: the caller owns their originals. A class or
        module argument's attributes are read as globals are: guarded."""
        refuse_iterator(tree)
        if isinstance(tree, (type, types.ModuleType)) and not _is_library(tree):
            self.depend(tree, {"": tree}, "")
        objects = hasattr(tree, "__dict__") and not isinstance(tree, (Var, type, types.FunctionType, types.ModuleType)) \
            and context.kind(tree) != "compiled"  # (a compiled function's state is its own)
        items = tree if isinstance(tree, (list, tuple)) else tree.values() if isinstance(tree, dict) else \
            vars(tree).values() if objects else None
        if items is not None:
            self.external[id(tree)] = tree
            for item in items:
                self.mark_arguments(item)

    def inline(self, fn, args, kwargs):
        """Run a Python function's body in a new scope, at compile time."""
        if len(self.inlining) > _MAX_INLINE_DEPTH:  # (the traced function is the first)
            recursion = fn.__code__ in self.inlining
            raise CompileError(f"`{fn.__name__}` {'calls itself' if recursion else 'is a helper call nested'} more than "
                               f"{_MAX_INLINE_DEPTH} deep: compiled code inlines every call", hint="recursion must end at "
                               "compile time: on a Python value or a shape (not on array data); or loop with `for`" if recursion
                               else "call fewer helpers inside each other, e.g. loop over a list of layers")
        bound = _bind(inspect.signature(fn), args, kwargs, f"calling {fn.__name__}: ")
        if any(n not in bound.arguments and p.default is not p.empty for n, p in bound.signature.parameters.items()):
            holder = self.defaults.setdefault(fn, {"": fn})  # (guarded as read from the function: it may rebind them)
            for attribute in ("__defaults__", "__kwdefaults__"):
                self.depend(getattr(fn, attribute), holder, "", ((True, attribute),))
        bound.apply_defaults()
        self.functions.add(fn.__code__)
        # Room for the translator's frames: about a dozen per inlined call (Python's own call costs one).
        limit, saved = sys.getrecursionlimit(), current_builder().loc
        sys.setrecursionlimit(limit + _FRAMES_PER_INLINE)
        self.inlining.append(fn.__code__)
        try:
            return FunctionTranslator(self, fn, function_ast(fn.__code__), dict(bound.arguments)).run()
        finally:
            self.inlining.pop()
            current_builder().loc = saved
            sys.setrecursionlimit(limit)


class FunctionTranslator(ast.NodeVisitor):
    """Runs one (inlined) function's body at compile time."""

    def __init__(self, translation, fn, node, scope, enclosing=None):
        self.translation, self.fn, self.node, self.scope = translation, fn, node, scope
        self.filename, self.globals = fn.__code__.co_filename, fn.__globals__
        self.parameters = [v for v in scope.values() if isinstance(v, Var)]  # the arrays passed in
        self.local_names, self.enclosing = _local_names(node), enclosing  # (an inner function's: (scope, translator))
        self._cells = {} if enclosing else dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))

    # ------------------------------------------------------------------ statements
    def run(self):
        lambda_body = isinstance(self.node, ast.Lambda) and [ast.Return(self.node.body, lineno=self.node.body.lineno)]
        try:
            self.block(lambda_body or self.node.body)  # (a lambda's errors are placed at its line too)
        except _Return as ret:
            return ret.args[0]

    def block(self, statements):
        for stmt in statements:
            self.statement(stmt)

    def statement(self, stmt):
        current_builder().loc = (self.filename, stmt.lineno)
        try:
            self.visit(stmt)
        except Exception as error:  # placed at the user's line, unless it is the user's own or placed already
            if getattr(error, "_knetc_user", False) or isinstance(error, MemoryError):
                raise
            if isinstance(error, (CompileError, ShapeError)):
                raise error.located(self.filename, stmt.lineno) from None
            raise CompileError(f"{type(error).__name__}: {error}", self.filename, stmt.lineno) from error

    def generic_visit(self, node):
        what, hint = _UNSUPPORTED.get(type(node), (f"`{type(node).__name__}`", None))
        raise CompileError(f"{what} is not supported in compiled code", self.filename, node.lineno, hint)

    def visit_Expr(self, node):
        self.eval(node.value)

    def visit_Pass(self, node):
        pass

    def visit_Return(self, node):
        raise _Return(None if node.value is None else self.eval(node.value))

    def visit_Break(self, node):  # (and continue)
        raise _Break() if isinstance(node, ast.Break) else _Continue()

    visit_Continue = visit_Break

    def visit_Assign(self, node):  # (and `x: T = value`; an annotation alone does nothing)
        if node.value is not None:
            value = self.eval(node.value)
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                self.assign(target, value)

    visit_AnnAssign = visit_Assign

    def visit_AugAssign(self, node):
        """`x += y` changes a numpy array or a list in place. Compiled code computes a new
        value instead, which is only the same when nobody else can see the old one."""
        target = node.target
        if isinstance(target, (ast.Subscript, ast.Attribute)):  # (its object and index evaluated once, as Python)
            known = {f: ast.copy_location(ast.Constant(self.eval(getattr(target, f))), target) for f in ("value", "slice")
                     if hasattr(target, f)}
            target = ast.copy_location(type(target)(**{**{f: getattr(target, f) for f in target._fields}, **known}), target)
        current, operand = self.eval(target), self.eval(node.value)
        if isinstance(current, (np.ndarray, list, dict, set)) and self.translation.is_external(current):
            raise CompileError(f"augmented assignment changes a {type(current).__name__} from outside the compiled "
                               "function in place: compiled code would do it only once, while tracing",
                               hint="write `x = x + ...` (a new value)")
        # An array value, or a numpy array made here given data: a new array value, when nobody else sees the old.
        if isinstance(current, Var) or isinstance(current, np.ndarray) and holds_var(operand):
            self._refuse_shared_array(current, node.target.id if isinstance(node.target, ast.Name) else None)
            current = current_builder().constant(current) if isinstance(current, np.ndarray) else current
        # a list, dict, set or numpy array (of numbers) is changed in place (every name sees it)
        in_place = isinstance(current, (list, dict, set, np.ndarray)) and _IN_PLACE.get(type(node.op))
        value = in_place(current, operand) if in_place else self.operate(node.op, (current, operand), node)
        self.assign(target, _updated_in_place(current, value) if isinstance(current, Var) else value)

    def _enclosing_items(self):
        """(name, value) of the enclosing functions' scopes, innermost first (an inner function's)."""
        return [] if self.enclosing is None else [*self.enclosing[0].items(), *self.enclosing[1]._enclosing_items()]

    def _refuse_shared_array(self, var, name):
        """numpy's `+=` changes var's array in place, and with it the array var views (a slice,
        reshape or transpose), and every other view of that: refused when the caller, a Param,
        another name, a container, a closure or a default value can see any of them."""
        bases = {e.out: e.inputs[0] for b in context.stack_of(Builder) for e in b.eqns
                 if e.op.kind == "view" or e.op.view_index is not None}
        root = lambda v: root(bases[v]) if isinstance(v, Var) and v in bases else v  # noqa: E731 (the array whose memory v is)
        memory, translation = root(var), self.translation  # (a numpy array made here: itself)
        if any(memory is v for region in translation.regions for v in region.inputs):  # (unrolled, what holds it is known)
            raise NotALoop("augmented assignment on a carried value or a row of a loop region")

        def shares(x):  # does x hold the array, or a view of it?
            items = x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple, set)) else \
                [p.default for p in x.signature.parameters.values()] if isinstance(x, InnerFunction) else ()
            same = root(x) is memory if isinstance(x, Var) else type(x) is type(memory) is np.ndarray and np.may_share_memory(x, memory)
            return same or any(map(shares, items))
        leaf = translation.arguments.get(memory, _MISSING) if isinstance(memory, Var) else _MISSING  # (a taped value's `+=` makes a new one)
        caller = not (isinstance(leaf, Tracked) and memory is var) if leaf is not _MISSING else any(
            memory is v for v in (*self.parameters, *(v for _, v in translation.captures)))
        other = "the caller (an argument or Param)" if caller else next((repr(other) for other, value in (
            *self.scope.items(), *self._enclosing_items()) if (other != name or value is not var) and shares(value)), None)
        if other is not None:
            raise CompileError(f"augmented assignment on an array that {other} also holds (itself, in a container or "
                               "as a view): Python would change it in place, compiled code cannot",
                               hint="write `x = x + ...` (a new array)")

    def assign(self, target, value):
        if isinstance(target, ast.Name):
            self.scope[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, Var):
                raise CompileError("unpacking an array value is not supported", hint="index the list of arrays instead")
            values, targets = list(value), target.elts
            starred = next((i for i, t in enumerate(targets) if isinstance(t, ast.Starred)), None)
            if starred is not None:  # a, *rest, b = values: rest is the middle, as a list
                end = len(values) - (len(targets) - starred - 1)
                values = values[:starred] + [values[starred:end]] + values[end:]
                targets = [t.value if isinstance(t, ast.Starred) else t for t in targets]
            if len(values) != len(targets):
                raise CompileError(f"cannot unpack {len(values)} values into {len(targets)} names")
            for t, v in zip(targets, values):
                self.assign(t, v)
        elif isinstance(target, ast.Subscript):
            container = self.eval(target.value)
            if isinstance(container, Var) or isinstance(container, np.ndarray) and holds_var(value):
                where = "" if isinstance(container, Var) else " (a numpy array made here holds data, not array values)"
                raise CompileError(f"assigning into an array is not supported in compiled code{where}",
                                   hint="use y = kn.setindex(x, index, v), which returns a new array")
            if self.translation.is_external(container):
                raise CompileError(f"assigning into a {type(container).__name__} from outside the compiled function "
                                   "(a global, closure value or argument): compiled code would do it only once, "
                                   "while tracing", hint="build a new list or dict inside the function and return it")
            container[self.eval(target.slice)] = value
        else:
            raise CompileError(f"assigning to {type(target).__name__} is not supported in compiled code",
                               hint="compiled functions must not change objects; return new values instead")

    def visit_If(self, node):
        self.block(node.body if self.truth(node.test) else node.orelse)

    def truth(self, test_node):
        return bool(self.static(test_node, "`if` on an array value: its data is only known when the kernels run",
                                "branch on shapes or Python values; for data, blend with comparisons "
                                "(m = x > 0; m * a + (1 - m) * b)"))

    def static(self, node, message, hint=None, at=None):
        """The value of an expression that must be known at compile time: an array value is
        refused with `message` at the line of `at` (by default, of the expression)."""
        value = self.eval(node)
        if isinstance(value, Var):
            raise CompileError(message, self.filename, (at or node).lineno, hint)
        return value

    def visit_For(self, node):
        iterable = self.static(node.iter, "`for` over an array value is not supported",
                               "loop over range(x.shape[0]) or over a list of arrays", node)
        if isinstance(iterable, range) and isinstance(node.target, ast.Name):  # a loop region if it can be
            verdict = trace_region(self, node, iterable)
            if verdict == "peel":  # the first step changes a carried value's type: unroll it, loop the rest
                self.assign(node.target, iterable[0])
                if not self.loop_step(node.body):
                    return
                iterable = iterable[1:]
                verdict = trace_region(self, node, iterable)
            if verdict == "looped":
                return self.block(node.orelse)
        for item in iterable:
            self.assign(node.target, item)
            if not self.loop_step(node.body):
                break
        else:
            self.block(node.orelse)

    def visit_While(self, node):
        for steps in range(_MAX_WHILE_STEPS + 1):
            if not self.static(node.test, "`while` on an array value: its data is only known when the kernels run",
                               "loop a fixed number of times with range(n)", node):
                return self.block(node.orelse)
            if steps == _MAX_WHILE_STEPS:  # (its test still holds after that many steps)
                raise CompileError(f"`while` ran {_MAX_WHILE_STEPS} steps at compile time", self.filename, node.lineno)
            if not self.loop_step(node.body):
                return

    def loop_step(self, body):
        """Run one step of a loop's body: False when it breaks."""
        try:
            self.block(body)
        except _Break:
            return False
        except _Continue:
            pass
        return True

    def visit_Assert(self, node):
        if not self.truth(node.test):
            self.visit_Raise(node, AssertionError(self.eval(node.msg) if node.msg is not None else ""))

    def visit_Raise(self, node, error=None):
        error = error or (self.eval(node.exc) if node.exc is not None else RuntimeError("re-raise"))
        error = error() if isinstance(error, type) else error
        error._knetc_user = True  # the user's own exception: pass it through unchanged, noting its line
        error.add_note(f"  raised while knetc traced {self.filename}, line {node.lineno}: {ast.unparse(node).strip()}")
        raise error

    def visit_FunctionDef(self, node):
        if node.decorator_list:
            raise CompileError("decorated inner functions are not supported", hint="define them at module level")
        self.scope[node.name] = InnerFunction(self, node)

    # ------------------------------------------------------------------ expressions
    def eval(self, node):
        value = self.visit(node)  # (a Param read from outside becomes the program's input for it)
        return self.translation.lowered(value) if isinstance(value, (Param, Tracked)) else value

    def visit_Constant(self, node):
        return node.value

    def visit_Name(self, node, scope=None):
        """A name's value as Python finds it: a name the function binds is local in all of its body;
        others are the enclosing function's, as they are when read (late binding), then globals."""
        name, scope = node.id, self.scope if scope is None else scope
        if name in scope:
            return scope[name]
        if name in self.local_names or self._cells.get(name) == types.CellType():  # (cells compare by contents)
            raise CompileError(f"{name!r} is read before it is assigned: Python raises UnboundLocalError (NameError "
                               "for an enclosing function's)", self.filename, node.lineno, "assign it before this line")
        if self.enclosing is not None:
            return self.enclosing[1].visit_Name(node, self.enclosing[0])
        if name in self._cells or name in self.globals:  # a closure cell of the function, or a global
            root, key = (self._cells[name], None) if name in self._cells else (self.globals, name)
            value = root.cell_contents if key is None else root[key]
            return self.translation.depend(value, root, key)
        if name in BUILTINS:
            return BUILTINS[name]
        raise CompileError(f"name {name!r} is not defined", self.filename, node.lineno)

    def visit_Attribute(self, node):
        return self.attribute(self.eval(node.value), node.attr, lineno=node.lineno)

    def attribute(self, obj, name, default=_MISSING, lineno=None):
        """obj.name, or getattr(obj, name, default); of an array value, as the Python function's
        array or Param has it, not as the IR value does (`.aval`, `__class__`: refused)."""
        array, dunder = isinstance(obj, Var), name.startswith("__")
        prop = getattr(type(obj), name, None)  # the user's property: inlined, so that what it reads is guarded
        if isinstance(prop, property) and isinstance(prop.fget, types.FunctionType) and not _is_library(prop.fget):
            self._guarded(obj, (True, name), prop)  # (an argument's: guarded in its class, as its methods are)
            return self.translation.inline(prop.fget, (obj,), {})
        python_has = array and not dunder and self._as_python(obj, lambda x: hasattr(x, name), f"`.{name}`")
        try:
            if array and not python_has:
                raise AttributeError(name)
            value = getattr(obj, name)
        except AttributeError as error:
            if default is not _MISSING and not (array and (dunder or python_has)):  # (the array has it: not the default)
                return default
            raise CompileError(str(error) if not array else f"`.{name}` of an array value is not supported in compiled "
                               "code" + ": its data is only known when the kernels run" * (name in DATA_METHODS),
                               *((self.filename, lineno) if lineno else ()), hint=array and "keep it an array, use "
                               "the kn. functions and the numpy functions knetc compiles (np.sum, np.reshape, ...), "
                               "or do this outside the compiled function") from None
        return self._guarded(obj, (True, name), value)

    def _guarded(self, obj, step, value):
        """value = obj.attr or obj[key] (step: (True, attr) or (False, key)); when obj comes from
        outside, the attribute or item is guarded too (a method bound to obj is not); a class
        attribute (or method) of an argument object, which its signature does not hold, in its class."""
        origin = self.translation.origin(obj)
        if origin is None and step[0] and not isinstance(obj, (Var, type, types.ModuleType)) \
                and (namespace := pytree.class_namespace(obj, step[1])) is not None:
            self.translation.depend(namespace[step[1]], namespace, step[1])
        is_method = step[0] and isinstance(value, (types.MethodType, types.BuiltinMethodType)) and value.__self__ is obj
        if origin is not None and not is_method:
            return self.translation.depend(value, origin[0], origin[1], origin[2] + (step,))
        return value

    def visit_Subscript(self, node):
        obj, index = self.eval(node.value), self.eval(node.slice)
        if isinstance(obj, Var) and holds_loop_index(index):
            return subscript(obj, index)  # a row read in a loop region (loops.py)
        value = obj[index]  # on a Var: knetc.ops.indexing.getindex
        if type(obj) in (list, tuple, dict) or isinstance(obj, (np.ndarray, Var)) \
                or self.translation.origin(obj) is None:  # (items of lists, tuples and dicts are guarded already)
            return self.translation.live(value) if self.translation.origin(obj) is not None else value
        try:
            hash(index)
        except TypeError:  # an unhashable index: no guard can key it
            return value
        return self._guarded(obj, (False, index), value)

    def visit_Slice(self, node):
        bound = lambda n: n and self.static(n, "a slice bound from array data (known only when the kernels run)", "pass a Python int")  # noqa: E731
        return slice(*map(bound, (node.lower, node.upper, node.step)))

    def visit_List(self, node):  # (and tuple and set displays)
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](self._elements(node.elts))

    visit_Tuple = visit_Set = visit_List

    def _elements(self, elts):  # (`*xs` unpacks xs)
        return [x for e in elts for x in (self.eval(e.value) if isinstance(e, ast.Starred) else (self.eval(e),))]

    def visit_Dict(self, node):
        out = {}
        for k, v in zip(node.keys, node.values):  # (no key: **mapping; a key before its value, as Python)
            out.update(self.eval(v) if k is None else {self.eval(k): self.eval(v)})
        return out

    def visit_BinOp(self, node):
        return self.operate(node.op, (self.eval(node.left), self.eval(node.right)), node)

    def visit_UnaryOp(self, node):
        return self.operate(node.op, (self.eval(node.operand),), node)

    def operate(self, op, operands, node):
        if isinstance(op, ast.Mod) and isinstance(operands[0], (str, bytes)) and holds_var(operands[1]):
            refuse_text("`%` formatting")
        if type(op) in _NO_ARRAY_OPERATOR and any(isinstance(x, Var) for x in operands):
            what, hint = _NO_ARRAY_OPERATOR[type(op)]
            raise CompileError(f"{what} on an array value is not supported in compiled code", self.filename,
                               node.lineno, hint)
        return _OPERATORS[type(op)](*operands)

    def visit_BoolOp(self, node):
        is_and = isinstance(node.op, ast.And)
        for operand in node.values:
            value = self.static(operand, "`and`/`or` on an array value is not supported",
                                "multiply 0/1 masks for `and`, use kn.max/kn.min for `or`", node)
            if bool(value) != is_and:
                return value
        return value

    def visit_Compare(self, node):
        left = self.eval(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = self.eval(right_node)
            if isinstance(left, Var) or isinstance(right, Var):
                if len(node.ops) > 1:
                    raise CompileError("chained comparisons of arrays are not supported", self.filename, node.lineno)
                return _ARRAY_COMPARE[type(op)](left, right)
            result = _COMPARE[type(op)](left, right)
            if len(node.ops) == 1 or not result:
                return result  # (one comparison may give a numpy array: a mask used as an index)
            left = right
        return result

    def visit_IfExp(self, node):
        return self.eval(node.body) if self.truth(node.test) else self.eval(node.orelse)

    def visit_JoinedStr(self, node):
        return "".join(self.eval(v) for v in node.values)

    def visit_FormattedValue(self, node):
        value = self.eval(node.value)
        if holds_loop_index(value):
            raise NotALoop("the loop variable is formatted")  # (the loop unrolls: loops.py)
        if holds_var(value):
            refuse_text("an f-string's `{...}`")
        value = {115: str, 114: repr, 97: ascii}.get(node.conversion, lambda x: x)(value)
        return format(value, self.eval(node.format_spec) if node.format_spec is not None else "")

    def visit_Lambda(self, node):
        return InnerFunction(self, node)

    def _bindings(self, generators, items=None):
        """Bind a comprehension's targets to each of its items (the first iterable's: `items`,
        when given) in turn, yielding after each binding."""
        if not generators:
            yield
            return
        first = generators[0]
        for item in self.static(first.iter, "a comprehension over an array value is not supported") if items is None else items:
            self.assign(first.target, item)
            if all(self.truth(cond) for cond in first.ifs):
                yield from self._bindings(generators[1:])

    def visit_GeneratorExp(self, node):
        """A generator, as Python's: its first iterable now, each item when it is asked for (by
        sum, any, zip, next, a loop), from the values its names have then."""
        scope, items = ChainMap({}, self.scope), iter(self.static(node.generators[0].iter, "a generator over an array "
                                                                  "value is not supported"))
        def generate(bindings=self._bindings(node.generators, items)):
            while True:
                saved, self.scope = self.scope, scope
                try:
                    if next(bindings, _MISSING) is _MISSING:
                        return
                    item = self.eval(node.elt)
                finally:
                    self.scope = saved
                yield item
        return generate()

    def visit_ListComp(self, node):  # (and the other comprehensions)
        saved, self.scope = self.scope, ChainMap({}, self.scope)
        try:  # (the comprehension's names are its own; a lambda made in it sees them, as in Python)
            if isinstance(node, ast.DictComp):
                return dict([(self.eval(node.key), self.eval(node.value)) for _ in self._bindings(node.generators)])
            items = [self.eval(node.elt) for _ in self._bindings(node.generators)]
            return set(items) if isinstance(node, ast.SetComp) else items
        finally:
            self.scope = saved

    visit_SetComp = visit_DictComp = visit_ListComp

    def visit_Starred(self, node):
        raise CompileError("`*` is only supported in calls and displays", self.filename, node.lineno)

    def visit_Call(self, node):
        fn, args, kwargs = self.eval(node.func), self._elements(node.args), {}
        for kw in node.keywords:  # (no name: **mapping)
            kwargs.update(self.eval(kw.value) if kw.arg is None else {kw.arg: self.eval(kw.value)})
        current_builder().loc = (self.filename, node.lineno)
        return self.call(fn, args, kwargs)

    # ------------------------------------------------------------------ calls
    def call(self, fn, args, kwargs):
        if any(isinstance(a, LoopIndex) for a in (*args, *kwargs.values())):
            raise NotALoop("the loop variable is passed to a function")  # (the loop unrolls: loops.py)
        if isinstance(fn, InnerFunction):
            return fn(*args, **kwargs)
        fn = fn.__wrapped__ if isinstance(fn, functools._lru_cache_wrapper) else fn  # (inlined, guarded: not its cache)
        if fn is super and not args and "__class__" in self._cells:  # (Python's zero-argument form: the method's class, self)
            args = (self._cells["__class__"].cell_contents, self.scope[self.node.args.args[0].arg])
        if isinstance(fn, functools.partial):  # its function on its arguments (guarded: its keywords may change)
            return self.call(self.attribute(fn, "func"), (*self.attribute(fn, "args"), *args), {**self.attribute(fn, "keywords"), **kwargs})
        if context.kind(fn) == "compiled":  # a @kn.compile function called here is traced inline
            fn = fn.fn
        if args and isinstance(args[0], Var) and any(fn is f for f in (type, isinstance, hasattr)):  # as for the array
            question = {type: lambda x: x if isinstance(x, type) else type(x), hasattr: lambda x: hasattr(x, args[1]),
                        isinstance: lambda x: issubclass(x, args[1]) if isinstance(x, type) else isinstance(x, args[1])}
            return self._as_python(args[0], question[fn], f"`{fn.__name__}()`")
        if (fn is operator.eq or fn is operator.ne) and holds_var(args):  # as `x == y` (a Var's own == is identity)
            return _ARRAY_COMPARE[ast.Eq if fn is operator.eq else ast.NotEq](*args)
        if fn is getattr and len(args) in (2, 3) and isinstance(args[1], str):
            return self.attribute(args[0], args[1], *args[2:])  # as obj.name
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)  # (for messages)
        refuse_side_effects(fn, name, args, kwargs, self.translation.is_external)
        func, bound = (fn.__func__, (fn.__self__,)) if isinstance(fn, types.MethodType) else (fn, ())
        if isinstance(func, types.FunctionType) and not _is_library(func):  # a Python function or method
            return self.translation.inline(func, (*bound, *args), kwargs)
        if isinstance(fn, type):  # (a numpy scalar type called on an array value is refused below, as a library call)
            if issubclass(fn, (np.generic, np.dtype)) and not holds_var((args, kwargs)):
                return fn(*args, **kwargs)  # np.float32(0.5), np.dtype("float32"): a value known now
            if not (fn.__module__ == "builtins" or issubclass(fn, (tuple, list, dict, np.generic))):
                raise CompileError(f"creating a {fn.__name__} object in compiled code is not supported",
                                   hint="create objects outside and pass them in as arguments")
        call = getattr(type(fn), "__call__", None)
        if isinstance(call, types.FunctionType) and not _is_library(call) and not isinstance(fn, types.BuiltinFunctionType):
            self._guarded(fn, (True, "__call__"), call)  # (an argument's: guarded in its class)
            return self.translation.inline(call, (fn, *args), kwargs)  # a callable user object (a layer)
        # A library function: Params from outside in its arguments, or in the library object called, become the program's inputs,
        # and a Python function it is given (map(f, xs), functools.reduce, kn.grad(f)) is inlined when it calls it (guarded).
        args, kwargs = self.translation.lowered_tree(args), self.translation.lowered_tree(kwargs)
        args, kwargs = [self._inlined(a, fn, i) for i, a in enumerate(args)], {k: self._inlined(v, fn, None) for k, v in kwargs.items()}
        fn = self.translation.lowered_object(fn) if _is_library(type(fn)) else fn
        if holds_var((args, kwargs)):
            refuse_data_access(fn, name, args)
        return fn(*args, **kwargs)

    def _inlined(self, value, callee, position):
        """value, or a proxy inlining it where the library function `callee` may call it: a Python function (method,
        partial, compiled function) given to knetc, numpy or a builtin such as map, or a callable object given to
        the builtin (or as the model of kn.nll, kn.grad: refusals.calls_functions)."""
        if isinstance(value, InnerFunction):
            return value  # (a def or lambda of the compiled code: inlined when called)
        fn, calls = value.fn if context.kind(value) == "compiled" else value, callable(value) and calls_functions(callee, position)
        code = fn.__func__ if isinstance(fn, types.MethodType) else fn.func if isinstance(fn, functools.partial) else fn \
            if isinstance(fn, types.FunctionType) else getattr(type(fn), "__call__", None) if calls == "objects" else None
        if calls and isinstance(code, types.FunctionType) and not _is_library(code):
            return lambda *args, **kwargs: self.call(fn, args, kwargs)  # (knetc's: library code calls it as it is)
        return self.translation.lowered_object(value) if calls == "objects" else value  # (map(rnn, xs): its Params inputs)

    def _as_python(self, var, ask, what):
        """ask(value) for the value the Python function would see in var's place (isinstance,
        hasattr): asked of the argument (or captured Param) itself when it is known, else
        answered only when every kind of array the function could see (asked of its class) agrees."""
        original = self.translation.arguments.get(var, _MISSING)  # (kn.grad wraps an array it differentiates)
        if original is _MISSING or "grad" in (self.translation.mode or ()) and not isinstance(original, (Param, Tracked)):
            original = next((p for p, v in self.translation.captures if v is var), _MISSING)
        kinds = [original] if original is not _MISSING else [  # (a numpy scalar has no axes)
            kind for kind in _ARRAY_KINDS if var.aval.shape == () or kind is not np.generic]
        if len(answers := {ask(kind) for kind in kinds}) == 1:
            return answers.pop()
        raise CompileError(f"{what} of an array value computed inside compiled code: its Python type (numpy array, numpy "
                           "scalar, taped value) is only known when it runs eagerly", hint="test the arguments' types "
                           "before calling, or shapes and dtypes (x.ndim, x.dtype)")

class InnerFunction:
    """A `def` or `lambda` inside compiled code: inlined; it reads the enclosing scope as it is then."""

    def __init__(self, parent, node):
        self.parent, self.node, self.enclosing = parent, node, (parent.scope, parent)  # (a comprehension's scope, in one)
        # Python's signature; default values are evaluated where the def or lambda is (`lambda y, i=i: ...`).
        a, kind = node.args, inspect.Parameter
        positional = [x.arg for x in a.posonlyargs + a.args]
        defaults = dict(zip(positional[len(positional) - len(a.defaults):], map(parent.eval, a.defaults)))
        defaults.update((x.arg, parent.eval(d)) for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None)
        if any(map(holds_loop_index, defaults.values())):  # (it would outlive its loop)
            raise NotALoop("the loop variable is a default value")
        self.signature = inspect.Signature([kind(x.arg, k, default=defaults.get(x.arg, kind.empty)) for xs, k in (
            (a.posonlyargs, kind.POSITIONAL_ONLY), (a.args, kind.POSITIONAL_OR_KEYWORD), ([a.vararg], kind.VAR_POSITIONAL),
            (a.kwonlyargs, kind.KEYWORD_ONLY), ([a.kwarg], kind.VAR_KEYWORD)) for x in xs if x is not None])

    def __call__(self, *args, **kwargs):
        bound = _bind(self.signature, args, kwargs)
        bound.apply_defaults()
        parent, scope = self.parent, dict(bound.arguments)
        return FunctionTranslator(parent.translation, parent.fn, self.node, scope, self.enclosing).run()
