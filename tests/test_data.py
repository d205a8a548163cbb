"""kn.minibatch: counts, shuffling, partial batches, xtype/xsize, errors, itertools."""
import itertools

import numpy as np
import pytest

import knetc as kn


def data(n=250, d=3):
    return np.arange(n * d).reshape(n, d), np.arange(n)


# ---------------------------------------------------------------- counts and partial batches
@pytest.mark.parametrize("n,bs,partial,expected", [
    (250, 100, False, [100, 100]),
    (250, 100, True, [100, 100, 50]),
    (200, 100, True, [100, 100]),      # no empty partial batch
    (50, 100, False, []),              # fewer instances than one batch
    (50, 100, True, [50]),
    (0, 10, True, []),
    (7, 1, False, [1] * 7),
])
def test_counts_and_partial(n, bs, partial, expected):
    x, y = data(n)
    d = kn.minibatch(x, y, bs, partial=partial)
    assert len(d) == len(expected)
    assert [xb.shape[0] for xb, _ in d] == expected
    assert [yb.shape[0] for _, yb in d] == expected


def test_order_without_shuffle_and_x_only():
    x, y = data()
    batches = list(kn.minibatch(x, y, 100, partial=True))
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), x)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), y)
    xs = list(kn.minibatch(x, 100))  # minibatch(x, batchsize): batches of x alone
    assert len(xs) == 2 and all(isinstance(xb, np.ndarray) for xb in xs)
    np.testing.assert_array_equal(xs[1], x[100:200])
    assert len(kn.minibatch(x, batchsize=50)) == 5


def test_default_batchsize_and_lists():
    assert len(kn.minibatch(np.zeros((250, 2)))) == 2  # batchsize=100
    d = kn.minibatch([[1, 2], [3, 4], [5, 6]], [0, 1, 0], 2, partial=True)
    assert [yb.tolist() for _, yb in d] == [[0, 1], [0]]


# ---------------------------------------------------------------- shuffling
def test_shuffle_new_order_each_epoch_same_multiset():
    kn.seed_(0)
    x = np.arange(100)
    d = kn.minibatch(x, x * 10, 10, shuffle=True)
    epochs = [np.concatenate([xb for xb, _ in d]) for _ in range(3)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(100))  # each epoch sees every instance once
    assert not np.array_equal(epochs[0], x)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    for xb, yb in d:
        np.testing.assert_array_equal(yb, xb * 10)  # x and y stay paired


def test_shuffle_partial_drops_different_instances_but_never_repeats():
    kn.seed_(1)
    x = np.arange(25)
    d = kn.minibatch(x, 10, shuffle=True)  # 5 instances left out each epoch
    seen = [np.concatenate(list(d)) for _ in range(5)]
    for s in seen:
        assert len(s) == 20 and len(set(s.tolist())) == 20
    assert len({tuple(sorted(s.tolist())) for s in seen}) > 1


def test_shuffle_reproducible_after_seed():
    x = np.arange(50)

    def two_epochs():
        d = kn.minibatch(x, 10, shuffle=True)
        return [xb.tolist() for xb in itertools.chain(d, d)]

    kn.seed_(7)
    a = two_epochs()
    kn.seed_(7)
    assert two_epochs() == a
    kn.seed_(8)
    assert two_epochs() != a


def test_shuffle_with_own_rng():
    x = np.arange(30)
    a = [xb.tolist() for xb in kn.minibatch(x, 10, shuffle=True, rng=3)]
    b = [xb.tolist() for xb in kn.minibatch(x, 10, shuffle=True, rng=np.random.default_rng(3))]
    assert a == b


# ---------------------------------------------------------------- xtype, xsize
def test_xtype_keeps_device_batches_on_the_device():
    x = kn.KnetArray(np.arange(24, dtype=np.float32).reshape(6, 4))
    for xtype, dtype in ((None, np.float32), (np.float32, np.float32), ("float64", np.float64)):
        xb, yb = next(iter(kn.minibatch(x, np.arange(6), 4, xtype=xtype)))
        assert isinstance(xb, kn.KnetArray) and xb.dtype == dtype
        np.testing.assert_array_equal(np.asarray(xb), np.arange(16, dtype=dtype).reshape(4, 4))


def test_xtype_dtype_and_callable():
    x, y = data(10)
    d = kn.minibatch(x, y, 5, xtype=np.float32, ytype="int32")
    for xb, yb in d:
        assert xb.dtype == np.float32 and yb.dtype == np.int32
    d = kn.minibatch(x, y, 5, xtype=kn.atype(), ytype=lambda a: a.tolist())
    xb, yb = next(iter(d))
    assert xb.dtype == kn.atype().dtype and yb == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError, match="xtype"):
        kn.minibatch(x, y, 5, xtype=3)


def test_xsize_first_dimension_adjusted():
    x = np.arange(250 * 784, dtype=np.float32).reshape(250, 784)
    y = np.arange(250 * 2).reshape(250, 2)
    d = kn.minibatch(x, y, 100, partial=True, xsize=(250, 1, 28, 28), ysize=(-1, 2, 1))
    shapes = [(xb.shape, yb.shape) for xb, yb in d]
    assert shapes == [((100, 1, 28, 28), (100, 2, 1))] * 2 + [((50, 1, 28, 28), (50, 2, 1))]
    xb, _ = next(iter(d))
    np.testing.assert_array_equal(xb.reshape(100, 784), x[:100])
    d = kn.minibatch(x, 100, xsize=(0, -1, 28), xtype=np.float64)  # the first entry is ignored
    assert next(iter(d)).shape == (100, 28, 28) and next(iter(d)).dtype == np.float64


def test_xsize_mismatch_is_a_clear_error():
    x = np.zeros((10, 784))
    with pytest.raises(ValueError, match="xsize"):
        kn.minibatch(x, 5, xsize=(28, 28))
    with pytest.raises(ValueError, match="xsize"):
        kn.minibatch(x, 5, xsize=(10, -1, -1))
    with pytest.raises(ValueError, match="ysize"):
        kn.minibatch(x, 5, ysize=(10, 784))  # no y


# ---------------------------------------------------------------- errors
def test_instance_mismatch_error():
    with pytest.raises(ValueError, match=r"x has 10 instances but y has 9"):
        kn.minibatch(np.zeros((10, 2)), np.zeros(9), 5)
    with pytest.raises(ValueError, match="first axis"):
        kn.minibatch(np.zeros((2, 10)), np.zeros(10), 5)  # Knet's layout by mistake
    with pytest.raises(ValueError, match="at least one axis"):
        kn.minibatch(np.float64(3.0), batchsize=1)


@pytest.mark.parametrize("bs", [0, -1, 2.5, True])
def test_bad_batchsize(bs):
    with pytest.raises(ValueError, match="batchsize"):
        kn.minibatch(np.zeros((10, 2)), np.zeros(10), bs)


# ---------------------------------------------------------------- itertools
def test_islice_partial_epoch_and_restart():
    x, y = data(100)
    d = kn.minibatch(x, y, 10)
    first = [yb[0] for _, yb in itertools.islice(d, 3)]
    again = [yb[0] for _, yb in itertools.islice(d, 3)]
    assert first == again == [0, 10, 20]  # each iteration restarts, as Knet's Data
    it = iter(d)  # Knet's Iterators.Stateful(d)
    next(it)
    assert next(it)[1][0] == 10


def test_cycle_runs_forever():
    x, y = data(30)
    d = kn.minibatch(x, y, 10, shuffle=True)
    batches = list(itertools.islice(itertools.cycle(d), 10))
    assert len(batches) == 10 and all(xb.shape == (10, 3) for xb, _ in batches)


def test_repeat_epochs_reshuffle():
    kn.seed_(2)
    x = np.arange(40)
    d = kn.minibatch(x, 10, shuffle=True)
    epochs = list(itertools.chain.from_iterable(itertools.repeat(d, 3)))  # Knet's repeat(d, 3)
    assert len(epochs) == 12
    orders = [np.concatenate(epochs[4 * k: 4 * k + 4]) for k in range(3)]
    assert all(sorted(o.tolist()) == list(range(40)) for o in orders)
    assert not np.array_equal(orders[0], orders[1])
    total = 0
    for _ in range(3):  # repeating with a for loop works the same
        total += sum(1 for _ in d)
    assert total == 12


def test_repr_mentions_batches():
    assert "2 batches" in repr(kn.minibatch(np.zeros((250, 2)), np.zeros(250), 100))


def test_batches_are_copies_so_editing_one_leaves_the_data():
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6)
    for shuffle in (False, True):
        for xb, yb in kn.minibatch(x, y, 3, shuffle=shuffle):
            xb -= 100.0  # e.g. normalising a batch in place
            yb[:] = -1
        np.testing.assert_array_equal(x, np.arange(12.0).reshape(6, 2))
        np.testing.assert_array_equal(y, np.arange(6))
