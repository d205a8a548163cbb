"""Each public op's own docstring (`help(kn.relu)`): an Op instance would otherwise show the
Op class's. `document()` sets them; tests/test_op_docs.py runs every example as a doctest."""

DOCS = {
    'abs': '''\
abs(x): the absolute value |x|, elementwise (Julia's abs.(x)). Its gradient is sign(x).

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.abs(np.array([-2.0, 0.5]))
    array([2. , 0.5])
''',
    'abs2': '''\
abs2(x): the square x * x, elementwise (Julia's abs2.(x)). Its gradient is 2x.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.abs2(np.array([-3.0, 0.5]))
    array([9.  , 0.25])
''',
    'acos': '''\
acos(x): the inverse cosine, in radians, elementwise; float64 for integer inputs, float32
stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.acos(np.array([1.0, 0.0])).round(4)
    array([0.    , 1.5708])
''',
    'acosh': '''\
acosh(x): the inverse hyperbolic cosine (x >= 1), elementwise; float64 for integer inputs,
float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.acosh(np.array([1.0, 2.0])).round(4)
    array([0.   , 1.317])
''',
    'add': '''\
add(a, b): a + b with numpy broadcasting (the `+` operator on Params and traced values).
Each input's gradient is summed over the axes it was broadcast along.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.add(np.array([1.0, 2.0]), 10.0)
    array([11., 12.])
''',
    'asin': '''\
asin(x): the inverse sine, in radians, elementwise; float64 for integer inputs, float32
stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.asin(np.array([0.0, 1.0])).round(4)
    array([0.    , 1.5708])
''',
    'asinh': '''\
asinh(x): the inverse hyperbolic sine, elementwise; float64 for integer inputs, float32
stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.asinh(np.array([0.0, 1.0])).round(4)
    array([0.    , 0.8814])
''',
    'atan': '''\
atan(x): the inverse tangent, in radians, elementwise; float64 for integer inputs, float32
stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.atan(np.array([0.0, 1.0])).round(4)
    array([0.    , 0.7854])
''',
    'atanh': '''\
atanh(x): the inverse hyperbolic tangent (|x| < 1), elementwise; float64 for integer inputs,
float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.atanh(np.array([0.0, 0.5])).round(4)
    array([0.    , 0.5493])
''',
    'cbrt': '''\
cbrt(x): the real cube root, negative for negative x, elementwise; float64 for integer
inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.cbrt(np.array([-8.0, 27.0]))
    array([-2.,  3.])
''',
    'ceil': '''\
ceil(x): the smallest integer >= x, elementwise, in x's dtype. Its gradient is zero.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.ceil(np.array([-1.5, 0.2]))
    array([-1.,  1.])
''',
    'cos': '''\
cos(x): the cosine of x in radians, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.cos(np.array([0.0, np.pi])).round(4)
    array([ 1., -1.])
''',
    'cosh': '''\
cosh(x): the hyperbolic cosine, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.cosh(np.array([0.0, 1.0])).round(4)
    array([1.    , 1.5431])
''',
    'cospi': '''\
cospi(x): cos(pi * x), exact at integers and halves (Julia's cospi), elementwise; float64
for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.cospi(np.array([0.5, 1.0]))
    array([-0., -1.])
''',
    'digamma': '''\
digamma(x): the digamma function, d/dx log(gamma(x)) (scipy.special.digamma), elementwise;
float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.digamma(np.array([1.0, 2.0])).round(4)
    array([-0.5772,  0.4228])
''',
    'div': '''\
div(a, b): a / b with numpy broadcasting (the `/` operator); integers divide in float64, as
numpy does.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.div(np.array([1.0, 3.0]), 2.0)
    array([0.5, 1.5])
''',
    'elu': '''\
elu(x): the exponential linear unit: x if x > 0 else exp(x) - 1 (Clevert et al. 2015),
elementwise; float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.elu(np.array([-1.0, 2.0])).round(4)
    array([-0.6321,  2.    ])
''',
    'erf': '''\
erf(x): the error function, elementwise; float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.erf(np.array([0.0, 1.0])).round(4)
    array([0.    , 0.8427])
''',
    'erfc': '''\
erfc(x): the complementary error function 1 - erf(x), elementwise; float64 for integer
inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.erfc(np.array([0.0, 1.0])).round(4)
    array([1.    , 0.1573])
''',
    'erfcinv': '''\
erfcinv(x): the inverse of erfc (0 < x < 2), elementwise; float64 for integer inputs,
float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.erfcinv(np.array([1.0, 0.5])).round(4)
    array([-0.    ,  0.4769])
''',
    'erfcx': '''\
erfcx(x): the scaled complementary error function exp(x**2) * erfc(x), elementwise; float64
for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.erfcx(np.array([0.0, 1.0])).round(4)
    array([1.    , 0.4276])
''',
    'erfinv': '''\
erfinv(x): the inverse of erf (-1 < x < 1), elementwise; float64 for integer inputs, float32
stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.erfinv(np.array([0.0, 0.5])).round(4)
    array([0.    , 0.4769])
''',
    'exp': '''\
exp(x): the exponential e**x, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.exp(np.array([0.0, 1.0])).round(4)
    array([1.    , 2.7183])
''',
    'exp10': '''\
exp10(x): 10**x, elementwise; float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.exp10(np.array([0.0, 2.0]))
    array([  1., 100.])
''',
    'exp2': '''\
exp2(x): 2**x, elementwise; float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.exp2(np.array([0.0, 3.0]))
    array([1., 8.])
''',
    'expm1': '''\
expm1(x): exp(x) - 1, accurate for small x, elementwise; float64 for integer inputs, float32
stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.expm1(np.array([0.0, 1e-10]))
    array([0.e+00, 1.e-10])
''',
    'floor': '''\
floor(x): the largest integer <= x, elementwise, in x's dtype. Its gradient is zero.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.floor(np.array([-1.5, 0.7]))
    array([-2.,  0.])
''',
    'gamma': '''\
gamma(x): the gamma function, gamma(n) = (n-1)! at positive integers, elementwise; float64
for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.gamma(np.array([1.0, 5.0]))
    array([ 1., 24.])
''',
    'invx': '''\
invx(x): 1 / x, elementwise (Knet's invx). Its gradient is -1/x**2.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.invx(np.array([2.0, -4.0]))
    array([ 0.5 , -0.25])
''',
    'lgamma': '''\
lgamma(x): log(|gamma(x)|), finite for negative non-integer x (Julia's lgamma), elementwise;
float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.lgamma(np.array([-0.5, 3.0])).round(4)
    array([1.2655, 0.6931])
''',
    'log': '''\
log(x): the natural logarithm, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.log(np.array([1.0, np.e]))
    array([0., 1.])
''',
    'log10': '''\
log10(x): the base-10 logarithm, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.log10(np.array([1.0, 100.0]))
    array([0., 2.])
''',
    'log1p': '''\
log1p(x): log(1 + x), accurate for small x, elementwise; float64 for integer inputs, float32
stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.log1p(np.array([0.0, 1e-10]))
    array([0.e+00, 1.e-10])
''',
    'log2': '''\
log2(x): the base-2 logarithm, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.log2(np.array([1.0, 8.0]))
    array([0., 3.])
''',
    'loggamma': '''\
loggamma(x): log(gamma(x)), NaN where gamma(x) < 0 (Julia's loggamma for real x; kn.lgamma
takes |gamma|), elementwise; float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.loggamma(np.array([-0.5, 3.0])).round(4)
    array([   nan, 0.6931])
''',
    'mul': '''\
mul(a, b): a * b, elementwise with numpy broadcasting (the `*` operator; `@` is kn.matmul).

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.mul(np.array([1.0, 2.0]), np.array([[1.0], [3.0]]))
    array([[1., 2.],
           [3., 6.]])
''',
    'neg': '''\
neg(x): -x, elementwise (the unary `-` operator).

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.neg(np.array([1.0, -2.0]))
    array([-1.,  2.])
''',
    'one': '''\
one(x): an array of ones with x's shape and dtype (numpy's ones_like). Its gradient is zero.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.one(np.array([3.0, 4.0]))
    array([1., 1.])
''',
    'relu': '''\
relu(x): the rectified linear unit max(x, 0), elementwise. Its gradient is 1 where x > 0,
else 0.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.relu(np.array([-1.0, 0.5, 2.0]))
    array([0. , 0.5, 2. ])
''',
    'round': '''\
round(x): rounds to the nearest integer, halves to even (numpy's rint), in x's dtype. Its
gradient is zero.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.round(np.array([0.5, 1.5, 2.7]))
    array([0., 2., 3.])
''',
    'selu': '''\
selu(x): the scaled exponential linear unit 1.0507 * (x if x > 0 else 1.6733 * (exp(x) - 1))
(Klambauer et al. 2017), elementwise; float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.selu(np.array([-1.0, 1.0])).round(4)
    array([-1.1113,  1.0507])
''',
    'sigm': '''\
sigm(x): the logistic sigmoid 1 / (1 + exp(-x)) (Knet's sigm), elementwise; float64 for
integer inputs, float32 stays float32. Its gradient is y * (1 - y).

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.sigm(np.array([0.0, 2.0])).round(4)
    array([0.5   , 0.8808])
''',
    'sign': '''\
sign(x): -1, 0 or 1 by the sign of x, in x's dtype. Its gradient is zero.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.sign(np.array([-2.0, 0.0, 3.0]))
    array([-1.,  0.,  1.])
''',
    'sin': '''\
sin(x): the sine of x in radians, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.sin(np.array([0.0, np.pi / 2]))
    array([0., 1.])
''',
    'sinh': '''\
sinh(x): the hyperbolic sine, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.sinh(np.array([0.0, 1.0])).round(4)
    array([0.    , 1.1752])
''',
    'sinpi': '''\
sinpi(x): sin(pi * x), exact at integers and halves (Julia's sinpi), elementwise; float64
for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.sinpi(np.array([0.5, 1.0]))
    array([1., 0.])
''',
    'sqrt': '''\
sqrt(x): the square root, elementwise; float64 for integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.sqrt(np.array([4.0, 2.0])).round(4)
    array([2.    , 1.4142])
''',
    'sub': '''\
sub(a, b): a - b with numpy broadcasting (the binary `-` operator).

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.sub(np.array([5.0, 7.0]), 2.0)
    array([3., 5.])
''',
    'tan': '''\
tan(x): the tangent of x in radians, elementwise; float64 for integer inputs, float32 stays
float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.tan(np.array([0.0, np.pi / 4])).round(4)
    array([0., 1.])
''',
    'tanh': '''\
tanh(x): the hyperbolic tangent, elementwise; float64 for integer inputs, float32 stays
float32. Its gradient is 1 - y**2.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.tanh(np.array([0.0, 1.0])).round(4)
    array([0.    , 0.7616])
''',
    'trigamma': '''\
trigamma(x): the trigamma function, the derivative of digamma, elementwise; float64 for
integer inputs, float32 stays float32.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.trigamma(np.array([1.0, 2.0])).round(4)
    array([1.6449, 0.6449])
''',
    'trunc': '''\
trunc(x): rounds toward zero, elementwise, in x's dtype. Its gradient is zero.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.trunc(np.array([-1.7, 2.7]))
    array([-1.,  2.])
''',
    'zero': '''\
zero(x): an array of zeros with x's shape and dtype (numpy's zeros_like). Its gradient is
zero.

Works on numpy arrays (numpy's reference), on Params inside kn.diff (with gradients) and
inside @kn.compile (fused into the generated CPU and CUDA kernels).

Example:
    >>> import numpy as np, knetc as kn
    >>> kn.zero(np.array([3.0, 4.0]))
    array([0., 0.])
''',
}


def document(namespace):
    """Give each Op instance named in DOCS its docstring (instance attribute: help() and
    inspect.getdoc() read it instead of the Op class's)."""
    for name, doc in DOCS.items():
        op = namespace.get(name)
        if op is not None and type(op).__doc__ != doc:
            op.__doc__ = doc
