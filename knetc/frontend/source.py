"""Getting a function's AST from its source file."""
import ast
import builtins
import functools
import linecache

from ..errors import CompileError


@functools.lru_cache(maxsize=None)
def function_ast(code):
    """The ast.FunctionDef or ast.Lambda of a function's code object (from its file)."""
    filename = code.co_filename
    linecache.checkcache(filename)
    lines = linecache.getlines(filename)
    if not lines:
        raise CompileError(f"cannot read the source of {code.co_name!r} (defined in {filename})",
                           hint="knetc compiles functions defined in .py files (or notebooks cells saved to files)")
    # Line and column numbers as in the code object: a lambda is found wherever it starts.
    node = _find(_parse_text("".join(lines), filename), code)
    if node is None and code.co_name == "<lambda>":
        raise CompileError(f"cannot find this lambda in the source of {filename}", filename, code.co_firstlineno,
                           hint="define the function with `def` and compile that")
    if node is None or not _matches(node, code):
        raise CompileError(f"the source of {code.co_name!r} in {filename} is not the code Python is running "
                           "(was the file edited after it was imported?)", filename, code.co_firstlineno,
                           hint="restart Python so that the running code and the file agree")
    return node


@functools.lru_cache(maxsize=16)
def _parse_text(text, filename):
    try:
        return ast.parse(text, filename)
    except SyntaxError as error:
        raise CompileError(f"cannot parse {filename}: {error.msg}", filename, error.lineno,
                           hint="restart Python so that the running code and the file agree") from None


def _find(tree, code):
    first = code.co_firstlineno
    if code.co_name != "<lambda>":  # (decorated functions: co_firstlineno is the first decorator's line)
        return next((node for node in ast.walk(tree)
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == code.co_name
                     and first in (node.lineno, *(d.lineno for d in node.decorator_list[:1]))), None)
    lambdas = [node for node in ast.walk(tree)
               if isinstance(node, ast.Lambda) and node.lineno == first and _same_arguments(node, code)]
    if len(lambdas) > 1:  # several on the line: the one whose span holds the code's instructions
        spots = [(line, col) for line, _, col, end in code.co_positions()
                 if line is not None and col is not None and (col, end) != (0, 0)]
        lambdas = [node for node in lambdas
                   if all((node.lineno, node.col_offset) <= spot <= (node.end_lineno, node.end_col_offset)
                          for spot in spots)]
        lambdas.sort(key=lambda node: (node.end_lineno - node.lineno, node.end_col_offset - node.col_offset))
    return lambdas[0] if lambdas else None


def _same_arguments(node, code):
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return names == list(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount])


def _matches(node, code):
    """Does the AST plausibly hold this code object? Its arguments must be the code's, and
    every global or attribute name the bytecode uses must appear in it (an edited file whose
    function no longer matches is refused rather than compiled)."""
    if not _same_arguments(node, code):
        return False
    if any(name.startswith("@") for name in code.co_names):
        return True  # bytecode rewritten on import (pytest's asserts): its names are not the file's
    mentioned = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | \
        {alias.asname or alias.name for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))
         for alias in n.names}
    return set(code.co_names) <= mentioned | set(dir(builtins))
