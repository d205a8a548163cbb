"""The package's modules import one another in layers (read with `ast`; nothing is imported):

- imports among knetc's modules (knetc/, runtime/ as knetc.runtime, kernels/ as
  knetc.kernels) form no cycle;
- a package module is imported inside a function only to put off what `import knetc` need
  not pay for: the module imported loads an optional dependency when imported (numba.cuda
  alone takes about a second: runtime/pool.py, the CUDA kernels) or starts Numba's thread
  pool (the knetc.kernels package), and the importing module does not. Any other import goes
  at the top of the module; where a lower module seems to need a higher one, the dependency
  is turned around instead of hidden in a function;
- the op table (knetc.ops) sits below autograd, the IR, the compiler, the back ends,
  KnetArray and training: nothing it imports, directly or not, is one of them.
"""
import ast
import pathlib
from typing import NamedTuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"knetc": ROOT / "knetc", "knetc.runtime": ROOT / "runtime", "knetc.kernels": ROOT / "kernels"}
OPTIONAL = ("numba.cuda", "cuda", "torch", "cupy")  # loaded on first use (absolute names and their submodules)
STARTS_THREADS = "knetc.kernels"  # kernels/__init__.py starts Numba's thread pool
ABOVE_OPS = ("knetc.autograd", "knetc.ir", "knetc.compiler", "knetc.backend", "knetc.knetarray", "knetc.train")



def _modules():
    """{module name: path} of every module of the package."""
    modules = {}
    for package, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            name = ".".join((package, *path.relative_to(directory).with_suffix("").parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


class Import(NamedTuple):
    importer: str
    target: str
    line: int
    in_function: bool

    def __repr__(self):
        where = "in a function" if self.in_function else "at the top"
        return f"{MODULES[self.importer].relative_to(ROOT)}:{self.line} imports {self.target} {where}"


def _imported_names(module, node):
    """The absolute names an import statement imports (`from a import b`: a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def _package_module(name):
    """The package module `name` is (or is a name in), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _within(name, package):
    return name == package or name.startswith(package + ".")


def _is_optional(name):
    return any(_within(name, o) for o in OPTIONAL)


def _scan():
    """(package imports, {module: the optional dependencies it imports at the top})."""
    imports, optional = [], {m: set() for m in MODULES}

    def visit(module, node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                names = _imported_names(module, child)
                if not in_function and not getattr(child, "level", 0):
                    optional[module].update(n for n in names if _is_optional(n))
                targets = {_package_module(n) for n in names if n.split(".")[0] == "knetc"} - {None, module}
                imports.extend(Import(module, t, child.lineno, in_function) for t in sorted(targets))
            visit(module, child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    for module, path in MODULES.items():
        visit(module, ast.parse(path.read_text(), str(path)), False)
    return imports, optional


IMPORTS, OPTIONAL_AT_TOP = _scan()


def _put_off():
    """Modules loaded on first use: importing them (or their package, or what they import at
    the top) loads an optional dependency or starts Numba's thread pool."""
    put_off = {m for m, names in OPTIONAL_AT_TOP.items() if names} | {m for m in MODULES if _within(m, STARTS_THREADS)}
    while True:
        more = {i.importer for i in IMPORTS if not i.in_function and i.target in put_off} - put_off
        if not more:
            return put_off
        put_off |= more


def _graph():
    """importer -> modules imported (in functions too)."""
    edges = {}
    for i in IMPORTS:
        edges.setdefault(i.importer, set()).add(i.target)
    return edges


def _reachable(edges, start):
    seen, todo = set(), [start]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_scan_sees_the_package():
    assert {"knetc.ops.core", "knetc.runtime.pool", "knetc.kernels.conv", "knetc.compiler"} <= set(MODULES)
    tops = {(i.importer, i.target) for i in IMPORTS if not i.in_function}
    assert ("knetc.ops.core", "knetc.runtime.threads") in tops  # from ..runtime import threads
    assert ("knetc.runtime.cudnn_ops", "knetc.runtime.cudnn") in tops  # from . import cudnn
    assert "knetc.runtime.pool" in _put_off() and "knetc.ops.core" not in _put_off()


def test_imports_form_no_cycle():
    edges = _graph()
    assert [m for m in sorted(MODULES) if m in _reachable(edges, m)] == [], "these modules import themselves"


def test_importing_knetc_loads_nothing_put_off():
    assert "knetc" not in _put_off()


def test_package_modules_are_imported_in_functions_only_to_put_off_loading_them():
    put_off = _put_off()
    hidden = [i for i in IMPORTS if i.in_function and not (i.target in put_off and i.importer not in put_off)]
    assert hidden == [], "import these at the top of the module (turn the dependency around if it cycles)"


def test_ops_import_nothing_above_them():
    edges = _graph()
    above = {(m, t) for m in MODULES if _within(m, "knetc.ops") for t in _reachable(edges, m)
             if any(_within(t, a) for a in ABOVE_OPS)}
    assert above == set()
