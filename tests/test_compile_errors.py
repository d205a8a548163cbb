"""What `@kn.compile` refuses, and how: CompileError and ShapeError name the construct, this
file and the offending line; nothing the user owns is changed by a failed compilation."""
import inspect

import numpy as np
import pytest

import knetc as kn


def line_of(fn, marker):
    """The line number in this file of the line of fn's source that contains `marker`."""
    lines, first = inspect.getsourcelines(getattr(fn, "fn", fn))
    hits = [first + i for i, text in enumerate(lines) if marker in text]
    assert len(hits) == 1, f"marker {marker!r} must appear once"
    return hits[0]


def assert_names_line(error, fn, marker):
    message = str(error)
    assert "test_compile_errors.py" in message, message
    assert f"line {line_of(fn, marker)}" in message, message
    return message


# ---------------------------------------------------------------- unsupported constructs

@kn.compile(target="cpu")
def uses_try(w, x):
    try:  # <- try
        y = x @ w
    except ValueError:
        y = x
    return kn.sum(y)


@kn.compile(target="cpu")
def while_on_data(w, x):
    y = x @ w
    while kn.sum(y) > 0:  # <- while
        y = y - 1
    return kn.sum(y)


@kn.compile(target="cpu")
def if_on_data(w, x):
    y = x @ w
    if kn.sum(y) > 0:  # <- if
        y = -y
    return kn.sum(y)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@kn.compile(target="cpu")
def uses_with(w, x):
    with _Nothing():  # <- with
        y = x @ w
    return kn.sum(y)


@kn.compile(target="cpu")
def indexes_an_array(w, x):
    y = x @ w
    return kn.sum(y[y > 0])  # <- index


@kn.compile(target="cpu")
def loops_over_an_array(w, x):
    total = 0.0
    for row in x @ w:  # <- for
        total = total + kn.sum(row)
    return total


@kn.compile(target="cpu")
def and_on_arrays(w, x):
    y = x @ w
    return kn.sum(y > 0 and y < 1)  # <- and


@kn.compile(target="cpu")
def assigns_into_an_array(w, x):
    y = x @ w
    y[0] = 1.0  # <- assign
    return kn.sum(y)


@kn.compile(target="cpu")
def assigns_into_a_numpy_array(w, x):
    y = np.zeros((4, 2))
    y[:, 0] = (x @ w)[:, 1]  # <- assign
    return kn.sum(y)


@kn.compile(target="cpu")
def undefined_name(w, x):
    return kn.sum(x @ w) + not_defined_anywhere  # noqa: F821  <- name


@kn.compile(target="cpu")
def slices_by_data(w, x):
    k = kn.argmax(x[0])
    return kn.sum(x[:, k:k + 1] @ w[:1])  # <- slice


UNSUPPORTED = {  # program, marker, words the message must contain
    "try": (uses_try, "<- try", "`try`"),
    "while_on_data": (while_on_data, "<- while", "`while` on an array value"),
    "if_on_data": (if_on_data, "<- if", "`if` on an array value"),
    "with": (uses_with, "<- with", "`with`"),
    "indexing_an_array": (indexes_an_array, "<- index", "data-dependent shape"),
    "for_over_an_array": (loops_over_an_array, "<- for", "`for` over an array"),
    "and_on_arrays": (and_on_arrays, "<- and", "`and`/`or`"),
    "assign_into_an_array": (assigns_into_an_array, "<- assign", "assigning into an array"),
    # (the message was about iterating over an array value: numpy reads a sequence)
    "assign_into_a_numpy_array": (assigns_into_a_numpy_array, "<- assign", "assigning into an array"),
    "undefined_name": (undefined_name, "<- name", "not_defined_anywhere"),
    "slice_bound_from_data": (slices_by_data, "<- slice", "a slice bound from array data"),  # (was a bare TypeError)
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_construct_names_itself_the_file_and_the_line(name):
    fn, marker, words = UNSUPPORTED[name]
    with pytest.raises(kn.CompileError) as info:
        fn(np.ones((3, 2)), np.ones((4, 3)))
    message = assert_names_line(info.value, fn, marker)
    assert words in message
    assert info.value.lineno == line_of(fn, marker)


@pytest.mark.parametrize("name", ["try", "while_on_data", "if_on_data", "indexing_an_array"])
def test_compile_errors_carry_a_hint(name):
    fn, _, _ = UNSUPPORTED[name]
    with pytest.raises(kn.CompileError) as info:
        fn(np.ones((3, 2)), np.ones((4, 3)))
    assert info.value.hint and "hint:" in str(info.value)


@pytest.mark.parametrize("name", ["try", "if_on_data", "indexing_an_array"])
def test_compile_error_from_grad_and_diff(name):
    fn, marker, words = UNSUPPORTED[name]
    w = kn.Param(np.ones((3, 2)))
    with pytest.raises(kn.CompileError, match=words.replace("`", ".")) as info:
        kn.grad(fn)(w.value, np.ones((4, 3)))
    assert_names_line(info.value, fn, marker)
    with pytest.raises(kn.CompileError) as info:
        kn.diff(fn, w, np.ones((4, 3)))
    assert_names_line(info.value, fn, marker)


# ---------------------------------------------------------------- shape errors

@kn.compile(target="cpu")
def wrong_inner_dimension(w, x):
    h = kn.tanh(x @ w)
    return kn.sum(h @ w)  # <- matmul


def add_bias(h, b):
    return h + b  # <- helper


@kn.compile(target="cpu")
def wrong_bias_in_a_helper(w, b, x):
    h = x @ w
    return kn.sum(add_bias(h, b))


@kn.compile(target="cpu")
def wrong_labels(w, x, y):
    return kn.nll(x @ w, y)  # <- nll


SHAPE_ERRORS = {  # program, arguments, the function holding the marked line, marker, words
    "matmul_inner_dimension": (wrong_inner_dimension, lambda: (np.ones((3, 4)), np.ones((2, 3))),
                               wrong_inner_dimension, "<- matmul", "inner dimensions"),
    "broadcast_in_a_helper": (wrong_bias_in_a_helper, lambda: (np.ones((3, 4)), np.ones(5), np.ones((2, 3))),
                              add_bias, "<- helper", "do not broadcast"),
    "nll_labels": (wrong_labels, lambda: (np.ones((3, 4)), np.ones((2, 3)), np.zeros(3, dtype=np.int64)),
                   wrong_labels, "<- nll", "labels"),
}


@pytest.mark.parametrize("name", SHAPE_ERRORS)
def test_shape_error_names_the_offending_line(name):
    fn, make, where, marker, words = SHAPE_ERRORS[name]
    with pytest.raises(kn.ShapeError) as info:
        fn(*make())
    assert isinstance(info.value, ValueError)
    assert words in assert_names_line(info.value, where, marker)
    assert info.value.lineno == line_of(where, marker)
    with pytest.raises(kn.ShapeError) as info:
        kn.grad(fn)(*make())
    assert_names_line(info.value, where, marker)


# ---------------------------------------------------------------- nothing changes after an error

@pytest.mark.parametrize("name", ["try", "if_on_data"])
def test_params_are_unchanged_after_a_compile_error(name):
    fn, _, _ = UNSUPPORTED[name]
    w, x = kn.Param(np.arange(6.0).reshape(3, 2)), np.arange(12.0).reshape(4, 3)
    before = w.value.copy()
    with pytest.raises(kn.CompileError):
        kn.diff(fn, w, x)
    with pytest.raises(kn.CompileError):
        kn.grad(fn)(w, x)
    assert np.array_equal(w.value, before) and w.value.shape == (3, 2)
    assert kn.grad(kn.diff(lambda: kn.sum(w * w)), w) is not None  # the Param is still usable


def test_params_are_unchanged_after_a_shape_error():
    w, b = kn.Param(np.ones((3, 4))), kn.Param(np.full(5, 2.0))
    before_w, before_b = w.value.copy(), b.value.copy()
    with pytest.raises(kn.ShapeError):
        kn.diff(wrong_bias_in_a_helper, w, b, np.ones((2, 3)))
    with pytest.raises(kn.ShapeError):
        wrong_bias_in_a_helper(w, b, np.ones((2, 3)))
    assert np.array_equal(w.value, before_w) and np.array_equal(b.value, before_b)


def test_eager_code_still_works_after_a_compile_error():
    with pytest.raises(kn.CompileError):
        uses_try(np.ones((3, 2)), np.ones((4, 3)))
    # No program is left half-built: eager ops evaluate, and their errors name this line.
    assert kn.sum(kn.Param(np.ones(3)) * 2) == 6
    with pytest.raises(kn.ShapeError) as info:
        kn.Param(np.ones(3)) + np.ones(4)
    assert f"line {inspect.currentframe().f_lineno - 1}" in str(info.value)


# ---------------------------------------------------------------- functions without source

_namespace = {"kn": kn}
exec("def exec_helper(x):\n    return kn.sum(x * x)\n", _namespace)
exec_helper = _namespace["exec_helper"]


@kn.compile(target="cpu")
def calls_exec_helper(x):
    return exec_helper(x) * 2  # <- exec


def test_helper_without_source_gives_a_compile_error_with_a_hint():
    with pytest.raises(kn.CompileError) as info:
        calls_exec_helper(np.ones(3))
    message = assert_names_line(info.value, calls_exec_helper, "<- exec")
    assert "exec_helper" in message and "source" in message
    assert info.value.hint and "hint:" in message


def test_compiling_a_function_without_source_gives_a_compile_error_with_a_hint():
    f = kn.compile(exec_helper, target="cpu")
    with pytest.raises(kn.CompileError) as info:
        f(np.ones(3))
    assert "exec_helper" in str(info.value) and info.value.hint


# ---------------------------------------------------------------- the user's own exceptions

@kn.compile(target="cpu")
def checks_its_input(x, n):
    if x.shape[0] != n:
        raise ValueError(f"expected {n} rows, got {x.shape[0]}")
    assert n > 1, "n must be more than 1"
    return kn.sum(x)


def test_raise_and_assert_on_static_values_pass_the_users_exception_through():
    with pytest.raises(ValueError, match="expected 3 rows, got 2") as info:
        checks_its_input(np.ones((2, 2)), 3)
    assert not isinstance(info.value, kn.ShapeError)
    with pytest.raises(AssertionError, match="n must be more than 1"):
        checks_its_input(np.ones((1, 2)), 1)


def test_wrong_arguments_are_a_compile_error_naming_the_function():
    with pytest.raises(kn.CompileError, match="wrong_inner_dimension"):
        wrong_inner_dimension(np.ones((3, 4)))


def test_a_source_file_edited_after_import_is_refused(tmp_path, monkeypatch):
    module = tmp_path / "edited_after_import.py"
    module.write_text("import knetc as kn\n\ndef f(x):\n    return kn.sum(x * x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_after_import
    module.write_text("import knetc as kn\n\ndef f(y, z):\n    return kn.sum(kn.exp(y))\n")
    with pytest.raises(kn.CompileError, match="not the code Python is running"):
        kn.compile(edited_after_import.f, target="cpu")(np.ones(3))


# ---------------------------------------------------------------- run-time input checks

@kn.compile(target="cpu")
def nll_of_labels(w, x, y):
    scores = x @ w
    return kn.nll(scores, y)  # <- nll


@kn.compile(target="cpu")
def gather_of_indices(x, i):
    y = x * 2
    return kn.sum(y[i])  # <- gather


def test_bad_labels_and_indices_name_the_line_that_uses_them_not_the_call():
    """The compiled input checks run before the kernels, at the call; they name the op's line."""
    w = kn.Param(np.ones((3, 3)))
    before = w.value.copy()
    with pytest.raises(ValueError, match="label 5 is out of range") as info:
        kn.adam_(nll_of_labels, [(w, np.ones((2, 3)), np.array([0, 5]))])
    assert_names_line(info.value, nll_of_labels, "# <- nll")
    assert np.array_equal(w.value, before) and w.opt is None
    with pytest.raises(IndexError, match="index 7 is out of bounds for axis 0 with size 4") as info:
        gather_of_indices(np.ones(4), np.array([0, 7]))
    assert_names_line(info.value, gather_of_indices, "# <- gather")


@pytest.mark.parametrize("fn", [np.isnan, len, 3])
def test_compile_of_something_without_python_source_is_a_clear_type_error(fn):
    with pytest.raises(TypeError, match="kn.compile takes a Python function"):
        kn.compile(fn)
