"""Front end: a Python function and example arguments -> a typed IR Program."""
from .. import pytree
from ..autograd import Param, Tracked
from ..ir.core import Builder, Program, Var
from ..ops.core import aval_of
from .source import function_ast
from .translate import FunctionTranslator, Translation, bind_arguments


def is_array(x):
    """Leaves that become IR inputs; every other leaf is a compile-time constant."""
    return isinstance(x, (Param, Tracked)) or (hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, type))


def trace(fn, args, kwargs, mode=None):
    """Translate fn(*args, **kwargs) into a Program.

    Returns (program, translation, out_treedef): the program's inputs are the array leaves
    of (args, kwargs) in flattening order, then the Params captured from globals/closures
    (translation.captures); its outputs are the array leaves of the result."""
    leaves, treedef = pytree.flatten((args, kwargs))
    translation = Translation()
    translation.mode = mode
    with Builder() as builder:
        inputs, abstract = [], []
        for leaf in leaves:
            if is_array(leaf):
                var = Var(aval_of(leaf))
                translation.arguments[id(var)] = (var, leaf)
                inputs.append(var)
                abstract.append(var)
            else:
                abstract.append(leaf)
        a_args, a_kwargs = pytree.unflatten(treedef, abstract)
        translation.mark_arguments((a_args, a_kwargs))
        node, filename = function_ast(fn)
        translation.functions[fn.__code__] = fn
        scope = bind_arguments(fn, a_args, a_kwargs)
        result = FunctionTranslator(translation, fn, node, filename, scope).run()
        out_leaves, out_treedef = pytree.flatten(result)
        outputs = []
        for leaf in out_leaves:
            if hasattr(leaf, "shape") and not isinstance(leaf, Var):  # an array constant
                leaf = builder.constant(leaf)
            outputs.append(leaf)
    program = Program(fn.__name__, inputs + [v for _, v in translation.captures], builder.eqns, outputs,
                      builder.constants)
    return program, translation, out_treedef
