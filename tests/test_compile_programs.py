"""Compiled programs equal the eager ones: values, and gradients through `kn.grad(compiled)`
(the compiled adjoint) against `kn.grad(f.fn)` (the eager tape), float64 to 1e-10 relative
and float32 to 1e-4. Each program is compiled once at module level and reused."""
import numpy as np
import pytest

import knetc as kn
from knetc import pytree

F64 = dict(rtol=1e-10, atol=1e-12)
F32 = dict(rtol=1e-4, atol=1e-5)


def normal(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def leaves(tree):
    """The leaves of a pytree as plain arrays (None stays None)."""
    out, _ = pytree.flatten(tree)
    return [None if x is None else np.asarray(kn.value(x)) for x in out]


def assert_trees_close(actual, expected, tol):
    a, e = leaves(actual), leaves(expected)
    assert len(a) == len(e)
    for x, y in zip(a, e):
        if y is None:
            assert x is None
            continue
        assert x is not None and x.shape == y.shape and x.dtype == y.dtype, (x, y)
        scale = max(1.0, float(np.max(np.abs(y)))) if y.size else 1.0
        np.testing.assert_allclose(x, y, rtol=tol["rtol"], atol=tol["atol"] * scale)


# ---------------------------------------------------------------- helpers the programs call
# Programs are small on purpose: each generated kernel costs Numba ~0.2 s to compile.

def dense(w, b, x, act=kn.relu):
    return act(x @ w + b)


def l2(ws):
    return sum(kn.sum(w * w) for w in ws)


def squared(x):
    return x * x


def two_level_helper(x):
    return kn.sum(squared(kn.sigm(x)))


class Linear:
    """An object holding arrays, with a method the compiler inlines."""

    def __init__(self, w, b):
        self.w, self.b = w, b

    def forward(self, x):
        return x @ self.w + self.b


class Dense:
    """A callable layer object: `layer(x)` inlines __call__."""

    def __init__(self, w, b, act=kn.tanh):
        self.w, self.b, self.act = w, b, act

    def __call__(self, x):
        return self.act(x @ self.w + self.b)


class Chain:
    def __init__(self, *layers):
        self.layers = list(layers)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


# ---------------------------------------------------------------- the programs

@kn.compile(target="cpu")
def mlp_loss(model, x, y):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, y)


@kn.compile(target="cpu")
def elementwise_chain(x):
    return kn.sum(kn.tanh(x) * kn.exp(-x) + kn.sqrt(x * x + 1) - kn.abs(x) / 2 + kn.sigm(x) * kn.relu(x)
                  - kn.log(x * x + 0.5))


@kn.compile(target="cpu")
def powers_and_division(x, y):
    return kn.sum((x ** 2 + 1) ** -1 + x ** 3 / (1 + y * y) - 2 / (2 + kn.exp(y)) + (y * y + 1) ** 0.5)


@kn.compile(target="cpu")
def broadcasting(x, col, row, b):
    return kn.sum(kn.sigm(x * col + row - b) * (col - row))


@kn.compile(target="cpu")
def reductions_with_dims(x):
    a = kn.mean(x, dims=0) * kn.maximum(x, dims=(0,))
    return kn.sum(a) + kn.sum(kn.sum(x * x, dims=-1) ** 0.5) + kn.maximum(x)


@kn.compile(target="cpu")
def softmax_family(x, t):
    return kn.sum(kn.softmax(x, dims=1) * t) + kn.logsumexp(x) + kn.sum(kn.logsoftmax(x, dims=0) * t)


@kn.compile(target="cpu")
def reshape_and_transpose(x, w):
    h = kn.transpose(kn.reshape(x, (4, -1)))  # (6, 4)
    g = kn.reshape(h @ w, 2, 3, 5)
    return kn.sum(kn.transpose(g, (1, 0, 2)) * kn.tanh(g.reshape(3, 2, 5))) + kn.sum(x.T @ x)


@kn.compile(target="cpu")
def matmul_shapes(v, m, t, w, u):
    return kn.sum(kn.tanh(v @ m)) + kn.sum(t @ w) + (v @ v) + kn.sum(m @ u)


@kn.compile(target="cpu")
def helper_calls(model, x):
    (w1, b1), (w2, b2) = model
    h = dense(w2, b2, dense(w1, b1, x), act=kn.tanh)
    return 0.01 * l2([w1, w2]) + two_level_helper(h)


@kn.compile(target="cpu")
def loops_over_layers(model, x):
    for i in range(len(model)):
        w, b = model[i]
        x = kn.tanh(x @ w + b) if i < len(model) - 1 else x @ w + b
    total = 0.0
    for w, _ in model:
        total += kn.sum(w * w)
    return kn.sum(x * x) + total


@kn.compile(target="cpu")
def tuple_unpacking(params, x):
    (a, b), c = params
    first, *rest = [a, b, c]
    y = x * first
    for r in rest:
        y = y + kn.sum(r)
    p, q = q, p = kn.exp(y), kn.sigm(y)
    return kn.sum(p * q)


@kn.compile(target="cpu")
def dict_pytree(model, x):
    h = kn.relu(x @ model["w1"] + model["b1"])
    return kn.sum(kn.tanh(h @ model["w2"])) + sum(kn.sum(model[k] ** 2) for k in ("b1", "w2"))


@kn.compile(target="cpu")
def object_with_attributes(layer, x):
    y = layer.forward(x)
    return kn.sum(y * y) + kn.sum(layer.w * layer.b)


@kn.compile(target="cpu")
def callable_layers(chain, x):
    return kn.sum(chain(x) ** 2)


@kn.compile(target="cpu")
def keyword_arguments(w, x, *, scale=2.0, act=kn.tanh, shift=0.0):
    return scale * kn.sum(act(x @ w - shift))


@kn.compile(target="cpu")
def comprehensions(ws, x):
    hs = [kn.tanh(x @ w) for w in ws]
    squares = {i: kn.sum(h * h) for i, h in enumerate(hs)}
    return sum(kn.sum(w * w) for w in ws) + sum(squares.values()) + sum(kn.sum(h) for h in hs if h.shape[1] > 2)


@kn.compile(target="cpu")
def static_if_on_shape(w, x):
    if x.shape[0] > 3:
        y = kn.mean(kn.tanh(x @ w), dims=0)
    elif x.ndim == 2:
        y = kn.exp(x @ w)
    else:
        y = w
    return kn.sum(y * y)


@kn.compile(target="cpu")
def static_flag(w, x, training=True, rate=0.5):
    h = x @ w
    if training:
        h = h * rate + kn.sum(w * w)
    return kn.sum(kn.relu(h) if not training else kn.sigm(h))


@kn.compile(target="cpu")
def comparison_masks(x, w):
    h = x @ w
    m = h > 0
    leaky = m * h + (1 - m) * 0.1 * h
    return kn.sum(leaky * kn.ge(h, -0.5)) + kn.sum(kn.lt(x, 0) * x)


@kn.compile(target="cpu")
def nll_classes_first(scores, labels):
    total, count = kn.nll(scores, labels, dims=0, average=False)
    return total / count


@kn.compile(target="cpu")
def inner_functions(w, x):
    def layer(v, scale=1.0):
        return kn.tanh(v @ w) * scale
    act = lambda v: kn.relu(v) + 0.5 * v  # noqa: E731
    return kn.sum(act(layer(x, scale=2.0)) ** 2)


@kn.compile(target="cpu")
def while_and_augmented(w, x):
    i, y = 0, x
    while i < 3:
        y = kn.tanh(y @ w)
        y *= 1.5
        y -= 0.1
        i += 1
    return kn.sum(y) / x.shape[0]


@kn.compile(target="cpu")
def fan_out(x):
    e = kn.exp(-x * x)
    s = kn.sum(e, dims=1)
    return kn.sum(e * x) + kn.sum(s * s) + kn.sum(e / s)


def mlp_model(sizes, seed, dtype):
    return [(normal((m, n), seed + i, dtype) * (1 / np.sqrt(m)), normal((n,), seed + 10 + i, dtype) * 0.1)
            for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:]))]


def labels(n, classes, seed=0, skip=()):
    y = np.random.default_rng(seed).integers(0, classes, n)
    y[list(skip)] = -1
    return y


# name -> (compiled function, make(dtype) -> (args, kwargs))
PROGRAMS = {
    "mlp_loss": (mlp_loss, lambda dt: ((mlp_model([20, 16, 5], 1, dt), normal((8, 20), 2, dt),
                                        labels(8, 5, skip=[3])), {})),
    "elementwise_chain": (elementwise_chain, lambda dt: ((normal((4, 5), 1, dt),), {})),
    "powers_and_division": (powers_and_division, lambda dt: ((normal((3, 4), 1, dt), normal((3, 4), 2, dt)), {})),
    "broadcasting": (broadcasting, lambda dt: ((normal((3, 4), 1, dt), normal((3, 1), 2, dt), normal((4,), 3, dt),
                                               normal((), 4, dt)), {})),
    "reductions_with_dims": (reductions_with_dims, lambda dt: ((normal((4, 5), 1, dt),), {})),
    "softmax_family": (softmax_family, lambda dt: ((normal((3, 4), 1, dt) * 3, normal((3, 4), 2, dt)), {})),
    "reshape_and_transpose": (reshape_and_transpose, lambda dt: ((normal((4, 6), 1, dt), normal((4, 5), 2, dt)), {})),
    "matmul_shapes": (matmul_shapes, lambda dt: ((normal((3,), 1, dt), normal((3, 4), 2, dt), normal((2, 3, 4), 3, dt),
                                                 normal((4, 2), 4, dt), normal((4,), 5, dt)), {})),
    "helper_calls": (helper_calls, lambda dt: ((mlp_model([5, 6, 4], 5, dt), normal((3, 5), 6, dt)), {})),
    "loops_over_layers": (loops_over_layers, lambda dt: ((mlp_model([3, 4, 2], 7, dt), normal((5, 3), 8, dt)), {})),
    "tuple_unpacking": (tuple_unpacking, lambda dt: ((((normal((2, 3), 1, dt), normal((3,), 2, dt)),
                                                       normal((1,), 3, dt)), normal((2, 3), 4, dt)), {})),
    "dict_pytree": (dict_pytree, lambda dt: (({"w1": normal((4, 5), 1, dt), "b1": normal((5,), 2, dt),
                                               "w2": normal((5, 3), 3, dt)}, normal((2, 4), 4, dt)), {})),
    "object_with_attributes": (object_with_attributes, lambda dt: ((Linear(normal((3, 3), 1, dt), normal((3,), 2, dt)),
                                                                   normal((4, 3), 3, dt)), {})),
    "callable_layers": (callable_layers, lambda dt: ((Chain(Dense(normal((4, 6), 1, dt), normal((6,), 2, dt)),
                                                            Dense(normal((6, 3), 3, dt), normal((3,), 4, dt), kn.relu)),
                                                      normal((5, 4), 5, dt)), {})),
    "keyword_arguments": (keyword_arguments, lambda dt: ((normal((3, 2), 1, dt), normal((4, 3), 2, dt)),
                                                         {"scale": 0.5, "act": kn.sigm, "shift": 0.25})),
    "comprehensions": (comprehensions, lambda dt: (([normal((3, 2), 1, dt), normal((3, 4), 2, dt)],
                                                    normal((5, 3), 3, dt)), {})),
    "static_if_on_shape_tall": (static_if_on_shape, lambda dt: ((normal((3, 2), 1, dt), normal((5, 3), 2, dt)), {})),
    "static_if_on_shape_short": (static_if_on_shape, lambda dt: ((normal((3, 2), 1, dt), normal((2, 3), 2, dt)), {})),
    "static_flag_training": (static_flag, lambda dt: ((normal((3, 2), 1, dt), normal((4, 3), 2, dt)), {})),
    "static_flag_inference": (static_flag, lambda dt: ((normal((3, 2), 1, dt), normal((4, 3), 2, dt)),
                                                       {"training": False})),
    "comparison_masks": (comparison_masks, lambda dt: ((normal((4, 3), 1, dt), normal((3, 5), 2, dt)), {})),
    "nll_classes_first": (nll_classes_first, lambda dt: ((normal((3, 6), 1, dt), labels(6, 3, 1, skip=[2])), {})),
    "inner_functions": (inner_functions, lambda dt: ((normal((3, 3), 1, dt), normal((2, 3), 2, dt)), {})),
    "while_and_augmented": (while_and_augmented, lambda dt: ((normal((3, 3), 1, dt), normal((2, 3), 2, dt)), {})),
    "fan_out": (fan_out, lambda dt: ((normal((3, 4), 1, dt),), {})),
}
FLOAT32_PROGRAMS = ["mlp_loss", "broadcasting", "softmax_family"]


def _cases():
    for name in PROGRAMS:
        yield pytest.param(name, np.float64, F64, id=f"{name}-f64")
    for name in FLOAT32_PROGRAMS:
        yield pytest.param(name, np.float32, F32, id=f"{name}-f32")


@pytest.mark.parametrize("name, dtype, tol", list(_cases()))
def test_compiled_value_and_gradient_equal_eager(name, dtype, tol):
    f, make = PROGRAMS[name]
    args, kwargs = make(dtype)
    compiled_gradient, loss = kn.gradloss(f)(*args, **kwargs)  # one compilation: loss and gradient
    assert_trees_close(loss, f.fn(*args, **kwargs), tol)
    assert_trees_close(compiled_gradient, kn.grad(f.fn)(*args, **kwargs), tol)
    assert type(compiled_gradient) is type(args[0])


@pytest.mark.parametrize("name", ["mlp_loss", "callable_layers", "keyword_arguments"])
def test_compiled_call_equals_eager(name):
    f, make = PROGRAMS[name]
    args, kwargs = make(np.float64)
    value = f(*args, **kwargs)
    assert isinstance(value, np.ndarray) and value.shape == () and value.dtype == np.float64
    assert_trees_close(value, f.fn(*args, **kwargs), F64)


def test_gradient_with_respect_to_a_later_argument():
    args, _ = PROGRAMS["broadcasting"][1](np.float64)
    assert_trees_close(kn.grad(broadcasting, 2)(*args), kn.grad(broadcasting.fn, 2)(*args), F64)


def test_gradloss_returns_the_compiled_gradient_and_loss():
    args, _ = PROGRAMS["mlp_loss"][1](np.float64)
    g, loss = kn.gradloss(mlp_loss)(*args)
    g_eager, loss_eager = kn.gradloss(mlp_loss.fn)(*args)
    assert_trees_close(g, g_eager, F64)
    np.testing.assert_allclose(loss, loss_eager, rtol=1e-10)


# ---------------------------------------------------------------- closures and captured values

def test_closure_over_a_constant_and_a_helper():
    scale, offset = 3.0, np.arange(4.0)

    def shifted(v):
        return v - offset

    @kn.compile(target="cpu")
    def loss(w, x):
        return scale * kn.sum(kn.tanh(shifted(x @ w)) ** 2)

    w, x = normal((3, 4), 1), normal((5, 3), 2)
    g, value = kn.gradloss(loss)(w, x)
    assert_trees_close(value, loss.fn(w, x), F64)
    assert_trees_close(g, kn.grad(loss.fn)(w, x), F64)


def test_closure_over_a_param_records_it():
    v = kn.Param(normal((4,), 3))

    @kn.compile(target="cpu")
    def loss(w, x):
        return kn.sum(kn.sigm(x @ w + v))

    w = kn.Param(normal((3, 4), 1))
    x = normal((5, 3), 2)
    y = kn.diff(loss, w, x)
    y_eager = kn.diff(loss.fn, w, x)
    np.testing.assert_allclose(kn.value(y), kn.value(y_eager), rtol=1e-10)
    for p in (w, v):
        np.testing.assert_allclose(kn.grad(y, p), kn.grad(y_eager, p), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- specializations

@kn.compile(target="cpu")
def specialized(x):
    return kn.sum(kn.tanh(x) * x)


def test_same_shape_reuses_a_specialization_new_shape_compiles_another():
    specialized(normal((2, 3), 1))
    n = specialized.compilations
    for seed in (2, 3):
        x = normal((2, 3), seed)
        np.testing.assert_allclose(specialized(x), np.sum(np.tanh(x) * x), rtol=1e-12)
    assert specialized.compilations == n
    x = normal((4, 3), 4)
    np.testing.assert_allclose(specialized(x), np.sum(np.tanh(x) * x), rtol=1e-12)
    assert specialized.compilations == n + 1
    specialized(normal((2, 3), 5).astype(np.float32))  # a new dtype is a new signature
    assert specialized.compilations == n + 2
    specialized(normal((4, 3), 6))
    assert specialized.compilations == n + 2


def test_static_arguments_are_part_of_the_signature():
    args, _ = PROGRAMS["static_flag_training"][1](np.float64)
    static_flag(*args, training=True)
    n = static_flag.compilations
    static_flag(*args, training=False, rate=0.25)
    assert static_flag.compilations == n + 1
    np.testing.assert_allclose(static_flag(*args, training=False, rate=0.25),
                               static_flag.fn(*args, training=False, rate=0.25), rtol=1e-10)
    static_flag(*args, training=False, rate=0.25)
    assert static_flag.compilations == n + 1


# ---------------------------------------------------------------- diff of a compiled function

def test_diff_of_a_compiled_function_equals_eager():
    model = [(kn.Param(w), kn.Param(b)) for w, b in mlp_model([20, 16, 5], 1, np.float64)]
    x, y = normal((8, 20), 2), labels(8, 5)
    result = kn.diff(mlp_loss, model, x, y)
    eager = kn.diff(mlp_loss.fn, model, x, y)
    np.testing.assert_allclose(kn.value(result), kn.value(eager), rtol=1e-10)
    assert {id(p) for p in kn.params(result)} == {id(p) for layer in model for p in layer}
    for w, b in model:
        for p in (w, b):
            np.testing.assert_allclose(kn.grad(result, p), kn.grad(eager, p), rtol=1e-10, atol=1e-12)


def test_values_computed_again_by_the_backward_pass_give_the_eager_gradient():
    """Inside diff, cheap values (0.5 * h, h * c, h * h) are computed again by the backward
    program from what the forward one stores (knetc.ad.reverse.split)."""
    @kn.compile(target="cpu")
    def loss(w, x):
        h = x @ w
        return kn.sum(0.5 * h * (1 + kn.erf(h * 0.7071067811865476)) - h * h + kn.exp(-h))

    w, x = kn.Param(normal((3, 4), 1)), normal((5, 3), 2)
    compiled = kn.diff(loss, w, x)
    eager = kn.diff(loss.fn, w, x)
    assert kn.value(compiled) == pytest.approx(kn.value(eager), rel=1e-12)
    np.testing.assert_allclose(kn.grad(compiled, w), kn.grad(eager, w), rtol=1e-10)


def test_optimize_runs_once_per_program_in_every_mode(monkeypatch):
    """The stages run once per program: inside diff the joint program is optimised once,
    then split into forward and backward (not optimised again); call and grad once each."""
    import knetc.compiler
    optimized, real = [], knetc.compiler.optimize

    def counting(program):
        optimized.append(program.name)
        return real(program)
    monkeypatch.setattr(knetc.compiler, "optimize", counting)

    @kn.compile(target="cpu")
    def loss(w, x):
        return kn.sum(kn.tanh(x @ w) * 2)

    w, x = kn.Param(normal((3, 4), 1)), normal((5, 3), 2)
    result = kn.diff(loss, w, x)  # "forward": one joint program -> forward + backward executables
    spec, = loss.specializations()
    assert len(optimized) == 1 and {e.name for e in spec.executables()} == {spec.forward.name, spec.backward.name}
    np.testing.assert_allclose(kn.grad(result, w), kn.grad(kn.diff(loss.fn, w, x), w), rtol=1e-10)
    assert len(optimized) == 1  # the backward pass runs what was built
    loss(kn.value(w), x)  # "call"
    kn.grad(loss)(kn.value(w), x)  # "grad"
    assert len(optimized) == 3 and loss.compilations == 3


def test_params_inside_callable_layers_are_recorded():
    chain = Chain(Dense(kn.Param(normal((4, 6), 1)), kn.Param(normal((6,), 2))),
                  Dense(kn.Param(normal((6, 3), 3)), kn.Param(normal((3,), 4)), kn.relu))
    x = normal((5, 4), 5)
    result, eager = kn.diff(callable_layers, chain, x), kn.diff(callable_layers.fn, chain, x)
    np.testing.assert_allclose(kn.value(result), kn.value(eager), rtol=1e-10)
    assert len(kn.params(chain)) == 4
    for p in kn.params(chain):
        assert kn.grad(result, p) is not None
        np.testing.assert_allclose(kn.grad(result, p), kn.grad(eager, p), rtol=1e-10, atol=1e-12)


def test_diff_of_a_compiled_function_composed_with_eager_ops():
    w = kn.Param(normal((3, 2), 1))
    x = normal((4, 3), 2)
    result = kn.diff(lambda: keyword_arguments(w * 2, x, scale=0.5) * 2 + kn.sum(w * w))
    eager = kn.diff(lambda: keyword_arguments.fn(w * 2, x, scale=0.5) * 2 + kn.sum(w * w))
    np.testing.assert_allclose(kn.value(result), kn.value(eager), rtol=1e-10)
    np.testing.assert_allclose(kn.grad(result, w), kn.grad(eager, w), rtol=1e-10, atol=1e-12)


def test_second_derivative_through_a_compiled_function_runs_eagerly():
    f = lambda x: kn.sum(kn.grad(fan_out)(x))  # noqa: E731
    x = normal((3, 4), 1)
    np.testing.assert_allclose(kn.grad(f)(x), kn.grad(lambda x: kn.sum(kn.grad(fan_out.fn)(x)))(x),
                               rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- errors leave Params alone

@kn.compile(target="cpu")
def wrong_inner_dimension(w, x):
    h = kn.tanh(x @ w)
    return kn.sum(h @ w)


def test_after_an_error_the_params_are_unchanged():
    w = kn.Param(normal((3, 4), 1))
    before = w.value.copy()
    with pytest.raises(kn.ShapeError):
        kn.diff(wrong_inner_dimension, w, normal((2, 3), 2))
    with pytest.raises(kn.ShapeError):
        kn.grad(wrong_inner_dimension)(w.value, normal((2, 3), 2))
    assert np.array_equal(w.value, before)
    y = kn.diff(specialized, w)  # the Param still works afterwards
    np.testing.assert_allclose(kn.grad(y, w), kn.grad(specialized.fn)(before), rtol=1e-10)


def _cube_sum(x):
    return kn.sum(x * x * x)


def test_cache_option_chooses_where_kernels_live(tmp_path):
    shipped = kn.compile(_cube_sum, target="cpu", cache=tmp_path / "kernels")
    private = kn.compile(_cube_sum, target="cpu", cache=False)
    x = normal((3, 2), 1)
    assert_trees_close(shipped(x), _cube_sum(x), F64)
    assert_trees_close(private(x), _cube_sum(x), F64)
    driver, kernel = shipped.generated_modules()
    assert all(m.__knetc_path__.startswith(str(tmp_path / "kernels")) for m in (driver, kernel))
    driver, kernel = private.generated_modules()
    assert not any(m.__knetc_path__.startswith(str(tmp_path)) for m in (driver, kernel))
    assert "cache=False" in open(kernel.__knetc_path__).read()  # Numba keeps no machine code either
