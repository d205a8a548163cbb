"""Numerical gradient checks, as AutoGrad's `gcheck` (Params) and `gradcheck` (first argument).

Both compare the gradients knetc computes (eager tape, or the compiled adjoint for a
`@kn.compile` function) with central differences at a few entries of each array, print
what they compare when asked, and return True when every entry agrees.
"""
import numpy as np

from . import pytree
from .autograd import diff, grad, params, value_of
from .ops.reduce import sum as _sum
from .train.init import rng  # knetc's generator: kn.seed_ makes the choice reproducible


def _verbosity(verbose):
    return int(verbose) if not isinstance(verbose, bool) else (1 if verbose else 0)


def _close(a, n, atol, rtol):
    """Julia's isapprox for numbers: |a - n| <= max(atol, rtol * max(|a|, |n|))."""
    return abs(a - n) <= max(atol, rtol * max(abs(a), abs(n)))


def _report(verbosity, ok, what, a, n):
    if verbosity >= 2 or (verbosity >= 1 and not ok):
        print(f"{'ok  ' if ok else 'FAIL'} {what}: gradient {a:.6g}, numerical {n:.6g}")


def gcheck(f, *x, kw=(), nsample=10, atol=0.01, rtol=0.05, delta=0.0001, verbose=1):
    """Check the gradient of f(*x, **kw) with respect to the Params in f, x and kw numerically
    (Knet's `@gcheck f(x...; kw...) (opts...)`); returns True if all checked entries agree.

    nsample random entries of each Param are checked by central differences of step `delta`
    and compared as isapprox(gradient, numerical; atol, rtol). A non-scalar result is summed.
    verbose: 0 prints nothing, 1 the failing entries, 2 every entry.

    >>> w = kn.Param(np.random.randn(3, 2))
    >>> kn.gcheck(lambda x: kn.nll(x @ w, np.array([0, 1])), np.random.randn(2, 3))
    True
    """
    kw = dict(kw)
    verbosity = _verbosity(verbose)

    def loss():
        y = f(*x, **kw)
        return y if np.size(value_of(y)) == 1 else _sum(y)
    result = diff(loss)
    candidates = params(result) + [p for p in params((f, x, kw)) if not any(p is q for q in params(result))]
    checked = [p for p in candidates if np.issubdtype(np.asarray(value_of(p)).dtype, np.floating)]
    if not checked and verbosity:
        print("gcheck: no floating-point Params found in f, x or kw")
    ok = True
    for number, p in enumerate(checked):
        g = grad(result, p)
        g = np.zeros(np.shape(value_of(p))) if g is None else np.asarray(value_of(g), dtype=np.float64)
        for index in _sample(np.shape(value_of(p)), nsample):
            n = _numerical_param(loss, p, index, delta)
            good = _close(float(g[index]), n, atol, rtol)
            _report(verbosity, good, f"Param {number} {tuple(p.shape)} at {tuple(map(int, index))}", float(g[index]), n)
            ok &= good
    return bool(ok)


def _sample(shape, n):
    """n random indices of an array of `shape` (all of them when it has no more)."""
    size = int(np.prod(shape))
    flat = np.arange(size) if size <= n else rng().choice(size, n, replace=False)
    return [np.unravel_index(int(i), shape) if shape else () for i in flat]


def _number(y):
    """A one-entry result (any shape: (), (1,), (1, 1); a Param or a plain value) as a float."""
    return np.asarray(value_of(y), dtype=np.float64).item()


def _numerical_param(loss, p, index, delta):
    """Central difference of loss() in entry `index` of the Param p (its value restored after)."""
    original = p.value
    work = np.array(value_of(p), copy=True)  # a fresh array: the original is put back untouched
    saved = work[index]
    try:
        values = []
        for step in (delta, -delta):
            work[index] = saved + step
            p.value = work
            values.append(_number(loss()))
    finally:
        p.value = original
    return (values[0] - values[1]) / (2 * delta)


def gradcheck(f, w, *x, gcheck=10, verbose=False, kwargs=(), delta=None, atol=None, rtol=None,
              kw=(), args=None, nsample=None):
    """Check the gradient of f(w, *x, **kwargs) with respect to its first argument w numerically
    (AutoGrad's gradcheck); returns True if all checked entries agree.

    w may be a number, an array, or a list/tuple/dict of them. In each array the `gcheck`
    entries with the largest gradient are compared with central differences. A result that
    is not a scalar is projected on a random array of its shape. delta, atol and rtol
    default to cbrt(eps) of w's dtype. verbose=True prints every comparison.

    The later AutoGrad's keywords work too: `kw=` (as kwargs=), `nsample=` (as gcheck=) and
    `args=`, the positional arguments to check (0-based, an int or a list; w alone by default):
    `kn.gradcheck(kn.nll, scores, labels, kw=dict(dims=0), args=0)`.

    >>> kn.gradcheck(lambda w, x: kn.sum(kn.tanh(x @ w)), np.random.randn(3, 2), np.random.randn(4, 3))
    True
    """
    if kw and kwargs:
        raise TypeError("gradcheck: give the keyword arguments once, as kw= or as kwargs=")
    kwargs, gcheck = dict(kw or kwargs), gcheck if nsample is None else nsample
    if args is not None:  # check the chosen arguments: as one tuple, the w of a function of them
        positions, everything = ([args] if isinstance(args, (int, np.integer)) else list(args)), [w, *x]
        if any(not -len(everything) <= p < len(everything) for p in positions):
            raise IndexError(f"gradcheck: args={args} names no argument of {len(everything)}")

        def of_chosen(chosen):
            call = list(everything)
            for p, value in zip(positions, chosen):
                call[p] = value
            return f(*call, **kwargs)
        return gradcheck(of_chosen, tuple(everything[p] for p in positions), gcheck=gcheck, verbose=verbose,
                         delta=delta, atol=atol, rtol=rtol)
    leaves, treedef = pytree.flatten(w)
    floating = [np.issubdtype(np.asarray(leaf).dtype, np.floating) for leaf in leaves]
    dtypes = [np.asarray(leaf).dtype for leaf, is_float in zip(leaves, floating) if is_float]
    tolerance = float(np.cbrt(np.finfo(min(dtypes, key=lambda d: d.itemsize) if dtypes else np.float64).eps))
    delta, atol, rtol = (tolerance if v is None else v for v in (delta, atol, rtol))
    y0 = value_of(f(w, *x, **kwargs))
    projection = None if np.size(y0) == 1 else rng().standard_normal(np.shape(y0))

    def scalar(w, *x):
        y = f(w, *x, **kwargs)
        return y if projection is None else _sum(y * projection.astype(np.asarray(value_of(y)).dtype))
    gradients = pytree.flatten(grad(scalar)(w, *x))[0] if leaves else []
    if len(gradients) != len(leaves):  # a gradient of None for the whole of w
        gradients = [None] * len(leaves)
    verbosity = _verbosity(verbose) * 2  # Knet's verbose=true shows every comparison
    ok = True
    for number, (leaf, g, is_float) in enumerate(zip(leaves, gradients, floating)):
        if not is_float:
            continue
        shape = np.shape(leaf)
        g = np.zeros(shape) if g is None else np.asarray(value_of(g), dtype=np.float64).reshape(shape)
        for index in _largest(g, gcheck):
            n = _numerical_leaf(scalar, leaves, treedef, number, index, delta, x)
            good = _close(float(g[index]), n, atol, rtol)
            _report(verbosity, good, f"w leaf {number} {shape} at {tuple(map(int, index))}", float(g[index]), n)
            ok &= good
    return bool(ok)


def _largest(g, n):
    """Indices of the n entries of g with the largest magnitude (all when g has no more)."""
    if g.size <= n:
        return list(np.ndindex(g.shape))
    order = np.argsort(-np.abs(g), axis=None, kind="stable")[:n]
    return [np.unravel_index(int(i), g.shape) for i in order]


def _numerical_leaf(scalar, leaves, treedef, number, index, delta, x):
    values = []
    for step in (delta, -delta):
        leaf = leaves[number]
        if isinstance(leaf, (int, float)):
            moved = float(leaf) + step
        else:
            moved = np.array(value_of(leaf), copy=True)
            moved[index] = moved[index] + step
        tree = pytree.unflatten(treedef, [moved if i == number else v for i, v in enumerate(leaves)])
        values.append(_number(scalar(tree, *x)))
    return (values[0] - values[1]) / (2 * delta)
