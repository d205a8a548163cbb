"""kn.goldensection and kn.hyperband, and their demos."""
import math
import os
import random
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

import knetc as kn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- goldensection
def quadratic(x):
    return (x[0] - 1.3) ** 2 + 3 * (x[1] + 0.7) ** 2 + 0.5


@pytest.mark.parametrize("dxmin", [0.1, 0.01])
def test_goldensection_quadratic_2d_within_dxmin(dxmin):
    fmin, xmin = kn.goldensection(quadratic, 2, dxmin=dxmin)
    assert isinstance(xmin, np.ndarray) and xmin.shape == (2,)
    assert np.all(np.abs(xmin - [1.3, -0.7]) <= dxmin)
    assert fmin == pytest.approx(quadratic(xmin)) and fmin < 0.5 + 4 * dxmin ** 2


def test_goldensection_starts_at_zero_with_unit_steps():
    calls = []

    def f(x):
        calls.append(x.copy())
        x[:] = 99  # f gets a copy: changing it does not disturb the search
        return float(np.sum((calls[-1] - 2) ** 2))

    fmin, xmin = kn.goldensection(f, 3)
    np.testing.assert_array_equal(calls[0], [0, 0, 0])
    # unit steps, dimension by dimension, each one an improvement here
    np.testing.assert_array_equal(calls[1:4], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    assert np.all(np.abs(xmin - 2) <= 0.1) and fmin <= 3 * 0.1 ** 2


def test_goldensection_nan_is_out_of_range():
    def f(x):  # minimum at x = 3, but nothing above 1.2 is allowed
        return math.nan if x[0] > 1.2 else (x[0] - 3) ** 2

    fmin, xmin = kn.goldensection(f, 1, dxmin=0.01)
    assert 1.2 - 0.05 <= xmin[0] <= 1.2 and fmin == (xmin[0] - 3) ** 2  # near the edge, inside


def test_goldensection_history_is_a_cache():
    calls = []

    def f(x):
        calls.append(tuple(x))
        return quadratic(x)

    history = []
    fmin, xmin = kn.goldensection(f, 2, history=history)
    assert len(calls) == len(set(calls)) == len(history)  # no point evaluated twice
    assert all(fx == quadratic(x) for x, fx in history)
    calls.clear()
    assert kn.goldensection(f, 2, history=history) == (fmin, pytest.approx(xmin))
    assert calls == []  # everything came from the cache


def test_goldensection_verbose_and_arguments(capsys):
    kn.goldensection(lambda x: abs(x[0] - 0.5), 1, dxmin=0.3, accel=2.0, verbose=True)
    assert "goldensection: f0=" in capsys.readouterr().out
    with pytest.raises(ValueError):
        kn.goldensection(quadratic, 0)
    with pytest.raises(ValueError):
        kn.goldensection(quadratic, 2, accel=1.0)


# ---------------------------------------------------------------- hyperband
def synthetic(seed=0):
    """getconfig draws c uniformly in [0, 1]; the loss is (c - 0.3)^2 + 1/r, so more
    resources always help and the best configuration is the one nearest 0.3."""
    rng = random.Random(seed)
    evaluated = []

    def getconfig():
        return rng.random()

    def getloss(c, r):
        loss = (c - 0.3) ** 2 + 1 / r
        evaluated.append((loss, r, c))
        return loss

    return getconfig, getloss, evaluated


def test_hyperband_returns_best_loss_resource_config():
    getconfig, getloss, evaluated = synthetic()
    best = kn.hyperband(getconfig, getloss)
    assert isinstance(best, tuple) and len(best) == 3
    loss, resource, config = best
    assert (best.loss, best.resource, best.config) == (loss, resource, config)
    assert min(evaluated) == (loss, resource, config)  # the best of every evaluation
    assert resource == 27 and isinstance(resource, int)
    assert abs(config - 0.3) < 0.1


def test_hyperband_schedule_knet_defaults():
    getconfig, getloss, evaluated = synthetic(1)
    kn.hyperband(getconfig, getloss, 27, 3)
    # brackets s=3..0: 27x1 9x3 3x9 1x27 | 12x3 4x9 1x27 | 6x9 2x27 | 4x27
    assert Counter(r for _, r, _ in evaluated) == {1: 27, 3: 9 + 12, 9: 3 + 4 + 6, 27: 1 + 1 + 2 + 4}
    assert len({c for _, _, c in evaluated}) == 27 + 12 + 6 + 4  # fresh configurations per bracket


def test_hyperband_promotes_the_best():
    getconfig, getloss, evaluated = synthetic(2)
    kn.hyperband(getconfig, getloss, 9, 3)
    first = [(l, c) for l, r, c in evaluated[:9]]  # bracket s=2: 9 configurations with r=1
    promoted = [c for _, r, c in evaluated[9:12]]  # the best 3 get r=3
    assert sorted(promoted) == sorted(c for _, c in sorted(first)[:3])
    assert all(r == 3 for _, r, _ in evaluated[9:12])


def test_hyperband_maxresource_power_of_reduction():
    getconfig, getloss, evaluated = synthetic(3)
    kn.hyperband(getconfig, getloss, 243, 3)  # log(243)/log(3) is 4.999... in floating point
    assert min(r for _, r, _ in evaluated) == 1  # the s=5 bracket ran


def test_hyperband_nan_losses_never_win():
    configs = iter(range(10 ** 6))

    def getloss(c, r):
        return math.nan if c % 2 else float(c % 7)

    best = kn.hyperband(lambda: next(configs), getloss, 9)
    assert not math.isnan(best.loss) and best.config % 2 == 0
    assert kn.hyperband(lambda: 0, lambda c, r: math.nan, 3) == (math.inf, None, None)


def test_hyperband_arguments():
    with pytest.raises(ValueError):
        kn.hyperband(lambda: 0, lambda c, r: 0, 0)
    with pytest.raises(ValueError):
        kn.hyperband(lambda: 0, lambda c, r: 0, 27, 1)


# ---------------------------------------------------------------- demos
@pytest.mark.parametrize("demo", ["goldensection_demo.py", "hyperband_demo.py"])
def test_demo_runs(demo):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", demo), "--quick"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("best: lr=") and "validation loss" in last


def test_linreg_example_recovers_weights():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "linreg.py")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    losses = [float(line.split()[-1]) for line in lines if line.startswith("epoch")]
    assert len(losses) == 11 and losses[-1] < 0.01 * losses[0] and losses[-1] < losses[1]
    assert float(lines[-1].split()[-1]) < 0.01  # largest error in w and b


def test_goldensection_continues_while_a_step_is_as_long_as_dxmin():
    # Knet loops `while maximum(abs.(dx)) >= dxmin`: with dxmin = 1 the first unit step is
    # tried (stopping at > dxmin returned the start point after one evaluation).
    fmin, xmin = kn.goldensection(lambda x: (x[0] - 5) ** 2, 1, dxmin=1.0)
    assert xmin[0] > 4 and fmin < 1
