"""AutoGrad extras: gcheck, gradcheck, the primitive and zerograd decorators (eager, on the
tape and inside @kn.compile), higher-order gradients eager and compiled, and None for
gradients that are zero."""
import numpy as np
import pytest

import knetc as kn
from knetc.compiler import optimize
from knetc.frontend import trace
from numgrad import assert_close, numgrad
from ptx import compile_ptx_many


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- user primitives

@kn.primitive(lambda dy, y, a, b: dy * a / y, lambda dy, y, a, b: dy * b / y)
def hypot(a, b):
    return kn.sqrt(a * a + b * b)


@kn.primitive(lambda dy, y, a, b: dy * a / y, lambda dy, y, a, b: dy * a / y)  # the second rule is wrong
def wrong_hypot(a, b):
    return kn.sqrt(a * a + b * b)


@kn.primitive(lambda dy, y, x, scale=1.0: dy * 3.0)  # deliberately not the body's derivative
def rule_says_three(x, scale=1.0):
    return x * scale


@kn.primitive(lambda dy, y, x, p: dy * p * kn.exp(x * p), None)  # no gradient for the number p
def exp_scaled(x, p):
    return kn.exp(x * p)


@kn.zerograd
def step(x):
    return kn.sign(x) * 0.5 + 0.5


@kn.primitive()
def no_rules(x):
    return x * 2.0


def hypot_ref(a, b):
    return np.sqrt(a * a + b * b)


def test_primitive_value_and_gradients_with_broadcasting():
    a, b = normal((3, 1), 1), normal((1, 4), 2)
    assert_close(hypot(a, b), hypot_ref(a, b), rtol=1e-15)
    v = normal((3, 4), 3)
    ga, gb = kn.grad(lambda ab: kn.sum(hypot(*ab) * v))((a, b))  # rules give (3, 4): summed back
    assert_close(ga, numgrad(lambda a: np.sum(hypot_ref(a, b) * v), a))
    assert_close(gb, numgrad(lambda b: np.sum(hypot_ref(a, b) * v), b))


def test_primitive_gradient_comes_from_its_rules():
    x = normal((2, 3), 4)
    assert_close(kn.grad(lambda x: kn.sum(rule_says_three(x, scale=5.0)))(x), np.full((2, 3), 3.0))
    assert_close(rule_says_three(x, scale=5.0), 5 * x)

    @kn.primitive(lambda dy, y, x: 4.0)  # a number: broadcast to the argument's shape
    def rule_says_four(x):
        return x * 1.0
    assert_close(kn.grad(lambda x: kn.sum(rule_says_four(x)))(x), np.full((2, 3), 4.0))
    g = kn.grad(lambda x: kn.sum(exp_scaled(x, 2.0)))(x)
    assert_close(g, 2 * np.exp(2 * x), rtol=1e-12)


def test_primitive_second_derivative_through_its_rules():
    x = np.array([-0.5, 0.3, 1.1])
    second = kn.grad(lambda x: kn.sum(kn.grad(lambda x: kn.sum(exp_scaled(x, 1.5)))(x)))(x)
    assert_close(second, 1.5 ** 2 * np.exp(1.5 * x), rtol=1e-12)


def test_primitive_without_rules_runs_but_cannot_be_differentiated():
    assert_close(no_rules(np.ones(2)), [2.0, 2.0])
    with pytest.raises(NotImplementedError, match="no gradient rule for argument 0"):
        kn.grad(lambda x: kn.sum(no_rules(x)))(np.ones(2))


def test_primitive_misuse_raises_clear_errors():
    @kn.primitive  # without parentheses: `bare` is then the decorator, not a primitive
    def bare(x):
        return x
    with pytest.raises(TypeError, match="parentheses"):
        bare(np.ones(2))
    with pytest.raises(TypeError, match="functions or None"):
        kn.primitive(3.0)

    @kn.primitive(lambda dy, y, x: np.ones(5))
    def wrong_shape(x):
        return x * 2.0
    with pytest.raises(kn.ShapeError, match="returned shape"):
        kn.grad(lambda x: kn.sum(wrong_shape(x)))(np.ones((2, 3)))

    @kn.primitive(lambda dy, y, x: dy)
    def two_results(x):
        return x, x
    with pytest.raises(TypeError, match="one array"):
        two_results(np.ones(2))


@kn.primitive(lambda dy, y, x: dy * 2 * x)
def numpy_square(x):
    return np.asarray(x) ** 2  # numpy only: fine eagerly, not compilable


def test_a_numpy_only_primitive_runs_eagerly_and_is_refused_by_the_compiler():
    x = np.array([1.0, -2.0])
    assert_close(numpy_square(x), x ** 2)
    assert_close(kn.grad(lambda x: kn.sum(numpy_square(x)))(x), 2 * x)
    with pytest.raises(kn.CompileError, match="knetc ops"):
        kn.compile(lambda x: kn.sum(numpy_square(x)), target="cpu")(x)


def test_zerograd_blocks_the_gradient():
    x = kn.Param(np.array([-1.0, 0.5, 2.0]))
    assert_close(step(x.value), [0.0, 1.0, 1.0])
    y = kn.diff(lambda: kn.sum(step(x) * 3.0))
    assert kn.value(y) == 6.0
    assert kn.grad(y, x) is None  # only through a zerograd function: None, not zeros
    y = kn.diff(lambda: kn.sum(step(x) * x))  # the other factor still carries a gradient
    assert_close(kn.grad(y, x), [0.0, 1.0, 1.0])


# ---------------------------------------------------------------- primitives in compiled code

def with_primitives(a, b, x):
    return kn.sum(hypot(a, b) * 2.0) + kn.sum(rule_says_three(x, scale=2.0)) + kn.sum(exp_scaled(x, 0.5) * step(x))


def primitive_args():
    return normal((2, 3), 5), normal((1, 3), 6), normal((2, 3), 7)


def test_a_primitive_is_one_op_until_after_differentiation():
    program, _, _ = trace(with_primitives, primitive_args(), {})
    names = [e.op.name for e in program.eqns]
    assert hypot.op_name in names and rule_says_three.op_name in names and step.op_name in names
    assert "sqrt" not in names  # the body is not inlined by the front end
    lowered = optimize(program)  # the optimize stage decomposes composite ops
    assert all(e.op.kind != "composite" for e in lowered.eqns) and "sqrt" in [e.op.name for e in lowered.eqns]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_primitives_use_their_rules(target):
    compiled = kn.compile(with_primitives, target=target)
    args = primitive_args()
    assert_close(compiled(*args), with_primitives(*args), rtol=1e-12)
    for argnum in range(3):
        eager = kn.grad(with_primitives, argnum)(*args)
        assert_close(kn.grad(compiled, argnum)(*args), eager, rtol=1e-10, atol=1e-12)
    a, b, x = args
    expected_x = 3.0 + 0.5 * np.exp(0.5 * x) * (x > 0)  # rule_says_three's rule, step blocks nothing of exp
    assert_close(kn.grad(compiled, 2)(*args), expected_x, rtol=1e-12)
    gb = numgrad(lambda b: 2 * np.sum(hypot_ref(a, b)), b)
    assert_close(kn.grad(compiled, 1)(*args), gb)
    if target == "cuda":  # the primitives' bodies, fused into generated kernels, compile to PTX for sm_90
        modules = {m.__knetc_path__: m for m in compiled.generated_modules()}
        reports = compile_ptx_many([(path, m.PTX_SIGNATURES) for path, m in modules.items() if hasattr(m, "PTX_SIGNATURES")])
        assert all(entry["target"] and entry["entry"] for report in reports for entry in report.values())


def test_compiled_zerograd_and_unused_argument_give_none():
    compiled = kn.compile(lambda x, unused: kn.sum(step(x)) * 2.0, target="cpu")
    x = np.array([-1.0, 2.0])
    assert compiled(x, x) == 2.0
    assert kn.grad(compiled, 0)(x, x) is None and kn.grad(compiled, 1)(x, x) is None


# ---------------------------------------------------------------- gcheck and gradcheck

def test_gcheck_passes_right_gradients_and_fails_a_wrong_rule(capsys):
    a, b = kn.Param(normal((3, 4), 8)), kn.Param(normal((3, 4), 9))
    assert kn.gcheck(hypot, a, b) is True
    assert capsys.readouterr().out == ""
    assert kn.gcheck(wrong_hypot, a, b) is False
    assert "FAIL Param 1" in capsys.readouterr().out  # verbose=1: the failing entries of b
    assert kn.gcheck(wrong_hypot, a, b, verbose=0) is False
    assert capsys.readouterr().out == ""
    assert kn.gcheck(hypot, a, b, verbose=2, nsample=3)
    assert capsys.readouterr().out.count("ok ") == 6  # 3 random entries of each Param


def test_gcheck_finds_params_in_models_and_keywords():
    class Dense:
        def __init__(self):
            self.w, self.b = kn.Param(normal((3, 4), 10)), kn.Param(normal((4,), 11))

        def __call__(self, x, scale=1.0):
            return (x @ self.w + self.b) * scale
    model, x, labels = Dense(), normal((5, 3), 12), np.array([0, 3, -1, 2, 1])
    assert kn.gcheck(lambda m, x, y, scale: kn.nll(m(x, scale), y), model, x, labels, kw={"scale": 2.0})
    shift = kn.Param(normal((4,), 13))
    assert kn.gcheck(lambda x, shift: kn.tanh(x @ model.w + shift), x, kw=dict(shift=shift))  # summed


def test_gcheck_leaves_param_values_unchanged():
    a = kn.Param(normal((2, 2), 14))
    before = a.value.copy()
    kn.gcheck(lambda a: kn.sum(a ** 3), a)
    assert np.array_equal(a.value, before)


def test_gradcheck_on_arrays_numbers_and_containers(capsys):
    x = normal((4, 3), 15)
    assert kn.gradcheck(lambda w, x: kn.sum(kn.tanh(x @ w)), normal((3, 2), 16), x)
    assert kn.gradcheck(lambda w, x: kn.tanh(x @ w), normal((3, 2), 16), x)  # projected on a random array
    assert kn.gradcheck(lambda s, x: kn.sum(kn.exp(x * s)), 0.3, x)
    model = {"w": normal((3, 2), 17), "b": (normal((2,), 18), 2.0)}
    assert kn.gradcheck(lambda m, x: kn.sum(kn.sigm(x @ m["w"] + m["b"][0]) * m["b"][1]), model, x)
    assert kn.gradcheck(lambda w, x, c=1.0: kn.sum(w * x) * c, normal((4, 3), 19), x, kwargs={"c": 3.0})
    assert kn.gradcheck(lambda b, a: kn.sum(hypot(a, b)), normal((3,), 20), normal((3,), 21))
    assert capsys.readouterr().out == ""
    assert not kn.gradcheck(lambda b, a: kn.sum(wrong_hypot(a, b)), normal((3,), 20), normal((3,), 21), verbose=True)
    assert "FAIL" in capsys.readouterr().out


def test_gradcheck_takes_the_later_autograds_kw_args_and_nsample():
    """AutoGrad 1.x's gradcheck(f, x...; kw, args, nsample), as Knet's own tests call it:
    args picks the positional arguments checked (0-based here), kw the keyword arguments."""
    a, b = normal((3,), 24), normal((3,), 25) + 3.0
    wrong_in_b = lambda a, b, scale=1.0: kn.sum(wrong_hypot(a, b)) * scale
    assert kn.gradcheck(wrong_in_b, a, b, args=0, kw={"scale": 2.0})  # a's rule is right
    assert not kn.gradcheck(wrong_in_b, a, b, args=1, kw={"scale": 2.0}, verbose=0)
    assert not kn.gradcheck(wrong_in_b, a, b, args=[0, 1], nsample=2, verbose=0)
    scores, labels = normal((4, 3), 26), np.array([0, 1, 3])
    assert kn.gradcheck(kn.nll, scores, labels, kw={"dims": 0}, args=0)
    assert kn.gradcheck(kn.pool, normal((1, 1, 4, 4), 27), kw={"window": 2})
    with pytest.raises(IndexError, match="args=2"):
        kn.gradcheck(wrong_in_b, a, b, args=2)
    with pytest.raises(TypeError, match="once"):
        kn.gradcheck(wrong_in_b, a, b, kw={"scale": 1.0}, kwargs={"scale": 1.0})


def test_gradcheck_of_a_compiled_function():
    compiled = kn.compile(lambda w, x: kn.nll(x @ w, np.array([0, 2, 1])), target="cpu")
    assert kn.gradcheck(compiled, normal((3, 4), 22), normal((3, 3), 23))


def test_gcheck_and_gradcheck_reject_unknown_options():
    with pytest.raises(TypeError):
        kn.gcheck(hypot, kn.Param(np.ones(2)), np.ones(2), tolerance=1)
    with pytest.raises(TypeError):
        kn.gradcheck(hypot, np.ones(2), np.ones(2), tolerance=3)


# ---------------------------------------------------------------- higher-order gradients

ELEMENTWISE = {  # f, its first and second derivatives
    "exp": (kn.exp, np.exp, np.exp),
    "log": (kn.log, lambda x: 1 / x, lambda x: -1 / x ** 2),
    "tanh": (kn.tanh, lambda x: 1 - np.tanh(x) ** 2, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    "sqrt": (kn.sqrt, lambda x: 0.5 / np.sqrt(x), lambda x: -0.25 * x ** -1.5),
    "sigm": (kn.sigm, lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2,
             lambda x: (lambda s: s * (1 - s) * (1 - 2 * s))(1 / (1 + np.exp(-x)))),
    "power": (lambda x: x ** 3, lambda x: 3 * x ** 2, lambda x: 6 * x),
    "div_mul": (lambda x: 2.0 / x * x * x, lambda x: 2 + 0 * x, lambda x: 0 * x),
    "invx": (kn.invx, lambda x: -1 / x ** 2, lambda x: 2 / x ** 3),
}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_second_derivative_of_elementwise_ops_eager(name):
    f, d1, d2 = ELEMENTWISE[name]
    x = np.array([0.3, 0.8, 1.7])
    grad_f = kn.grad(lambda x: kn.sum(f(x)))
    assert_close(grad_f(x), d1(x), rtol=1e-12, atol=1e-12)
    assert_close(kn.grad(lambda x: kn.sum(grad_f(x)))(x), d2(x), rtol=1e-12, atol=1e-12)
    assert_close(kn.grad(kn.grad(lambda x: f(x)))(np.array(0.8)), d2(np.array(0.8)), rtol=1e-12, atol=1e-12)


def test_hessian_vector_product_through_matmul_eager():
    x, w, v = normal((4, 3), 24), normal((3, 2), 25), normal((3, 2), 26)
    f = lambda w: kn.sum(kn.sigm(x @ w) * 2.0)  # noqa: E731
    hv = kn.grad(lambda w: kn.sum(kn.grad(f)(w) * v))(w)
    gradient_ref = lambda w: x.T @ (2 * (lambda s: s * (1 - s))(1 / (1 + np.exp(-(x @ w)))))  # noqa: E731
    assert_close(hv, numgrad(lambda w: np.sum(gradient_ref(w) * v), w))


def hvp_loss(w, x):
    return kn.sum(kn.tanh(x @ w) ** 2) + kn.sum(kn.exp(w) * w)


def gradient_dot(w, x, v):
    """A compiled function whose body takes a gradient: its own gradient is second order."""
    return kn.sum(kn.grad(hvp_loss)(w, x) * v)


def hvp_ref(w, x, v):
    def gradient(w):
        t = np.tanh(x @ w)
        return x.T @ (2 * t * (1 - t ** 2)) + np.exp(w) * (1 + w)
    return numgrad(lambda w: np.sum(gradient(w) * v), w)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_second_order_gradients_compiled(target):
    w, x, v = normal((3, 2), 27) * 0.5, normal((4, 3), 28), normal((3, 2), 29)
    compiled = kn.compile(gradient_dot, target=target)
    assert_close(compiled(w, x, v), gradient_dot(w, x, v), rtol=1e-10)
    hv = kn.grad(compiled)(w, x, v)  # the compiled adjoint of a compiled gradient
    assert_close(hv, hvp_ref(w, x, v), rtol=1e-6, atol=1e-8)
    if target == "cpu":
        loss = kn.compile(hvp_loss, target="cpu")  # grad(grad(compiled)): the inner one re-runs on the tape
        diagonal = kn.grad(lambda w: kn.sum(kn.grad(loss)(w, x) * v))(w)
        assert_close(diagonal, hv, rtol=1e-10)


# ---------------------------------------------------------------- zero gradients are None

def test_grad_is_none_for_unused_params_and_optimizers_skip_it():
    used, unused = kn.Param(normal((2,), 30)), kn.Param(normal((2,), 31))
    y = kn.diff(lambda: kn.sum(used * used) + kn.sum(step(unused)))
    assert kn.grad(y, unused) is None
    assert_close(kn.grad(y, used), 2 * used.value)
    before = unused.value.copy()
    kn.update_(unused, kn.grad(y, unused), kn.SGD(lr=0.1))
    assert np.array_equal(unused.value, before)
    g = kn.grad(lambda ws: kn.sum(ws[0] * 2.0))([np.ones(2), np.ones(3)])
    assert_close(g[0], [2.0, 2.0])
    assert g[1] is None


def test_a_finished_tape_is_freed_without_the_cycle_collector():
    """kn.adam calls diff and grad every step: each step's tape, its saved values and its
    gradients must go when the result does, not wait for gc (a ResNet reached 3.3 GB)."""
    import gc
    import weakref
    w = kn.Param(np.random.default_rng(0).random((20, 20)))
    x = np.random.default_rng(1).random((30, 20))
    compiled = kn.compile(lambda_free_loss, target="cpu")
    gc.disable()
    try:
        for f in (lambda_free_loss, compiled):
            t = kn.diff(f, w, x)
            g = kn.grad(t, w)
            tape = weakref.ref(t.tape)
            np.testing.assert_allclose(g, kn.grad(kn.diff(f, w, x), w))
            del t
            assert tape() is None
        v = kn.Param(np.array(2.0))
        same = kn.diff(lambda: v)  # f returns the Param itself: d v / d v, its tape kept by the result
        assert kn.grad(same, v) == 1.0
    finally:
        gc.enable()


def lambda_free_loss(w, x):
    return kn.sum(kn.relu(x @ w) ** 2)


def test_zerograd_records_nothing_and_returns_a_plain_value_inside_diff():
    """Knet's @zerograd: the function is not recorded; inside diff it gives a plain array."""
    a = kn.Param(np.array([3.5, 5.2]))
    seen = []

    def f():
        v = step(a)
        seen.append(v)
        return kn.sum(a * v)
    y = kn.diff(f)
    assert type(seen[0]) is np.ndarray and np.array_equal(seen[0], [1.0, 1.0])
    assert_close(kn.grad(y, a), [1.0, 1.0])


# ---------------------------------------------------------------- containers of parameters

class _Weights(dict):
    pass


class _Layers(list):
    pass


def _containers():
    import collections
    import types
    w = np.array([1.0, -2.0])
    return [collections.defaultdict(float, w=w), collections.OrderedDict(w=w), _Weights(w=w),
            types.SimpleNamespace(w=w)]


@kn.compile
def _compiled_square_sum(model):
    return np.sum((model.w if hasattr(model, "w") else model["w"]) ** 2)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("index", range(4), ids=["defaultdict", "OrderedDict", "dict-subclass", "SimpleNamespace"])
def test_grad_of_dict_subclasses_and_namespaces_keeps_their_type(index, compiled):
    # A defaultdict was one opaque leaf: its arrays got no gradient at all (None, silently);
    # an OrderedDict or a dict subclass failed to be rebuilt.
    model = _containers()[index]

    def eager(model):
        return np.sum((model.w if hasattr(model, "w") else model["w"]) ** 2)

    g = kn.grad(_compiled_square_sum if compiled else eager)(model)
    assert type(g) is type(model)
    np.testing.assert_allclose(g.w if hasattr(g, "w") else g["w"], [2.0, -4.0])
    if index == 0:
        assert g.default_factory is float


def test_grad_of_a_list_subclass():
    g = kn.grad(lambda layers: np.sum(layers[0] * layers[1]))(_Layers([np.ones(2), np.full(2, 3.0)]))
    assert type(g) is _Layers
    np.testing.assert_allclose(g[0], 3.0)
    np.testing.assert_allclose(g[1], 1.0)


def test_complex_values_inside_diff_are_refused():
    # The rules are written for real values: d|z*z|/dz came out -4.4-0.8j (the real partials
    # are 2 and 4). A complex Param's |z| (a real result) keeps its gradient z/|z|.
    p = kn.Param(np.array([1 + 2j]))
    with pytest.raises(TypeError, match="complex value inside kn.diff"):
        kn.diff(lambda: np.sum(np.abs(p * p)))
    g = kn.grad(kn.diff(lambda: np.sum(np.abs(p))), p)
    np.testing.assert_allclose(g, [(1 + 2j) / np.sqrt(5)])
