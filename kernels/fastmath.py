"""float32 exp, logistic sigmoid, tanh and erf as arithmetic that LLVM vectorizes.

Numba lowers `math.exp` of a float32 to a call of the C library's expf for each element: a
loop over a row cannot use the CPU's vector units (about 4.7 ms per million exps here,
against 0.9 ms for `exp32` below). These are written with multiplies, adds, selects and one
bit cast, so a generated kernel's loop that calls them vectorizes (LLVM inlines them).

Accuracy, measured against float64 over dense grids (tests/test_fastmath.py): exp32 within
2 ulp everywhere, zero below -103.97 and inf above 88.72 as expf; subnormal results
included; NaN passes through. sigm32, tanh32 and erf32 within a few float32 ulp (relative
where the result is far from 0, absolute 1e-7 near their zeros, as the C library's).

kernels/rnn_cpu.py keeps its own rational tanh for the LSTM and GRU gates: compiled with
fastmath there, it is faster (0.8 against 1.3 ms per million) at 3e-7 absolute error.

The coefficients are this project's own least-squares fits on Chebyshev nodes (float64
references: numpy's expm1 and tanh, scipy.special's erf and erfcx).

Only CPU kernels call them (`_Context.vector_call` imports `exp32_cpu`), and only where the
loop vectorizes (`_Context.vectorizes`): elementwise loops, and the row buffer that a
reduction over one axis fills before adding its entries in order. An accumulation over
several axes keeps the C library's functions, which are faster than this code one element
at a time; CUDA has fast single-precision functions of its own.

    >>> from knetc.kernels.fastmath import exp32_cpu
    >>> exp32_cpu(np.float32(1.0))   # 2.7182817
"""
import math

from numba import float32, int32, njit, types
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
# erf(x) = x ERF_SMALL(x^2) for |x| < 1; 1 - e^(-x^2) erfcx(|x|) for 1 <= |x| < 4 with
# erfcx(x) = ERFCX(t), t = (x - 2.5) / 1.5; 1 beyond (erfc(4) is below half a float32 ulp of 1)
ERF_SMALL = (7.882497105658015e-05, -0.0008018854991609483, 0.0051893119425698245, -0.026854328796012683,
             0.11283597463486808, -0.37612626903580343, 1.1283791658815026)
ERFCX = (9.64045152484307e-05, -0.00024550258771906654, 0.0003678686724033891, -0.0009155637844724515,
         0.002425885101264377, -0.005611762780085959, 0.01248403568573224, -0.02699779138428104,
         0.056110958411634625, -0.11152140139065515, 0.210806357528339)
EXP, TANH, ERF_SMALL, ERFCX = (tuple(float32(c) for c in p) for p in (EXP, TANH, ERF_SMALL, ERFCX))


@njit(error_model="numpy", cache=True)
def _horner(x, coefficients):
    """The polynomial with float32 `coefficients` (highest power first) at x (LLVM unrolls it)."""
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
    """e**y for y in [EXP_LOW, EXP_HIGH] (or NaN), with no test of its own: erf32 calls it
    directly (its argument is in [-16, 0]), since one more comparison inlined there stopped
    LLVM from vectorizing the loop (12.6 against 1.4 ms per million)."""
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


@njit(error_model="numpy", cache=True)
def erf32_cpu(x):
    a = abs(x)  # (odd: the sign is copied back, -0.0 included)
    small = a * _horner(a * a, ERF_SMALL)
    b = float32(4.0) if a > float32(4.0) else a  # 1 - erfc(4) rounds to 1; NaN stays NaN
    large = float32(1.0) - _exp32_in_range(-(b * b)) * _horner((b - float32(2.5)) * float32(1.0 / 1.5), ERFCX)
    return math.copysign(small if a < float32(1.0) else large, x)
