"""Front end: a Python function and example arguments -> a typed IR Program."""
from .. import pytree
from ..autograd import Param, Tracked
from ..ir.core import Builder, Program, Var
from ..ops.core import aval_of
from .translate import Translation


def is_array(x):
    """Leaves that become IR inputs; every other leaf is a compile-time constant."""
    return isinstance(x, (Param, Tracked)) or (hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, type))


def trace(fn, args, kwargs, mode=None):
    """Translate fn(*args, **kwargs) into a Program.

    Returns (program, translation, out_treedef): the program's inputs are the array leaves
    of (args, kwargs) in flattening order, then the Params captured from globals/closures
    (translation.captures); its outputs are the array leaves of the result."""
    leaves, treedef = pytree.flatten((args, kwargs))
    translation = Translation(mode)
    with Builder() as builder:
        abstract = [builder.input(aval_of(leaf)) if is_array(leaf) else leaf for leaf in leaves]
        translation.arguments = {var: leaf for var, leaf in zip(abstract, leaves) if isinstance(var, Var)}
        a_args, a_kwargs = pytree.unflatten(treedef, abstract)
        translation.mark_arguments((a_args, a_kwargs))
        out_leaves, out_treedef = pytree.flatten(translation.inline(fn, a_args, a_kwargs))
        outputs = [builder.constant(leaf) if hasattr(leaf, "dtype") and hasattr(leaf, "shape") and not isinstance(leaf, Var) else leaf
                   for leaf in out_leaves]  # (array constants become the program's constants)
    inputs = [*translation.arguments, *(v for _, v in translation.captures)]
    return Program(fn.__name__, inputs, builder.eqns, outputs, builder.constants), translation, out_treedef
