"""What knetc adjusts in NumPy and SciPy when it is imported, each for a library it builds on.

    restore_row_stack()   numba-cuda needs np.row_stack, which NumPy 2.5 removed
    defer_f2py()          numpy.f2py loads when it is used, not when SciPy lists NumPy's names
    load_blas_table()     Numba's BLAS table loads without the rest of scipy.linalg
"""
import glob
import importlib.machinery
import importlib.util
import os
import sys

import numpy as np


def restore_row_stack():
    """numba-cuda (0.30.4 at least) registers an overload of np.row_stack, an alias of
    np.vstack that NumPy 2.5 removed: without it no CUDA kernel compiles."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


def defer_f2py():
    """Put a lazy module in numpy.f2py's place: it loads on its first attribute read.

    The first function Numba compiles or loads from its cache imports scipy.linalg (for
    BLAS), and SciPy 1.17's array-API layer reads every name NumPy lists, which imports
    numpy.f2py with its Fortran parser and charset_normalizer: about a quarter of a warm
    start's first step (0.25 of 1.15 s on the 2-core VM, 2026-12-04), for a module no
    training step uses. Anyone who does use numpy.f2py gets the whole module on first use."""
    if "numpy.f2py" in sys.modules or "f2py" in vars(np):
        return
    spec = importlib.util.find_spec("numpy.f2py")
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["numpy.f2py"] = module
    spec.loader.exec_module(module)  # LazyLoader: records the loader, runs nothing yet
    np.f2py = module  # numpy's __getattr__ would import it for real


def load_blas_table():
    """Numba's BLAS calls (np.dot in Numba code, knetc's GEMMs) take their function pointers
    from the extension module scipy.linalg.cython_blas, and importing it runs scipy.linalg's
    __init__ first: most of SciPy's linear algebra, about 0.17 s of a warm start's first
    compiled call on the 2-core VM (2026-12-05), for one table of pointers. Load that module
    alone under its own name (the same file: a later `import scipy.linalg` finds it there);
    where anything differs (no SciPy, another layout), nothing is done."""
    name = "scipy.linalg.cython_blas"
    if name in sys.modules or "scipy.linalg" in sys.modules:
        return
    spec = importlib.util.find_spec("scipy")
    if spec is None or spec.origin is None:
        return
    folder = os.path.join(os.path.dirname(spec.origin), "linalg")
    paths = [p for suffix in importlib.machinery.EXTENSION_SUFFIXES for p in glob.glob(os.path.join(folder, "cython_blas" + suffix))]
    if not paths:
        return
    table = importlib.util.spec_from_file_location(name, paths[0])
    module = importlib.util.module_from_spec(table)
    sys.modules[name] = module
    try:
        table.loader.exec_module(module)
    except Exception:  # (then scipy.linalg imports it as usual)
        del sys.modules[name]
        return
    sys.meta_path.insert(0, _AttachBlasTable())


class _AttachBlasTable:
    """When scipy.linalg is imported, it gets the table loaded before it as its attribute
    `cython_blas`, as its own import of the table would have set (then this finder leaves)."""

    def find_spec(self, name, path=None, target=None):
        if name != "scipy.linalg":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(package):
            run(package)
            package.cython_blas = sys.modules["scipy.linalg.cython_blas"]
        spec.loader.exec_module = exec_module
        return spec
