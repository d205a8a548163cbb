"""Central-difference gradients in float64, the reference the tests check `kn.grad` against."""
import numpy as np

EPS = 1e-6


def numgrad(f, x, eps=EPS):
    """d f / d x for a scalar-valued f of one array, by central differences in float64.

    >>> numgrad(lambda x: np.sum(x ** 2), np.array([1.0, 2.0]))  # about [2, 4]
    """
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        up = float(f(x.copy()))
        x[i] = saved - eps
        down = float(f(x.copy()))
        x[i] = saved
        g[i] = (up - down) / (2 * eps)
    return g


def numgrads(f, *xs, eps=EPS):
    """The numerical gradient of f(*xs) with respect to each of its array arguments."""
    xs = [np.array(x, dtype=np.float64) for x in xs]
    out = []
    for k in range(len(xs)):
        def partial(xk, k=k):
            args = list(xs)
            args[k] = xk
            return f(*args)
        out.append(numgrad(partial, xs[k], eps))
    return out


def assert_close(actual, expected, rtol=1e-6, atol=1e-8):
    """np.testing.assert_allclose with shapes compared too (no silent broadcasting)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
