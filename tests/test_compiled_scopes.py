"""Compiled code finds names and reads values as Python does: small arrays inside global
lists, dicts and tuples and the default values of inlined helpers are guarded (a change
traces again); a lambda made in a comprehension closes over the comprehension's variable;
inner functions read the enclosing variables as they are when they run (late binding); a
local read before it is assigned is refused, never read from a global of the same name.
Each result and gradient is compared with the uncompiled function (`f.fn`)."""
import inspect

import numpy as np
import pytest

import knetc as kn

X = np.arange(6.0)


def agree(f, *args):
    """f(*args) compiled equals the Python function on the same inputs, and so does kn.grad of it."""
    np.testing.assert_allclose(np.asarray(kn.value(f(*args))), np.asarray(kn.value(f.fn(*args))), rtol=1e-12)
    np.testing.assert_allclose(kn.grad(f)(*args), kn.grad(f.fn)(*args), rtol=1e-12, atol=1e-12)


def refused(f, marker, *args, python_error):
    """Python raises python_error; compiled code raises a CompileError naming the line marked `marker`."""
    with pytest.raises(python_error):
        f.fn(*args)
    with pytest.raises(kn.CompileError) as info:
        f(*args)
    lines, first = inspect.getsourcelines(f.fn)
    line = next(first + i for i, text in enumerate(lines) if marker in text)
    message = str(info.value)
    assert "test_compiled_scopes.py" in message and f"line {line}" in message, message
    assert "before it is assigned" in message, message


# ---------------------------------------------------------------- small arrays in global containers

BUFFERS = {"index": np.array([0, 1]), "mask": np.array([1, 1, 0, 0, 0, 0], dtype=bool), "n": np.array(2)}
ROWS = [np.array([0, 1]), {"nested": (np.array([2.0]),)}]
PAIR = (np.array([0, 2]),)


@kn.compile(target="cpu", cache=False)
def reads_arrays_in_containers(x):
    total = kn.sum(x[BUFFERS["index"]]) + kn.sum(x[BUFFERS["mask"]]) + kn.sum(x[:int(BUFFERS["n"])])
    for row in ROWS[:1]:  # (an item reached by iterating, not by an index)
        total = total + kn.sum(x[row] * x[row])
    return total * float(ROWS[1]["nested"][0][0]) + kn.sum(x[PAIR[0]])


def test_small_arrays_in_global_containers_refilled_in_place():
    saved = [a.copy() for a in (BUFFERS["index"], BUFFERS["mask"], BUFFERS["n"], ROWS[0], ROWS[1]["nested"][0], PAIR[0])]
    try:
        agree(reads_arrays_in_containers, X)
        BUFFERS["index"][:] = [4, 5]  # label and index buffers refilled in place
        BUFFERS["mask"][:] = [0, 0, 0, 0, 1, 1]
        BUFFERS["n"][()] = 6
        agree(reads_arrays_in_containers, X)
        ROWS[0][:] = [3, 5]
        ROWS[1]["nested"][0][0] = -1.5
        PAIR[0][:] = [1, 1]
        agree(reads_arrays_in_containers, X)
    finally:
        for array, old in zip((BUFFERS["index"], BUFFERS["mask"], BUFFERS["n"], ROWS[0], ROWS[1]["nested"][0],
                               PAIR[0]), saved):
            array[...] = old


# ---------------------------------------------------------------- default values of inlined helpers

CONFIG = {"scale": 2.0}
INDEX = np.array([0, 1])


class Scale:
    def __init__(self):
        self.k = 2.0

    def __call__(self, x):
        return x * self.k


LAYER = Scale()


def helper_with_defaults(x, config=CONFIG, index=INDEX, layer=LAYER, *, shift=CONFIG):
    return kn.sum(layer(x[index]) * config["scale"]) + shift["scale"]


@kn.compile(target="cpu", cache=False)
def calls_helper_with_defaults(x):
    return helper_with_defaults(x)


def counts_calls(x, seen=[]):  # noqa: B006 (Python's mutable default: it grows on every call)
    seen.append(1)
    return kn.sum(x) * len(seen)


@kn.compile(target="cpu", cache=False)
def calls_helper_changing_its_default(x):
    return counts_calls(x)


def test_default_values_of_helpers_are_guarded():
    try:
        agree(calls_helper_with_defaults, X)
        CONFIG["scale"] = 10.0  # a changed dict entry
        agree(calls_helper_with_defaults, X)
        INDEX[:] = [4, 5]  # a refilled small array
        agree(calls_helper_with_defaults, X)
        LAYER.k = 3.0  # a changed attribute
        agree(calls_helper_with_defaults, X)
    finally:
        CONFIG["scale"], INDEX[:], LAYER.k = 2.0, [0, 1], 2.0


def test_a_helper_changing_its_mutable_default_is_refused():
    with pytest.raises(kn.CompileError, match="append"):
        calls_helper_changing_its_default(X)


# ---------------------------------------------------------------- closures

@kn.compile(target="cpu", cache=False)
def lambdas_in_a_comprehension(x):
    i = 10  # (not the lambdas' i: each reads the comprehension's, 2 when they run)
    scales = [lambda: x * i * k for i in range(3)]
    k = 5.0  # read when the lambdas run
    return kn.sum(scales[0]() * scales[1]())


@kn.compile(target="cpu", cache=False)
def lambdas_in_nested_comprehensions(x):
    grid = [[lambda: x * (10 * i + j) for j in range(2)] for i in range(3)]
    return kn.sum(grid[0][0]() * x)


@kn.compile(target="cpu", cache=False)
def lambdas_in_a_comprehension_without_a_local(x):
    return kn.sum(sum(f() for f in [lambda: x * i for i in range(3)]))


@kn.compile(target="cpu", cache=False)
def def_inside_an_inner_function(x):
    k = 1.0

    def make():
        def scaled():
            return x * k * m
        m = 2.0
        return scaled

    g = make()
    k = 5.0  # g reads k now, as Python does
    return kn.sum(g() * x)


def test_lambdas_close_over_the_comprehension_variable():
    agree(lambdas_in_a_comprehension, X)
    agree(lambdas_in_nested_comprehensions, X)
    agree(lambdas_in_a_comprehension_without_a_local, X)


def test_inner_functions_read_enclosing_variables_when_they_run():
    agree(def_inside_an_inner_function, X)


# ---------------------------------------------------------------- locals read before they are assigned

scale = 5.0
k = 3.0


@kn.compile(target="cpu", cache=False)
def local_assigned_in_a_branch_not_taken(x):
    if x.shape[0] > 100:
        scale = 2.0
    return kn.sum(x * scale)  # <- read


@kn.compile(target="cpu", cache=False)
def local_assigned_after_it_is_read(x):
    y = x * scale  # <- read
    scale = 2.0
    return kn.sum(y * scale)


@kn.compile(target="cpu", cache=False)
def inner_function_with_a_local_read_first(x):
    def inner():
        y = x * k  # <- read
        k = 2.0
        return y * k
    return kn.sum(inner())


@kn.compile(target="cpu", cache=False)
def inner_function_changing_an_enclosing_name(x):
    total = kn.sum(x)

    def add():
        total += 1.0  # <- read
        return total
    return add()


@kn.compile(target="cpu", cache=False)
def enclosing_local_not_yet_assigned(x):
    def inner():
        return x * scale  # <- read
    y = inner()
    scale = 2.0
    return kn.sum(y * scale)


@kn.compile(target="cpu", cache=False)
def comprehension_variable_is_no_local(x):
    scales = [scale for scale in (1.0, 2.0)]  # (binds the comprehension's scale, not the function's)
    return kn.sum(x * scale) * scales[1]


def test_a_local_read_before_it_is_assigned_is_refused():
    refused(local_assigned_in_a_branch_not_taken, "<- read", X, python_error=UnboundLocalError)
    refused(local_assigned_after_it_is_read, "<- read", X, python_error=UnboundLocalError)
    refused(inner_function_with_a_local_read_first, "<- read", X, python_error=UnboundLocalError)
    refused(inner_function_changing_an_enclosing_name, "<- read", X, python_error=UnboundLocalError)
    refused(enclosing_local_not_yet_assigned, "<- read", X, python_error=NameError)
    agree(comprehension_variable_is_no_local, X)


@kn.compile(target="cpu", cache=False)
def inner_function_missing_a_keyword_argument(x):
    def scaled(y, *, scale):
        return y * scale
    return kn.sum(scaled(x))  # <- call


def test_an_inner_function_binds_its_arguments_as_python_does():
    with pytest.raises(TypeError, match="scale"):
        inner_function_missing_a_keyword_argument.fn(X)
    with pytest.raises(kn.CompileError, match="scale"):  # (not the global scale)
        inner_function_missing_a_keyword_argument(X)


def test_an_empty_closure_cell_is_not_read_from_the_globals():
    def reads_cell(x):
        return kn.sum(x * scale)  # <- read
    compiled = kn.compile(reads_cell, target="cpu", cache=False)
    refused(compiled, "<- read", X, python_error=NameError)
    scale = 2.0
    agree(compiled, X)
    assert scale == 2.0
