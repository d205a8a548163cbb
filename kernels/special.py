"""Special functions as plain scalar code, callable inside generated CPU and CUDA kernels.

Each function below is written once, in float64 arithmetic with the `math` module only, so
that the same source compiles as a Numba CPU function and as a CUDA device function. The
generated kernel modules import a flavour by name (see `_Context.call` in
knetc/backend/expressions.py): `digamma_cpu` is `numba.njit(digamma)` and `digamma_cuda` is
`numba.cuda.jit(device=True, inline="always")(digamma)`, each calling the same flavour of the
other helpers.
Flavours are built on first use, so CPU-only programs never import numba.cuda.

    >>> from knetc.kernels.special import digamma_cpu
    >>> digamma_cpu(1.0)   # -0.5772156649015329 (minus Euler's constant)

Domain errors return NaN (or +-inf at poles) like numpy and scipy.special; nothing raises,
and no branch divides by zero or overflows a Python float (the CUDA simulator runs this
code as Python, where those raise).
"""
import math
import sys
import types

import numpy as np

fmod = math.fmod  # C's fmod: exact. Numba's CPU target lacks math.fmod; its flavour uses np.fmod
PI = math.pi
SQRT_PI = 1.7724538509055160273
BIG_INTEGER = 4503599627370496.0  # 2**52: every float64 at least this large is an integer
GAMMA_OVERFLOW = 171.62437695630272  # math.gamma(x) overflows float64 beyond this
LGAMMA_OVERFLOW = 2.55e305  # x * (log(x) - 1) overflows float64 beyond about this
INF = math.inf
NAN = math.nan

# Bernoulli numbers B2, B4, ..., B16 for the asymptotic series of the polygamma functions.
BERNOULLI = (1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 5.0 / 66.0, -691.0 / 2730.0, 7.0 / 6.0, -3617.0 / 510.0)


# ----------------------------------------------------------------------------- rounding
# math.floor and friends return integers in Numba (and overflow for large floats); these
# stay floating point and are exact: x - fmod(x, 1) drops the fraction without rounding.

def trunc(x):
    """Round towards zero. trunc(-2.7) == -2.0; NaN and +-inf pass through."""
    if not abs(x) < BIG_INTEGER:
        return x
    return math.copysign(x - fmod(x, 1.0), x)


def floor(x):
    """The largest integer <= x, as a float."""
    if not abs(x) < BIG_INTEGER:
        return x
    t = x - fmod(x, 1.0)
    return math.copysign(t - 1.0 if t > x else t, x)


def ceil(x):
    """The smallest integer >= x, as a float."""
    if not abs(x) < BIG_INTEGER:
        return x
    t = x - fmod(x, 1.0)
    return math.copysign(t + 1.0 if t < x else t, x)


def rint(x):
    """Round to the nearest integer, halves to even (numpy's round, Julia's round)."""
    if not abs(x) < BIG_INTEGER:
        return x
    r = floor(x)
    d = x - r  # exact below 2**52
    if d > 0.5 or (d == 0.5 and fmod(r, 2.0) != 0.0):
        r += 1.0
    return math.copysign(r, x)


# ----------------------------------------------------------------------------- remainders
# numpy's `%`, `//` and np.fmod, after its npy_divmod: the remainder takes the divisor's
# sign; a zero or infinite operand gives what numpy gives (NaN, inf or 0) without raising.

def fmod_float(a, b):
    """C's fmod: the remainder with the dividend's sign. fmod_float(-5.5, 2.0) == -1.5."""
    if b == 0.0 or abs(a) == INF:
        return NAN
    return fmod(a, b)


def remainder(a, b):
    """numpy's remainder (Python's float %). remainder(-5.5, 2.0) == 0.5."""
    mod = fmod_float(a, b)
    if mod == 0.0:
        return math.copysign(0.0, b)
    if (b < 0.0) != (mod < 0.0):
        mod += b
    return mod


def floor_divide(a, b):
    """numpy's floor_divide (Python's float //). floor_divide(-5.5, 2.0) == -3.0."""
    if b == 0.0:
        return NAN if a == 0.0 or a != a else math.copysign(INF, a) * math.copysign(1.0, b)
    mod = fmod_float(a, b)
    div = (a - mod) / b
    if mod != 0.0 and (b < 0.0) != (mod < 0.0):
        div -= 1.0
    if div == 0.0:
        return math.copysign(0.0, a) * math.copysign(1.0, b)
    result = floor(div)
    return result + 1.0 if div - result > 0.5 else result


def int_remainder(a, b):
    """Integer %: the divisor's sign; 0 for a zero divisor, as numpy."""
    return a * 0 if b == 0 else a % b


def int_floor_divide(a, b):
    return a * 0 if b == 0 else a // b


def int_fmod(a, b):
    """Integer fmod: the dividend's sign; 0 for a zero divisor."""
    if b == 0:
        return a * 0
    mod = a % b
    return mod - b if mod != 0 and (mod < 0) != (a < 0) else mod


# ----------------------------------------------------------------------------- sinpi, cospi

def sinpi(x):
    """sin(pi * x), exact at integers and halves: sinpi(1.0) == 0.0."""
    if not abs(x) < INF:
        return NAN
    r = fmod(abs(x), 2.0)  # exact; sin(pi r) on [0, 2) from the nearest quarter
    if r <= 0.25:
        s = math.sin(PI * r)
    elif r <= 0.75:
        s = math.cos(PI * (r - 0.5))
    elif r <= 1.25:
        s = math.sin(PI * (1.0 - r))
    elif r <= 1.75:
        s = -math.cos(PI * (r - 1.5))
    else:
        s = math.sin(PI * (r - 2.0))
    return -s if x < 0 else s


def cospi(x):
    """cos(pi * x), exact at integers and halves: cospi(0.5) == 0.0."""
    if not abs(x) < INF:
        return NAN
    r = fmod(abs(x), 2.0)
    if r <= 0.25:
        return math.cos(PI * r)
    if r <= 0.75:
        return -math.sin(PI * (r - 0.5))
    if r <= 1.25:
        return -math.cos(PI * (r - 1.0))
    if r <= 1.75:
        return math.sin(PI * (r - 1.5))
    return math.cos(PI * (r - 2.0))


# ----------------------------------------------------------------------------- gamma family

def _nonpositive_integer(x):
    return x <= 0.0 and floor(x) == x


def gamma(x):
    """The gamma function; inf at +-0 (signed), NaN at negative integers and -inf."""
    if x != x:
        return x
    if x == 0.0:
        return math.copysign(INF, x)
    if _nonpositive_integer(x):
        return NAN
    if x > GAMMA_OVERFLOW:
        return INF
    if abs(x) < 1e-15:  # gamma(x) = 1/x - Euler's constant + O(x); 1/x overflows below 5.6e-309
        return math.copysign(INF, x) if abs(x) < 5.6e-309 else 1.0 / x - 0.5772156649015329
    if x < -170.0:  # reflection with logarithms: gamma(1 - x) overflows, the result is tiny
        s = sinpi(x)
        magnitude = math.exp(math.log(PI) - math.log(abs(s)) - lgamma(1.0 - x))
        return magnitude if s > 0 else -magnitude
    return math.gamma(x)


def lgamma(x):
    """log|gamma(x)|; inf at the poles and at +-inf."""
    if x != x:
        return x
    if not abs(x) < LGAMMA_OVERFLOW or _nonpositive_integer(x):
        return INF
    return math.lgamma(x)


def loggamma(x):
    """log(gamma(x)) for real x: NaN where gamma(x) < 0 (as scipy.special.loggamma)."""
    if x == -INF or (x < 0.0 and not _nonpositive_integer(x) and fmod(floor(x), 2.0) != 0.0):
        return NAN
    return lgamma(x)


def digamma(x):
    """psi(x) = d/dx log(gamma(x)). digamma(1.0) == -0.5772156649015329."""
    if x != x or x == INF:
        return x
    if x == 0.0:
        return -math.copysign(INF, x)  # as scipy: -inf at +0, inf at -0
    if _nonpositive_integer(x):
        return NAN
    result = 0.0
    if x < 0.0:  # reflection: psi(x) = psi(1 - x) - pi cot(pi x)
        result = -PI * cospi(x) / sinpi(x)
        x = 1.0 - x
    while x < 10.0:  # recurrence psi(x) = psi(x + 1) - 1/x up to where the series is accurate
        result -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (1.0 / 240 - inv2 * (
        1.0 / 132 - inv2 * (691.0 / 32760 - inv2 / 12.0))))))
    return result + math.log(x) - 0.5 / x - series


def polygamma(n, x):
    """The n-th derivative of digamma (n >= 1): polygamma(1, x) is trigamma.

    Poles (x = 0, -1, ...) give (-1)**(n+1) * inf as scipy; x < -0.5 uses the reflection
    formula for n = 1, 2 and the recurrence (a loop of about |x| steps) for n > 2, which
    gives NaN below x = -1e5 rather than loop that long in a kernel."""
    sign = 1.0 if n % 2 == 1 else -1.0  # (-1)**(n+1)
    if x != x:
        return x
    if x == INF:
        return 0.0 * sign
    if x == -INF or _nonpositive_integer(x):
        return sign * INF
    if x < -1e5 and n > 2:  # no reflection formula here, and the recurrence would take |x| steps
        return NAN
    if x < -0.5 and n <= 2:
        s, c = sinpi(x), cospi(x)
        if n == 1:  # psi1(x) = pi^2 / sin^2(pi x) - psi1(1 - x)
            return PI * PI / (s * s) - polygamma_positive(1, 1.0 - x)
        # psi2(x) = psi2(1 - x) - 2 pi^3 cos(pi x) / sin^3(pi x)
        return polygamma_positive(2, 1.0 - x) - 2.0 * PI * PI * PI * c / (s * s * s)
    return polygamma_positive(n, x)


def polygamma_positive(n, x):
    """polygamma(n, x) for x not a pole: recurrence up to x >= 10 + n, then the asymptotic series
    (for x < 0 the recurrence takes about |x| steps)."""
    sign = 1.0 if n % 2 == 1 else -1.0
    factorial = 1.0  # n!
    for k in range(2, n + 1):
        factorial *= k
    if abs(x) < 1e-20:  # only the pole term n!/x^(n+1) matters; it may overflow
        lead = math.log(factorial) - (n + 1) * math.log(abs(x))
        if x < 0.0 and n % 2 == 0:
            sign = -sign  # x^(n+1) < 0
        return sign * (INF if lead > 709.0 else math.exp(lead))
    total = 0.0  # psi_n(x) = psi_n(x + 1) + (-1)^(n+1) n! / x^(n+1)
    while x < 10.0 + n:
        total += factorial * (1.0 / x) ** (n + 1)
        x += 1.0
    inv = 1.0 / x
    power = inv ** n  # 1 / x^n
    series = factorial / n * power + 0.5 * factorial * power * inv  # (n-1)!/x^n + n!/(2 x^(n+1))
    ratio = factorial * (n + 1) / 2.0  # (2k + n - 1)! / (2k)! for k = 1
    power *= inv * inv
    for k in range(len(BERNOULLI)):
        series += BERNOULLI[k] * ratio * power
        m = 2 * k + 2  # next k: multiply by (2k+n)(2k+n+1) / ((2k+1)(2k+2)) with 2k -> m
        ratio *= (m + n) * (m + n + 1) / ((m + 1.0) * (m + 2.0))
        power *= inv * inv
    return sign * (total + series)


def trigamma(x):
    """polygamma(1, x), the derivative of digamma. trigamma(1.0) == pi**2 / 6."""
    return polygamma(1, x)


# ----------------------------------------------------------------------------- error functions
# erfinv and erfcinv: a rough start, then Halley's method on erf or erfc (cubic convergence;
# for f(x) = erf(x) - y, f'' = -2x f', so the step is f / (f' + x f)). Near |y| = 1 the
# iteration runs on erfc(x) - (1 - |y|), which keeps full relative accuracy in the tail.

def _erfinv_center(y):
    """erfinv(y) for |y| <= 0.5."""
    y2 = y * y  # start: the Maclaurin series of erfinv to y^7 (about 1e-4 here)
    x = 0.5 * SQRT_PI * y * (1.0 + y2 * (PI / 12 + y2 * (7 * PI * PI / 480 + y2 * 127 * PI * PI * PI / 40320)))
    for _ in range(4):
        f = math.erf(x) - y
        step = f / (2.0 / SQRT_PI * math.exp(-x * x) + x * f)
        x -= step
        if abs(step) <= 1e-16 * abs(x):
            break
    return x


def _erfcinv_tail(q):
    """erfcinv(q) for 0 < q <= 0.5 (x >= 0.4769)."""
    # start: erfc(x) ~ exp(-x^2) / (x sqrt(pi)), one fixed-point step from sqrt(-log q)
    t = math.sqrt(-math.log(q))
    x = math.sqrt(max(-math.log(q) - math.log(t * SQRT_PI), 0.04))
    for _ in range(8):
        f = math.erfc(x) - q
        step = f / (-2.0 / SQRT_PI * math.exp(-x * x) + x * f)
        x -= step
        if abs(step) <= 1e-16 * x:
            break
    return x


def erfinv(y):
    """The inverse of erf on (-1, 1); +-inf at +-1, NaN outside. erfinv(0.5) == 0.4769362762044699."""
    a = abs(y)
    if not a < 1.0:
        return math.copysign(INF, y) if a == 1.0 else NAN
    if a <= 0.5:
        return _erfinv_center(y)
    return math.copysign(_erfcinv_tail(1.0 - a), y)  # 1 - a is exact for a >= 0.5


def erfcinv(q):
    """The inverse of erfc on (0, 2); inf at 0, -inf at 2, NaN outside."""
    if not 0.0 < q < 2.0:
        return INF if q == 0.0 else (-INF if q == 2.0 else NAN)
    if q > 1.5:
        return -_erfcinv_tail(2.0 - q)  # exact
    if q >= 0.5:
        return _erfinv_center(1.0 - q)  # exact
    return _erfcinv_tail(q)


def erfcx(x):
    """The scaled complementary error function exp(x^2) erfc(x), without overflow."""
    if x != x:
        return x
    if x < -26.7:  # exp(x^2) overflows; erfc(x) is 2
        return INF
    if x < 2.0:
        return math.exp(x * x) * math.erfc(x)
    # Laplace's continued fraction erfc(x) = exp(-x^2)/sqrt(pi) / (x + 1/2/(x + 1/(x + 3/2/(x + ...)))),
    # evaluated from the bottom up (it converges faster as x grows).
    terms = 60 if x < 4.0 else (30 if x < 10.0 else 12)
    f = x
    for k in range(terms, 0, -1):
        f = x + 0.5 * k / f
    return 1.0 / (SQRT_PI * f)


# ----------------------------------------------------------------------------- flavours

# The helpers the kernels may call, and the internal ones they call (all get both flavours).
HELPERS = ("trunc", "floor", "ceil", "rint", "fmod_float", "remainder", "floor_divide", "int_remainder",
           "int_floor_divide", "int_fmod", "sinpi", "cospi", "gamma", "lgamma", "loggamma",
           "digamma", "polygamma", "polygamma_positive", "trigamma", "erfinv", "erfcinv", "erfcx",
           "_nonpositive_integer", "_erfinv_center", "_erfcinv_tail")

_FLAVOURS = {}


def _np_fmod(a, b):
    return np.fmod(a, b)


def flavour(target):
    """{name: compiled helper} for "cpu" (numba.njit) or "cuda" (numba.cuda device functions).

    Each function is rebuilt from its code with a namespace where the other helpers are
    that target's compiled versions, so a CUDA helper calls CUDA helpers."""
    if target not in _FLAVOURS:
        if target == "cpu":
            from numba import njit

            def jit(fn):
                return njit(error_model="numpy", cache=True)(fn)  # x/0 is inf, not ZeroDivisionError
        elif target == "cuda":
            from numba import cuda

            def jit(fn):
                # inlined at Numba IR level: no separate device compilation, which would ask
                # for the current GPU's compute capability (and so fail to build PTX without one)
                return cuda.jit(device=True, inline="always")(fn)
        else:
            raise ValueError(f"knetc.kernels.special: unknown target {target!r} (cpu or cuda)")
        module = sys.modules[__name__]
        namespace = {k: v for k, v in vars(module).items() if isinstance(v, (int, float, tuple)) and k.isupper()}
        namespace["math"] = math
        namespace["fmod"] = jit(_np_fmod) if target == "cpu" else math.fmod
        compiled = {}
        for name in HELPERS:
            source = getattr(module, name)
            fn = types.FunctionType(source.__code__, namespace, name, source.__defaults__)
            fn.__module__ = __name__
            fn.__qualname__ = f"{name}_{target}"
            compiled[name] = namespace[name] = jit(fn)
        _FLAVOURS[target] = compiled
    return _FLAVOURS[target]


def __getattr__(attribute):
    """`digamma_cpu`, `digamma_cuda`, ...: a helper's compiled flavour, built on first use."""
    name, _, target = attribute.rpartition("_")
    if name in HELPERS and target in ("cpu", "cuda"):
        return flavour(target)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
