"""Hyperparameter search, as Knet's: `goldensection` and `hyperband`.

See examples/goldensection_demo.py and examples/hyperband_demo.py.
"""
import math
from collections import namedtuple

import numpy as np

GOLDEN = (1 + math.sqrt(5)) / 2  # φ = 1.618...


def goldensection(f, n, dxmin=0.1, accel=GOLDEN, verbose=False, history=None):
    """Minimise f over n real inputs by Knet's concurrent golden-section search; returns
    (fmin, xmin): `fmin, xmin = goldensection(lambda x: (x[0] - 1)**2 + x[1]**2, 2)`.

    f takes a float64 numpy vector of length n and returns a number, or NaN for inputs out
    of range. The search always starts at the zero vector with a step of 1 in each
    dimension, so f should scale and shift its input into a meaningful range: for a
    positive value such as a learning rate use `lr0 * exp(x[0])`, which starts at your
    guess lr0 and moves by multiplicative steps.

    The algorithm (Knet's, combining golden-section search and hill climbing) keeps a step
    dx[i] and an expected gain df[i] per dimension (initially 1 and +inf) and repeatedly
    tries x0 + dx[i] along the dimension i with the largest expected gain:
    - if f improves, x0 moves there, the step grows (dx[i] *= accel) and df[i] becomes
      accel times the improvement; steps that have shrunk below dxmin*accel in the other
      dimensions are reset to ±dxmin*accel (with a non-negative gain) so they are retried
      from the new point;
    - otherwise (NaN counts as f0 + df[i], a failure) the step reverses and shrinks
      (dx[i] = -dx[i]/accel), df[i] becomes (f1 - f0)/accel, and -1 once |dx[i]| < dxmin.
    It stops when every |dx[i]| < dxmin (as Knet's `while maximum(abs.(dx)) >= dxmin`).

    `history` is a cache of [(x, f(x)), ...]: points already evaluated (equal up to a
    relative tolerance of sqrt(eps), as Julia's isapprox) are not evaluated again; pass a
    list to keep or reuse the evaluations. `verbose` prints each step.

    Example:
        >>> import knetc as kn
        >>> fmin, xmin = kn.goldensection(lambda x: (x[0] - 1) ** 2 + x[1] ** 2, 2)
        >>> round(fmin, 4), [round(float(v), 2) for v in xmin]
        (0.0, [1.0, 0.0])
    """
    if history is None:
        history = []
    n = int(n)
    if n < 1:
        raise ValueError(f"goldensection: n must be a positive integer, got {n}")
    if not (accel > 1 and dxmin > 0):
        raise ValueError(f"goldensection: need accel > 1 and dxmin > 0, got accel={accel}, dxmin={dxmin}")
    rtol = math.sqrt(np.finfo(np.float64).eps)

    def feval(x):  # so we do not evaluate the same point twice
        for xh, fh in history:
            xh = np.asarray(xh, dtype=np.float64)
            if xh.shape == x.shape and np.linalg.norm(x - xh) <= rtol * max(np.linalg.norm(x), np.linalg.norm(xh)):
                return fh
        fx = float(f(x.copy()))  # a copy: f may not change our point
        history.append((x.copy(), fx))
        return fx

    x0 = np.zeros(n)
    f0 = feval(x0)
    dx = np.ones(n)
    df = np.full(n, np.inf)
    while np.max(np.abs(dx)) >= dxmin:
        i = int(np.argmax(df))
        x1 = x0.copy()
        x1[i] += dx[i]
        f1 = feval(x1)
        if verbose:
            print(f"goldensection: f0={f0:.6g} x0={x0} f1={f1:.6g} x1={x1} dx={dx} df={df}")
        if math.isnan(f1):
            f1 = f0 + df[i]  # out of range: a failure at least as bad as the gain we hoped for
        if f1 < f0:  # success: accelerate in this direction, retry the small steps elsewhere
            dx[i] *= accel
            df[i] = accel * (f0 - f1)
            x0, f0 = x1, f1
            small = np.abs(dx) < dxmin * accel
            dx[small] = np.sign(dx[small]) * dxmin * accel
            df[small] = np.maximum(df[small], 0)
        else:  # failure: turn around with a shorter step
            dx[i] = -dx[i] / accel
            df[i] = (f1 - f0) / accel
            if abs(dx[i]) < dxmin:
                df[i] = -1
    return f0, x0


HyperbandResult = namedtuple("HyperbandResult", ["loss", "resource", "config"])
HyperbandResult.__doc__ = """hyperband's result: the best loss, the resource it was measured
with, and its configuration (Knet's (loss, resource, config) tuple, with names)."""


def _sort_key(loss):
    return math.inf if math.isnan(loss) else loss  # NaN losses last, as Julia's sortperm


def _halving(getconfig, getloss, n, r, reduction, s, best):
    """Successive halving: n random configurations get r resources each; the best
    1/reduction of them go on with reduction times more, s times."""
    configs = [getconfig() for _ in range(n)]
    for i in range(s + 1):
        ni = n // reduction ** i
        ri = r * reduction ** i
        ri = int(round(ri)) if abs(ri - round(ri)) < 1e-9 else ri
        losses = [float(getloss(c, ri)) for c in configs]
        order = sorted(range(len(configs)), key=lambda k: _sort_key(losses[k]))
        if order and losses[order[0]] < best.loss:
            best = HyperbandResult(losses[order[0]], ri, configs[order[0]])
        configs = [configs[k] for k in order[: ni // reduction]]
    return best


def hyperband(getconfig, getloss, maxresource=27, reduction=3):
    """Hyperparameter search by Hyperband (Li et al. 2016, arXiv:1603.06560), as Knet's:
    `loss, resource, config = hyperband(getconfig, getloss)`.

    - `getconfig()` returns a random configuration (any object, your distribution);
    - `getloss(config, r)` returns the loss of `config` given `r` resources (e.g. epochs; an
      int when it is a whole number, else a float);
    - `maxresource` is the most resources any one configuration gets;
    - `reduction` (η in the paper; 3 is a good value): each round of successive halving
      keeps the best 1/reduction of the configurations and gives them reduction times more.

    For s = smax, ..., 0 (smax = floor(log_reduction(maxresource))) it runs successive
    halving from n = ceil((smax+1) * reduction^s / (s+1)) configurations with
    r = maxresource / reduction^s resources each, trading many cheap trials against few
    long ones. getloss is called afresh for each (config, r): train from scratch, or resume
    from a checkpoint, as you like.

    Returns a `HyperbandResult(loss, resource, config)` named tuple (Knet returns the tuple
    (loss, resource, config)): the lowest loss seen, the resource it was measured with and
    its configuration; `(inf, None, None)` if no loss was below infinity (NaN losses never
    win).

    Example:
        >>> import random, knetc as kn
        >>> random.seed(0)
        >>> loss, resource, config = kn.hyperband(lambda: random.uniform(-1, 1),
        ...                                       lambda c, r: (c - 0.3) ** 2 + 1 / r, maxresource=27)
        >>> resource, bool(abs(config - 0.3) < 0.2)
        (27, True)
    """
    if not maxresource >= 1:
        raise ValueError(f"hyperband: maxresource must be at least 1, got {maxresource}")
    if not (isinstance(reduction, int) and reduction >= 2):
        raise ValueError(f"hyperband: reduction must be an integer >= 2, got {reduction!r}")
    smax = 0  # floor(log(maxresource) / log(reduction)), without floating-point surprises
    while reduction ** (smax + 1) <= maxresource * (1 + 1e-12):
        smax += 1
    budget = (smax + 1) * maxresource
    best = HyperbandResult(math.inf, None, None)
    for s in range(smax, -1, -1):
        n = math.ceil(round(budget / maxresource * reduction ** s / (s + 1), 9))
        r = maxresource / reduction ** s
        best = _halving(getconfig, getloss, n, r, reduction, s, best)
    return best
