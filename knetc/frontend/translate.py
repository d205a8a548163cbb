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
import types

import numpy as np

from ..autograd import Param, Tracked
from ..errors import CompileError, ShapeError
from ..ir.core import Var, current_builder
from ..ops import elementwise as ew
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

_MAX_INLINE_DEPTH = 64
_MAX_WHILE_STEPS = 100_000


def _is_library(fn):
    """Functions knetc calls as they are (they apply ops to Vars) instead of inlining."""
    module = getattr(fn, "__module__", None) or ""
    return module.split(".")[0] in ("knetc", "numpy", "builtins", "math", "operator", "functools", "itertools")


class Guard:
    """A global or closure name whose array value the compiled code captured: if the name
    is rebound, the specialization is stale."""
    __slots__ = ("namespace", "name", "cell", "value")

    def __init__(self, value, namespace=None, name=None, cell=None):
        self.value, self.namespace, self.name, self.cell = value, namespace, name, cell

    def holds(self):
        current = self.cell.cell_contents if self.cell is not None else self.namespace.get(self.name)
        return current is self.value


class Translation:
    """State shared by every function inlined into one compiled program."""

    def __init__(self):
        self.captures = []  # (Param, Var): Params read from globals/closures, implicit inputs
        self.guards = []
        self.depth = 0
        self.functions = {}  # code object -> function: everything translated (for the cache key)

    def source_key(self):
        """A digest of the source of every function translated into the program."""
        digest = hashlib.sha256()
        for code in sorted(self.functions, key=lambda c: (c.co_name, c.co_firstlineno)):
            node, _ = function_ast(self.functions[code])
            digest.update(f"{code.co_name}\n{ast.dump(node)}\n".encode())
        return digest.hexdigest()

    def capture(self, param):
        for p, var in self.captures:
            if p is param:
                return var
        var = Var(param.aval)
        self.captures.append((param, var))
        return var


class FunctionTranslator(ast.NodeVisitor):
    """Runs one (inlined) function's body at compile time."""

    def __init__(self, translation, fn, node, filename, scope, closure=None):
        self.translation, self.fn, self.node, self.filename = translation, fn, node, filename
        self.scope = scope
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
        self.assign(node.target, _BINARY[type(node.op)](self.eval(load), self.eval(node.value)))

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
        return method(node)

    def eval_Constant(self, node):
        return node.value

    def eval_Name(self, node):
        name = node.id
        if name in self.scope:
            return self.scope[name]
        if name in self.closure:
            return self._captured(self.closure[name], cell=self._cells.get(name))
        if name in self.globals:
            return self._captured(self.globals[name], namespace=self.globals, name=name)
        if name in BUILTINS:
            return BUILTINS[name]
        raise CompileError(f"name {name!r} is not defined", self.filename, node.lineno)

    def _captured(self, value, namespace=None, name=None, cell=None):
        """Globals and closure values: arrays and Params become (guarded) inputs."""
        if isinstance(value, (Param, np.ndarray, Tracked)):
            self.translation.guards.append(Guard(value, namespace, name, cell))
            if isinstance(value, (Param, Tracked)):
                return self.translation.capture(value)
        return value

    def eval_Attribute(self, node):
        obj = self.eval(node.value)
        try:
            return getattr(obj, node.attr)
        except AttributeError as error:
            raise CompileError(str(error), self.filename, node.lineno) from None

    def eval_Subscript(self, node):
        obj, index = self.eval(node.value), self.eval(node.slice)
        return obj[index]  # on a Var: knetc.ops.indexing.getindex

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
        return _BINARY[type(node.op)](self.eval(node.left), self.eval(node.right))

    def eval_UnaryOp(self, node):
        return _UNARY[type(node.op)](self.eval(node.operand))

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
        from ..compiler import CompiledFunction
        if isinstance(fn, InnerFunction):
            return fn(*args, **kwargs)
        if isinstance(fn, CompiledFunction):
            fn = fn.fn
        if isinstance(fn, types.MethodType) and not _is_library(fn.__func__) and isinstance(fn.__func__, types.FunctionType):
            return self.inline(fn.__func__, (fn.__self__, *args), kwargs)
        if isinstance(fn, types.FunctionType):
            if _is_library(fn):
                return fn(*args, **kwargs)
            return self.inline(fn, args, kwargs)
        if isinstance(fn, type):
            if fn.__module__ == "builtins" or issubclass(fn, (tuple, list, dict)):
                return fn(*args, **kwargs)
            raise CompileError(f"creating a {fn.__name__} object in compiled code is not supported",
                               hint="create objects outside and pass them in as arguments")
        call = getattr(type(fn), "__call__", None)
        if isinstance(call, types.FunctionType) and not _is_library(call) and not isinstance(fn, types.BuiltinFunctionType):
            return self.inline(call, (fn, *args), kwargs)  # a callable user object (a layer)
        return fn(*args, **kwargs)

    def inline(self, fn, args, kwargs):
        """Run a Python function's body in a new scope, at compile time."""
        translation = self.translation
        if translation.depth >= _MAX_INLINE_DEPTH:
            raise CompileError(f"inlining {fn.__name__!r} nested more than {_MAX_INLINE_DEPTH} calls deep",
                               hint="recursion must end at compile time")
        scope = bind_arguments(fn, args, kwargs)
        node, filename = function_ast(fn)
        translation.functions[fn.__code__] = fn
        translation.depth += 1
        saved = current_builder().loc
        try:
            return FunctionTranslator(translation, fn, node, filename, scope).run()
        finally:
            translation.depth -= 1
            current_builder().loc = saved


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
