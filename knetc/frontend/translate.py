"""AST -> IR: walk a function's source, evaluating at compile time everything that depends
only on shapes, dtypes, Python values and the structure of the arguments, and emitting IR
for array operations (which happen when ops are applied to Vars).

Loops over static iterables unroll, `if` on static values picks a branch, calls to plain
Python helpers (and methods of user objects) are inlined from their source. What cannot be
known at compile time raises CompileError at the user's line, with a hint.
"""
import ast
import hashlib
import inspect
import operator
import random
import sys
import types
import warnings

import numpy as np

from .. import context
from ..autograd import Param, Tracked
from ..errors import CompileError, ShapeError
from ..ir.core import Var, current_builder
from ..ops import elementwise as ew
from ..ops.methods import FUNCTIONS, UFUNCS
from .source import BUILTINS, closure_names, function_ast


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.MatMult: operator.matmul, ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod, ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
           ast.LShift: operator.lshift, ast.RShift: operator.rshift}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Is: operator.is_, ast.IsNot: operator.is_not,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert}
# Python operators with no op in the table: on an array value they are refused at the
# user's line (instead of Python's "unsupported operand type(s) ... 'Var'").
_NO_ARRAY_OPERATOR = {
    ast.FloorDiv: ("`//`", "write kn.floor(x / y) (a float result; cast integers outside the compiled function)"),
    ast.Mod: ("`%`", "write x - y * kn.floor(x / y)"),
    ast.BitAnd: ("`&`", "multiply 0/1 masks (comparisons give 1/0): m1 * m2"),
    ast.BitOr: ("`|`", "combine 0/1 masks with kn.max(m1, m2)"),
    ast.BitXor: ("`^`", "combine 0/1 masks with kn.abs(m1 - m2)"),
    ast.LShift: ("`<<`", "multiply by 2 ** k"), ast.RShift: ("`>>`", "do bit operations outside the compiled function"),
    ast.Invert: ("`~`", "for a 0/1 mask write 1 - m"),
}

_UNSUPPORTED = {
    ast.Try: ("`try`", "compiled code cannot catch exceptions; move the try outside the compiled function"),
    ast.With: ("`with`", "move the with-block outside the compiled function"),
    ast.Global: ("`global`", "pass the value as an argument"),
    ast.Nonlocal: ("`nonlocal`", "return the value instead"),
    ast.Delete: ("`del`", "leave the name unused instead"),
    ast.Import: ("`import`", "import at module level"),
    ast.ImportFrom: ("`import`", "import at module level"),
    ast.ClassDef: ("a class definition", "define classes at module level"),
    ast.AsyncFunctionDef: ("`async def`", None), ast.AsyncFor: ("`async for`", None), ast.AsyncWith: ("`async with`", None),
    ast.Yield: ("`yield`", "return a list instead"), ast.YieldFrom: ("`yield from`", None), ast.Await: ("`await`", None),
    ast.NamedExpr: ("`:=`", "assign on its own line"),
}
if hasattr(ast, "TryStar"):
    _UNSUPPORTED[ast.TryStar] = _UNSUPPORTED[ast.Try]
if hasattr(ast, "Match"):
    _UNSUPPORTED[ast.Match] = ("`match`", "use if/elif on static values")

_RANDOM_OWNERS = (random.Random, np.random.RandomState, np.random.Generator)
_RANDOM_INIT = {"seed_", "param", "xavier", "xavier_uniform", "xavier_normal", "gaussian"}  # knetc.train.init
_IMPURE_BUILTINS = ((input, "reads input"), (open, "opens a file"), (exec, "runs code"), (eval, "runs code"),
                    (breakpoint, "stops in the debugger"), (setattr, "changes an object"),
                    (delattr, "changes an object"))
_MUTATORS = ((list, {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse",
                     "__setitem__", "__delitem__", "__iadd__", "__imul__"}),
             (dict, {"update", "pop", "popitem", "setdefault", "clear", "__setitem__", "__delitem__", "__ior__"}),
             (set, {"add", "discard", "remove", "pop", "clear", "update", "difference_update",
                    "intersection_update", "symmetric_difference_update", "__ior__", "__iand__", "__isub__"}),
             (np.ndarray, {"fill", "sort", "resize", "put", "itemset", "partition", "setfield", "setflags",
                           "__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__"}))
_NUMPY_WRITERS = (np.copyto, np.put, np.place, np.putmask, np.fill_diagonal)
_ARRAY_KINDS = (np.ndarray, np.generic, Param, Tracked)  # what an array value can be when Python runs the function
_PRINT_WARNED = set()  # (file, line) of each print warned about

_MAX_INLINE_DEPTH = 256  # helper calls nested inside each other (each inlined)
_FRAMES_PER_INLINE = 40  # Python frames the translator may use per inlined call (about 12 measured)
_MAX_WHILE_STEPS = 100_000


_LIBRARY_ROOTS = ("knetc", "numpy", "builtins", "math", "operator", "functools", "itertools")


def _is_library(fn):
    """Functions knetc calls as they are (they apply ops to Vars) instead of inlining."""
    module = getattr(fn, "__module__", None) or ""
    return module.split(".")[0] in _LIBRARY_ROOTS


def _is_library_value(value):
    """Modules, functions and classes of knetc, numpy and the standard helpers: constants
    whose attributes need no guard."""
    if isinstance(value, types.ModuleType):
        return value.__name__.split(".")[0] in _LIBRARY_ROOTS
    return callable(value) and _is_library(value)


_SCALARS = (int, float, bool, complex, str, bytes, type(None), np.generic, range, slice, type(Ellipsis))


def _is_static(value):
    """Immutable Python values a guard compares by value: numbers, strings, None and tuples of them."""
    if isinstance(value, _SCALARS):
        return True
    return type(value) is tuple and all(_is_static(v) for v in value)


_MISSING = object()
_CONTAINER_KINDS = {list: "list", dict: "dict", set: "set"}  # guarded by a snapshot of their items


class Guard:
    """A value the compiled program depends on that it read from outside the function: the
    chain root (a module's globals dict or a closure cell) -> name -> path of attributes
    (True, name) and items (False, key), and what the read yielded. `holds()` reads the same
    chain again: a changed value means the specialization is stale and is traced again.

    kind "is": the same object; "value": an equal immutable value of the same type;
    "array": the same array with the same shape and dtype; "list"/"dict"/"set": the same
    container holding the same items (a shallow snapshot, compared by identity)."""
    __slots__ = ("root", "name", "path", "kind", "value", "detail")

    def __init__(self, root, name, path, kind, value):
        self.root, self.name, self.path, self.kind, self.value = root, name, path, kind, value
        if kind == "array":
            self.detail = (value.shape, value.dtype)
        elif kind == "list":
            self.detail = tuple(value)
        elif kind == "dict":
            self.detail = (tuple(value), tuple(value.values()))
        elif kind == "set":
            self.detail = frozenset(value)
        else:
            self.detail = None

    def read(self):
        value = self.root.get(self.name, _MISSING) if self.name is not None else self.root.cell_contents
        for is_attribute, key in self.path:
            value = getattr(value, key) if is_attribute else value[key]
        return value

    def holds(self):
        try:
            return self.checker()()
        except Exception:  # a name, attribute or item that is gone (or an emptied cell)
            return False

    def checker(self):
        """The guard as a function of no arguments, made for speed: it runs before every
        compiled call. It may raise when the chain is gone (which means: does not hold)."""
        kind, expected, detail = self.kind, self.value, self.detail
        if self.name is not None and not self.path:  # a global name: the common case
            get, name, missing = self.root.get, self.name, _MISSING
            if kind == "is":
                return lambda: get(name, missing) is expected

            def read():
                return get(name, missing)
        else:
            read = self.read
        if kind == "is":
            return lambda: read() is expected
        if kind == "value":
            kind_of = type(expected)

            def check():
                value = read()
                return value is expected or (type(value) is kind_of and value == expected)
        elif kind == "array":
            shape, dtype = detail

            def check():
                value = read()
                return value is expected and value.shape == shape and value.dtype == dtype
        elif kind == "list":
            def check():
                value = read()
                return value is expected and len(value) == len(detail) and all(map(operator.is_, value, detail))
        elif kind == "dict":
            keys, values = detail

            def check():
                value = read()
                return value is expected and len(value) == len(keys) and tuple(value) == keys \
                    and all(map(operator.is_, value.values(), values))
        else:  # a set
            def check():
                value = read()
                return value is expected and value == detail
        return check

    def describe(self):
        """The chain as the user would write it (for messages): `model[0].w`."""
        text = self.name if self.name is not None else "<closure variable>"
        for is_attribute, key in self.path:
            text += f".{key}" if is_attribute else f"[{key!r}]"
        return text


def _same_aval(value, aval):
    return tuple(getattr(value, "shape", ())) == aval.shape and np.dtype(getattr(value, "dtype", None)) == aval.dtype


class Translation:
    """State shared by every function inlined into one compiled program."""

    def __init__(self):
        self.captures = []  # (Param, Var): Params read from globals/closures, implicit inputs
        self.guards = []
        self._checks = self._avals = None  # the guards made fast (Translation.holds)
        self._guarded = set()  # (id(root), name, path) of every guard
        self.origins = {}  # id(object read from outside) -> (object, root, name, path)
        self.external = {}  # id -> object: the argument containers (changing them would change the caller's)
        self.arguments = {}  # id(input Var) -> (Var, the argument leaf it stands for)
        self.mode = None  # "call", ("grad", argnum) or ("forward", flags): how the compiler traces it
        self.depth = 0
        self.inlining = []  # code objects of the functions being inlined, outermost first
        self.recursion_limit = None  # sys.getrecursionlimit() before the first inlined call raised it
        self.functions = {}  # code object -> function: everything translated (for the cache key)

    def source_key(self):
        """A digest of the source of every function translated into the program."""
        digest = hashlib.sha256()
        for code in sorted(self.functions, key=lambda c: (c.co_name, c.co_firstlineno)):
            node, _ = function_ast(self.functions[code])
            digest.update(f"{code.co_name}\n{ast.dump(node)}\n".encode())
        return digest.hexdigest()

    def holds(self):
        """Do the values the program was traced with still hold? Every guarded chain reads
        the same, and every captured Param's value keeps its shape and dtype."""
        if self._checks is None:  # made once, when the translation is complete
            self._checks = [guard.checker() for guard in self.guards]
            self._avals = [(param, var.aval.shape, var.aval.dtype) for param, var in self.captures]
        try:
            for check in self._checks:
                if not check():
                    return False
            for param, shape, dtype in self._avals:
                value = param.value
                if value.shape != shape or value.dtype != dtype:
                    while isinstance(value, (Param, Tracked)):  # (rare) a Param holding a Param
                        value = value.value
                    if value.shape != shape or value.dtype != dtype:
                        return False
        except Exception:  # a name, attribute or item that is gone, an emptied cell, a value that is no array
            return False
        return True

    def failed_guard(self):
        """The first guard that no longer holds, as text (for messages), or None."""
        for guard in self.guards:
            if not guard.holds():
                return guard.describe()
        for param, var in self.captures:
            value = param.value
            while isinstance(value, (Param, Tracked)):
                value = value.value
            if not _same_aval(value, var.aval):
                return f"the value of a captured Param (traced as {var.aval})"
        return None

    def capture(self, param):
        for p, var in self.captures:
            if p is param:
                return var
        var = Var(param.aval)
        self.captures.append((param, var))
        return var

    # ---------------------------------------------------------------- reads from outside
    def depend(self, value, root, name, path=()):
        """The program read `value` through root -> name -> path: guard that read, and
        remember where the value (and the items of a container) came from, so that reads
        of their attributes and items are guarded too."""
        key = (id(root), name, path)
        if key not in self._guarded:
            self._guarded.add(key)
            if _is_static(value):
                kind = "value"
            elif isinstance(value, np.ndarray):
                kind = "array"
            else:
                kind = _CONTAINER_KINDS.get(type(value), "is")
            guard = Guard(root, name, path, kind, value)
            if kind != "value" and path and guard.read() is not value:
                return  # a property computing a new object from its (guarded) owner on each read
            self.guards.append(guard)
        self._observe(value, root, name, path)

    def _observe(self, value, root, name, path):
        if _is_static(value) or _is_library_value(value) or id(value) in self.origins:
            return
        self.origins[id(value)] = (value, root, name, path)
        if type(value) in (list, dict, set):
            key = (id(root), name, path)
            if key not in self._guarded:  # an item of a container: its own items may change
                self._guarded.add(key)
                self.guards.append(Guard(root, name, path, _CONTAINER_KINDS[type(value)], value))
        if type(value) in (list, tuple):
            for i, item in enumerate(value):
                self._observe(item, root, name, path + ((False, i),))
        elif type(value) is dict:
            for k, item in value.items():
                self._observe(item, root, name, path + ((False, k),))

    def lowered(self, value):
        """A Param (or taped value) read from outside: the program's input for it. A Param
        holding an IR value (a gradient taken inside compiled code) stays as it is."""
        inner = value
        while isinstance(inner, (Param, Tracked)):
            inner = inner.value
        return value if isinstance(inner, Var) else self.capture(value)

    def lowered_tree(self, x):
        """`lowered` applied to the Params in (nested) lists, tuples and dicts."""
        if isinstance(x, (Param, Tracked)):
            return self.lowered(x)
        if type(x) in (list, tuple):
            items = [self.lowered_tree(v) for v in x]
            return x if all(a is b for a, b in zip(items, x)) else type(x)(items)
        if type(x) is dict:
            items = {k: self.lowered_tree(v) for k, v in x.items()}
            return x if all(items[k] is v for k, v in x.items()) else items
        return x

    def origin(self, obj):
        """(root, name, path) through which `obj` was read from outside, or None."""
        found = self.origins.get(id(obj))
        return found[1:] if found is not None and found[0] is obj else None

    def is_external(self, obj):
        """Was `obj` read from outside the function (a global, closure or argument container,
        or a numpy view of an array from outside)?"""
        while True:
            if self.origin(obj) is not None or self.external.get(id(obj)) is obj:
                return True
            if not isinstance(obj, np.ndarray) or obj.base is None:
                return False
            obj = obj.base

    def mark_arguments(self, tree):
        """The containers of the (abstract) arguments: the caller owns their originals."""
        if isinstance(tree, (list, tuple)):
            items = tree
        elif isinstance(tree, dict):
            items = tree.values()
        elif hasattr(tree, "__dict__") and not isinstance(tree, (Var, type, types.FunctionType, types.ModuleType)):
            items = vars(tree).values()
        else:
            return
        self.external[id(tree)] = tree
        for item in items:
            self.mark_arguments(item)

    def argument_leaf(self, var):
        found = self.arguments.get(id(var))
        return found[1] if found is not None and found[0] is var else _MISSING


class FunctionTranslator(ast.NodeVisitor):
    """Runs one (inlined) function's body at compile time."""

    def __init__(self, translation, fn, node, filename, scope, closure=None):
        self.translation, self.fn, self.node, self.filename = translation, fn, node, filename
        self.scope = scope
        self.parameters = [v for v in scope.values() if isinstance(v, Var)]  # the arrays passed in
        self.globals = fn.__globals__ if fn is not None else {}
        self.closure = closure if closure is not None else (closure_names(fn) if fn is not None else {})
        self._cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ())) if fn is not None else {}

    # ------------------------------------------------------------------ statements
    def run(self):
        body = self.node.body
        if isinstance(self.node, ast.Lambda):
            return self.eval(body)
        try:
            self.block(body)
        except _Return as ret:
            return ret.value
        return None

    def block(self, statements):
        for stmt in statements:
            self.statement(stmt)

    def statement(self, stmt):
        self.locate(stmt)
        try:
            self.visit(stmt)
        except (_Return, _Break, _Continue):
            raise
        except Exception as error:
            located = self.located(error, stmt)
            if located is error:
                raise
            raise located from (error if not isinstance(error, (CompileError, ShapeError)) else None)

    def located(self, error, node):
        """Attach the user's file and line to an error raised while translating `node`."""
        if getattr(error, "_knetc_user", False):
            return error
        if isinstance(error, ShapeError):
            return error.located(self.filename, node.lineno)
        if isinstance(error, CompileError):
            if error.filename is not None:
                return error
            return CompileError(error.message, self.filename, node.lineno, error.hint)
        return CompileError(f"{type(error).__name__}: {error}", self.filename, node.lineno)

    def locate(self, node):
        if hasattr(node, "lineno"):
            current_builder().loc = (self.filename, node.lineno)

    def generic_visit(self, node):
        what, hint = _UNSUPPORTED.get(type(node), (f"`{type(node).__name__}`", None))
        raise CompileError(f"{what} is not supported in compiled code", self.filename,
                           getattr(node, "lineno", None), hint)

    def visit_Expr(self, node):
        self.eval(node.value)

    def visit_Pass(self, node):
        pass

    def visit_Return(self, node):
        raise _Return(None if node.value is None else self.eval(node.value))

    def visit_Break(self, node):
        raise _Break()

    def visit_Continue(self, node):
        raise _Continue()

    def visit_Assign(self, node):
        value = self.eval(node.value)
        for target in node.targets:
            self.assign(target, value)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.assign(node.target, self.eval(node.value))

    def visit_AugAssign(self, node):
        load = ast.copy_location(_as_load(node.target), node.target)
        current = self.eval(load)
        self._check_in_place(node.target, current)
        self.assign(node.target, self.binary(node.op, current, self.eval(node.value), node))

    def _check_in_place(self, target, current):
        """`x += y` changes a numpy array or a list in place. Compiled code computes a new
        value instead, which is only the same when nobody else can see the old one."""
        translation = self.translation
        if isinstance(current, Var):
            leaf = translation.argument_leaf(current)  # (a Param or taped value: Python makes a new value)
            if (leaf is _MISSING and any(v is current for v in self.parameters)) or \
                    (leaf is not _MISSING and not isinstance(leaf, (Param, Tracked))):
                raise CompileError("augmented assignment on an array argument: Python changes the caller's "
                                   "array in place, compiled code cannot", hint="write `x = x + ...` (a new array)")
            name = target.id if isinstance(target, ast.Name) else None
            for other, value in self.scope.items():
                held = value is current or (type(value) in (list, tuple) and any(v is current for v in value))
                if held and other != name:
                    raise CompileError(f"augmented assignment on an array that {other!r} also holds: Python "
                                       f"would change both in place, compiled code cannot",
                                       hint="write `x = x + ...` (a new array)")
        elif isinstance(current, (np.ndarray, list, dict, set)) and translation.is_external(current):
            raise CompileError(f"augmented assignment changes a {type(current).__name__} from outside the compiled "
                               "function in place: compiled code would do it only once, while tracing",
                               hint="write `x = x + ...` (a new value)")

    def assign(self, target, value):
        if isinstance(target, ast.Name):
            self.scope[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, Var):
                raise CompileError("unpacking an array value is not supported", hint="index the list of arrays instead")
            values = list(value)
            starred = [i for i, t in enumerate(target.elts) if isinstance(t, ast.Starred)]
            if starred:
                i = starred[0]
                after = len(target.elts) - i - 1
                values = values[:i] + [values[i:len(values) - after]] + values[len(values) - after:]
                target_elts = [t.value if isinstance(t, ast.Starred) else t for t in target.elts]
            else:
                target_elts = target.elts
            if len(values) != len(target_elts):
                raise CompileError(f"cannot unpack {len(values)} values into {len(target_elts)} names")
            for t, v in zip(target_elts, values):
                self.assign(t, v)
        elif isinstance(target, ast.Subscript):
            container = self.eval(target.value)
            if isinstance(container, Var):
                raise CompileError("assigning into an array is not supported in compiled code",
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
        test = self.eval(test_node)
        if isinstance(test, Var):
            raise CompileError("`if` on an array value: its data is only known when the kernels run",
                               self.filename, test_node.lineno,
                               "branch on shapes or Python values; for data, blend with comparisons "
                               "(m = x > 0; m * a + (1 - m) * b)")
        return bool(test)

    def visit_For(self, node):
        iterable = self.eval(node.iter)
        if isinstance(iterable, Var):
            raise CompileError("`for` over an array value is not supported", self.filename, node.lineno,
                               "loop over range(x.shape[0]) or over a list of arrays")
        for item in iterable:
            self.assign(node.target, item)
            try:
                self.block(node.body)
            except _Break:
                break
            except _Continue:
                continue
        else:
            self.block(node.orelse)

    def visit_While(self, node):
        steps = 0
        while True:
            test = self.eval(node.test)
            if isinstance(test, Var):
                raise CompileError("`while` on an array value: its data is only known when the kernels run",
                                   self.filename, node.lineno, "loop a fixed number of times with range(n)")
            if not test:
                self.block(node.orelse)
                return
            steps += 1
            if steps > _MAX_WHILE_STEPS:
                raise CompileError(f"`while` ran {_MAX_WHILE_STEPS} steps at compile time", self.filename, node.lineno)
            try:
                self.block(node.body)
            except _Break:
                return
            except _Continue:
                continue

    def visit_Assert(self, node):
        if not self.truth(node.test):
            error = AssertionError(self.eval(node.msg) if node.msg is not None else "")
            error._knetc_user = True
            raise error

    def visit_Raise(self, node):
        error = self.eval(node.exc) if node.exc is not None else RuntimeError("re-raise")
        if isinstance(error, type):
            error = error()
        error._knetc_user = True  # the user's own exception: pass it through unchanged
        raise error

    def visit_FunctionDef(self, node):
        if node.decorator_list:
            raise CompileError("decorated inner functions are not supported", hint="define them at module level")
        self.scope[node.name] = InnerFunction(self, node)

    # ------------------------------------------------------------------ expressions
    def eval(self, node):
        method = getattr(self, "eval_" + type(node).__name__, None)
        if method is None:
            self.generic_visit(node)
        value = method(node)
        if isinstance(value, (Param, Tracked)):
            return self.translation.lowered(value)
        return value

    def eval_Constant(self, node):
        return node.value

    def eval_Name(self, node):
        name = node.id
        if name in self.scope:
            return self.scope[name]
        if name in self.closure:  # a closure cell of the function, or a local of an enclosing inlined one
            value = self.closure[name]
            cell = self._cells.get(name)
            if cell is not None and _cell_contents(cell) is value:
                self.translation.depend(value, cell, None)
            return value
        if name in self.globals:
            value = self.globals[name]
            self.translation.depend(value, self.globals, name)
            return value
        if name in BUILTINS:
            return BUILTINS[name]
        raise CompileError(f"name {name!r} is not defined", self.filename, node.lineno)

    def eval_Attribute(self, node):
        obj = self.eval(node.value)
        try:
            value = getattr(obj, node.attr)
        except AttributeError as error:
            if isinstance(obj, Var):
                data = node.attr in _DATA_METHODS
                raise CompileError(f"`.{node.attr}` of an array value is not supported in compiled code"
                                   + (": its data is only known when the kernels run" if data else ""),
                                   self.filename, node.lineno,
                                   "keep it an array, or do this outside the compiled function" if data else
                                   "use the kn. functions and the numpy functions knetc compiles (np.sum, "
                                   "np.reshape, ...), or do this outside the compiled function") from None
            raise CompileError(str(error), self.filename, node.lineno) from None
        origin = self.translation.origin(obj)
        if origin is not None and not (isinstance(value, (types.MethodType, types.BuiltinMethodType))
                                       and getattr(value, "__self__", None) is obj):
            root, name, path = origin  # an attribute of an object from outside: guard it too
            self.translation.depend(value, root, name, path + ((True, node.attr),))
        return value

    def eval_Subscript(self, node):
        obj, index = self.eval(node.value), self.eval(node.slice)
        value = obj[index]  # on a Var: knetc.ops.indexing.getindex
        if type(obj) not in (list, tuple, dict) and not isinstance(obj, (np.ndarray, Var)):
            origin = self.translation.origin(obj)  # (items of lists, tuples and dicts are guarded already)
            if origin is not None and _hashable(index):
                root, name, path = origin
                self.translation.depend(value, root, name, path + ((False, index),))
        return value

    def eval_Slice(self, node):
        part = lambda n: None if n is None else self.eval(n)  # noqa: E731
        return slice(part(node.lower), part(node.upper), part(node.step))

    def eval_Index(self, node):  # Python < 3.9
        return self.eval(node.value)

    def eval_Tuple(self, node):
        return tuple(self._elements(node.elts))

    def eval_List(self, node):
        return list(self._elements(node.elts))

    def eval_Set(self, node):
        return set(self._elements(node.elts))

    def _elements(self, elts):
        out = []
        for e in elts:
            if isinstance(e, ast.Starred):
                out.extend(self.eval(e.value))
            else:
                out.append(self.eval(e))
        return out

    def eval_Dict(self, node):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                out.update(self.eval(v))
            else:
                out[self.eval(k)] = self.eval(v)
        return out

    def eval_BinOp(self, node):
        return self.binary(node.op, self.eval(node.left), self.eval(node.right), node)

    def binary(self, op, left, right, node):
        if type(op) in _NO_ARRAY_OPERATOR and (isinstance(left, Var) or isinstance(right, Var)):
            self.refuse_operator(op, node)
        return _BINARY[type(op)](left, right)

    def refuse_operator(self, op, node):
        what, hint = _NO_ARRAY_OPERATOR[type(op)]
        raise CompileError(f"{what} on an array value is not supported in compiled code", self.filename,
                           node.lineno, hint)

    def eval_UnaryOp(self, node):
        operand = self.eval(node.operand)
        if type(node.op) in _NO_ARRAY_OPERATOR and isinstance(operand, Var):
            self.refuse_operator(node.op, node)
        return _UNARY[type(node.op)](operand)

    def eval_BoolOp(self, node):
        is_and = isinstance(node.op, ast.And)
        value = None
        for operand in node.values:
            value = self.eval(operand)
            if isinstance(value, Var):
                raise CompileError("`and`/`or` on an array value is not supported", self.filename, node.lineno,
                                   "multiply 0/1 masks for `and`, use kn.max/kn.min for `or`")
            if bool(value) != is_and:
                return value
        return value

    def eval_Compare(self, node):
        left = self.eval(node.left)
        result = True
        for op, right_node in zip(node.ops, node.comparators):
            right = self.eval(right_node)
            if isinstance(left, Var) or isinstance(right, Var):
                if len(node.ops) > 1:
                    raise CompileError("chained comparisons of arrays are not supported", self.filename, node.lineno)
                fn = {ast.Eq: ew.eq, ast.NotEq: ew.ne}.get(type(op), _COMPARE[type(op)])
                return fn(left, right)
            result = _COMPARE[type(op)](left, right)
            if len(node.ops) == 1:
                return result  # may be a numpy array (a mask used as an index)
            if not result:
                return result
            left = right
        return result

    def eval_IfExp(self, node):
        return self.eval(node.body) if self.truth(node.test) else self.eval(node.orelse)

    def eval_JoinedStr(self, node):
        parts = []
        for v in node.values:
            if isinstance(v, ast.FormattedValue):
                spec = self.eval(v.format_spec) if v.format_spec is not None else ""
                value = self.eval(v.value)
                value = {115: str, 114: repr, 97: ascii}.get(v.conversion, lambda x: x)(value)
                parts.append(format(value, spec))
            else:
                parts.append(self.eval(v))
        return "".join(parts)

    def eval_Lambda(self, node):
        return InnerFunction(self, node)

    def _comprehension(self, generators, emit):
        if not generators:
            emit()
            return
        first, rest = generators[0], generators[1:]
        iterable = self.eval(first.iter)
        if isinstance(iterable, Var):
            raise CompileError("a comprehension over an array value is not supported", self.filename, first.iter.lineno)
        for item in iterable:
            self.assign(first.target, item)
            if all(self.truth(cond) for cond in first.ifs):
                self._comprehension(rest, emit)

    def _comprehend(self, node, each):
        """Run each() for every binding of the comprehension's targets; its names stay local."""
        saved = dict(self.scope)
        try:
            self._comprehension(node.generators, each)
        finally:
            self.scope.clear()
            self.scope.update(saved)

    def eval_ListComp(self, node):
        out = []
        self._comprehend(node, lambda: out.append(self.eval(node.elt)))
        return out

    eval_GeneratorExp = eval_ListComp  # evaluated eagerly: the elements are IR values

    def eval_SetComp(self, node):
        return set(self.eval_ListComp(node))

    def eval_DictComp(self, node):
        out = {}
        self._comprehend(node, lambda: out.__setitem__(self.eval(node.key), self.eval(node.value)))
        return out

    def eval_Starred(self, node):
        raise CompileError("`*` is only supported in calls and displays", self.filename, node.lineno)

    def eval_Call(self, node):
        fn = self.eval(node.func)
        args = self._elements(node.args)
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                kwargs.update(self.eval(kw.value))
            else:
                kwargs[kw.arg] = self.eval(kw.value)
        self.locate(node)
        return self.call(fn, args, kwargs)

    # ------------------------------------------------------------------ calls
    def call(self, fn, args, kwargs):
        if isinstance(fn, InnerFunction):
            return fn(*args, **kwargs)
        if context.kind(fn) == "compiled":  # a @kn.compile function called here is traced inline
            fn = fn.fn
        if fn is isinstance and len(args) == 2 and isinstance(args[0], Var):
            return self._isinstance(args[0], args[1])
        if fn is type and len(args) == 1 and isinstance(args[0], Var):
            raise CompileError("`type()` of an array value: compiled code sees an IR value, not the array the "
                               "Python function would see", hint="test shapes and dtypes (x.ndim, x.dtype) instead")
        if fn is print:
            self._warn_print()
        self._refuse_side_effects(fn, args, kwargs)
        if isinstance(fn, types.MethodType) and not _is_library(fn.__func__) and isinstance(fn.__func__, types.FunctionType):
            return self.inline(fn.__func__, (fn.__self__, *args), kwargs)
        if isinstance(fn, types.FunctionType) and not _is_library(fn):
            return self.inline(fn, args, kwargs)
        if isinstance(fn, type) and issubclass(fn, (np.generic, np.dtype)) and not _holds_var((args, kwargs)):
            return fn(*args, **kwargs)  # np.float32(0.5), np.dtype("float32"): a value known now
        if isinstance(fn, type) and issubclass(fn, np.generic):
            self._refuse_data_access(fn, args)
        if isinstance(fn, type) and not (fn.__module__ == "builtins" or issubclass(fn, (tuple, list, dict))):
            raise CompileError(f"creating a {fn.__name__} object in compiled code is not supported",
                               hint="create objects outside and pass them in as arguments")
        call = getattr(type(fn), "__call__", None)
        if isinstance(call, types.FunctionType) and not _is_library(call) and not isinstance(fn, types.BuiltinFunctionType):
            return self.inline(call, (fn, *args), kwargs)  # a callable user object (a layer)
        # A library function: Params from outside in its arguments become the program's inputs.
        args, kwargs = self.translation.lowered_tree(args), self.translation.lowered_tree(kwargs)
        if _holds_var(args) or _holds_var(kwargs):
            self._refuse_data_access(fn, args)
        return fn(*args, **kwargs)

    def _refuse_data_access(self, fn, args):
        """Calls that need an array value's data (float(x), np.asarray(x), x.item()) or a
        numpy function knetc has no op for: refused with the function's name, instead of
        Python's message about a `Var`."""
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        if any(fn is f for f in (float, int, complex, bool)) \
                or isinstance(fn, type) and issubclass(fn, np.generic) \
                or getattr(fn, "__name__", None) in _DATA_METHODS and isinstance(getattr(fn, "__self__", None), Var):
            raise CompileError(f"`{name}` of an array value: its data is only known when the kernels run",
                               hint="keep it an array (a 0-d array broadcasts like a number), or do this outside "
                                    "the compiled function")
        module = getattr(fn, "__module__", None) or ""
        if isinstance(fn, np.ufunc) or module.split(".")[0] == "numpy":
            if any(fn is f for f in _NUMPY_CONVERSIONS):
                raise CompileError(f"`np.{name}` of an array value inside compiled code: numpy would need its data, "
                                   "which is only known when the kernels run",
                                   hint="use the value itself (numpy functions on it are compiled), or call "
                                        "numpy outside the compiled function")
            try:
                known = fn in UFUNCS or fn in FUNCTIONS
            except TypeError:  # unhashable
                known = False
            if not known:
                raise CompileError(f"`np.{name}` is not supported on array values in compiled code (knetc compiles "
                                   "only the numpy functions in its op table)",
                                   hint="use the kn. functions (kn.sum, kn.reshape, kn.max(x, lo), ...), or call "
                                        "it outside the compiled function")

    def _isinstance(self, var, classinfo):
        """isinstance(x, C) for an array value answers as the Python function would: from the
        argument's (or captured Param's) own type when it is known, else only when every
        kind of array the function could see agrees."""
        translation = self.translation
        original = translation.argument_leaf(var)
        differentiated = isinstance(translation.mode, tuple) and translation.mode[0] == "grad"
        if original is _MISSING or differentiated and not isinstance(original, (Param, Tracked)):  # kn.grad wraps it
            original = next((p for p, v in translation.captures if v is var), _MISSING)
        if original is not _MISSING:
            return isinstance(original, classinfo)
        answers = {issubclass(kind, classinfo) for kind in _ARRAY_KINDS}
        if len(answers) == 1:
            return answers.pop()
        raise CompileError("isinstance of an array value computed inside compiled code: its Python type (numpy "
                           "array, numpy scalar, taped value) is only known when the function runs eagerly",
                           hint="test the arguments' types before calling, or shapes and dtypes (x.ndim, x.dtype)")

    def _warn_print(self):
        where = current_builder().loc or (self.filename, None)
        if where in _PRINT_WARNED:
            return
        _PRINT_WARNED.add(where)
        warnings.warn_explicit("print runs only while knetc traces the function (once per specialization) and "
                               "shows IR values (shapes, dtypes), not data; compiled calls print nothing. "
                               "hint: print results outside the compiled function, or call its .fn (the plain "
                               "Python function) to debug", UserWarning, where[0] or "<unknown>", where[1] or 0)

    def _refuse_side_effects(self, fn, args, kwargs):
        """Calls whose effect or result would happen once, at trace time, and then never
        again: compiled code refuses them rather than differ from Python on later calls."""
        owner = getattr(fn, "__self__", None)
        module = getattr(fn, "__module__", None) or ""
        if isinstance(owner, types.ModuleType):
            module = module or owner.__name__
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        top = module.split(".")[0]
        if isinstance(owner, _RANDOM_OWNERS) or module.startswith("numpy.random") or top in ("random", "secrets") \
                or (module == "knetc.train.init" and getattr(fn, "__name__", "") in _RANDOM_INIT):
            raise CompileError(f"`{name}` uses the random number generator: compiled code would run it once, "
                               "while tracing, and reuse its numbers on every call",
                               hint="draw them outside and pass them in as an argument "
                                    "(kn.dropout draws a new mask on every call)")
        if top == "time":
            raise CompileError(f"`{name}` reads the clock: compiled code would read it once, while tracing",
                               hint="call it outside the compiled function")
        for builtin, what in _IMPURE_BUILTINS:
            if fn is builtin:
                raise CompileError(f"`{name}` {what}: compiled code would do it once, while tracing, not on "
                                   "every call", hint="do it outside the compiled function")
        translation = self.translation
        target, method = None, getattr(fn, "__name__", "")
        if owner is not None and not isinstance(owner, types.ModuleType):
            target = owner  # a bound method: hs.append
        elif isinstance(fn, (types.MethodDescriptorType, types.WrapperDescriptorType)) and args:
            target = args[0]  # list.append(hs, h)
        elif any(fn is f for f in _NUMPY_WRITERS) and args:
            target, method = args[0], name
        if target is not None and translation.is_external(target) and (
                any(fn is f for f in _NUMPY_WRITERS)
                or any(isinstance(target, cls) and method in names for cls, names in _MUTATORS)):
            raise CompileError(f"`{method}` changes a {type(target).__name__} from outside the compiled function (a "
                               "global, closure value or argument): compiled code would do it once, while tracing, "
                               "not on every call",
                               hint="build a new list or dict inside the function and return it "
                                    "(containers created inside the function may be changed freely)")
        out = kwargs.get("out") if isinstance(kwargs, dict) else None
        if out is not None and (isinstance(out, Var) or any(translation.is_external(o) for o in
                                                            (out if isinstance(out, tuple) else (out,)))):
            raise CompileError(f"`{name}(..., out=...)` writes into an existing array: compiled code would do it "
                               "once, while tracing", hint="use the returned array instead of out=")

    def inline(self, fn, args, kwargs):
        """Run a Python function's body in a new scope, at compile time."""
        translation = self.translation
        if translation.depth >= _MAX_INLINE_DEPTH:
            if fn.__code__ in translation.inlining:
                raise CompileError(f"`{fn.__name__}` calls itself more than {_MAX_INLINE_DEPTH} times deep: compiled "
                                   "code inlines every call, so recursion must end at compile time",
                                   hint="end the recursion on a Python value or a shape (not on array data), "
                                        "or loop with `for` over range(n)")
            raise CompileError(f"helper calls nested more than {_MAX_INLINE_DEPTH} deep (inlining "
                               f"`{fn.__name__}`): compiled code inlines every call",
                               hint="call fewer helpers inside each other, e.g. loop over a list of layers")
        scope = bind_arguments(fn, args, kwargs)
        node, filename = function_ast(fn)
        translation.functions[fn.__code__] = fn
        if translation.recursion_limit is None:
            translation.recursion_limit = sys.getrecursionlimit()
        # Each inlined call costs the translator about a dozen Python frames (the user's
        # function costs one when Python runs it): make room for _MAX_INLINE_DEPTH of them.
        needed = translation.recursion_limit + _FRAMES_PER_INLINE * (translation.depth + 1)
        if sys.getrecursionlimit() < needed:
            sys.setrecursionlimit(needed)
        translation.depth += 1
        translation.inlining.append(fn.__code__)
        saved = current_builder().loc
        try:
            return FunctionTranslator(translation, fn, node, filename, scope).run()
        finally:
            translation.depth -= 1
            translation.inlining.pop()
            current_builder().loc = saved
            if translation.depth == 0 and translation.recursion_limit is not None:
                sys.setrecursionlimit(translation.recursion_limit)
                translation.recursion_limit = None


_NUMPY_CONVERSIONS = (np.asarray, np.array, np.asanyarray, np.ascontiguousarray, np.asfortranarray, np.copy,
                      np.frombuffer, np.fromiter)
_DATA_METHODS = {"item", "tolist", "tobytes", "__float__", "__int__", "__index__"}


def _holds_var(tree):
    if isinstance(tree, Var):
        return True
    if type(tree) in (list, tuple):
        return any(_holds_var(v) for v in tree)
    if type(tree) is dict:
        return any(_holds_var(v) for v in tree.values())
    return False


class InnerFunction:
    """A `def` or `lambda` inside compiled code: inlined with the enclosing scope as closure."""

    def __init__(self, parent, node):
        self.parent, self.node = parent, node

    def __call__(self, *args, **kwargs):
        parent, node = self.parent, self.node
        scope = _bind_ast_arguments(node, args, kwargs, parent)
        closure = {**parent.closure, **parent.scope}
        translator = FunctionTranslator(parent.translation, parent.fn, node, parent.filename, scope, closure)
        return translator.run()


def _cell_contents(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return _MISSING


def _hashable(x):
    try:
        hash(x)
    except TypeError:
        return False
    return True


def bind_arguments(fn, args, kwargs):
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as error:
        raise CompileError(f"calling {fn.__name__}: {error}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _bind_ast_arguments(node, args, kwargs, parent):
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args]
    defaults = [parent.eval(d) for d in a.defaults]
    scope = dict(zip(names[len(names) - len(defaults):], defaults))
    for kw, d in zip(a.kwonlyargs, a.kw_defaults):
        if d is not None:
            scope[kw.arg] = parent.eval(d)
    if len(args) > len(names) and a.vararg is None:
        raise CompileError(f"too many arguments: {len(args)} given, {len(names)} expected")
    scope.update(zip(names, args))
    if a.vararg is not None:
        scope[a.vararg.arg] = tuple(args[len(names):])
    extra = {k: v for k, v in kwargs.items() if k not in names and k not in {x.arg for x in a.kwonlyargs}}
    scope.update({k: v for k, v in kwargs.items() if k not in extra})
    if a.kwarg is not None:
        scope[a.kwarg.arg] = extra
    elif extra:
        raise CompileError(f"unexpected keyword arguments {sorted(extra)}")
    missing = [n for n in names if n not in scope]
    if missing:
        raise CompileError(f"missing arguments {missing}")
    return scope


def _as_load(target):
    node = ast.parse(ast.unparse(target), mode="eval").body
    ast.copy_location(node, target)
    for n in ast.walk(node):
        n.lineno = getattr(target, "lineno", 1)
    return node
