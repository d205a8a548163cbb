"""What knetc adjusts in NumPy when it is imported, each for a library it builds on.

    restore_row_stack()   numba-cuda needs np.row_stack, which NumPy 2.5 removed
    defer_f2py()          numpy.f2py loads when it is used, not when SciPy lists NumPy's names
"""
import importlib.util
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
