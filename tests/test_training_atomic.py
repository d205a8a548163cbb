"""A training step is all or nothing (update_ and the training iterators), and the optimizer
classes share their defaults with the iterators (Knet 1.4's table)."""
import inspect
import itertools

import numpy as np
import pytest

import knetc as kn
from knetc.train.optimizers import DEFAULTS, _device_data

CLASSES = [kn.SGD, kn.Momentum, kn.Nesterov, kn.Adagrad, kn.Rmsprop, kn.Adadelta, kn.Adam]


# ---------------------------------------------------------------- defaults: one table

def _defaults(fn):
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_each_class_has_its_iterators_defaults(cls):
    iterator = getattr(kn, cls.__name__.lower())
    of_class = {k: v for k, v in _defaults(cls).items() if k in cls.HYPER}
    of_iterator = {k: v for k, v in _defaults(iterator).items() if k != "params"}
    assert of_class == of_iterator
    assert set(of_class) == set(cls.HYPER)  # every hyperparameter has a default in both
    opt = cls()
    assert {k: getattr(opt, k) for k in cls.HYPER} == of_class  # and the instance really uses them
    # and the iterator really builds its optimizer with them
    w = kn.Param(np.zeros(2))
    getattr(kn, cls.__name__.lower() + "_")(lambda w: kn.sum((w - 1) * (w - 1)), [(w,)])
    assert {k: getattr(w.opt, k) for k in cls.HYPER} == of_class


def test_the_defaults_are_knet_1_4s():
    # The table of Knet 1.4's reference (Train20): SGD(;lr=0.1), Momentum(;lr=0.05, gamma=0.95), ...
    expected = {"SGD": dict(lr=0.1), "Momentum": dict(lr=0.05, gamma=0.95), "Nesterov": dict(lr=0.05, gamma=0.95),
                "Adagrad": dict(lr=0.05, eps=1e-6), "Rmsprop": dict(lr=0.01, rho=0.9, eps=1e-6),
                "Adadelta": dict(lr=1.0, rho=0.9, eps=1e-6),
                "Adam": dict(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8)}
    for cls in CLASSES:
        assert DEFAULTS[cls.__name__] == dict(gclip=0, **expected[cls.__name__])
    w = np.zeros(3)
    kn.update_(w, np.ones(3))  # the 2-argument form is SGD with its default lr
    np.testing.assert_allclose(w, -0.1)


# ---------------------------------------------------------------- all or nothing

def _host(x):
    if hasattr(x, "copy_to_host"):
        return np.array(x.copy_to_host())
    return np.array(x, copy=True)


def _snapshot(params):
    """Copies of every Param's value and of its optimizer's attributes (arrays copied)."""
    out = []
    for p in params:
        opt = None if p.opt is None else {k: (v if v is None or isinstance(v, (int, float)) else _host(v))
                                          for k, v in vars(p.opt).items()}
        out.append((p.opt, _host(p.value), opt))
    return out


def _assert_unchanged(params, before):
    for p, (opt, value, state) in zip(params, before):
        assert p.opt is opt
        np.testing.assert_array_equal(_host(p.value), value)
        if state is not None:
            now = vars(p.opt)
            assert set(now) == set(state)
            for k, v in state.items():
                if v is None or isinstance(v, (int, float)):
                    assert now[k] == v, k
                else:
                    np.testing.assert_array_equal(_host(now[k]), v, err_msg=k)


def _three(rng, opt=lambda: kn.Adam(lr=0.01)):
    return [kn.Param(rng.standard_normal(shape), opt()) for shape in ((3, 4), (4,), (4, 2))]


def _grads(rng, params):
    return [rng.standard_normal(np.shape(p.value)) for p in params]


BAD_THIRD = {
    "read-only": lambda p, g: (setattr(p.value.flags, "writeable", False), g)[1],
    "complex gradient": lambda p, g: g + 1j,
    "string gradient": lambda p, g: np.full(g.shape, "x"),
    "wrong shape": lambda p, g: g.T,
    "float16 weight": lambda p, g: (setattr(p, "value", p.value.astype(np.float16)), g)[1],
}


@pytest.mark.parametrize("bad", BAD_THIRD)
@pytest.mark.parametrize("gclip", [0, 0.1])
def test_a_failing_update_changes_no_parameter_and_no_state(bad, gclip):
    rng = np.random.default_rng(0)
    params = _three(rng, lambda: kn.Adam(lr=0.01, gclip=gclip))
    kn.update_(params, _grads(rng, params))  # a good step first: the moments and t exist
    kn.update_(params, _grads(rng, params))
    assert all(p.opt.t == 2 and np.any(p.opt.fstm != 0) for p in params)
    grads = _grads(rng, params)
    grads[2] = BAD_THIRD[bad](params[2], grads[2])
    before = _snapshot(params)
    with pytest.raises((ValueError, TypeError)):
        kn.update_(params, grads)
    _assert_unchanged(params, before)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_failing_first_update_creates_no_state(cls):
    rng = np.random.default_rng(1)
    params = _three(rng, lambda: None)
    opts = [cls(), cls(), cls()]
    grads = _grads(rng, params)
    params[2].value.flags.writeable = False
    before = [_host(p.value) for p in params]
    with pytest.raises(ValueError, match="read-only"):
        kn.update_(params, grads, opts)
    for p, value, opt in zip(params, before, opts):
        np.testing.assert_array_equal(p.value, value)
        assert p.opt is None  # not kept: the step did not happen
        assert all(getattr(opt, name) is None for name in cls.STATE)
        assert getattr(opt, "t", 0) == 0


def test_a_failing_update_of_plain_arrays_and_dicts():
    rng = np.random.default_rng(2)
    ws = {"a": rng.standard_normal(3), "b": rng.standard_normal(2)}
    opts = {"a": kn.Momentum(), "b": kn.Momentum()}
    before = {k: v.copy() for k, v in ws.items()}
    with pytest.raises(ValueError, match="shape"):
        kn.update_(ws, {"a": np.ones(3), "b": np.ones(5)}, opts)
    assert all(np.array_equal(ws[k], before[k]) for k in ws)
    assert opts["a"].velocity is None and opts["b"].velocity is None
    kn.update_(ws, {"a": np.ones(3), "b": np.ones(2)}, opts)  # and a good step still works
    np.testing.assert_allclose(ws["a"], before["a"] - 0.05)


def _loss3(a, b, c, x):
    return kn.sum((x @ a + b) @ c)


def test_a_failing_training_iteration_changes_nothing():
    rng = np.random.default_rng(3)
    a, b, c = (kn.Param(rng.standard_normal(s)) for s in ((3, 4), (4,), (4, 2)))
    x = rng.standard_normal((5, 3))
    data = itertools.repeat((a, b, c, x))
    itr = iter(kn.adam(_loss3, data, lr=0.01, gclip=0.5))
    c.value.flags.writeable = False  # the first step fails: no optimizer is set, nothing moves
    before = _snapshot([a, b, c])
    with pytest.raises(ValueError, match="read-only"):
        next(itr)
    _assert_unchanged([a, b, c], before)
    assert a.opt is None and b.opt is None and c.opt is None
    c.value.flags.writeable = True
    itr = iter(kn.adam(_loss3, data, lr=0.01, gclip=0.5))
    next(itr), next(itr)
    assert all(p.opt.t == 2 for p in (a, b, c))
    c.value.flags.writeable = False  # a later step fails: the moments and t stay
    before = _snapshot([a, b, c])
    with pytest.raises(ValueError, match="read-only"):
        next(itr)
    _assert_unchanged([a, b, c], before)
    c.value.flags.writeable = True
    next(iter(kn.adam(_loss3, data)))  # (a generator that raised is finished: a new one resumes)
    assert all(p.opt.t == 3 for p in (a, b, c))


def test_a_failing_update_of_knetarrays_changes_nothing():
    rng = np.random.default_rng(4)
    params = [kn.Param(kn.KnetArray(rng.standard_normal(s)), kn.Adam(lr=0.01, gclip=0.1)) for s in ((3, 4), (4,), (4, 2))]
    kn.update_(params, _grads(rng, params))
    grads = _grads(rng, params)
    before = _snapshot(params)
    with pytest.raises(ValueError, match="shape"):
        kn.update_(params, grads[:2] + [grads[2].T])
    _assert_unchanged(params, before)
    with pytest.raises(TypeError, match="cannot be cast"):
        kn.update_(params, grads[:2] + [grads[2] + 1j])
    _assert_unchanged(params, before)
    params[2].opt.fstm = _host(params[2].opt.fstm)  # state on the host (loaded, say) for a device weight
    with pytest.raises(ValueError, match="shape"):
        kn.update_(params, grads[:2] + [grads[2].T])
    assert isinstance(params[2].opt.fstm, np.ndarray)  # not even moved
    kn.update_(params, grads)  # a good step moves it to the weight's side and runs
    assert all(p.opt.t == 2 for p in params)
    assert not isinstance(_device_data(params[2].opt.fstm), np.ndarray)
    assert not np.array_equal(_host(params[0].value), before[0][1])
