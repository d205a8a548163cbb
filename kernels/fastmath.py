"""float32 exp, logistic sigmoid, tanh and erf as arithmetic that LLVM vectorizes.

Numba lowers `math.exp` of a float32 to a call of the C library's expf for each element: a
loop over a row cannot use the CPU's vector units (about 4.7 ms per million exps here,
against 0.9 ms for `exp32` below). These are written with multiplies, adds, selects and one
bit cast, so a generated kernel's loop that calls them vectorizes (LLVM inlines them).

Accuracy, measured against float64 over dense grids (tests/test_fastmath.py): exp32 within
2 ulp everywhere, zero below -103.97 and inf above 88.72 as expf; subnormal results
included; NaN passes through. sigm32 and tanh32 within a few float32 ulp (relative where
the result is far from 0, absolute 1e-7 near their zeros, as the C library's). erf32 within
1.02 ulp of every float32 in [0, 4] (1.32 on a CPU without FMA; below), subnormal x
included, and exactly 1 beyond.

erf32 computes two pieces and selects one, neither with an exp: x + x T(x^2) below 1, and
1 - P(v)/Q(v), v = |x| - 1, from 1 to 4: 0.47 ms per million in a loop on one thread here,
against 1.1 for the exp-based erf32 before it (and 0.5 for PyTorch's CPU erf). One rational
function over the whole range, x P(x^2)/Q(x^2), costs a little less, but in float32 it is
6-9 ulp off where erf is near 1: every rounding inside P and Q counts fully there. erf32's
multiply-adds are FMAs where the CPU has them (`_horner_fused`); unfused, as a CPU without
FMA runs them, 0.7 ms per million.

kernels/rnn_cpu.py keeps its own rational tanh for the LSTM and GRU gates: compiled with
fastmath there, it is faster (0.8 against 1.3 ms per million) at 3e-7 absolute error.

The coefficients are this project's own least-squares fits on Chebyshev nodes (float64
references: numpy's expm1 and tanh, scipy.special's erf and erfc), rounded to float32;
erf32's are described where they are defined.

Only CPU kernels call them (`_Context.vector_call` imports `exp32_cpu`; the reductions' max and
min below have CUDA flavours too), and only where the loop vectorizes (`_Context.vectorizes`): elementwise loops, and the row buffer that a
reduction over one axis fills before adding its entries in order. An accumulation over
several axes keeps the C library's functions, which are faster than this code one element
at a time; CUDA has fast single-precision functions of its own.

    >>> from knetc.kernels.fastmath import exp32_cpu
    >>> exp32_cpu(np.float32(1.0))   # 2.7182817
"""
import math

import llvmlite.ir as ir
from numba import float32, int32, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LOG2E = float32(1.4426950408889634)
LN2_HI, LN2_LO = float32(0.693359375), float32(-2.12194440e-4)  # ln 2 = LN2_HI + LN2_LO (LN2_HI exact)
ROUND = float32(12582912.0)  # 1.5 * 2**23: x + ROUND - ROUND rounds x to an integer (|x| < 2**22)
EXP_LOW, EXP_HIGH = float32(-104.0), float32(88.8)  # expf is 0 below about -103.97, inf above 88.72
# e^r = 1 + r + r^2 EXP(r) on |r| <= ln(2)/2
EXP = (0.00019899276222920938, 0.0013933643523623654, 0.00833329848035499, 0.04166646497611046,
       0.16666666719007717, 0.5000000013462221)
# tanh(x) = x + x^3 TANH(x^2) for |x| < TANH_SMALL; else 1 - 2 / (e^(2|x|) + 1)
TANH_SMALL = float32(0.625)
TANH = (0.0022958426499202897, -0.008346981985057195, 0.02176996149973558, -0.05395940600795389,
        0.13333304278557184, -0.3333333317786409)
# erf(x) = x + x ERF_T(x^2) for |x| < 1, ERF_T(s) ~ erf(sqrt(s))/sqrt(s) - 1 on [0, 1]: the x
# added last is most of the value, so the rounding errors of the polynomial and of x ERF_T
# reach the result scaled by |x ERF_T(x^2)| / |erf(x)| <= 0.19 (a tiny x: x + 0.128x, one
# rounding). Fitted relative to erf(x)/x (max 0.02 ulp; 0.04 after rounding to float32).
# erf(x) = 1 - ERFC_P(v) / ERFC_Q(v), v = |x| - 1, for 1 <= |x| <= 4, ~ erfc(1 + v) on [0, 3]
# (ERFC_Q(0) = 1): erfc is at most 0.16 there, so its rounding errors are small against 1.
# Fitted for absolute error (max 0.08 ulp of values in [1/2, 1); 0.17 after rounding), linearized
# as ERFC_P - erfc ERFC_Q divided by the previous iteration's ERFC_Q. Beyond 4: 1 (erfc(4) =
# 1.5e-8 is below half an ulp of 1). Both on 6000 Chebyshev nodes, least squares reweighted
# toward minimax (Lawson: from the fourth of 100 iterations, each node's weight times its
# error; the best iterate kept).
ERF_T = (7.853860204848734e-05, -0.0008010193527716547, 0.005188327709625777, -0.02685381197260979,
         0.11283585150428252, -0.37612625824561086, 0.12837916572687008)
ERFC_P = (0.00033943529546489253, -0.005512370970877645, 0.037652742907639446, -0.1386328252612604,
          0.2905177772692364, -0.32889533707784324, 0.15729920233302963)
ERFC_Q = (0.02961583816478683, 0.0454269524936165, 0.17458698468832184, 0.2775313958136832,
          0.6544277393460834, 0.5480724960876159, 1.0)
EXP, TANH, ERF_T, ERFC_P, ERFC_Q = (tuple(float32(c) for c in p) for p in (EXP, TANH, ERF_T, ERFC_P, ERFC_Q))


@njit(error_model="numpy", cache=True)
def _horner(x, coefficients):
    """The polynomial with float32 `coefficients` (highest power first) at x (LLVM unrolls it)."""
    p = coefficients[0]
    for i in range(1, len(coefficients)):
        p = p * x + coefficients[i]
    return p


@njit(error_model="numpy", fastmath={"contract"}, cache=True)
def _horner_fused(x, coefficients):
    """_horner, each multiply-add one FMA where the CPU has them (LLVM's `contract` flag on
    these instructions, kept when inlined into a caller compiled without it); a CPU without
    FMA runs a multiply then an add, as _horner."""
    p = coefficients[0]
    for i in range(1, len(coefficients)):
        p = p * x + coefficients[i]
    return p


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 `bits` (LLVM bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.int32), codegen


@njit(error_model="numpy", cache=True)
def _exp32_in_range(y):
    """e**y for y in [EXP_LOW, EXP_HIGH] (or NaN), with no test of its own. (An earlier
    erf32 called it, not exp32_cpu, for its e^(-x^2): exp32_cpu's one more comparison,
    inlined there, stopped LLVM from vectorizing the loop: 12.6 against 1.4 ms per million.)"""
    n = (y * LOG2E + ROUND) - ROUND
    r = (y - n * LN2_HI) - n * LN2_LO
    # times 2**n as two normal powers of two (n in [-150, 128]: subnormal results and inf
    # come out of the last multiply, rounded once)
    half = int32(n) >> int32(1)
    e = (float32(1.0) + r + r * r * _horner(r, EXP)) * _float32_from_bits((half + int32(127)) << int32(23))
    return e * _float32_from_bits((int32(n) - half + int32(127)) << int32(23))


@njit(error_model="numpy", cache=True)
def exp32_cpu(x):
    # Below EXP_LOW the result is 0: computed from y = 0 and multiplied by keep = 0, since
    # multiplying down to 0 takes the CPU's slow path for subnormals (a masked softmax has
    # many -infs: 3.4 against 0.9 ms for its row sums). Arithmetic, not a branch.
    keep = float32(x >= EXP_LOW)
    e = _exp32_in_range(min(max(x, EXP_LOW), EXP_HIGH) * keep) * keep
    return e if x == x else x  # (NaN)


@njit(error_model="numpy", cache=True)
def sigm32_cpu(x):
    e = exp32_cpu(-abs(x))  # in (0, 1]: never overflows
    s = float32(1.0) / (float32(1.0) + e)
    return s if x >= float32(0.0) else e * s  # (NaN: e * s is NaN)


@njit(error_model="numpy", cache=True)
def tanh32_cpu(x):
    a = abs(x)  # (odd: the sign is copied back, -0.0 included)
    small = a + a * ((a * a) * _horner(a * a, TANH))
    large = float32(1.0) - float32(2.0) / (exp32_cpu(float32(2.0) * a) + float32(1.0))
    return math.copysign(small if a < TANH_SMALL else large, x)  # (NaN: large is NaN)


@njit(error_model="numpy", fastmath={"contract"}, cache=True)
def erf32_cpu(x):
    # Both pieces for every x (finite off their ranges), one selected: no branch.
    # contract: x + x ERF_T(x^2) is one FMA too where the CPU has them.
    a = abs(x)  # (odd: the sign is copied back, -0.0 included)
    b = float32(4.0) if a > float32(4.0) else a  # 1 - erfc(4) rounds to 1; NaN stays NaN
    small = b + b * _horner_fused(b * b, ERF_T)
    v = b - float32(1.0)
    large = float32(1.0) - _horner_fused(v, ERFC_P) / _horner_fused(v, ERFC_Q)
    return math.copysign(small if a < float32(1.0) else large, x)  # (NaN: large is NaN)


# A reduction's max or min propagates NaN as numpy's. As a select (`v if v > acc or v != v
# else acc`) LLVM runs it one entry at a time; LLVM's llvm.maximum and llvm.minimum (IEEE
# 754-2019: a NaN wins, and -0 < +0) vectorize as a reduction: a row max over 2048 x 256
# float32 entries took 50-57 us against 320-330 us as the select.

def _ieee_extreme(name):
    @intrinsic
    def extreme(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, signature, args):
            t = args[0].type
            suffix = "f32" if t == ir.FloatType() else "f64"
            return builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t]),
                                                               f"llvm.{name}.{suffix}"), args)
        return a(a, b), codegen
    return extreme


maximum_cpu, minimum_cpu = _ieee_extreme("maximum"), _ieee_extreme("minimum")
_CUDA_SELECTS = {"maximum_cuda": lambda acc, v: v if v > acc or v != v else acc,
                 "minimum_cuda": lambda acc, v: v if v < acc or v != v else acc}


def __getattr__(attribute):
    """maximum_cuda, minimum_cuda: the selects as CUDA device functions, built on first use
    (so CPU-only programs never import numba.cuda)."""
    if attribute not in _CUDA_SELECTS:
        raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
    from numba import cuda
    globals()[attribute] = compiled = cuda.jit(device=True, inline="always")(_CUDA_SELECTS[attribute])
    return compiled
