"""Python constructs that compiled code cannot reproduce exactly are refused with a CompileError
at the user's line, or computed as Python computes them; never a silently different answer
(audit 7): `+=` on an array something else holds, introspection of array values, locals(),
impure calls frozen at trace time, `in` with arrays, the loop variable kept past a loop."""
import array
import collections
import datetime
import inspect
import itertools
import math
import operator
import os
import uuid

import numpy as np
import pytest

import knetc as kn


def line_of(fn, marker):
    """The line number in this file of the line of fn's source that contains `marker`."""
    lines, first = inspect.getsourcelines(getattr(fn, "fn", fn))
    hits = [first + i for i, text in enumerate(lines) if marker in text]
    assert len(hits) == 1, f"marker {marker!r} must appear once"
    return hits[0]


def refused(fn, *args, names, marker="# <-", where=None):
    """fn compiled raises CompileError naming `names` (the construct), this file and the marked line."""
    with pytest.raises(kn.CompileError) as info:
        kn.compile(fn, target="cpu", cache=False)(*args)
    message = str(info.value)
    assert names in message, message
    assert "test_compiled_refusals.py" in message, message
    assert f"line {line_of(where or fn, marker)}" in message, message
    return message


def same(fn, *args):
    """fn compiled gives what the plain Python function gives."""
    expected = fn(*args)
    actual = kn.compile(fn, target="cpu", cache=False)(*args)
    np.testing.assert_allclose(np.asarray(kn.value(actual)), np.asarray(kn.value(expected)), rtol=1e-12)


X = np.arange(6.0).reshape(2, 3)


# ---------------------------------------------------------------- `+=` on an array something else holds

def held_in_dict(x):
    y = x * 2
    out = {"y": y}
    y += 1  # <-
    return out["y"]


def held_in_nested_tuple(x):
    y = x * 2
    t = ((y, 0), 1)
    y += 1  # <-
    return t[0][0]


def held_by_keyword_dict(x):
    y = x * 2

    def bump(**kw):
        z = kw["a"]
        z += 1  # <-
        return z
    bump(a=y)
    return y


def held_by_enclosing_function(x):
    y = x * 2

    def bump():
        z = y
        z *= 3  # <-
    bump()
    return y


def held_as_default_value(x):
    y = x * 2
    keep = lambda a=y: a  # noqa: E731
    y += 1  # <-
    return keep()


def held_as_row_view(x):
    y = x * 2
    first = y[0]
    y += 1  # <-
    return first


def held_as_transpose(x):
    y = x * 2
    t = y.T
    y *= 3  # <-
    return t


def held_as_reshape(x):
    y = x * 2
    flat = y.reshape(-1)
    y -= 1  # <-
    return flat


def held_before_a_loop(x):
    y = x * 2
    z = y
    for t in range(3):
        y += 1  # <-
    return z


def view_held_before_a_loop(x):
    y = x * 2
    z = y[0]
    for t in range(3):
        y += x[0, 0]  # <-
    return z


@pytest.mark.parametrize("fn", [held_in_dict, held_in_nested_tuple, held_by_keyword_dict, held_by_enclosing_function,
                                held_as_default_value, held_as_row_view, held_as_transpose, held_as_reshape,
                                held_before_a_loop, view_held_before_a_loop])
def test_augmented_assignment_on_an_array_something_else_holds_is_refused(fn):
    fn(X)  # (Python changes what the other holder sees)
    message = refused(fn, X, names="augmented assignment")
    assert "also holds" in message and "x = x + ..." in message


def adds_to_param(w):
    w += 1.0  # <-
    return kn.sum(w * 2)


def test_augmented_assignment_on_a_param_argument_is_refused():
    w = kn.Param(np.ones(3))
    refused(adds_to_param, w, names="augmented assignment")
    np.testing.assert_array_equal(w.value, np.ones(3))  # (Python would have changed the caller's Param)


def accumulates_in_a_loop(x):
    h = x[0] * 1.0
    total = 0.0
    for t in range(2):
        h += x[t]
        total += kn.sum(h)
    return total * h


def test_augmented_assignment_that_nobody_else_sees_gives_pythons_answer():
    same(accumulates_in_a_loop, X)


# ---------------------------------------------------------------- introspection of array values

def has_copy(x):
    return x * (2.0 if hasattr(x, "copy") else 3.0)


def getattr_with_default(x):
    return x * (2.0 if getattr(x, "aval", None) is None else 3.0) + getattr(x, "ndim", 10)


def type_of_argument(x):
    return x * (2.0 if type(x) is np.ndarray else 3.0)


def param_has_value(w):
    return kn.sum(w * (2.0 if hasattr(w, "value") else 3.0))


@pytest.mark.parametrize("fn", [has_copy, getattr_with_default, type_of_argument])
def test_introspection_answers_for_the_array_python_sees(fn):
    same(fn, X)


def test_introspection_answers_for_the_param_python_sees():
    w = kn.Param(np.arange(3.0))
    same(param_has_value, w)
    np.testing.assert_allclose(kn.grad(kn.compile(param_has_value, target="cpu", cache=False))(w),
                               kn.grad(param_has_value)(w))


def class_of_argument(x):
    return x * (2.0 if x.__class__ is np.ndarray else 3.0)  # <-


def has_value_computed(x):
    y = x * 2
    return y * (2.0 if hasattr(y, "value") else 3.0)  # <-


def test_introspection_that_cannot_answer_as_python_is_refused():
    refused(class_of_argument, X, names="`.__class__`")
    refused(has_value_computed, X, names="`hasattr()`")


# ---------------------------------------------------------------- locals(), globals(), vars()

SCALE = 4.0


def reads_locals(x):
    k = 5
    return x * locals().get("k", 1)  # <-


def reads_globals(x):
    return x * globals().get("SCALE", 1.0)  # <-


def reads_vars(x):
    k = 5
    return x * vars().get("k", 1)  # <-


@pytest.mark.parametrize("fn, names", [(reads_locals, "`locals()`"), (reads_globals, "`globals()`"),
                                       (reads_vars, "`vars()`")])
def test_locals_globals_and_vars_are_refused(fn, names):
    refused(fn, X, names=names)


# ---------------------------------------------------------------- impure calls frozen at trace time

COUNTER = itertools.count(1)
LOG = collections.deque()
BUFFER = array.array("d", [1.0])


def next_of_global_iterator(x):
    return x * next(COUNTER)  # <-


def next_of_argument_iterator(x, it):
    return x * next(it)


def appends_to_global_deque(x):
    LOG.append(1)  # <-
    return x * len(LOG)


def appends_to_global_array(x):
    BUFFER.append(2.0)  # <-
    return x * len(BUFFER)


def reads_the_clock(x):
    return x * datetime.datetime.now().microsecond  # <-


def reads_random_bytes(x):
    return x * os.urandom(1)[0]  # <-


def makes_a_uuid(x):
    return x * (uuid.uuid4().int % 7)  # <-


@pytest.mark.parametrize("fn, names", [(next_of_global_iterator, "iterator"), (appends_to_global_deque, "append"),
                                       (appends_to_global_array, "append"), (reads_the_clock, "now"),
                                       (reads_random_bytes, "urandom"), (makes_a_uuid, "uuid4")])
def test_impure_calls_are_refused(fn, names):
    refused(fn, X, names=names)


def test_an_iterator_argument_is_refused():
    with pytest.raises(kn.CompileError, match="iterator"):
        kn.compile(next_of_argument_iterator, target="cpu", cache=False)(X, itertools.count(1))


def pure_calls(x):
    it = iter([1.0, 2.0])
    first = next(it)
    n = len(range(3)) + isinstance(x, np.ndarray) + math.floor(2.5) + abs(-1)
    parts = sorted({3, 1, 2})
    return np.exp(x) * first * n + kn.sum(np.tanh(x)) * parts[0] + max(parts) * min(x.shape)


def test_pure_calls_still_give_pythons_answer():
    same(pure_calls, X)


# ---------------------------------------------------------------- `in` with arrays

def in_list_of_arrays(x, y):
    return x * (2.0 if x in [y] else 3.0)  # <-


def number_in_list_of_arrays(x, y):
    return x * (2.0 if 0 not in [y] else 3.0)  # <-


def in_by_identity(x, y):
    return x * (2.0 if x in (x, y) else 3.0) + (1.0 if "b" in ("a", "b") and 2 not in range(2) else 0.0)


def test_in_with_arrays_is_refused_unless_identity_decides():
    x, y = np.array([2.0]), np.array([2.0])
    assert in_list_of_arrays(x, y)[0] == 4.0  # Python compares with ==
    refused(in_list_of_arrays, x, y, names="`in`")
    refused(number_in_list_of_arrays, x, y, names="`in`")
    same(in_by_identity, x, y)


def lists_of_arrays_equal(x, y):
    return x * (2.0 if [x] == [y] else 3.0)  # <-


def containers_equal_by_structure(x, y):
    same_items = 1.0 if [x, 1] == [x, 1] and {"w": x} == {"w": x} else 0.0  # identity decides
    differ = 1.0 if (x, 1) != (y, 2) else 0.0  # a pair that differs decides, whatever x == y says
    lengths = 1.0 if [x] == [x, y] or [x] == (x,) else 0.0  # other lengths, or a list and a tuple: unequal
    found = 1.0 if x in (y, x) else 0.0  # found by identity after an undecided item
    return x * (same_items + 2 * differ + 4 * lengths + 8 * found)


def test_equality_of_containers_of_arrays_is_pythons_or_refused():
    """Python compares lists, tuples and dicts item by item, with `==` on arrays: compiled code
    gives the same answer where identity, lengths or plain values decide it, and refuses where
    the data would (it compared the arrays by identity: [x] == [y] was False)."""
    x, y = np.array([2.0]), np.array([2.0])
    assert lists_of_arrays_equal(x, y)[0] == 4.0
    refused(lists_of_arrays_equal, x, y, names="`==` of containers")
    assert containers_equal_by_structure(x, y)[0] == 22.0
    same(containers_equal_by_structure, x, y)


def operator_module_comparisons(x, y):
    return operator.eq(x, 1.0) * 1.0 + operator.ne(2.0, x) * 2.0 + operator.__eq__(x, y) * 4.0


def test_operator_eq_and_ne_compare_arrays_as_numpy_does():
    """operator.eq(x, 1.0) is `x == 1.0`: elementwise for arrays (compiled, it compared the
    IR value by identity: all False)."""
    x, y = np.array([1.0, 2.0, 1.0]), np.array([1.0, 0.0, 5.0])
    np.testing.assert_array_equal(operator_module_comparisons(x, y), [7.0, 0.0, 3.0])
    same(operator_module_comparisons, x, y)


def powers_of_bools(b):
    return b ** 2, b ** 3, b ** 2.0


def test_a_bool_array_squared_is_int8_as_numpy_gives():
    """numpy computes `b ** 2` of a bool array as np.square (int8), other powers as np.power
    (int64 for a Python int): compiled code gives the same dtypes (it gave int64 for ** 2)."""
    b = np.array([True, False, True])
    expected = powers_of_bools(b)
    got = kn.compile(powers_of_bools, target="cpu", cache=False)(b)
    assert [g.dtype for g in got] == [e.dtype for e in expected] == [np.int8, np.int64, np.float64]
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


# ---------------------------------------------------------------- the loop variable after a loop region

XS = np.arange(12.0).reshape(4, 3)


def kept_in_tuple(xs, h):
    for t in range(3):
        h = h + xs[t]
        last = (t,)
    return h + xs[last[0]]


def kept_in_list(xs, h):
    for t in range(3):
        h = h + xs[t]
        last = [t, 0]
    return h * last[0]


def kept_in_dict(xs, h):
    for t in range(3):
        h = h + xs[t]
        last = {"t": t}
    return h * last["t"]


def kept_as_default_value(xs, h):
    for t in range(3):
        h = h + xs[t]
        step = lambda i=t: i  # noqa: E731
    return h + xs[step()]


@pytest.mark.parametrize("fn", [kept_in_tuple, kept_in_list, kept_in_dict, kept_as_default_value])
def test_loop_variable_kept_past_the_loop_has_pythons_value(fn):
    same(fn, XS, np.ones(3))


# ---------------------------------------------------------------- the text of an array value

def text_by_str(x):
    return x.shape, str(x * 2)  # <-


def text_by_fstring(x):
    return f"loss {x.sum()}"  # <-


def text_by_percent(x):
    return "%s" % (x,)  # <-


def text_by_format_method(x):
    return "{}".format(x)  # <-


def text_of_a_list_holding_an_array(x):
    return repr([x, 1])  # <-


@pytest.mark.parametrize("fn, names", [(text_by_str, "`str`"), (text_by_fstring, "f-string"),
                                       (text_by_percent, "`%` formatting"), (text_by_format_method, "`str.format`"),
                                       (text_of_a_list_holding_an_array, "`repr`")])
def test_the_text_of_an_array_value_is_refused(fn, names):
    # While tracing, an array value is an IR value: its text would be its name ("Var(f64[2,3])"),
    # frozen into every call, where Python shows the data.
    message = refused(fn, X, names=names)
    assert "its text shows its data" in message, message


def text_of_what_is_known(x, n):
    names = [f"h{t}" for t in range(n)]
    parts = {}
    for t in range(n):  # (a loop whose body formats its variable unrolls)
        parts[f"layer{t}"] = x * t
    return parts["layer1"] + x.ndim, f"{x.shape}|{x.dtype}", "%d/%s" % (n, names), "{}".format(len(x)), str([n, 1.5])


def test_the_text_of_shapes_dtypes_and_python_values_is_pythons():
    expected = text_of_what_is_known(X, 3)
    actual = kn.compile(text_of_what_is_known, target="cpu", cache=False)(X, 3)
    np.testing.assert_allclose(actual[0], expected[0])
    assert actual[1:] == expected[1:] == ("(2, 3)|float64", "3/['h0', 'h1', 'h2']", "2", "[3, 1.5]")
