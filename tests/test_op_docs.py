"""help() of every public op shows its own doc, with an example that runs (issue 17, item 7)."""
import doctest
import inspect
import pydoc

import numpy as np
import pytest

import knetc as kn
from knetc.ops.core import Op

PUBLIC = sorted(n for n in dir(kn) if not n.startswith("_"))
def run_examples(doc, name):
    """Run the doctests in `doc` (kn.`name`'s), assert that they pass; how many examples ran."""
    test = doctest.DocTestParser().get_doctest(doc, {}, "kn." + name, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda s: None)
    assert runner.summarize(verbose=False).failed == 0, doc
    return len(test.examples)


OP_NAMES = [n for n in PUBLIC if isinstance(getattr(kn, n), Op)]
FUNCTION_NAMES = [n for n in PUBLIC if inspect.isfunction(getattr(kn, n))]


def test_the_public_ops_are_found():
    assert {"relu", "exp", "tanh", "add", "sigm"} <= set(OP_NAMES)
    assert len(OP_NAMES) >= 50


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_help_is_its_own_with_an_example(name):
    op = getattr(kn, name)
    doc = inspect.getdoc(op)
    assert doc and doc != inspect.getdoc(Op), name
    assert doc.startswith(name + "("), doc[:60]
    assert ">>>" in doc and "Example" in doc, name
    text = pydoc.render_doc(op, renderer=pydoc.plaintext)
    assert doc.splitlines()[0] in text and "One primitive: shape rule" not in text


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_example_runs(name):
    """The example in each op's doc is a doctest, and it passes."""
    op = getattr(kn, name)
    assert run_examples(op.__doc__, name) > 0


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_public_functions_have_their_own_doc(name):
    doc = inspect.getdoc(getattr(kn, name))
    assert doc and doc != inspect.getdoc(Op), name


OPS_FUNCTIONS = [n for n in FUNCTION_NAMES if getattr(kn, n).__module__.startswith("knetc.ops")]


def test_the_op_functions_are_found():
    assert {"sum", "mean", "matmul", "reshape", "eq", "cat", "softmax", "conv4"} <= set(OPS_FUNCTIONS)


@pytest.mark.parametrize("name", OPS_FUNCTIONS)
def test_op_function_doc_has_an_example(name):
    """The public functions of knetc.ops (sum, matmul, conv4, ...) show an example too."""
    doc = inspect.getdoc(getattr(kn, name))
    assert ">>>" in doc or "Example" in doc, name


RUNNABLE = "Example:\n    >>> import numpy as np, knetc as kn\n"


@pytest.mark.parametrize("name", [n for n in OPS_FUNCTIONS if RUNNABLE in inspect.getdoc(getattr(kn, n))])
def test_op_function_example_runs(name):
    """Examples written as doctests (they start by importing numpy and knetc) pass."""
    doc = inspect.getdoc(getattr(kn, name))
    run_examples(doc, name)


# The rest of the public API (training iterators, initialisers, autograd, I/O, ...): every
# example written as a doctest (it imports knetc first) passes.
API_EXAMPLES = [n for n in PUBLIC if not isinstance(getattr(kn, n), Op) and n not in OPS_FUNCTIONS
                and "knetc as kn\n" in (inspect.getdoc(getattr(kn, n)) or "").partition(">>> import")[2][:40]]


def test_the_api_examples_are_found():
    assert {"adam", "adam_", "sgd", "sgd_", "minimize_", "converge", "converge_", "progress_", "minibatch", "grad",
            "Param", "param", "param0", "xavier_uniform", "xavier_normal", "gaussian", "bilinear", "compile",
            "save", "load", "rnnparams", "training", "goldensection", "hyperband", "cpucopy"} <= set(API_EXAMPLES)


@pytest.mark.parametrize("name", API_EXAMPLES)
def test_api_example_runs(name):
    doc = inspect.getdoc(getattr(kn, name))
    run_examples(doc, name)


# Every public name's examples (functions, Op instances, other objects; modules left out, and
# classes only where their docs show examples) run as doctests in {"np": numpy, "kn": knetc},
# as `help(kn.name)` shows them. An example that needs a GPU or a file says so and is marked
# `# doctest: +SKIP`.
def examples_of(name):
    """The >>> examples in kn.`name`'s doc ([] for a module or a doc without any)."""
    obj = getattr(kn, name)
    if inspect.ismodule(obj):
        return []
    return doctest.DocTestParser().get_examples(inspect.getdoc(obj) or "")


EXAMPLE_NAMES = [n for n in PUBLIC if examples_of(n)]


def test_the_examples_of_every_public_name_are_found():
    assert set(OP_NAMES) <= set(EXAMPLE_NAMES)
    assert {"accuracy", "batchnorm", "bce", "bnparams", "diff", "dropout", "getindex", "logistic", "logp",
            "logsoftmax", "logsumexp", "max", "min", "nll", "norm", "pool", "polygamma", "rnnparam",
            "setindex", "softmax", "unpool", "var"} <= set(EXAMPLE_NAMES)
    assert len(EXAMPLE_NAMES) >= 150


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_public_example_runs(name):
    """kn.`name`'s examples pass with numpy as np and knetc as kn defined; a failure shows doctest's report."""
    doc = inspect.getdoc(getattr(kn, name))
    test = doctest.DocTestParser().get_doctest(doc, {"np": np, "kn": kn}, "kn." + name, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    report = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, f"kn.{name}'s examples fail:\n" + "".join(report)
