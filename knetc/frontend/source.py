"""Getting a function's AST and the names it can see (globals, closure cells, builtins)."""
import ast
import builtins
import functools
import inspect
import textwrap

from ..errors import CompileError


@functools.lru_cache(maxsize=None)
def _parse(code):
    filename = code.co_filename
    try:
        lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError):
        raise CompileError(f"cannot read the source of {code.co_name!r} (defined in {filename})",
                           hint="knetc compiles functions defined in .py files (or notebooks cells saved to files)") from None
    tree = ast.parse(textwrap.dedent("".join(lines)))
    ast.increment_lineno(tree, first - 1)
    node = _find(tree, code)
    if node is None or not _matches(node, code):
        raise CompileError(f"the source of {code.co_name!r} in {filename} is not the code Python is running "
                           "(was the file edited after it was imported?)", filename, code.co_firstlineno,
                           hint="restart Python so that the running code and the file agree")
    return node, filename


def _find(tree, code):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.Lambda)) and node.lineno == code.co_firstlineno:
            return node
    for node in ast.walk(tree):  # decorated functions: co_firstlineno is the decorator's line
        if isinstance(node, ast.FunctionDef) and node.name == code.co_name:
            return node
    lambdas = [node for node in ast.walk(tree) if isinstance(node, ast.Lambda)]
    return lambdas[0] if lambdas else None


def _matches(node, code):
    """Does the AST plausibly hold this code object? Its arguments must be the code's, and
    every global or attribute name the bytecode uses must appear in it (an edited file whose
    function no longer matches is refused rather than compiled)."""
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if names != list(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]):
        return False
    if any(name.startswith("@") for name in code.co_names):
        return True  # bytecode rewritten on import (pytest's asserts): its names are not the file's
    mentioned = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | \
        {alias.asname or alias.name for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))
         for alias in n.names}
    return set(code.co_names) <= mentioned | set(dir(builtins))


def function_ast(fn):
    """(ast.FunctionDef or ast.Lambda, filename) of a Python function."""
    return _parse(fn.__code__)


def closure_names(fn):
    """The names a function binds through closure cells (empty cells are left out)."""
    names = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            names[name] = cell.cell_contents
        except ValueError:
            pass
    return names


BUILTINS = vars(builtins)
