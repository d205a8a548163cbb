"""Compiled code never keeps a stale value or a trace-time side effect: every value a
compiled function reads from outside (globals, closure cells, attributes and items of
them) is guarded, so a change traces it again and the result equals the Python function
on the new values; side effects that would happen only while tracing are refused with a
CompileError at the user's line (print warns). Each result is compared with the uncompiled
function (`f.fn`) on the same inputs, in float64."""
import array
import collections
import enum
import functools
import inspect
import math
import random
import time
import types
import warnings

import numpy as np
import pytest

import knetc as kn


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def same(f, *args):
    """f(*args) compiled equals the Python function on the same inputs."""
    actual, expected = f(*args), f.fn(*args)
    np.testing.assert_allclose(np.asarray(kn.value(actual)), np.asarray(kn.value(expected)), rtol=1e-12, atol=1e-12)
    return actual


def line_of(fn, marker):
    lines, first = inspect.getsourcelines(getattr(fn, "fn", fn))
    hits = [first + i for i, text in enumerate(lines) if marker in text]
    assert len(hits) == 1, f"marker {marker!r} must appear once"
    return hits[0]


def refused(fn, marker, *args, hint, where=None):
    """fn(*args) raises CompileError naming the line of `where` (default fn) marked `marker`, with a hint."""
    with pytest.raises(kn.CompileError) as info:
        fn(*args)
    message = str(info.value)
    assert "test_compiled_guards.py" in message and f"line {line_of(where or fn, marker)}" in message, message
    assert "hint:" in message and hint in message, message
    return message


# ---------------------------------------------------------------- values read from outside

MODEL = [(kn.Param(normal((3, 4), 1)), kn.Param(normal(4, 2))), (kn.Param(normal((4, 2), 3)), kn.Param(normal(2, 4)))]
SCALE = 2.0
BIAS = kn.Param(normal(2, 5))


@kn.compile(target="cpu")
def mlp_global(x):
    for w, b in MODEL:
        x = kn.tanh(x @ w + b)
    return kn.sum(x * SCALE)


def test_rebinding_a_global_model_list(tmp_path):
    global MODEL
    x = normal((5, 3), 6)
    same(mlp_global, x)
    saved = MODEL
    try:
        kn.save(str(tmp_path / "model.jld2"), model=[(kn.Param(normal((3, 4), 7)), kn.Param(normal(4, 8))),
                                                    (kn.Param(normal((4, 2), 9)), kn.Param(normal(2, 10)))])
        MODEL = kn.load(str(tmp_path / "model.jld2"))["model"]  # a model restored from a checkpoint
        same(mlp_global, x)
        MODEL = [(kn.Param(normal((3, 6), 11)), kn.Param(normal(6, 12)))]  # another architecture
        same(mlp_global, x)
    finally:
        MODEL = saved
    same(mlp_global, x)


def test_mutating_a_global_model_list_in_place():
    x = normal((5, 3), 13)
    same(mlp_global, x)
    MODEL.append((kn.Param(normal((2, 2), 14)), kn.Param(normal(2, 15))))
    try:
        same(mlp_global, x)
        MODEL[-1] = (kn.Param(normal((2, 3), 16)), kn.Param(normal(3, 17)))  # an item replaced
        same(mlp_global, x)
    finally:
        MODEL.pop()
    same(mlp_global, x)


def test_a_global_scalar():
    global SCALE
    x = normal((5, 3), 18)
    same(mlp_global, x)
    try:
        SCALE = 3.0
        same(mlp_global, x)
        SCALE = 3  # same value, another type
        same(mlp_global, x)
    finally:
        SCALE = 2.0


SIGNED = 0.0
SIGNS = (1, 0.0)


def signed_by_global(x):
    return x * math.copysign(1.0, SIGNED) + math.copysign(2.0, SIGNS[1])


def signed_by_argument(x, s):
    return x * (1 / s if s != 0 else 5.0) + math.atan2(s, -1.0)


def test_negative_zero_is_not_zero():
    """0.0 == -0.0, but copysign, atan2 and 1 / x tell them apart: a global, an item of a
    global tuple or an argument that turns from 0.0 to -0.0 traces again."""
    global SIGNED, SIGNS
    x = normal((2, 3), 30)
    compiled = kn.compile(signed_by_global, target="cpu")
    try:
        for SIGNED, SIGNS in ((0.0, (1, 0.0)), (-0.0, (1, 0.0)), (-0.0, (1, -0.0)), (0.0, (1, 0.0))):
            np.testing.assert_array_equal(compiled(x), signed_by_global(x))
    finally:
        SIGNED, SIGNS = 0.0, (1, 0.0)
    compiled = kn.compile(signed_by_argument, target="cpu")
    for s in (0.0, -0.0, 0.0, 2.0, -0.0):
        np.testing.assert_array_equal(compiled(x, s), signed_by_argument(x, s))


def test_switching_back_reuses_the_earlier_specialization():
    global SCALE
    x = normal((5, 3), 19)
    same(mlp_global, x)
    try:
        SCALE = 5.0
        same(mlp_global, x)
        before = mlp_global.compilations
        for value in (2.0, 5.0, 2.0, 5.0):
            SCALE = value
            same(mlp_global, x)
        assert mlp_global.compilations == before
    finally:
        SCALE = 2.0


@kn.compile(target="cpu")
def uses_bias(x):
    return kn.sum(kn.tanh(x + BIAS))


def test_param_value_of_another_shape_or_dtype():
    x = normal((4, 2), 20)
    same(uses_bias, x)
    saved = BIAS.value
    try:
        BIAS.value = normal(2, 21)  # same shape: read when the kernels run, no new trace
        before = uses_bias.compilations
        same(uses_bias, x)
        assert uses_bias.compilations == before
        BIAS.value = normal((3, 1, 2), 22)  # another shape: the result broadcasts to (3, 4, 2)
        same(uses_bias, x)
        BIAS.value = normal(2, 23).astype(np.float32)  # another dtype
        same(uses_bias, x)
    finally:
        BIAS.value = saved


def make_closure():
    scale, layers = 1.5, [kn.Param(normal((2, 2), 24))]

    @kn.compile(target="cpu")
    def f(x):
        for w in layers:
            x = x @ w
        return kn.sum(x) * scale

    def rebind(new_scale, new_layers):
        nonlocal scale, layers
        scale, layers = new_scale, new_layers
    return f, rebind


def test_closure_cells_rebound():
    f, rebind = make_closure()
    x = normal((3, 2), 25)
    same(f, x)
    rebind(-0.5, [kn.Param(normal((2, 2), 26))])
    same(f, x)
    rebind(-0.5, [kn.Param(normal((2, 2), 27)), kn.Param(normal((2, 5), 28))])
    same(f, x)


class Dense:
    def __init__(self, w, act):
        self.w, self.act = w, act

    def __call__(self, x):
        return self.act(x @ self.w)


LAYER = Dense(kn.Param(normal((3, 3), 29)), kn.tanh)


@kn.compile(target="cpu")
def uses_layer(x):
    return kn.sum(LAYER(x))


def test_attribute_of_a_captured_object():
    x = normal((2, 3), 30)
    same(uses_layer, x)
    saved = LAYER.w, LAYER.act
    try:
        LAYER.w = kn.Param(normal((3, 3), 31))
        same(uses_layer, x)
        LAYER.w = kn.Param(normal((3, 4), 32))
        same(uses_layer, x)
        LAYER.act = kn.sigm  # a rebound function attribute
        same(uses_layer, x)
    finally:
        LAYER.w, LAYER.act = saved


def activation(x):
    return kn.tanh(x)


@kn.compile(target="cpu")
def uses_helper(x):
    return kn.sum(activation(x))


def test_rebound_helper_function():
    global activation
    x = normal((2, 3), 33)
    same(uses_helper, x)
    saved = activation
    try:
        activation = lambda x: kn.relu(x) * 2.0  # noqa: E731
        same(uses_helper, x)
    finally:
        activation = saved
    same(uses_helper, x)


TABLE = normal((3, 3), 34)
CONFIG = {"scale": 2.0, "shift": (1.0, -1.0)}


@kn.compile(target="cpu")
def uses_table(x):
    return kn.sum((x @ TABLE) * CONFIG["scale"] + CONFIG["shift"][1])


def test_global_array_and_dict():
    global TABLE
    x = normal((2, 3), 35)
    same(uses_table, x)
    saved = TABLE
    try:
        TABLE[0, 0] += 10.0  # changed in place: the kernels read it when they run
        same(uses_table, x)
        TABLE = normal((3, 5), 36)
        same(uses_table, x)
        CONFIG["scale"] = -1.0
        same(uses_table, x)
        CONFIG["shift"] = (0.0, 4.0)
        same(uses_table, x)
    finally:
        TABLE, CONFIG["scale"], CONFIG["shift"] = saved, 2.0, (1.0, -1.0)


def test_gradient_reaches_params_of_a_global_list():
    x = normal((5, 3), 37)
    params = [p for layer in MODEL for p in layer]
    compiled = kn.diff(lambda: mlp_global(x))
    eager = kn.diff(lambda: mlp_global.fn(x))
    np.testing.assert_allclose(kn.value(compiled), kn.value(eager), rtol=1e-12)
    for p in params:
        np.testing.assert_allclose(kn.grad(compiled, p), kn.grad(eager, p), rtol=1e-10, atol=1e-12)


def test_guards_name_what_was_read():
    """The guards name each chain the program read; each fails when its value changes."""
    global SCALE
    x = normal((5, 3), 38)
    mlp_global(x)
    spec = [s for s in mlp_global.specializations() if s.mode == "call"][0]
    kinds = {guard.describe(): guard.kind for guard in spec.translation.guards}
    assert kinds["MODEL"] == "list" and kinds["SCALE"] == "value", kinds
    assert spec.translation.holds()
    try:
        SCALE = 4.0
        assert not spec.translation.holds() and "SCALE" in spec.translation.failed_guard()
    finally:
        SCALE = 2.0
    assert spec.translation.holds()


# ---------------------------------------------------------------- side effects

@kn.compile(target="cpu")
def draws_numpy(x):
    return kn.sum(x + np.random.randn(3))  # <- randn


@kn.compile(target="cpu")
def draws_generator(x):
    rng = np.random.default_rng(0)  # <- rng
    return kn.sum(x + rng.normal(size=3))


@kn.compile(target="cpu")
def draws_stdlib(x):
    return kn.sum(x * random.random())  # <- random


@kn.compile(target="cpu")
def reads_clock(x):
    return kn.sum(x) + time.time()  # <- time


def test_random_numbers_and_the_clock_are_refused():
    x = normal(3, 39)
    refused(draws_numpy, "# <- randn", x, hint="argument")
    refused(draws_generator, "# <- rng", x, hint="argument")
    refused(draws_stdlib, "# <- random", x, hint="argument")
    refused(reads_clock, "# <- time", x, hint="outside")


LOG = []
CACHE = {}


@kn.compile(target="cpu")
def appends_to_global(x):
    y = kn.sum(x * x)
    LOG.append(y)  # <- append
    return y


@kn.compile(target="cpu")
def stores_in_global(x):
    y = kn.sum(x * x)
    CACHE["last"] = y  # <- store
    return y


@kn.compile(target="cpu")
def appends_to_argument(xs):
    xs.append(xs[0] * 2)  # <- append
    return kn.sum(xs[-1])


def test_changing_outside_containers_is_refused():
    x = normal(3, 40)
    refused(appends_to_global, "# <- append", x, hint="new list")
    refused(stores_in_global, "# <- store", x, hint="new list")
    refused(appends_to_argument, "# <- append", [x], hint="new list")
    assert LOG == [] and CACHE == {}


@kn.compile(target="cpu")
def rnn_like(w, xs):
    h, hs = xs[0] * 0, []
    for x in xs:
        h = kn.tanh(x + h @ w)
        hs.append(h)
    table = {}
    table["last"] = hs[-1]
    hs.extend([table["last"] * 2])
    return kn.sum(hs[0]) + kn.sum(hs[-1]) + len(hs)


def test_local_lists_and_dicts_may_change():
    same(rnn_like, normal((3, 3), 41), [normal((2, 3), 42 + i) for i in range(4)])


@kn.compile(target="cpu")
def checks_type(x):
    if isinstance(x, np.ndarray):
        return kn.sum(x) * 2.0
    return kn.sum(x) * 3.0


@kn.compile(target="cpu")
def checks_computed_type(x):
    y = x * 2
    if isinstance(y, (list, tuple)):  # no array is a list: known without running
        return kn.sum(x)
    if isinstance(y, np.ndarray):  # <- isinstance
        return kn.sum(y)
    return kn.sum(x)


def test_isinstance_answers_as_python():
    x = normal(3, 43)
    same(checks_type, x)
    w = kn.Param(normal(3, 44))
    same(checks_type, w)
    refused(checks_computed_type, "# <- isinstance", x, hint="shapes and dtypes")


@kn.compile(target="cpu")
def adds_to_argument(x):
    x += 1  # <- +=
    return kn.sum(x)


@kn.compile(target="cpu")
def adds_to_local(x):
    h = x * 2
    h += 1
    total = 0.0
    for i in range(3):
        total += kn.sum(h * i)
    return total


@kn.compile(target="cpu")
def adds_to_alias(x):
    h = x * 2
    g = h
    h += 1  # <- +=
    return kn.sum(g)


def test_augmented_assignment():
    x = normal(3, 45)
    original = x.copy()
    refused(adds_to_argument, "# <- +=", x, hint="x = x +")
    np.testing.assert_array_equal(x, original)
    same(adds_to_local, x)
    refused(adds_to_alias, "# <- +=", x, hint="x = x +")


@kn.compile(target="cpu")
def prints(x):
    print("tracing", x.shape)
    return kn.sum(x * 2)


def test_print_warns_once_and_computes_the_same():
    x = normal(3, 46)
    with pytest.warns(UserWarning, match="print runs only while knetc traces"):
        same(prints, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same(prints, normal(4, 47))  # a new specialization: the same line is not warned about again


# ---------------------------------------------------------------- clear errors

def plain_loss(w, x):
    return kn.sum(kn.tanh(x @ w))


def test_inspect_compiles_a_plain_function():
    w, x = normal((3, 2), 48), normal((4, 3), 49)
    text = kn.inspect(plain_loss, w, x, stage="ir", target="cpu")
    assert "plain_loss" in text and "tanh" in text


def test_inspect_refuses_what_is_not_a_function():
    with pytest.raises(TypeError, match="Python function"):
        kn.inspect(len, [1])


double = kn.compile(
    lambda x: x * 2.0, target="cpu")
pair = (kn.compile(lambda x: x * 3.0, target="cpu"), kn.compile(lambda x: x + 1.0, target="cpu"))
keyword = dict(f=kn.compile(target="cpu")(
    lambda y,
    z=2.0: kn.sum(y * z)))


def test_lambdas_anywhere_on_a_line():
    x = normal(3, 50)
    same(double, x)
    same(pair[0], x)
    same(pair[1], x)
    same(keyword["f"], x)


def scale_in_place(h):
    h *= 2.0  # <- helper
    return h


@kn.compile(target="cpu")
def helper_changes_its_argument(x):
    y = x + 1.0
    z = scale_in_place(y)
    return kn.sum(y) + kn.sum(z)


@kn.compile(target="cpu")
def changes_view_of_global(x):
    view = TABLE[0]
    view += 1.0  # <- view
    return kn.sum(x * view)


def test_in_place_changes_others_would_see_are_refused():
    x = normal(3, 51)
    refused(helper_changes_its_argument, "# <- helper", x, hint="x = x +", where=scale_in_place)
    saved = TABLE.copy()
    refused(changes_view_of_global, "# <- view", x, hint="new value")
    np.testing.assert_array_equal(TABLE, saved)


def grow(layers, w):
    layers.append(w)  # <- grow
    return len(layers)


@kn.compile(target="cpu")
def helper_changes_global_list(x):
    n = grow(MODEL, MODEL[0][0])
    return kn.sum(x) * n


@kn.compile(target="cpu")
def library_call_on_global_params(x):
    return kn.sum(x) + kn.sum(kn.cat1d(*[w for w, _ in MODEL]))


def test_globals_passed_to_helpers_and_library_functions():
    x = normal(3, 52)
    n = len(MODEL)
    refused(helper_changes_global_list, "# <- grow", x, hint="new list", where=grow)
    assert len(MODEL) == n
    same(library_call_on_global_params, x)
    saved = MODEL[0]
    MODEL[0] = (kn.Param(normal((3, 4), 53)), saved[1])
    try:
        same(library_call_on_global_params, x)
    finally:
        MODEL[0] = saved


class Slotted:
    __slots__ = ("k", "w")

    def __init__(self, k, w):
        self.k, self.w = k, w


def slotted_loss(s, x):
    return kn.sum(x * s.k) + kn.sum(s.w * s.w)


def test_an_argument_with_slots_is_read_by_its_contents():
    # It was keyed by identity: after s.k = 9.0 the compiled call still used k = 2.0.
    compiled = kn.compile(slotted_loss, target="cpu")
    s, x = Slotted(2.0, np.ones(2)), np.ones(3)
    assert compiled(s, x) == slotted_loss(s, x) == 8.0
    s.k = 9.0
    assert compiled(s, x) == slotted_loss(s, x) == 29.0
    s.w = np.full(2, 3.0)
    assert compiled(s, x) == slotted_loss(s, x)
    g = kn.grad(compiled)(s, x)
    assert isinstance(g, Slotted) and float(g.k) == 3.0 and g.w.tolist() == [6.0, 6.0]


class WithClassAttributes:
    scale = 2.0

    def act(self, x):
        return x * 2

    def __init__(self, w):
        self.w = w


def class_attribute_loss(m, x):
    return kn.sum(m.act(x) * m.scale * m.w)


def test_class_attributes_read_through_an_argument_are_guarded():
    # The argument's signature holds its own attributes only: after WithClassAttributes.scale = 5
    # (or a new act) the compiled call still used the old class attribute.
    compiled = kn.compile(class_attribute_loss, target="cpu")
    m, x = WithClassAttributes(np.ones(3)), np.ones(3)
    saved = dict(vars(WithClassAttributes))
    try:
        assert compiled(m, x) == class_attribute_loss(m, x) == 12.0
        WithClassAttributes.scale = 5.0
        assert compiled(m, x) == class_attribute_loss(m, x) == 30.0
        WithClassAttributes.act = lambda self, x: x * 10
        assert compiled(m, x) == class_attribute_loss(m, x) == 150.0
        m.scale = 1.0  # an attribute of its own now: part of the signature
        assert compiled(m, x) == class_attribute_loss(m, x) == 30.0
    finally:
        WithClassAttributes.scale, WithClassAttributes.act = saved["scale"], saved["act"]


def scaled(x, k=2.0, *, shift=0.0):
    return x * k + shift


@kn.compile(target="cpu")
def uses_defaults(x):
    return scaled(x)


def test_rebound_defaults_of_a_helper_are_guarded():
    """A helper's default arguments are read from the function: rebinding its __defaults__
    or __kwdefaults__ traces again (they were guarded as first read: the old values stayed)."""
    x = normal((2, 3), 41)
    saved = scaled.__defaults__, scaled.__kwdefaults__
    try:
        same(uses_defaults, x)
        scaled.__defaults__ = (7.0,)
        assert np.allclose(same(uses_defaults, x), x * 7.0)
        scaled.__kwdefaults__ = {"shift": 1.5}
        assert np.allclose(same(uses_defaults, x), x * 7.0 + 1.5)
    finally:
        scaled.__defaults__, scaled.__kwdefaults__ = saved


scale_by = functools.partial(scaled, k=2.0)
WEIGHTS = normal((3,), 42)
weigh = functools.partial(np.multiply, WEIGHTS)


@kn.compile(target="cpu")
def uses_partials(x):
    return scale_by(x) + weigh(x)


def test_functools_partial_helpers_are_guarded():
    """A functools.partial's function and arguments are read from outside like any global's
    contents: a changed keyword, a rebound partial or an array it holds changed in place
    traces again (a partial was taken as a library function: none was guarded)."""
    global scale_by
    x = normal((2, 3), 43)
    saved = scale_by
    try:
        same(uses_partials, x)
        scale_by.keywords["k"] = 5.0
        assert np.allclose(same(uses_partials, x), x * 5.0 + x * WEIGHTS)
        scale_by = functools.partial(scaled, shift=1.0)
        assert np.allclose(same(uses_partials, x), x * 2.0 + 1.0 + x * WEIGHTS)
        WEIGHTS[0] = 10.0
        same(uses_partials, x)
    finally:
        scale_by = saved
        scale_by.keywords["k"] = 2.0


# ---------------------------------------------------------------- large arrays read from outside

LARGE = np.ones(70_000)  # above the size guarded by contents (SNAPSHOT_MAX): read live at each run
TABLES = {"w": np.ones(70_000)}


class _Holder:
    def __init__(self):
        self.w = np.ones(70_000)


HOLDER = _Holder()


@kn.compile
def _from_a_large_global(x):
    return x * LARGE.sum() + x * LARGE[:3] + x * TABLES["w"][-1] + x * HOLDER.w.max()


def test_numpy_code_on_a_large_outside_array_follows_changes_in_place():
    # Its entries were read by numpy while tracing (LARGE.sum(), LARGE[:3]) and kept: after an
    # in-place change the program gave the old values. Now they are the program's live
    # operands, as a large weight's are.
    x = normal(3)
    same(_from_a_large_global, x)
    LARGE[:] = 2.0
    LARGE[0] = -1.0
    TABLES["w"][-1] = 7.0
    HOLDER.w[5] = 9.0
    try:
        same(_from_a_large_global, x)
    finally:
        LARGE[:] = 1.0
        TABLES["w"][-1] = 1.0
        HOLDER.w[5] = 1.0
    same(_from_a_large_global, x)


@kn.compile
def _branch_on_a_large_global(x):
    if LARGE[0] > 0:
        return x * 2.0
    return x * 3.0


@kn.compile
def _number_of_a_large_global(x):
    return x * float(LARGE[1])


@pytest.mark.parametrize("f, message", [(_branch_on_a_large_global, "`if` on an array value"),
                                        (_number_of_a_large_global, "`float` of an array value")])
def test_python_values_of_a_large_outside_array_are_refused(f, message):
    # (a branch or a number taken from its entries could not follow a change in place)
    with pytest.raises(kn.CompileError, match=message):
        f(normal(3))


SMALL = np.ones(10)


@kn.compile
def _branch_on_a_small_global(x):
    return x * 2.0 if SMALL[0] > 0 else x * 3.0


def test_a_small_outside_array_may_steer_the_trace_and_is_guarded_by_its_contents():
    x = normal(3)
    same(_branch_on_a_small_global, x)
    SMALL[0] = -1.0
    try:
        same(_branch_on_a_small_global, x)
    finally:
        SMALL[0] = 1.0


# ---------------------------------------------------------------- functions handed to library functions
# map(f, xs), sorted(key=f), functools.reduce(f, ...), kn.grad(f): the library calls f, and what f
# reads from outside is guarded as in a direct call (it was read once, while tracing, and kept).

FACTOR = 2.0


def _times_factor(x):
    return x * FACTOR


def _add_scaled(total, x):
    return total + x * FACTOR


def _loss_times_factor(x):
    return kn.sum(x * x) * FACTOR


class _Scaled:
    def __init__(self):
        self.k, self.w = 1.0, kn.Param(np.full(3, 2.0))

    def __call__(self, x):
        return x * self.w * self.k

    def method(self, x):
        return x * self.k * FACTOR


SCALED = _Scaled()


@kn.compile
def _mapped(xs):
    return sum(map(_times_factor, xs))


@kn.compile
def _reduced(xs):
    return functools.reduce(_add_scaled, xs[1:], xs[0])


@kn.compile
def _grad_inside(x):
    return kn.grad(_loss_times_factor)(x)


@kn.compile
def _gradloss_of_a_compiled_function_inside(x):
    return kn.gradloss(kn.compile(_loss_times_factor))(x)[0]


_SCALED_BY_HALF = functools.partial(_add_scaled, 0.5)


@kn.compile
def _mapped_partial(xs):
    return sum(map(_SCALED_BY_HALF, xs))


@kn.compile
def _mapped_method(xs):
    return list(map(SCALED.method, xs))[1]


@kn.compile
def _mapped_layer(xs):
    return kn.sum(sum(map(SCALED, xs)))


@pytest.mark.parametrize("f", [_mapped, _reduced, _mapped_partial, _mapped_method, _mapped_layer])
def test_a_function_given_to_a_library_function_is_guarded(f):
    global FACTOR
    xs = [normal(3, 1), normal(3, 2), normal(3, 3)]
    same(f, xs)
    FACTOR, SCALED.k = 3.0, 5.0
    try:
        same(f, xs)
    finally:
        FACTOR, SCALED.k = 2.0, 1.0


@pytest.mark.parametrize("f", [_grad_inside, _gradloss_of_a_compiled_function_inside])
def test_kn_grad_of_a_global_function_inside_compiled_code_is_guarded(f):
    global FACTOR
    x = normal(3)
    np.testing.assert_allclose(f(x), 2 * x * FACTOR, rtol=1e-12)
    FACTOR = 3.0
    try:
        np.testing.assert_allclose(f(x), 2 * x * 3.0, rtol=1e-12)
    finally:
        FACTOR = 2.0


def test_a_layer_mapped_in_compiled_code_takes_its_param_as_an_input():
    xs = [normal(3, 1), normal(3, 2)]
    y = kn.diff(lambda: _mapped_layer(xs))
    np.testing.assert_allclose(kn.grad(y, SCALED.w), xs[0] + xs[1], rtol=1e-12)
    saved = SCALED.w.value.copy()
    SCALED.w.value[:] = 7.0  # (changed in place: the program reads the Param's value at each call)
    try:
        np.testing.assert_allclose(_mapped_layer(xs), 7.0 * (xs[0] + xs[1]).sum(), rtol=1e-12)
    finally:
        SCALED.w.value[:] = saved


def test_functions_are_still_objects_to_builtins_that_do_not_call_them():
    @kn.compile
    def kinds(x):
        assert isinstance(_times_factor, type(normal)) and callable(SCALED) and isinstance(SCALED, _Scaled)
        return x * 2.0 if _times_factor is not SCALED.method else x

    same(kinds, normal(3))


class _WithProperties:
    def __init__(self):
        self.w = normal(3, 7)

    @property
    def factor(self):
        return FACTOR

    @property
    def scaled(self):
        return self.w * FACTOR


@kn.compile
def _reads_properties(m, x):
    return x * m.factor + m.scaled


def test_a_property_of_an_argument_object_is_inlined_and_what_it_reads_guarded():
    global FACTOR
    m, x = _WithProperties(), normal(3)
    same(_reads_properties, m, x)
    FACTOR = 3.0
    try:
        same(_reads_properties, m, x)
        m.w = normal(3, 8)  # (an attribute the property reads, of an argument: read at each call)
        same(_reads_properties, m, x)
    finally:
        FACTOR = 2.0


class _Classifier:
    def __init__(self):
        self.w, self.k = kn.Param(normal((3, 2), 11)), 1.0

    def __call__(self, x):
        return (x @ self.w) * self.k


CLASSIFIER = _Classifier()


@kn.compile
def _model_form_losses(x, y):
    return kn.nll(CLASSIFIER, x, y) + kn.accuracy(CLASSIFIER, data=[(x, y)]) + kn.nll(CLASSIFIER, data=[(x, y)])


def test_a_model_given_to_nll_reads_its_params_at_each_call_and_is_guarded():
    # the model was called natively: its Param became a constant of the program, an update was ignored
    x, y = normal((4, 3), 12), np.array([0, 1, 1, 0])
    same(_model_form_losses, x, y)
    saved = CLASSIFIER.w.value.copy()
    try:
        CLASSIFIER.w.value[:, 0] = 3.0
        same(_model_form_losses, x, y)
        CLASSIFIER.k = 0.5
        same(_model_form_losses, x, y)
        w = CLASSIFIER.w
        g = kn.grad(kn.diff(lambda: _model_form_losses(x, y)), w)
        np.testing.assert_allclose(g, kn.grad(kn.diff(lambda: _model_form_losses.fn(x, y)), w), rtol=1e-10)
    finally:
        CLASSIFIER.w.value[:], CLASSIFIER.k = saved, 1.0


def test_a_library_layer_mapped_in_compiled_code_reads_its_weights_at_each_call():
    kn.seed_(0)
    rnn = kn.RNN(3, 4, rnn_type="tanh", atype=np.float64)

    @kn.compile
    def mapped(xs):
        return kn.sum(sum(map(rnn, xs)))
    xs = [normal((2, 3), 13), normal((2, 3), 14)]
    same(mapped, xs)
    rnn.w.value[:] = 0.5  # (its Param was a constant of the program: the old weights' result)
    same(mapped, xs)


@kn.compile
def _reduced_by_an_object(x):
    return kn.sum(SCALED, x) * 2.0


def test_the_function_form_of_a_reduction_inlines_a_callable_object():
    x = normal(3, 15)
    same(_reduced_by_an_object, x)
    SCALED.k = 4.0  # (read natively while tracing, it was kept)
    try:
        same(_reduced_by_an_object, x)
    finally:
        SCALED.k = 1.0


# ---------------------------------------------------------------- containers of other types

QUEUE = collections.deque([1.0, 2.0])
ORDERED = collections.OrderedDict(a=1.0, b=2.0)
COUNTS = collections.defaultdict(float, a=3.0)
BUFFER = array.array("d", [1.0, 2.0])
RAW = bytearray(b"\x01\x02")


@kn.compile(target="cpu")
def reads_other_containers(x):
    return x * (sum(QUEUE) + sum(ORDERED.values()) + COUNTS["a"] + BUFFER[0] + RAW[1])


def test_deques_ordered_and_default_dicts_arrays_and_bytearrays_are_guarded_by_their_contents():
    # (they were guarded by identity only: a change in place kept the old result)
    x = normal(3, 40)
    same(reads_other_containers, x)
    for change in (lambda: QUEUE.append(10.0), lambda: ORDERED.__setitem__("a", 5.0),
                   lambda: COUNTS.__setitem__("a", -1.0), lambda: BUFFER.__setitem__(0, 9.0),
                   lambda: RAW.__setitem__(1, 7)):
        change()
        same(reads_other_containers, x)


# ---------------------------------------------------------------- Python's order of evaluation

@kn.compile(target="cpu")
def generators_as_python(x):
    g = (i * 2 for i in range(3))
    once, twice = sum(g), sum(g)  # (a generator is used up)
    names = [1.0, 2.0]
    late = (v * scale for v in names)  # (its names are read when it runs)
    scale = 10.0
    pairs = list(zip(*[iter(v for v in range(4))] * 2))  # (one generator, taken in turns)
    stack = [1, 2, 3, 4]
    found = any(stack.pop() > 2 for _ in range(4))  # (any stops at the first true item)
    safe = any(1.0 / v > 0 for v in [1.0, 0.0])  # (1 / 0 never runs)
    first = next((v for v in [0.5, 3.0] if v > 2), None)
    return x * (once + 100 * twice + sum(late) + pairs[1][0] * len(pairs) + len(stack) + found + safe + first)


@kn.compile(target="cpu")
def evaluates_as_python(x):
    keys = [1, 2, 3]
    table = {keys.pop(): keys.pop()}  # (a key before its value)
    rows, where = [1.0, 2.0, 3.0, 4.0], [0, 1, 2]
    rows[where.pop()] += 10.0  # (its index once)
    h = x[0] * 0.0
    for t in range(x.shape[0]):  # (a loop region)
        h = h * 0.5 + x[t]
        t = x.shape[0] - 1 - t  # (after the loop, t is what its last step assigned)
    return h * rows[2] + table[3] + len(where) + t


def test_generators_and_the_order_of_evaluation_are_pythons():
    # (a generator expression was a list made at once; a dict display evaluated the value
    # first; `c[e] += v` evaluated e twice; a loop region left t at its last range value)
    same(generators_as_python, normal(2, 41))
    x = normal((3, 3), 42)
    same(evaluates_as_python, x)
    np.testing.assert_allclose(kn.grad(lambda x: kn.sum(evaluates_as_python(x)))(x),
                               kn.grad(lambda x: kn.sum(evaluates_as_python.fn(x)))(x), rtol=1e-12)


# ---------------------------------------------------------------- arguments of other kinds

class Settings:
    scale = 3.0


class Mode(enum.Enum):
    TRAIN = 1
    EVAL = 2


class Tagged(np.ndarray):
    pass


@kn.compile(target="cpu")
def reads_argument_kinds(settings, mode, x, config_module):
    return kn.sum(x * x) * settings.scale * (2.0 if mode is Mode.TRAIN else 1.0) * config_module.SCALE


def test_class_module_enum_and_ndarray_subclass_arguments():
    # a class or module argument's attributes were read once (a change kept the old result);
    # an Enum member or an ndarray subclass (np.memmap) as an argument raised inside knetc
    module = types.ModuleType("settings_module")
    module.SCALE = 2.0
    x = normal(3, 43).view(Tagged)
    same(reads_argument_kinds, Settings, Mode.TRAIN, x, module)
    same(reads_argument_kinds, Settings, Mode.EVAL, x, module)
    Settings.scale, module.SCALE = 5.0, -1.0
    try:
        same(reads_argument_kinds, Settings, Mode.TRAIN, x, module)
        np.testing.assert_allclose(kn.grad(reads_argument_kinds, argnum=2)(Settings, Mode.TRAIN, x, module),
                                   -20.0 * np.asarray(x))
    finally:
        Settings.scale = 3.0
    with pytest.raises(kn.CompileError, match="byte order"):
        reads_argument_kinds(Settings, Mode.TRAIN, np.ones(3, ">f8"), module)


class WithStatic:
    @kn.compile(target="cpu")
    @staticmethod
    def doubled(x):
        return x * 2.0


def test_compile_above_staticmethod():
    # (the decorator took the staticmethod object, and every call raised AttributeError)
    np.testing.assert_array_equal(WithStatic.doubled(np.ones(2)), [2.0, 2.0])
    np.testing.assert_array_equal(WithStatic().doubled(np.ones(2)), [2.0, 2.0])


@kn.compile(target="cpu")
def with_defaults(x, w=np.ones(3), *, scale=1.0):
    return kn.sum(x * w) * scale


def test_rebinding_the_compiled_functions_own_defaults():
    # (its signature was read once: rebound defaults kept the old values)
    x = np.arange(3.0)
    same(with_defaults, x)
    saved = with_defaults.fn.__defaults__, with_defaults.fn.__kwdefaults__
    try:
        with_defaults.fn.__defaults__ = (np.full(3, 5.0),)
        same(with_defaults, x)
        with_defaults.fn.__kwdefaults__ = {"scale": -2.0}
        same(with_defaults, x)
    finally:
        with_defaults.fn.__defaults__, with_defaults.fn.__kwdefaults__ = saved


class Scaled:
    def __init__(self, w):
        self.w = w

    @property
    def weight(self):
        return self.w * 2.0

    def __call__(self, x):
        return kn.sum(x * self.weight)


@kn.compile(target="cpu")
def calls_a_layer(layer, x):
    return layer(x) + kn.sum(layer.weight)


def test_a_property_or_call_replaced_on_an_arguments_class():
    # (methods were guarded in their class, properties and __call__ not: the old ones ran)
    x, layer = normal(3, 44), Scaled(normal(3, 45))
    same(calls_a_layer, layer, x)
    saved = Scaled.weight, Scaled.__call__
    try:
        Scaled.weight = property(lambda self: self.w * 10.0)
        same(calls_a_layer, layer, x)
        Scaled.__call__ = lambda self, x: -kn.sum(x * self.w)
        same(calls_a_layer, layer, x)
    finally:
        Scaled.weight, Scaled.__call__ = saved


@kn.compile(target="cpu")
def keyed(table, x):
    key = next(iter(table))
    return kn.sum(x) * table[key] * (10.0 if key is True else 1.0), repr(key)


def test_equal_dict_keys_of_other_types_are_other_arguments():
    # (1, 1.0 and True are equal keys: the trace for {1: ...} answered for {True: ...})
    x = normal(3, 46)
    for table in ({1: 2.0}, {True: 2.0}, {1.0: 2.0}, {1: 2.0}):
        got, want = keyed(table, x), keyed.fn(table, x)
        assert got[1] == want[1]
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)


class Hooked:
    def __init__(self, w):
        self.w = w

    def __getattribute__(self, name):  # (every read of w through the object is scaled)
        value = object.__getattribute__(self, name)
        return value * 10.0 if name == "w" else value


@kn.compile(target="cpu")
def reads_hooked(obj, x):
    return kn.sum(x * obj.w)


def test_an_arguments_getattribute_runs_once_per_read():
    # (flattening read the attributes through the hook and the function read them through it again)
    x = normal(3, 47)
    same(reads_hooked, Hooked(normal(3, 48)), x)


@kn.compile(target="cpu")
def tripled(x):
    return x * 3.0


class HoldsCompiled:
    def __init__(self, g):
        self.g = g


@kn.compile(target="cpu")
def calls_a_held_compiled_function(holder, x):
    return kn.sum(holder.g(x))


def test_a_compiled_function_held_by_an_argument():
    # (its own state was walked as the argument's and refused as "a generator from outside")
    x = normal(3, 49)
    same(calls_a_held_compiled_function, HoldsCompiled(tripled), x)
    np.testing.assert_allclose(kn.grad(calls_a_held_compiled_function, argnum=1)(HoldsCompiled(tripled), x), np.full(3, 3.0))


class BaseLayer:
    def act(self, h):
        return h * 2.0


class SubLayer(BaseLayer):
    def act(self, h):
        return super().act(h) + 10.0


@kn.compile(target="cpu")
def calls_through_super(layer, x):
    return kn.sum(layer.act(x) * x)


def test_zero_argument_super_in_a_method():
    # (CompileError: "super(): __class__ cell not found")
    x = normal(3, 50)
    same(calls_through_super, SubLayer(), x)
    np.testing.assert_allclose(kn.grad(calls_through_super, argnum=1)(SubLayer(), x), 4.0 * x + 10.0)


@kn.compile(target="cpu")
def reads_a_static_argument(x, r):
    return x * (r.start + r.step + len(r)) if isinstance(r, range) else x * sum(v for (v,) in r) + repr(r).count("-")


def test_equal_static_arguments_that_differ_are_other_specializations():
    # (keyed by ==: range(5, 5) reused range(0, 0)'s trace, frozenset({(1.0,)}) the int one's)
    x = normal(2, 51)
    for r in (range(0, 0), range(5, 5), range(0, 1, 5), range(0, 1, 7), frozenset({(1,), (2,)}),
              frozenset({(1.0,), (2.0,)}), frozenset({(-0.0,)}), frozenset({(0.0,)})):
        got, want = reads_a_static_argument(x, r), reads_a_static_argument.fn(x, r)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)


SIGN, FACTOR, BASE = 1, 2.0, 3.0


def _compare(a, b):
    return SIGN * ((a > b) - (a < b))


def _factory():
    return FACTOR


@functools.lru_cache(maxsize=None)
def _cached_scale(n):
    return BASE * n


@kn.compile(target="cpu")
def reads_through_library_callables(x):
    order = sorted([3, 1, 2], key=functools.cmp_to_key(_compare))
    table = collections.defaultdict(_factory)
    return x * (order[0] + table["missing"] + _cached_scale(2))


def test_helpers_called_by_cmp_to_key_defaultdict_and_lru_cache_are_guarded():
    # (they ran as they were while tracing: a global they read changed, and the old result stayed)
    global SIGN, FACTOR, BASE
    x = normal(2, 52)
    same(reads_through_library_callables, x)
    try:
        SIGN, FACTOR, BASE = -1, 5.0, 7.0
        _cached_scale.cache_clear()
        same(reads_through_library_callables, x)
    finally:
        SIGN, FACTOR, BASE = 1, 2.0, 3.0
        _cached_scale.cache_clear()
