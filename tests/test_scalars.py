"""Python numbers and 0-d arrays meeting arrays, eagerly and in compiled code: numpy's
promotion (an integer array and a Python float meet in float64) and 0-d constants."""
import numpy as np
import pytest

import knetc as kn

C = np.array(2.0)  # a 0-d array captured by a compiled function: a program constant


def shifted(x):
    return x + 2.5, x * 0.5, x - 1


def over_c(x):
    return kn.sum(x) / C


def powers(x):
    return kn.sum(2 ** x + x ** x)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_integer_array_and_python_float_meet_in_float64(target):
    x = np.arange(4)
    for got, want in zip(kn.compile(shifted, target=target)(x), (x + 2.5, x * 0.5, x - 1)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    for got, want in zip(shifted(x), (x + 2.5, x * 0.5, x - 1)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_zero_dimensional_constants_and_inputs(target):
    assert kn.compile(over_c, target=target)(np.ones(3)) == 1.5
    assert kn.compile(lambda_free_divide, target=target)(np.ones(3), np.array(4.0)) == 0.75


def lambda_free_divide(x, c):
    return kn.sum(x) / c


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_array_exponents_and_numbers_raised_to_arrays(target):
    x = np.array([0.5, 1.0, 2.0])
    expected = np.log(2) * 2 ** x + x ** x * (np.log(x) + 1)
    np.testing.assert_allclose(kn.grad(powers)(x), expected, rtol=1e-12)
    gradient, value = kn.gradloss(kn.compile(powers, target=target))(x)
    assert np.isclose(value, np.sum(2 ** x + x ** x))
    np.testing.assert_allclose(gradient, expected, rtol=1e-12)


def test_gradient_of_a_device_weight_is_on_the_device():
    w = kn.Param(kn.KnetArray(np.ones(3)))
    x = np.arange(3.0)
    g = kn.grad(kn.diff(lambda: kn.sum(w * x)), w)  # d/dw is x itself, a host array
    assert isinstance(g, kn.KnetArray)
    np.testing.assert_array_equal(np.asarray(g), x)


def numpy_scalar_powers(x):
    return x ** np.float64(2.5), kn.power(x, np.float64(0.5)), x ** np.float32(2.0), x ** np.int64(2), x ** 2.5


@pytest.mark.parametrize("run", ["eager", "param", "compiled"])
def test_a_numpy_scalar_exponent_has_its_dtype(run):
    # NEP 50: np.float64(2.5) is not a weak Python float; float32 ** it is float64, as numpy
    # gives. Compiled code gave float32 (the exponent was taken for a Python number).
    x = np.array([1.5, 2.0, 3.0], np.float32)
    fn = {"eager": numpy_scalar_powers, "param": lambda x: [kn.value(v) for v in numpy_scalar_powers(kn.Param(x))],
          "compiled": kn.compile(numpy_scalar_powers, target="cpu", cache=False)}[run]
    want = (x ** np.float64(2.5), np.power(x, np.float64(0.5)), x ** np.float32(2.0), x ** np.int64(2), x ** 2.5)
    for got, expected in zip(fn(x), want):
        assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
