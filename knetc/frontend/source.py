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
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.Lambda)) and node.lineno == code.co_firstlineno:
            return node, filename
    for node in ast.walk(tree):  # decorated functions: co_firstlineno is the decorator's line
        if isinstance(node, ast.FunctionDef) and node.name == code.co_name:
            return node, filename
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda):
            return node, filename
    raise CompileError(f"cannot find the definition of {code.co_name!r} in its source", filename, code.co_firstlineno)


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
