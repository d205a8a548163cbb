"""Training iterators: minimize and friends, converge, progress, training(), and the
compiled training step (compiled forward/backward + fused updates == the eager step)."""
import io
import itertools
import re

import numpy as np
import pytest

import knetc as kn
from knetc import autograd
from knetc.train import iterators


def _quadratic(w, target):
    return kn.sum((w - target) ** 2)


# ---------------------------------------------------------------- minimize and friends

def test_minimize_is_lazy_and_yields_the_losses():
    w = kn.Param(np.zeros(3))
    target = np.ones(3)
    steps = kn.minimize(_quadratic, [(w, target)] * 5, kn.SGD(lr=0.1))
    assert len(steps) == 5 and w.opt is None  # nothing ran yet
    losses = list(steps)
    assert isinstance(losses[0], float) and losses[0] == 3.0
    assert all(a > b for a, b in zip(losses, losses[1:]))
    np.testing.assert_allclose(w.value, 1 - 0.8 ** 5)  # w -= 0.1 * 2 (w - 1), five times
    assert isinstance(w.opt, kn.SGD)


def test_tuples_are_splatted_and_other_items_passed_whole():
    w = kn.Param(np.array([2.0]))
    seen = []

    def loss(*args):
        seen.append(len(args))
        return kn.sum(w * w)

    kn.sgd_(loss, [(1, 2, 3), [4, 5], np.zeros(2)])
    assert seen == [3, 1, 1]


def test_params_restricts_the_update():
    a, b = kn.Param(np.ones(2)), kn.Param(np.ones(2))
    kn.sgd_(lambda: kn.sum(a * b), [()], params=[a])
    np.testing.assert_allclose(a.value, 0.9)
    np.testing.assert_array_equal(b.value, 1.0)
    model = {"layer": [a]}  # params may be any structure holding Params
    kn.sgd_(lambda: kn.sum(a * b), [()], params=model)
    np.testing.assert_array_equal(b.value, 1.0)


@pytest.mark.parametrize("name, cls, defaults", [
    ("sgd", kn.SGD, dict(lr=0.1)),
    ("momentum", kn.Momentum, dict(lr=0.05, gamma=0.95)),
    ("nesterov", kn.Nesterov, dict(lr=0.05, gamma=0.95)),
    ("adagrad", kn.Adagrad, dict(lr=0.05, eps=1e-6)),
    ("rmsprop", kn.Rmsprop, dict(lr=0.01, rho=0.9, eps=1e-6)),
    ("adadelta", kn.Adadelta, dict(lr=1.0, rho=0.9, eps=1e-6)),
    ("adam", kn.Adam, dict(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8)),
])
def test_each_iterator_sets_its_optimizer_with_knets_defaults(name, cls, defaults):
    w = kn.Param(np.zeros(2))
    result = getattr(kn, name + "_")(_quadratic, [(w, np.ones(2))], gclip=5.0)
    assert result is None
    assert type(w.opt) is cls and w.opt.gclip == 5.0
    assert {k: getattr(w.opt, k) for k in defaults} == defaults
    assert np.all(w.value > 0)  # one step towards the target


def test_minimize_defaults_to_adam_and_minimize_returns_none():
    w = kn.Param(np.zeros(2))
    assert kn.minimize_(_quadratic, [(w, np.ones(2))] * 3) is None
    assert isinstance(w.opt, kn.Adam) and w.opt.t == 3


def test_iterators_compose_with_itertools():
    w = kn.Param(np.zeros(2))
    data = [(w, np.ones(2))]
    losses = list(itertools.islice(kn.adam(_quadratic, itertools.cycle(data), lr=0.1), 7))
    assert len(losses) == 7 and w.opt.t == 7


# ---------------------------------------------------------------- converge

def test_converge_stops_on_a_rising_sequence():
    rising = [5.0, 4.0, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0]
    got = list(kn.converge(iter(rising)))
    # Knet's rule by hand: avgp becomes positive at the third rise.
    avgx, avgp, expected = rising[0], 0.0, []
    for x in rising:
        p = x - avgx
        avgx = 0.1 * x + 0.9 * avgx
        avgp = 0.1 * p + 0.9 * avgp
        if avgp > 0:
            break
        expected.append(x)
    assert got == expected and len(got) < len(rising)


def test_converge_runs_through_a_falling_sequence():
    falling = [1 / (k + 1) for k in range(200)]
    assert list(kn.converge(falling, alpha=0.5)) == falling
    assert kn.converge_(falling) is None


def test_converge_stops_training_on_cycled_data():
    w = kn.Param(np.zeros(2))
    rng = np.random.default_rng(0)
    data = [(w, np.ones(2) + 0.1 * rng.standard_normal(2)) for _ in range(5)]
    losses = list(kn.converge(kn.sgd(_quadratic, itertools.cycle(data), lr=0.1)))
    assert 5 < len(losses) < 1000  # it stops once the noisy loss stops falling
    np.testing.assert_allclose(w.value, 1.0, atol=0.2)


# ---------------------------------------------------------------- progress

BAR = re.compile(r"┣([█▏▎▍▌▋▊▉ ]{20})┫ "  # bar, percent, done/total, elapsed/estimate, speed, message
                 r"\[(\d+\.\d\d)%, (\d+)/(\d+), (\d\d:\d\d)/(\d\d:\d\d|--:--), (\d+\.\d\d)(i/s|s/i)\] (.*)")
UNSIZED = re.compile(r"\[(\d+), (\d\d:\d\d), (\d+\.\d\d)(i/s|s/i)\] (.*)")


def test_progress_bar_for_a_sized_iterator():
    out = io.StringIO()
    values = list(kn.progress(lambda p: f"{p.currval:.3f}", [1.5, 2.5, 3.5, 4.5], io=out))
    assert values == [1.5, 2.5, 3.5, 4.5]
    lines = out.getvalue().split("\r")[1:]
    assert len(lines) == 2  # the first item and the end (within one second)
    first, last = BAR.fullmatch(lines[0]), BAR.fullmatch(lines[1].rstrip("\n"))
    assert first.group(2, 3, 4, 9) == ("25.00", "1", "4", "1.500")
    assert first.group(1) == "█████" + " " * 15
    assert last.group(1) == "█" * 20 and last.group(2, 3, 4, 9) == ("100.00", "4", "4", "4.500")
    assert out.getvalue().endswith("\n")


def test_progress_for_an_unsized_iterator_and_the_default_message():
    out = io.StringIO()
    kn.progress_((x for x in range(3)), io=out)
    lines = out.getvalue().split("\r")[1:]
    assert [UNSIZED.fullmatch(line.rstrip("\n")).group(1, 5) for line in lines] == [("1", ""), ("3", "")]


def test_progress_updates_every_steps_and_reports_slow_speeds(monkeypatch):
    clock = itertools.count(0.0, 10.0)  # every reading of the clock is 10 s later
    monkeypatch.setattr(iterators, "_clock", lambda: next(clock))
    out = io.StringIO()
    assert len(kn.progress(range(10))) == 10
    kn.progress_(lambda p: p.curriter, range(10), steps=3, io=out)
    lines = [BAR.fullmatch(line.rstrip("\n")) for line in out.getvalue().split("\r")[1:]]
    assert [m.group(3) for m in lines] == ["1", "3", "6", "9", "10"]  # as Knet: 1, steps, +steps..., last
    assert all(m.group(8) == "s/i" for m in lines)
    assert lines[0].group(7) == "10.00" and lines[1].group(7) == "5.00"  # 1 item in 10 s, then 2 in 10 s
    assert lines[-1].group(5, 6) == ("00:50", "00:50")  # elapsed / estimated total


def test_progress_estimate_leaves_out_a_first_step_that_compiled(monkeypatch):
    # The first step takes 100 s (compiling), every later one 1 s: the estimate and the final
    # speed come from the later steps (issue 17: it showed "00:16/51:49, 15.55s/i").
    # the clock is read at the start, then at each line: steps 1, 50, 100, 150, 200, the end
    times = iter([0.0, 100.0, 149.0, 199.0, 249.0, 299.0, 299.0])
    monkeypatch.setattr(iterators, "_clock", lambda: next(times))
    out = io.StringIO()
    kn.progress_(range(200), steps=50, io=out)
    lines = [BAR.fullmatch(line.rstrip("\n")) for line in out.getvalue().split("\r")[1:]]
    assert [m.group(3) for m in lines] == ["1", "50", "100", "150", "200", "200"]
    assert lines[0].group(5, 6) == ("01:40", "--:--")  # one step so far: no estimate yet
    # at step 50: 149 s elapsed, 49 steps in 1 s each after the first, 150 left: 299 s in all
    assert lines[1].group(5, 6) == ("02:29", "04:59")
    assert lines[3].group(6) == "04:59"
    assert lines[-1].group(5, 6, 7, 8) == ("04:59", "04:59", "1.00", "i/s")  # 199 steps in 199 s


def test_progress_pieces_match_knets_example():
    # ┣█████████████████▎  ┫ [86.83%, 903/1040, 01:36/01:50, 9.42i/s] 3.87835
    assert iterators._bar(903, 1040) == "┣█████████████████▎  ┫ "
    assert iterators._format_time(96) == "01:36" and iterators._format_time(3725) == "01:02:05"
    assert iterators._format_speed(9.4249) == "9.42i/s" and iterators._format_speed(0.25) == "4.00s/i"


# ---------------------------------------------------------------- training()

def test_training_is_true_only_inside_diff():
    seen = []
    w = kn.Param(np.ones(2))

    def loss(w):
        seen.append(kn.training())
        return kn.sum(w * w)

    assert not kn.training()
    kn.diff(loss, w)
    loss(w)
    kn.sgd_(loss, [w])
    assert seen == [True, False, True] and not kn.training()


# ---------------------------------------------------------------- the compiled training step

def _mlp_loss(model, x, y):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, y)


def _model(seed):
    rng = np.random.default_rng(seed)
    return [(kn.Param(0.5 * rng.standard_normal((6, 8))), kn.Param(np.zeros(8))),
            (kn.Param(0.5 * rng.standard_normal((8, 3))), kn.Param(np.zeros(3)))]


def test_compiled_training_step_equals_the_eager_step(monkeypatch):
    compiled = kn.compile(_mlp_loss, target="cpu")
    rng = np.random.default_rng(7)
    batches = [(rng.standard_normal((5, 6)), rng.integers(0, 3, 5)) for _ in range(10)]
    eager_model, compiled_model = _model(1), _model(1)
    eager = kn.adam(_mlp_loss, [(eager_model, x, y) for x, y in batches], lr=0.01)
    fast = kn.adam(compiled, [(compiled_model, x, y) for x, y in batches], lr=0.01)
    for step, (eager_loss, compiled_loss) in enumerate(zip(eager, fast)):
        assert compiled_loss == pytest.approx(eager_loss, rel=1e-10)
        for pe, pc in zip(kn.params(eager_model), kn.params(compiled_model)):
            np.testing.assert_allclose(pc.value, pe.value, rtol=1e-10, atol=1e-10)
        assert compiled.compilations == 1  # compiled at the first step, reused after
    assert step == 9 and all(p.opt.t == 10 for p in kn.params(compiled_model))
    # The step really is compiled: diff records ONE node (forward and adjoint are kernels),
    # counted as its backward pass starts (diff runs it before returning, then frees the nodes).
    recorded, backward = [], autograd._backward
    monkeypatch.setattr(autograd, "_backward", lambda y: recorded.append(len(y.tape.nodes)) or backward(y))
    y = kn.diff(compiled, compiled_model, *batches[0])
    assert recorded == [1] and len(kn.params(y)) == 4
    spec = compiled.specializations()[0]
    assert spec.forward is not None and spec.backward is not None


def test_a_partial_last_batch_compiles_once():
    compiled = kn.compile(_mlp_loss, target="cpu")
    model = _model(2)
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    data = [(model,) + batch for batch in kn.minibatch(x, y, 4, partial=True)]  # 4, 4, 2
    counts = [compiled.compilations for _ in kn.adam(compiled, data * 3)]
    assert counts == [1, 1, 2, 2, 2, 2, 2, 2, 2]  # the partial batch: one more specialization, reused


def test_progress_takes_a_string_message_and_refuses_other_values():
    out = io.StringIO()
    kn.progress_("training", [1, 2, 3], io=out)
    assert out.getvalue().rstrip().endswith("training")
    with pytest.raises(TypeError, match="msg must be a function of the Progress"):
        kn.progress(5, [1, 2])
