"""Training that stays on the device (issue 16, item 2), under Numba's CUDA simulator (or a
real GPU with KNETC_TEST_GPU=1).

With KnetArray parameters, a training step (kn.diff of a compiled loss, kn.grad, kn.update_)
copies only the batch up and, when the loss is read, one scalar down: the compiled forward
and backward keep their saved values on the device, the backward reuses the batch the
forward copied up, the seed dy = 1 is copied up once (not per step), and the optimizers
update weights and state in place on the device (state made there, gradient clipping
decided there). Counted by kn.stats() and checked against a spy on Numba's own copies;
the values equal the CPU target's within float32 tolerance. Sizes are tiny: the simulator
runs every CUDA thread in Python."""
import numpy as np
import pytest

import knetc as kn
from knetc.runtime.device import simulator_active

TRANSFERS = ("host_to_device", "device_to_host", "host_to_device_bytes", "device_to_host_bytes")


# ---------------------------------------------------------------- models (tiny)

def mlp_fn(model, x, y):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, y)


def lenet_fn(w, x, y):
    c1, cb1, w3, b3 = w
    x = kn.pool(kn.relu(kn.conv4(c1, x) + cb1))
    return kn.nll(kn.mat(x) @ w3 + b3, y)


LOSSES = {name: (kn.compile(fn, target="cuda"), kn.compile(fn, target="cpu"))
          for name, fn in (("mlp", mlp_fn), ("lenet", lenet_fn))}


def init(name, seed=1):
    """(host parameter values as the model's structure, x, labels)."""
    kn.seed_(seed)
    rng = np.random.default_rng(seed)
    if name == "mlp":
        values = [(kn.xavier(8, 16).astype(np.float32), np.zeros(16, np.float32)),
                  (kn.xavier(16, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32) * 0.1)]
        x = rng.random((5, 8), dtype=np.float32)
    else:
        values = [kn.xavier(3, 1, 3, 3).astype(np.float32), np.zeros((1, 3, 1, 1), np.float32),
                  kn.xavier(27, 4).astype(np.float32), np.zeros(4, np.float32)]
        x = rng.random((2, 1, 8, 8), dtype=np.float32)
    return values, x, rng.integers(0, 4, len(x))


def as_params(values, convert, make_opt):
    if isinstance(values, (list, tuple)):
        return type(values)(as_params(v, convert, make_opt) for v in values)
    return kn.Param(convert(values), make_opt())


def leaves(model):
    return [p for layer in model for p in (layer if isinstance(layer, tuple) else (layer,))]


OPTIMIZERS = {"adam": lambda: kn.Adam(lr=0.01), "sgd": lambda: kn.SGD(lr=0.1)}


def step(loss, model, x, y, read):
    """One training step: diff, grad, update_; the loss as a float when `read`."""
    l = kn.diff(loss, model, x, y)
    for p in leaves(model):
        kn.update_(p, kn.grad(l, p))  # each Param's own optimizer (p.opt)
    return float(kn.value(l)) if read else None


# ---------------------------------------------------------------- a spy on Numba's copies

class NumbaCopies:
    """Counts the simulator's own host<->device copies, to show kn.stats() misses none."""

    def __init__(self, monkeypatch):
        from numba import cuda
        from numba.cuda.simulator.cudadrv import devicearray
        self.up = self.down = 0
        to_device, copy_to_host = cuda.to_device, devicearray.FakeCUDAArray.copy_to_host
        copy_to_device = devicearray.FakeCUDAArray.copy_to_device
        spy = self

        def spy_to_device(*a, **k):
            spy.up += 1
            return to_device(*a, **k)

        def spy_copy_to_host(self, *a, **k):
            spy.down += 1
            return copy_to_host(self, *a, **k)

        def spy_copy_to_device(self, ary, *a, **k):
            spy.up += not isinstance(ary, devicearray.FakeCUDAArray)
            return copy_to_device(self, ary, *a, **k)
        monkeypatch.setattr(cuda, "to_device", spy_to_device)
        monkeypatch.setattr(devicearray.FakeCUDAArray, "copy_to_host", spy_copy_to_host)
        monkeypatch.setattr(devicearray.FakeCUDAArray, "copy_to_device", spy_copy_to_device)


def measured(fn, spy=None):
    """(fn(), the kn.stats() differences over the call, the spy's (up, down) over it)."""
    before, copies = kn.stats(), (spy.up, spy.down) if spy else None
    result = fn()
    after = kn.stats()
    delta = {k: after[k] - before[k] for k in after}
    return result, delta, (spy.up - copies[0], spy.down - copies[1]) if spy else None


@pytest.fixture
def spy(monkeypatch):
    return NumbaCopies(monkeypatch) if simulator_active() else None


def runner_launches(loss):
    """Kernel launches + GEMMs + library calls of one forward and one backward run."""
    (spec,) = [s for s in loss.specializations() if isinstance(s.mode, tuple) and s.mode[0] == "forward"]
    return spec.forward._runner.launches + spec.backward._runner.launches


# ---------------------------------------------------------------- the steps

@pytest.mark.parametrize("name,optimizer", [("mlp", "adam"), ("mlp", "sgd"), ("lenet", "adam"), ("lenet", "sgd")])
def test_training_step_copies_only_the_batch_up_and_the_read_loss_down(name, optimizer, spy):
    values, x, y = init(name)
    loss_cuda, loss_cpu = LOSSES[name]
    make_opt = OPTIMIZERS[optimizer]
    device = as_params(values, kn.KnetArray, make_opt)
    host = as_params(values, np.copy, make_opt)
    assert all(isinstance(p.value, kn.KnetArray) for p in leaves(device))

    step(loss_cuda, device, x, y, read=False)  # the first step uploads constants and the seed, makes state
    host_losses = [step(loss_cpu, host, x, y, read=True) for _ in range(3)]
    for p in leaves(device):  # optimizer state lives on the device, beside the weight
        for state in type(p.opt).STATE:
            assert kn.knetarray.is_device_array(getattr(p.opt, state)), (state, type(getattr(p.opt, state)))

    _, unread, copies = measured(lambda: step(loss_cuda, device, x, y, read=False), spy)
    assert unread["host_to_device"] == 2, unread  # x and the labels: nothing else goes up
    assert unread["host_to_device_bytes"] == x.nbytes + y.nbytes, unread
    assert unread["device_to_host"] == 0 and unread["device_to_host_bytes"] == 0, unread
    assert unread["launches"] == runner_launches(loss_cuda) + len(leaves(device)), unread  # one update each
    if spy is not None:
        assert copies == (2, 0), copies  # Numba saw no copy that kn.stats() did not count

    last, read, copies = measured(lambda: step(loss_cuda, device, x, y, read=True), spy)
    assert read["host_to_device"] == 2 and read["device_to_host"] == 1, read
    assert read["device_to_host_bytes"] == 4, read  # one float32
    if spy is not None:
        assert copies == (2, 1), copies

    np.testing.assert_allclose(last, host_losses[-1], rtol=1e-5, atol=1e-6)
    for d, h in zip(leaves(device), leaves(host)):
        np.testing.assert_allclose(np.asarray(d.value), h.value, rtol=1e-4, atol=1e-6)


def test_compiled_gradient_step_keeps_the_loss_on_the_device(spy):
    values, x, y = init("mlp")
    loss_cuda, loss_cpu = LOSSES["mlp"]
    device = as_params(values, kn.KnetArray, kn.Adam)
    host = as_params(values, np.copy, kn.Adam)
    gradloss_cuda, gradloss_cpu = kn.gradloss(loss_cuda), kn.gradloss(loss_cpu)
    host_losses = []
    for _ in range(2):
        grads, loss = gradloss_cpu(host, x, y)
        host_losses.append(float(loss))
        kn.update_(host, grads)
    kn.update_(device, gradloss_cuda(device, x, y)[0])

    (grads, loss), delta, copies = measured(lambda: gradloss_cuda(device, x, y), spy)
    assert delta["host_to_device"] == 2 and delta["device_to_host"] == 0, delta
    assert isinstance(loss, kn.KnetArray) and loss.shape == (), type(loss)  # a 0-d device value
    assert all(isinstance(g, kn.KnetArray) for layer in grads for g in layer)
    _, delta, _ = measured(lambda: kn.update_(device, grads))
    assert delta["host_to_device"] == delta["device_to_host"] == 0 and delta["launches"] == 4, delta
    value, delta, _ = measured(lambda: float(loss))
    assert delta["device_to_host"] == 1 and delta["device_to_host_bytes"] == 4, delta
    np.testing.assert_allclose(value, host_losses[1], rtol=1e-5, atol=1e-6)
    for d, h in zip(leaves(device), leaves(host)):
        np.testing.assert_allclose(np.asarray(d.value), h.value, rtol=1e-4, atol=1e-6)
    if spy is not None:
        assert copies == (2, 0), copies


def test_new_optimizer_state_is_made_on_the_device(spy):
    w = kn.KnetArray(np.ones((3, 5), np.float32))
    g = kn.KnetArray(np.full((3, 5), 0.5, np.float32))
    opt = kn.Adam(lr=0.1)
    _, delta, copies = measured(lambda: kn.update_(w, g, opt), spy)
    assert delta["host_to_device"] == 0 and delta["device_to_host"] == 0, delta
    assert delta["launches"] == 3, delta  # two zero fills (m, v) and the update
    np.testing.assert_allclose(np.asarray(w), 1 - 0.1, rtol=1e-6)  # Adam's first step: lr * sign(g)
    np.testing.assert_allclose(opt.fstm.copy_to_host(), 0.05, rtol=1e-6)
    if spy is not None:
        assert copies == (0, 0), copies


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradient_clipping_on_the_device_equals_the_host(dtype, spy):
    rng = np.random.default_rng(3)
    w0, g0 = rng.standard_normal((4, 6)).astype(dtype), rng.standard_normal((4, 6)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for gclip in (0.5, 100.0):  # clipped, and not
        host = w0.copy()
        kn.update_(host, g0, kn.SGD(lr=0.1, gclip=gclip))
        device, g = kn.KnetArray(w0), kn.KnetArray(g0)
        _, delta, copies = measured(lambda: kn.update_(device, g, kn.SGD(lr=0.1, gclip=gclip)), spy)
        assert delta["device_to_host"] == delta["host_to_device"] == 0, delta  # the norm is not read on the host
        assert delta["launches"] == 5, delta  # zero, sum of squares, scale, scaled copy, update
        if spy is not None:
            assert copies == (0, 0), copies
        np.testing.assert_allclose(np.asarray(device), host, rtol=tol, atol=tol)


# ---------------------------------------------------------------- the counters themselves

def test_stats_count_launches_and_copies_of_eager_knetarray_ops():
    assert set(kn.stats()) >= {"compilations", "cache_hits", "launches", *TRANSFERS}
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    k, delta, _ = measured(lambda: kn.KnetArray(a))
    assert delta["host_to_device"] == 1 and delta["host_to_device_bytes"] == a.nbytes, delta
    k * 2 + 1  # the numbers go up once, and stay (cached by value)
    k2, delta, _ = measured(lambda: k * 2 + 1)  # two one-op programs, one kernel each
    assert delta["launches"] == 2 and delta["host_to_device"] == delta["device_to_host"] == 0, delta
    host, delta, _ = measured(lambda: np.asarray(k2))
    assert delta["device_to_host"] == 1 and delta["device_to_host_bytes"] == a.nbytes, delta
    np.testing.assert_array_equal(host, a * 2 + 1)


def scaled_sum(x, s):
    return kn.sum(x * s)


def scaled_and_scale(x, s):
    return x * s, s


def test_small_inputs_are_kept_on_the_device_only_when_not_returned():
    """A one-element host input is copied up once per value (the backward's seed); one the
    program returns is copied every run, so writing into the result cannot change the kept copy."""
    f = kn.compile(scaled_sum, target="cuda")
    x = kn.KnetArray(np.ones(4, np.float32))
    two = np.float32(2)
    assert float(f(x, two)) == 8
    _, delta, _ = measured(lambda: f(x, two))
    assert delta["host_to_device"] == 0, delta  # the same value: the kept copy
    _, delta, _ = measured(lambda: f(x, np.float32(3)))
    assert delta["host_to_device"] == 1, delta  # a new value goes up
    assert float(f(x, np.float32(3))) == 12

    g = kn.compile(scaled_and_scale, target="cuda")
    first = g(x, two)[1]
    first += 5  # in place, on the device
    _, delta, _ = measured(lambda: g(x, two))
    assert delta["host_to_device"] == 1, delta  # returned: never kept
    np.testing.assert_array_equal(np.asarray(g(x, two)[0]), [2, 2, 2, 2])


# ---------------------------------------------------------------- state updated in place

def bn_loss(moments):
    """A loss with batchnorm's running statistics (`moments`) and dropout's counter: state
    the compiled step updates in place (runtime/device_state.py)."""
    def loss(w, x, y):
        w1, bn, w2 = w
        h = kn.dropout(kn.relu(kn.batchnorm(x @ w1, moments, bn)), 0.25)
        return kn.nll(h @ w2, y)
    return loss


def test_batchnorm_statistics_and_the_dropout_counter_stay_on_the_device(spy, tmp_path):
    from knetc.ops.normalization import _COUNTER
    from knetc.runtime.device_state import on_host
    rng = np.random.default_rng(4)
    values = [kn.xavier(8, 16).astype(np.float32), kn.bnparams(np.float32, 16), kn.xavier(16, 4).astype(np.float32)]
    x, y = rng.random((6, 8), dtype=np.float32), rng.integers(0, 4, 6)
    on_device, on_cpu = kn.bnmoments(), kn.bnmoments()
    loss_cuda, loss_cpu = kn.compile(bn_loss(on_device), target="cuda"), kn.compile(bn_loss(on_cpu), target="cpu")
    device = [kn.Param(kn.KnetArray(v), kn.SGD(lr=0.1)) for v in values]
    host = [kn.Param(np.copy(v), kn.SGD(lr=0.1)) for v in values]

    kn.seed_(3)
    step(loss_cuda, device, x, y, read=False)  # compiles; the statistics and the counter go up once
    step(loss_cuda, device, x, y, read=False)
    _, counts, copies = measured(lambda: step(loss_cuda, device, x, y, read=False), spy)
    assert counts["host_to_device"] == 2 and counts["device_to_host"] == 0, counts  # the batch only
    if spy is not None:
        assert copies == (2, 0), copies
    device_counter = int(on_host(_COUNTER)[0])  # (copied down: host code reads it)
    kn.seed_(3)
    for _ in range(3):
        step(loss_cpu, host, x, y, read=False)
    assert int(_COUNTER[0]) == device_counter  # the same masks drawn, on the device as on the CPU
    np.testing.assert_allclose(on_device.mean, on_cpu.mean, rtol=1e-5, atol=1e-6)  # (copied down on reading)
    np.testing.assert_allclose(on_device.var, on_cpu.var, rtol=1e-5, atol=1e-6)
    for d, h in zip(device, host):
        np.testing.assert_allclose(np.asarray(d.value), h.value, rtol=1e-4, atol=1e-6)

    # Host code that changes the statistics: the next device run copies them up and uses them.
    on_device.mean, on_cpu.mean = np.zeros((1, 16), np.float32), np.zeros((1, 16), np.float32)
    kn.seed_(5)
    _, counts, _ = measured(lambda: step(loss_cuda, device, x, y, read=False), spy)
    assert counts["host_to_device"] == 4, counts  # the batch, the changed mean, the reseeded counter
    kn.seed_(5)
    step(loss_cpu, host, x, y, read=False)
    np.testing.assert_allclose(on_device.mean, on_cpu.mean, rtol=1e-5, atol=1e-6)

    # kn.save stores the values the device holds
    step(loss_cuda, device, x, y, read=False)
    kn.save(tmp_path / "moments.knetc", moments=on_device)
    np.testing.assert_array_equal(kn.load(tmp_path / "moments.knetc", "moments").mean, on_device.mean)
