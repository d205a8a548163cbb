"""Parameter initialisation (knetc.train.init) and data (knetc.train.data: mnist, minibatch)."""
import gzip
import os
import shutil

import numpy as np
import pytest

import knetc as kn
import knetc.train.init
from knetc.train.data import MNIST_FILES, mnist
from knetc.train.init import atype, fans

MNIST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "data", "mnist")


# ---------------------------------------------------------------- fans and xavier
@pytest.mark.parametrize("shape,expected", [
    ((784, 64), (784, 64)),          # dense (in, out): Knet's (out, in) reversed
    ((10,), (10, 1)),                # 1-D: fan_in = length, fan_out = 1
    ((8, 3, 5, 5), (75, 200)),       # conv (Cout, Cin, KH, KW): fan_in = Cin*KH*KW, fan_out = Cout*KH*KW
    ((4, 6, 2), (12, 8)),            # any N-D: fan_in = size // shape[0], fan_out = size // shape[1]
])
def test_fans_translate_knet_rule(shape, expected):
    assert fans(shape) == expected


@pytest.mark.parametrize("shape", [(784, 64), (10,), (8, 3, 5, 5)])
def test_xavier_uniform_bounds(shape):
    kn.seed_(0)
    fan_in, fan_out = fans(shape)
    s = np.sqrt(6 / (fan_in + fan_out))
    w = kn.xavier_uniform(*shape)
    assert w.shape == shape and w.dtype == np.float64
    assert np.all(np.abs(w) <= s)
    if w.size >= 1000:  # fills the range, roughly uniformly
        assert np.abs(w).max() > 0.95 * s
        assert abs(np.mean(w)) < 0.05 * s
        np.testing.assert_allclose(np.std(w), s / np.sqrt(3), rtol=0.05)


def test_xavier_alias_gain_dtype_and_tuple_dims():
    assert kn.xavier is kn.xavier_uniform
    kn.seed_(3)
    w = kn.xavier(np.float32, 30, 20, gain=2)
    assert w.dtype == np.float32 and w.shape == (30, 20)
    assert np.abs(w).max() <= 2 * np.sqrt(6 / 50) + 1e-6
    assert kn.xavier((3, 4)).shape == (3, 4)
    with pytest.raises(ValueError):
        kn.xavier()
    with pytest.raises(ValueError):
        kn.xavier(3, -1)


def test_xavier_normal_and_gaussian_statistics():
    kn.seed_(1)
    w = kn.xavier_normal(400, 600)
    np.testing.assert_allclose(np.std(w), np.sqrt(2 / 1000), rtol=0.02)
    assert abs(np.mean(w)) < 0.01 * np.sqrt(2 / 1000) * 10
    g = kn.gaussian(500, 400, mean=1.0, std=0.5)
    assert g.shape == (500, 400)
    np.testing.assert_allclose([np.mean(g), np.std(g)], [1.0, 0.5], rtol=0.01)
    g = kn.gaussian(np.float32, 100)
    assert g.dtype == np.float32 and np.std(g) < 0.02


def test_seed_of_any_size_reseeds_everything_or_nothing():
    # 2**63 failed in the dropout counter after the main generator had been reseeded.
    kn.seed_(2 ** 63)
    a = kn.gaussian(4)
    kn.seed_(2 ** 63)
    np.testing.assert_array_equal(kn.gaussian(4), a)
    kn.seed_(7)
    b = kn.gaussian(4)
    with pytest.raises(ValueError, match="0 or more"):
        kn.seed_(-1)
    with pytest.raises(TypeError):
        kn.seed_(1.5)
    kn.seed_(7)
    np.testing.assert_array_equal(kn.gaussian(4), b)


def test_seed_reproducible():
    kn.seed_(42)
    a = [kn.xavier(5, 4), kn.gaussian(3), kn.param(2, 3).value]
    order_a = [xb.tolist() for xb in kn.minibatch(np.arange(10), 5, shuffle=True)]
    kn.seed_(42)
    b = [kn.xavier(5, 4), kn.gaussian(3), kn.param(2, 3).value]
    order_b = [xb.tolist() for xb in kn.minibatch(np.arange(10), 5, shuffle=True)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert order_a == order_b
    kn.seed_(43)
    assert not np.array_equal(kn.xavier(5, 4), a[0])
    rng = knetc.train.init.rng()
    kn.seed_(42)
    assert knetc.train.init.rng() is rng  # reseeded in place


# ---------------------------------------------------------------- param, param0, atype
def test_param_from_dims():
    w = kn.param(784, 64)
    assert isinstance(w, kn.Param)
    assert w.value.shape == (784, 64) and w.value.dtype == np.float32
    assert np.abs(w.value).max() <= np.sqrt(6 / (784 + 64)) + 1e-7
    w = kn.param(3, 4, init=kn.gaussian, atype=np.float64)
    assert w.value.dtype == np.float64 and np.abs(w.value).max() < 0.1
    assert kn.param((2, 5)).value.shape == (2, 5)


def test_param_from_array_converts_and_copies():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    w = kn.param(a)
    assert isinstance(w, kn.Param) and w.value.dtype == np.float32 and w.value.shape == (2, 3)
    np.testing.assert_array_equal(w.value, a)
    w.value[0, 0] = 7
    assert a[0, 0] == 0  # a copy, as Knet's atype(array)
    assert kn.param([1, 2, 3]).value.dtype == np.float32
    assert kn.param(a, atype=lambda x: np.asarray(x, np.float16)).value.dtype == np.float16


def test_param0():
    b = kn.param0(10)
    assert isinstance(b, kn.Param)
    assert b.value.shape == (10,) and b.value.dtype == np.float32 and not b.value.any()
    assert kn.param0(3, 4, atype=np.float64).value.dtype == np.float64


def test_atype_default_float32():
    t = atype()
    assert t.dtype == np.float32 and t.array_type is np.ndarray
    x = t(np.ones(3, dtype=np.int64))
    assert isinstance(x, np.ndarray) and x.dtype == np.float32


def test_param_usable_in_diff():
    kn.seed_(0)
    w, b = kn.param(4, 3), kn.param0(3)
    x = np.ones((2, 4), np.float32)
    y = kn.diff(lambda: kn.sum(x @ w + b))
    np.testing.assert_allclose(kn.grad(y, b), [2, 2, 2])


def test_atype_public_and_honoured():
    assert kn.atype() is atype() and kn.atype().dtype == np.float32
    assert kn.param(2, 2).value.dtype == kn.atype().dtype
    assert kn.param(2, 2, atype=np.float64).value.dtype == np.float64
    assert kn.param0(2, atype="float16").value.dtype == np.float16
    assert kn.param(np.ones(3), atype=kn.atype()).value.dtype == np.float32
    with pytest.raises(TypeError):
        kn.param(2, 2, atype=3)


def test_xavier_conv_fans_match_knet():
    # Knet: a (3,3,16,8) Julia weight has fanin 3*3*16, fanout 3*3*8; ours is (8,16,3,3).
    kn.seed_(0)
    w = kn.xavier(8, 16, 3, 3)
    s = np.sqrt(6 / (3 * 3 * 16 + 3 * 3 * 8))
    assert np.abs(w).max() <= s and np.abs(w).max() > 0.95 * s


# ---------------------------------------------------------------- bilinear
def test_bilinear_factor_2_kernel_and_layout():
    w = kn.bilinear(np.float32, 2, 2, 3, 3)
    assert w.shape == (3, 3, 4, 4) and w.dtype == np.float32  # (Cx, Cy, KH, KW)
    k1 = np.array([0.25, 0.75, 0.75, 0.25])  # FCN's upsample_filt(4), which Knet adapts
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(w[i, j], np.outer(k1, k1) if i == j else 0)


def test_bilinear_odd_factor_and_rectangular():
    k = kn.bilinear(np.float64, 3, 3, 1, 1)[0, 0]
    k1 = np.array([1, 2, 3, 2, 1]) / 3  # size 2f-1 = 5, center 2, 1 - |i-2|/3
    np.testing.assert_allclose(k, np.outer(k1, k1))
    assert k[2, 2] == 1.0
    w = kn.bilinear(np.float64, 2, 3, 2, 2)  # fw=2 (KW=4), fh=3 (KH=5)
    assert w.shape == (2, 2, 5, 4)
    np.testing.assert_allclose(w[1, 1], np.outer(k1, [0.25, 0.75, 0.75, 0.25]))


def test_bilinear_upsamples_by_interpolation():
    # Used as a transposed convolution with stride f (done by hand here), the shifted kernels
    # sum to 1: a constant image stays constant away from the border.
    f = 2
    k = kn.bilinear(np.float64, f, f, 1, 1)[0, 0]
    x = np.ones((5, 5))
    size = (5 - 1) * f + k.shape[0]
    y = np.zeros((size, size))
    for i in range(5):
        for j in range(5):
            y[i * f: i * f + k.shape[0], j * f: j * f + k.shape[1]] += x[i, j] * k
    np.testing.assert_allclose(y[f:-f, f:-f], 1.0)  # interior: the kernel's shifts sum to 1


def test_bilinear_errors():
    with pytest.raises(ValueError, match="equal"):
        kn.bilinear(np.float32, 2, 2, 3, 4)
    with pytest.raises(ValueError, match="positive"):
        kn.bilinear(np.float32, 0, 2, 3, 3)


# ---------------------------------------------------------------- mnist
def test_mnist_shapes_ranges_labels():
    xtrn, ytrn, xtst, ytst = mnist(MNIST_DIR)
    assert xtrn.shape == (8000, 784) and xtst.shape == (2000, 784)
    assert xtrn.dtype == xtst.dtype == np.float32
    assert ytrn.shape == (8000,) and ytst.shape == (2000,)
    assert ytrn.dtype == ytst.dtype == np.int64
    for x in (xtrn, xtst):
        assert x.min() == 0.0 and x.max() == 1.0
    for y in (ytrn, ytst):
        assert set(np.unique(y)) == set(range(10))
    # the official test set begins 7, 2, 1, 0, 4 and ends 4, 5, 6
    assert ytrn[:5].tolist() == [7, 2, 1, 0, 4] and ytst[-3:].tolist() == [4, 5, 6]
    # pixel sums (in bytes) of the first and last image: the loader reads every byte in order
    assert round(float(xtrn[0].sum()) * 255) == 18454 and round(float(xtst[-1].sum()) * 255) == 41833


def test_mnist_default_path():
    assert mnist()[1].shape == (8000,)


def _copy_mnist(tmp_path):
    for name in MNIST_FILES:
        shutil.copy(os.path.join(MNIST_DIR, name), tmp_path / name)
    return tmp_path


def test_mnist_truncated_gzip_raises_value_error(tmp_path):
    folder = _copy_mnist(tmp_path)
    images = folder / MNIST_FILES[0]
    data = images.read_bytes()
    images.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=MNIST_FILES[0]):
        mnist(folder)


def test_mnist_truncated_content_and_bad_magic_raise_value_error(tmp_path):
    folder = _copy_mnist(tmp_path)
    labels = folder / MNIST_FILES[1]
    with gzip.open(labels) as f:
        raw = f.read()
    with gzip.open(labels, "wb") as f:  # a valid gzip whose IDX content is cut short
        f.write(raw[:-10])
    with pytest.raises(ValueError, match=MNIST_FILES[1]):
        mnist(folder)
    with gzip.open(labels, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + raw[4:])
    with pytest.raises(ValueError, match="magic"):
        mnist(folder)


def test_mnist_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=MNIST_FILES[0]):
        mnist(tmp_path)


# ---------------------------------------------------------------- minibatch
def test_minibatch_sizes_drop_partial_by_default():
    x = np.arange(250 * 3).reshape(250, 3)
    y = np.arange(250)
    batches = list(kn.minibatch(x, y, 100))
    assert len(kn.minibatch(x, y, 100)) == 2 and len(batches) == 2
    assert [xb.shape for xb, _ in batches] == [(100, 3), (100, 3)]
    np.testing.assert_array_equal(batches[1][1], np.arange(100, 200))
    np.testing.assert_array_equal(batches[1][0], x[100:200])
    partial = list(kn.minibatch(x, y, 100, partial=True))
    assert [yb.shape for _, yb in partial] == [(100,), (100,), (50,)]
    assert [xb.shape for xb in kn.minibatch(x, 100)] == [(100, 3), (100, 3)]


def test_minibatch_shuffle_is_a_permutation_each_pass():
    x = np.arange(100)
    data = kn.minibatch(x, x * 10, 10, shuffle=True, rng=0)
    first = np.concatenate([xb for xb, _ in data])
    second = np.concatenate([xb for xb, _ in data])
    assert sorted(first.tolist()) == list(range(100)) and sorted(second.tolist()) == list(range(100))
    assert not np.array_equal(first, np.arange(100)) and not np.array_equal(first, second)
    for xb, yb in data:
        np.testing.assert_array_equal(yb, xb * 10)  # x and y stay paired


def test_minibatch_errors():
    with pytest.raises(ValueError, match="instances"):
        kn.minibatch(np.zeros((10, 2)), np.zeros(9), 5)
    with pytest.raises(ValueError, match="batchsize"):
        kn.minibatch(np.zeros((10, 2)), np.zeros(10), 0)
    with pytest.raises(TypeError):
        kn.minibatch(np.zeros((10, 2)), 5, batchsize=5)  # y taken as the batch size, and batchsize too
    assert len(kn.minibatch(np.zeros((250, 2)), np.zeros(250))) == 2  # batchsize defaults to 100


def test_numpy_array_class_as_atype_and_xtype_keeps_the_data():
    # Knet's atype=Array / xtype=Array: np.ndarray was called as a constructor, reading the
    # values as a shape (uninitialised memory of shape (2, 3) for the data [2, 3]).
    p = kn.param(np.array([2, 3]), atype=np.ndarray)
    assert p.value.tolist() == [2, 3] and p.dtype == np.int64
    assert kn.param(3, 4, atype=np.ndarray).shape == (3, 4)
    batches = [xb.tolist() for xb in kn.minibatch(np.array([3, 1, 4, 1, 5, 9]), 2, xtype=np.ndarray)]
    assert batches == [[3, 1], [4, 1], [5, 9]]
