"""Optimizers and update_: Knet's formulas (a numpy reference below), gclip, Adam's step
count, containers, stop-and-resume, the Rosenbrock benchmark eager and compiled, and the
fused CUDA kernels (simulator + PTX)."""
import itertools
from pathlib import Path

import numpy as np
import pytest
from numba import cuda

import knetc as kn
from knetc.kernels import optimizers as kernels
from ptx import compile_ptx_many

OPTIMIZERS = [kn.SGD, kn.Momentum, kn.Nesterov, kn.Adagrad, kn.Rmsprop, kn.Adadelta, kn.Adam]


# ---------------------------------------------------------------- the numpy reference

def reference_step(opt, w, g, state):
    """One update by Knet's documented formulas, in plain numpy: returns the new w and
    updates `state` (a dict of arrays and Adam's t) in place."""
    if opt.gclip > 0 and np.linalg.norm(g) > opt.gclip:
        g = g * (opt.gclip / np.linalg.norm(g))
    name = type(opt).__name__
    zeros = np.zeros_like(w)
    if name == "SGD":
        return w - opt.lr * g
    if name == "Momentum":
        v = state["v"] = opt.gamma * state.get("v", zeros) + opt.lr * g
        return w - v
    if name == "Nesterov":
        v = state.get("v", zeros)
        w = w - opt.gamma * v
        v = state["v"] = opt.gamma * v - opt.lr * g
        return w + (1 + opt.gamma) * v
    if name == "Adagrad":
        G = state["G"] = state.get("G", zeros) + g ** 2
        return w - opt.lr * g / np.sqrt(G + opt.eps)
    if name == "Rmsprop":
        G = state["G"] = opt.rho * state.get("G", zeros) + (1 - opt.rho) * g ** 2
        return w - opt.lr * g / np.sqrt(G + opt.eps)
    if name == "Adadelta":
        G = state["G"] = opt.rho * state.get("G", zeros) + (1 - opt.rho) * g ** 2
        delta = state.get("delta", zeros)
        update = np.sqrt(delta + opt.eps) * g / np.sqrt(G + opt.eps)
        state["delta"] = opt.rho * delta + (1 - opt.rho) * update ** 2
        return w - opt.lr * update
    if name == "Adam":
        t = state["t"] = state.get("t", 0) + 1
        v = state["v"] = opt.beta1 * state.get("v", zeros) + (1 - opt.beta1) * g
        G = state["G"] = opt.beta2 * state.get("G", zeros) + (1 - opt.beta2) * g ** 2
        vhat = v / (1 - opt.beta1 ** t)
        Ghat = G / (1 - opt.beta2 ** t)
        return w - (opt.lr / (np.sqrt(Ghat) + opt.eps)) * vhat
    raise ValueError(name)


def _hyper(cls):
    """Non-default hyperparameters, so a swapped or ignored one shows."""
    extra = {"Momentum": dict(gamma=0.8), "Nesterov": dict(gamma=0.8), "Rmsprop": dict(rho=0.7, eps=1e-3),
             "Adagrad": dict(eps=1e-3), "Adadelta": dict(rho=0.6, eps=1e-3),
             "Adam": dict(beta1=0.8, beta2=0.9, eps=1e-3)}
    return dict(lr=0.05, **extra.get(cls.__name__, {}))


# ---------------------------------------------------------------- one step == the formulas

@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("gclip", [0, 0.5, 100.0], ids=["no-clip", "clipped", "clip-above-norm"])
def test_steps_match_numpy_reference(cls, gclip):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4))
    opt, expected, state = cls(gclip=gclip, **_hyper(cls)), w.copy(), {}
    for _ in range(3):  # state carries over; Adam's t goes 1, 2, 3
        g = rng.standard_normal((3, 4))
        kn.update_(w, g, opt)
        expected = reference_step(opt, expected, g, state)
        np.testing.assert_allclose(w, expected, rtol=1e-12, atol=1e-12)
    if cls is kn.Adam:
        assert opt.t == 3
    if cls is kn.Momentum:  # the state as Knet keeps it (velocity = gamma velocity + lr g; w -= velocity)
        np.testing.assert_allclose(opt.velocity, state["v"], rtol=1e-12)


def test_defaults_are_knets():
    # Knet 1.4's reference (tests/test_training_atomic.py checks the iterators agree).
    assert (kn.SGD().lr, kn.SGD().gclip) == (0.1, 0)
    assert (kn.Momentum().lr, kn.Momentum().gamma) == (0.05, 0.95)
    assert (kn.Nesterov().lr, kn.Nesterov().gamma) == (0.05, 0.95)
    assert (kn.Rmsprop().lr, kn.Rmsprop().rho, kn.Rmsprop().eps) == (0.01, 0.9, 1e-6)
    assert (kn.Adagrad().lr, kn.Adagrad().eps) == (0.05, 1e-6)
    assert (kn.Adadelta().lr, kn.Adadelta().rho, kn.Adadelta().eps) == (1.0, 0.9, 1e-6)
    adam = kn.Adam()
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps, adam.t) == (0.001, 0.9, 0.999, 1e-8, 0)
    assert all(cls().gclip == 0 for cls in OPTIMIZERS)


def test_state_is_created_lazily_with_the_weights_shape_and_dtype():
    opt = kn.Adam()
    assert opt.fstm is None and opt.scndm is None
    w = np.ones((2, 3), dtype=np.float32)
    kn.update_(w, np.ones((2, 3)), opt)  # a float64 gradient is cast to the weight's dtype
    assert opt.fstm.shape == (2, 3) and opt.fstm.dtype == np.float32 and w.dtype == np.float32
    np.testing.assert_allclose(w, 1 - 0.001, rtol=1e-6)  # Adam's first step is lr * sign(g)


def test_a_scalar_param_keeps_its_float_type():
    """Param(3.0) becomes a float64 0-d array updated in place; a numpy float32 scalar stays float32."""
    p, q = kn.Param(np.float32(3.0)), kn.Param(3.0)
    kn.update_(p, np.float32(1.0))
    kn.update_(q, 1.0)
    assert (p.value.dtype, q.value.dtype) == (np.float32, np.float64)
    r = kn.Param(np.float32(3.0), kn.Adam())
    kn.adam_(lambda: r * r, [()])
    assert r.value.dtype == r.opt.fstm.dtype == r.opt.scndm.dtype == np.float32
    assert float(r.value) == pytest.approx(3.0 - 0.001, rel=1e-6)  # Adam's first step: lr * sign(g)


def test_gclip_scales_only_gradients_above_the_norm():
    w = np.zeros(2)
    kn.update_(w, np.array([3.0, 4.0]), kn.SGD(lr=1.0, gclip=1.0))  # norm 5 -> 1
    np.testing.assert_allclose(w, [-0.6, -0.8], rtol=1e-15)
    w = np.zeros(2)
    kn.update_(w, np.array([3.0, 4.0]), kn.SGD(lr=1.0, gclip=10.0))  # below: unchanged
    np.testing.assert_allclose(w, [-3.0, -4.0])


def test_gclip_of_a_gradient_with_nan_makes_it_all_nan_as_knet():
    # Knet: gnorm <= gclip ? g : g * gclip/gnorm; a NaN norm fails the test, so every entry is
    # NaN. (Skipping the clip let the finite entries take a full, unclipped step.)
    w = np.zeros(3)
    kn.update_(w, np.array([np.nan, 100.0, 100.0]), kn.SGD(lr=1.0, gclip=1.0))
    assert np.isnan(w).all()


@pytest.mark.parametrize("hyper", [dict(lr=None), dict(lr="x"), dict(lr=float("nan")), dict(gclip=-1.0),
                                   dict(eps=None), dict(lr=True)])
def test_bad_hyperparameters_are_refused_by_the_constructor(hyper):
    cls = kn.Adagrad
    with pytest.raises((TypeError, ValueError), match=next(iter(hyper))):
        cls(**hyper)
    with pytest.raises(TypeError, match="t "):
        kn.Adam(t=1.5)


def test_a_hyperparameter_changed_to_a_bad_value_fails_before_any_weight_changes():
    # np.float64(None) is NaN: lr=None turned the weights into NaN. And a bad optimizer later in
    # the list must not leave the earlier weights updated.
    w1, w2 = np.ones(2), np.ones(2)
    bad = kn.Adam()
    bad.lr = None
    with pytest.raises(TypeError, match="lr must be"):
        kn.update_([w1, w2], [np.ones(2), np.ones(2)], [kn.SGD(lr=0.1), bad])
    assert np.all(w1 == 1) and np.all(w2 == 1) and bad.t == 0 and bad.fstm is None


def test_gradients_in_another_structure_than_the_weights_are_refused_clearly():
    with pytest.raises(TypeError, match="weights are a dict but the gradients a list"):
        kn.update_({"a": np.ones(2)}, [np.ones(2)])
    with pytest.raises(KeyError, match="no optimizer for it"):
        kn.update_({"a": np.ones(2), "b": np.ones(2)}, {"a": np.ones(2), "b": np.ones(2)}, {"a": kn.Adam()})


@pytest.mark.parametrize("cls", [kn.SGD, kn.Adam, kn.Momentum])
def test_gclip_clips_float32_gradients_whose_norm_overflows_float32(cls):
    # An exploding gradient is what gclip is for: its float32 norm (about 5e19 here, squares
    # above float32's range) was inf, the scale 0, and the weight never moved.
    w32, w64 = np.zeros(2, np.float32), np.zeros(2)
    g = np.array([3e19, 4e19])
    kn.update_(w32, g.astype(np.float32), cls(lr=1.0, gclip=1.0))
    kn.update_(w64, g, cls(lr=1.0, gclip=1.0))
    assert np.all(w32 != 0), w32
    np.testing.assert_allclose(w32, w64, rtol=1e-6)


def test_hyperparameter_changes_take_effect_without_recompiling():
    opt, w = kn.SGD(lr=0.1), np.zeros(3)
    kn.update_(w, np.ones(3), opt)
    signatures = len(kernels.sgd_cpu.signatures)
    opt.lr = 0.5
    kn.update_(w, np.ones(3), opt)
    np.testing.assert_allclose(w, -0.6)
    assert len(kernels.sgd_cpu.signatures) == signatures


def test_non_contiguous_weights_are_updated_in_place():
    base = np.zeros((4, 6))
    w = base[:, ::2]
    kn.update_(w, np.ones((4, 3)), kn.SGD(lr=0.5))
    assert np.all(base[:, ::2] == -0.5) and np.all(base[:, 1::2] == 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="shape"):
        kn.update_(np.zeros(3), np.zeros(4), kn.SGD())
    with pytest.raises(TypeError, match="floating"):
        kn.update_(np.zeros(3, dtype=np.int64), np.zeros(3), kn.SGD())
    opt = kn.Adam()
    kn.update_(np.zeros(3), np.ones(3), opt)
    with pytest.raises(ValueError, match="its own optimizer"):
        kn.update_(np.zeros(4), np.ones(4), opt)


# ---------------------------------------------------------------- Params and containers

def test_param_uses_and_keeps_its_optimizer():
    p = kn.Param(np.zeros(3), kn.Momentum(lr=0.1, gamma=0.5))
    kn.update_(p, np.ones(3))
    kn.update_(p, np.ones(3))
    np.testing.assert_allclose(p.value, -0.1 + (-0.05 - 0.1))
    q = kn.Param(np.zeros(3))
    kn.update_(q, np.ones(3), lr=0.25)  # no opt: SGD, not stored (minimize may set one later)
    np.testing.assert_allclose(q.value, -0.25)
    assert q.opt is None
    adam = kn.Adam()
    kn.update_(q, np.ones(3), adam)  # an explicit optimizer is kept when opt is unset
    assert q.opt is adam and adam.t == 1
    kn.update_(q, None)  # no gradient: nothing to do
    assert adam.t == 1


def test_update_containers_with_matching_optimizers():
    rng = np.random.default_rng(2)
    w1, w2, g1, g2 = (rng.standard_normal(4) for _ in range(4))
    e1, e2 = reference_step(kn.Adam(), w1, g1, {}), reference_step(kn.SGD(lr=0.1), w2, g2, {})
    for make in (tuple, list):
        w = make([w1.copy(), w2.copy()])
        kn.update_(w, make([g1, g2]), make([kn.Adam(), kn.SGD(lr=0.1)]))
        np.testing.assert_allclose(w[0], e1, rtol=1e-12)
        np.testing.assert_allclose(w[1], e2, rtol=1e-12)
    w = {"a": w1.copy(), "b": w2.copy()}
    kn.update_(w, {"a": g1}, {"a": kn.Adam(), "b": kn.SGD()})  # g may have fewer keys
    np.testing.assert_allclose(w["a"], e1, rtol=1e-12)
    np.testing.assert_array_equal(w["b"], w2)
    w = [w1.copy(), w2.copy()]
    kn.update_(w, [g1, g2], lr=0.1)  # the 2-argument form: SGD for each
    np.testing.assert_allclose(w[1], e2, rtol=1e-12)
    with pytest.raises(ValueError, match="must match"):
        kn.update_([w1, w2], [g1], [kn.SGD(), kn.SGD()])
    with pytest.raises(TypeError, match="one optimizer per weight"):
        kn.update_([w1, w2], [g1, g2], kn.Adam())


@pytest.mark.parametrize("cls", [kn.SGD, kn.Adam])
def test_a_param_tied_at_two_places_steps_once_as_the_iterators_and_pytorch(cls):
    # kn.grad gives a tied Param its total gradient at each place; update_ stepped it at
    # each (twice the step, two Adam states), where kn.sgd/kn.adam and PyTorch step once
    rng = np.random.default_rng(3)
    w0, x = rng.standard_normal((6, 4)) * 0.5, rng.standard_normal((5, 6))
    loss = lambda m, x: kn.mean((np.tanh(x @ m[0]) @ m[1].T - x) ** 2)  # noqa: E731
    w = kn.Param(w0.copy())
    model = (w, w)
    opts = kn.optimizers(model, cls, lr=0.1)
    g = kn.grad(loss)(model, x)
    kn.update_(model, g, opts)
    np.testing.assert_allclose(w.value, reference_step(cls(lr=0.1), w0.copy(), g[0], {}), rtol=1e-12)
    alone = kn.Param(w0.copy())
    train = kn.sgd if cls is kn.SGD else kn.adam
    for _ in train(loss, [((alone, alone), x)], lr=0.1):
        pass
    np.testing.assert_allclose(w.value, alone.value, rtol=1e-12)


def test_rosenbrock_containers_with_adam():
    """Knet's multi-array test: two Rosenbrock problems in a tuple, list and dict."""
    rng = np.random.default_rng(0)
    starts = [rng.standard_normal(6), 0.5 * rng.standard_normal(6)]
    gradloss = kn.gradloss(lambda w: _rosen(w[0], S0, S1) + _rosen(w[1], S0, S1))
    for make in (tuple, list, lambda ws: dict(enumerate(ws))):
        w = make([s.copy() for s in starts])
        opts = make([kn.Adam(lr=0.005, beta1=0.9, beta2=0.95) for _ in starts])
        for _ in range(10000):
            g, loss = gradloss(w)
            if loss <= 0.1:
                break
            kn.update_(w, g, opts)
        assert loss <= 0.1


# ---------------------------------------------------------------- the Rosenbrock function

N = 6
S0, S1 = np.eye(N)[:, :-1].copy(), np.eye(N)[:, 1:].copy()  # x @ S0 == x[:-1], x @ S1 == x[1:]


def _rosen(x, s0, s1):
    """sum(100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2), written without indexing (it is not
    compiled yet): the selection matrices s0, s1 pick x[:-1] and x[1:]."""
    a, b = x @ s0, x @ s1
    return kn.sum(100 * (b - a * a) ** 2 + (1 - a) ** 2)


compiled_rosen = kn.compile(_rosen, target="cpu")

KNET_SETTINGS = [  # Knet's test settings
    kn.SGD(lr=0.001), kn.Momentum(lr=0.00025, gamma=0.95), kn.Nesterov(lr=0.00025, gamma=0.95),
    kn.Adam(lr=0.005, beta1=0.9, beta2=0.95), kn.Adagrad(lr=0.4), kn.Adadelta(lr=0.4, rho=0.5),
    kn.Rmsprop(lr=0.005, rho=0.9),
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("opt", KNET_SETTINGS, ids=lambda o: type(o).__name__)
def test_rosenbrock_is_minimized(opt, compiled):
    x = kn.Param(np.random.default_rng(0).standard_normal(N))
    f = compiled_rosen if compiled else _rosen
    steps = kn.minimize(f, itertools.repeat((x, S0, S1), 10000), opt)
    loss = next(loss for loss in itertools.chain(steps, [np.inf]) if loss <= 0.1)
    assert loss <= 0.1
    assert type(x.opt) is type(opt) and x.opt is not opt  # a clone of the default
    if compiled:
        assert compiled_rosen.compilations == 1  # one specialization, reused at every step


# ---------------------------------------------------------------- stop and resume

def test_training_stops_and_resumes_with_its_optimizer_state():
    rng = np.random.default_rng(3)
    w0, targets = rng.standard_normal(5), [rng.standard_normal(5) for _ in range(10)]

    def loss(w, target):
        return kn.sum((w - target) ** 2)

    def data(p, targets):
        return [(p, t) for t in targets]

    once = kn.Param(w0.copy())
    kn.adam_(loss, data(once, targets), lr=0.1)
    twice = kn.Param(w0.copy())
    kn.adam_(loss, data(twice, targets[:4]), lr=0.1)
    kn.adam_(loss, data(twice, targets[4:]), lr=0.1)  # twice.opt is set: its Adam and t carry on
    np.testing.assert_allclose(twice.value, once.value, rtol=1e-13)
    assert once.opt.t == twice.opt.t == 10
    thrice = kn.Param(w0.copy(), kn.Adam(lr=0.1))
    kn.adam_(loss, data(thrice, targets[:4]), lr=0.1)
    kn.sgd_(loss, data(thrice, targets[4:]), lr=123.0)  # Knet: sgd keeps an Adam already set
    np.testing.assert_allclose(thrice.value, once.value, rtol=1e-13)


def test_optimizer_state_survives_save_and_load(tmp_path):
    def loss(w):
        return kn.sum((w - 1.0) ** 2)

    p = kn.Param(np.zeros(3))
    kn.adam_(loss, [p] * 3, lr=0.1)
    kn.save(tmp_path / "model.knetc", p=p)
    q = kn.load(tmp_path / "model.knetc")["p"]
    assert type(q.opt) is kn.Adam and q.opt.t == 3 and q.opt is not p.opt
    kn.adam_(loss, [p] * 3, lr=0.1)
    kn.adam_(loss, [q] * 3, lr=0.1)  # resumes from the loaded moments and t
    np.testing.assert_array_equal(q.value, p.value)
    assert q.opt.t == 6


# ---------------------------------------------------------------- CUDA: simulator and PTX

@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_cuda_kernels_match_numpy(cls):
    rng = np.random.default_rng(4)
    w0 = rng.standard_normal(300)  # more than one block of 256 threads
    opt, state, expected = cls(gclip=2.0, **_hyper(cls)), {}, w0.copy()
    w = cuda.to_device(w0)
    for _ in range(2):
        g = rng.standard_normal(300)  # norm ~17 > gclip: the device norm decides the scale
        kn.update_(w, cuda.to_device(g), opt)
        expected = reference_step(opt, expected, g, state)
    np.testing.assert_allclose(w.copy_to_host(), expected, rtol=1e-12, atol=1e-12)
    for name in opt.STATE:  # the state lives on the device too
        assert kernels.is_device_array(getattr(opt, name))


def test_a_param_on_the_device_is_updated_in_place():
    w0, g = np.linspace(-1, 1, 8), np.linspace(2, 3, 8)
    p = kn.Param(cuda.to_device(w0), kn.Adam(lr=0.1))
    value = p.value
    kn.update_(p, g)
    assert p.value is value
    np.testing.assert_allclose(p.value.copy_to_host(), reference_step(kn.Adam(lr=0.1), w0, g, {}), rtol=1e-12)


def test_device_norm_matches_numpy():
    x = np.random.default_rng(5).standard_normal((30, 20)).astype(np.float32)
    expected = float(np.linalg.norm(x.astype(np.float64)))
    assert kernels.device_norm(cuda.to_device(x)) == pytest.approx(expected, rel=1e-12)
    assert kernels.device_norm(cuda.to_device(np.zeros(0))) == 0.0


def test_cuda_kernels_compile_to_ptx_for_sm_90():
    path = Path(kernels.__file__)
    reports = compile_ptx_many([(path, kernels.PTX_SIGNATURES), (path, kernels.PTX_SIGNATURES_FLOAT64)])
    for report, signatures in zip(reports, (kernels.PTX_SIGNATURES, kernels.PTX_SIGNATURES_FLOAT64)):
        assert set(report) == set(signatures) == {f"{name}_cuda" for name in kernels.KERNELS} | {"sum_of_squares_cuda", "fill_cuda",
                                                                          "clip_scale_cuda", "scaled_cuda"}
        assert all(r["target"] and r["entry"] for r in report.values()), report


def test_update_leaves_the_numbers_kn_optimizers_gives_no_optimizer():
    # kn.optimizers gives None for what is not an array (a dropout rate in the model); kn.grad
    # still differentiates the number (a 0-d gradient). update_ failed on it ("cannot update
    # a float in place"); it leaves it, and updates the rest.
    model = {"w": kn.Param(np.ones(2)), "pdrop": 0.1, "layers": [kn.Param(np.ones(1)), 3]}
    opts = kn.optimizers(model, kn.SGD, lr=0.5)
    assert opts["pdrop"] is None and opts["layers"][1] is None
    grads = kn.grad(lambda m: kn.sum(m["w"] * m["w"]) * (1 - m["pdrop"]) + kn.sum(m["layers"][0]) * m["layers"][1])(model)
    kn.update_(model, grads, opts)
    np.testing.assert_allclose(model["w"].value, 1 - 0.5 * 1.8)
    np.testing.assert_allclose(model["layers"][0].value, 1 - 0.5 * 3)
    assert model["pdrop"] == 0.1 and model["layers"][1] == 3
    with pytest.raises(TypeError, match="cannot update a float in place"):  # asked for without optimizers: said
        kn.update_(model, grads)


def test_a_weight_whose_update_raised_keeps_its_adam_step_count(monkeypatch):
    # (Adam counted the step before its kernel ran: a KeyboardInterrupt or MemoryError there left
    # t one ahead of the moments, and every later step's bias correction wrong)
    import knetc.kernels.optimizers as kernels
    ws = [kn.Param(np.ones(3)) for _ in range(3)]
    gs = [np.full(3, 0.5) for _ in ws]
    opts = [kn.Adam() for _ in ws]
    kn.update_(ws, gs, opts)
    real, calls = kernels.update, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(kernels, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kn.update_(ws, gs, opts)
    assert [o.t for o in opts] == [2, 1, 1]
    np.testing.assert_array_equal(ws[1].value, ws[2].value)  # (the interrupted one as it was)
