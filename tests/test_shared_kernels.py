"""Each distinct kernel is compiled once: kernels are shape-generic and keyed by their text,
so batch sizes, layers, programs and the numbers in an expression share them, and a new
size traces again without compiling (issue "compile each distinct kernel once")."""
import numpy as np
import pytest

import knetc as kn
from knetc import report

RNG = np.random.default_rng(7)


def mlp_loss(model, x, y):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, y)


def _mlp(*sizes):
    return [(RNG.standard_normal((i, o)).astype(np.float32) * 0.3, np.zeros(o, np.float32))
            for i, o in zip(sizes[:-1], sizes[1:])]


def _data(batch, features=12, classes=5):
    return RNG.standard_normal((batch, features)).astype(np.float32), RNG.integers(0, classes, batch)


def _kernel_paths(compiled):
    return {m.__knetc_path__ for m in compiled.generated_modules() if "_kernel_" in m.__knetc_path__}


def test_a_new_batch_size_traces_again_and_compiles_nothing():
    loss = kn.compile(mlp_loss, target="cpu")
    model = _mlp(12, 8, 5)
    gradient = kn.grad(loss)
    gradient(model, *_data(20))
    kernels = _kernel_paths(loss)
    compilations = kn.stats()["compilations"]
    for batch in (7, 33, 20 + 1):
        x, y = _data(batch)
        got = gradient(model, x, y)
        want = kn.grad(mlp_loss)(model, x, y)  # eager
        for (gw, gb), (ww, wb) in zip(got, want):
            np.testing.assert_allclose(gw, ww, rtol=2e-5, atol=1e-6)
            np.testing.assert_allclose(gb, wb, rtol=2e-5, atol=1e-6)
    assert kn.stats()["compilations"] == compilations
    assert _kernel_paths(loss) == kernels  # the same compiled kernels serve every size
    assert len(loss.specializations()) == 4  # each size is its own (cheap) trace and driver


def test_layers_of_the_same_shape_share_their_kernels():
    shallow, deep = kn.compile(mlp_loss, target="cpu"), kn.compile(mlp_loss, target="cpu")
    x, y = _data(6)
    kn.grad(shallow)(_mlp(12, 8, 8, 5), x, y)
    model = _mlp(12, 8, 8, 8, 8, 8, 5)
    for (gw, gb), (ww, wb) in zip(kn.grad(deep)(model, x, y), kn.grad(mlp_loss)(model, x, y)):
        np.testing.assert_allclose(gw, ww, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(gb, wb, rtol=2e-5, atol=1e-6)
    # Three hidden layers more add launches, not kernels: the deep gradient binds exactly
    # the kernels of the shallow one.
    assert _kernel_paths(deep) == _kernel_paths(shallow)
    (executable,) = [e for s in deep.specializations() for e in s.executables()]
    launches = sum(line.strip().startswith("k_") for line in executable.generated.driver.splitlines())
    assert launches >= len(executable.kernel_modules) + 9


def scale_half(x):
    return kn.sum(kn.tanh(x) * 0.5)


def scale_quarter(x):
    return kn.sum(kn.tanh(x) * 0.25)


def test_numbers_in_an_expression_are_kernel_arguments():
    half, quarter = kn.compile(scale_half, target="cpu"), kn.compile(scale_quarter, target="cpu")
    x = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(half(x), np.sum(np.tanh(x) * 0.5), rtol=1e-12)
    np.testing.assert_allclose(quarter(x), np.sum(np.tanh(x) * 0.25), rtol=1e-12)
    assert _kernel_paths(half) == _kernel_paths(quarter)


def test_kernels_are_shared_across_targets_only_by_text():
    cpu = kn.compile(scale_half, target="cpu")
    text = kn.inspect(cpu, RNG.standard_normal((3, 4)), stage="kernels", target="cuda", mode="call")
    assert "@cuda.jit" in text and "@njit" not in text


def test_the_compile_log_says_why_a_call_traced_again(monkeypatch, capsys):
    monkeypatch.setattr(report, "_TOPICS", {"compile", "cache"})
    loss = kn.compile(mlp_loss, target="cpu")
    model = _mlp(12, 8, 5)
    kn.grad(loss)(model, *_data(10))
    kn.grad(loss)(model, *_data(11))
    log = capsys.readouterr().err
    assert "mlp_loss: traced again: new signature (argument leaf 4: float32[10,12] -> float32[11,12]; " \
           "argument leaf 5: int64[10] -> int64[11])" in log
    assert "nothing to compile, all" in log
    # The first specialization of another mode (a call, then its gradient) is no trace *again*:
    # after `knetc build` such a run prints no compile line.
    fresh = kn.compile(mlp_loss, target="cpu")
    fresh(model, *_data(10))
    kn.grad(fresh)(model, *_data(10))
    assert "traced again" not in capsys.readouterr().err


def test_the_driver_frees_buffers_at_their_last_read_and_reuses_them():
    loss = kn.compile(mlp_loss, target="cpu")
    text = kn.inspect(loss, _mlp(12, 8, 8, 5), *_data(16), stage="memory,driver")
    memory = text.split("--- memory ---")[1].split("--- driver ---")[0]
    held, planned = [int(n.replace(",", "")) for n in
                     memory.split("# peak ")[1].split(" with the plan")[0].split(" bytes with every buffer held to the end; ")]
    assert planned < held
    assert "\n    del v" in text.split("--- driver ---")[1]


@pytest.mark.parametrize("batch", [1, 5])
def test_size_one_axes_change_the_kernels_but_not_the_answer(batch):
    loss = kn.compile(mlp_loss, target="cpu")
    model = _mlp(12, 8, 5)
    x, y = _data(batch)
    for (gw, gb), (ww, wb) in zip(kn.grad(loss)(model, x, y), kn.grad(mlp_loss)(model, x, y)):
        np.testing.assert_allclose(gw, ww, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(gb, wb, rtol=2e-5, atol=1e-6)


def tanh_rnn(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] @ W + h @ R + b)
    return kn.mean(h * h)


def _rnn(steps):
    w = [RNG.standard_normal((4, 6)) * 0.5, RNG.standard_normal((6, 6)) * 0.5, RNG.standard_normal(6) * 0.1]
    return w, RNG.standard_normal((steps, 3, 4)), RNG.standard_normal((3, 6))


def unrolled_tanh_rnn(w, xs, h):
    W, R, b = w
    for x in [xs[t] for t in range(xs.shape[0])]:  # (a loop over a list unrolls)
        h = np.tanh(x @ W + h @ R + b)
    return kn.mean(h * h)


def test_an_rnn_loop_compiles_the_same_kernels_at_every_length():
    kernels = {}
    for steps in (9, 40):
        f = kn.compile(tanh_rnn, target="cpu")
        w, xs, h = _rnn(steps)
        got = kn.grad(f)(w, xs, h)
        for g, want in zip(got, kn.grad(tanh_rnn)(w, xs, h)):
            np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-12)
        (executable,) = f.specializations()[0].executables()
        kernels[steps] = _kernel_paths(f)
        driver = executable.generated.driver
        assert f"in range({steps}):" in driver and f"in range({steps - 1}, -1, -1):" in driver  # forward, adjoint
        assert "= v3[t" in driver  # xs[t] is a view of xs, not a kernel's copy
    assert kernels[40] == kernels[9]


def test_an_unrolled_rnn_compiles_the_same_kernels_at_every_length():
    kernels = {}
    for steps in (9, 40):
        f = kn.compile(unrolled_tanh_rnn, target="cpu")
        w, xs, h = _rnn(steps)
        got = kn.grad(f)(w, xs, h)
        for g, want in zip(got, kn.grad(unrolled_tanh_rnn)(w, xs, h)):
            np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-12)
        (executable,) = f.specializations()[0].executables()
        kernels[steps] = _kernel_paths(f)
        driver = executable.generated.driver
        assert not any(line.lstrip().startswith("for ") for line in driver.splitlines())
        assert "v3[0].reshape(" in driver  # xs[t] is a view of xs, not a kernel's copy
        assert all(source.text.count("x8") == 0 for source in executable.generated.kernels.values())  # <= 8 inputs
    # Longer loops launch more, compile nothing more: the gradient sums over the steps are
    # split into kernels of at most 8 inputs, all alike.
    assert kernels[40] - kernels[9] <= {p for p in kernels[40] if "add" in open(p).read().split("\n")[0]}
    assert len(kernels[40]) <= len(kernels[9]) + 2


def test_the_rnn_gradient_passes_gcheck():
    f = kn.compile(tanh_rnn, target="cpu")
    w, xs, h = _rnn(5)
    params = [kn.Param(a) for a in w]
    assert kn.gcheck(lambda p: f(p, xs, h), params)


def test_target_auto_on_a_machine_without_a_driver_does_not_load_numba_cuda(tmp_path):
    import subprocess
    import sys
    from knetc.runtime.device import _driver_library_present
    if _driver_library_present():
        pytest.skip("this machine has a CUDA driver")
    script = tmp_path / "probe.py"
    script.write_text("import sys, knetc as kn\n"
                      "f = kn.compile(lambda x: x, target='auto')\n"
                      "print(f.target, 'numba.cuda' in sys.modules)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["cpu", "False"], out.stderr[-2000:]


def scaled_softplus(x):
    return kn.log(1.0 + kn.exp(x)) * 3.0 - kn.sum(x, dims=1)


def test_large_outputs_split_their_rows_across_threads():
    f = kn.compile(scaled_softplus, target="cpu")
    x = RNG.standard_normal((700, 300))
    np.testing.assert_allclose(f(x), np.log(1.0 + np.exp(x)) * 3.0 - x.sum(axis=1, keepdims=True), rtol=1e-12, atol=1e-12)
    (executable,) = f.specializations()[0].executables()
    assert "in_parallel(k_" in executable.generated.driver
    assert all("prange" not in k.text and "parallel=True" not in k.text for k in executable.generated.kernels.values())


@pytest.mark.parametrize("rows", [0, 1, 2, 3, 17])
def test_in_parallel_covers_every_row_once(rows):
    from numba import njit
    from knetc.runtime.threads import in_parallel

    @njit(nogil=True)
    def count(out, lo, hi):
        for i in range(lo, hi):
            out[i] += 1
    out = np.zeros(rows, np.int64)
    in_parallel(count, rows, out)
    assert out.tolist() == [1] * rows


def _count_rows_in_a_child(queue):
    from numba import njit
    from knetc.runtime.threads import in_parallel

    @njit(nogil=True)
    def count(out, lo, hi):
        for i in range(lo, hi):
            out[i] += 1
    out = np.zeros(9, np.int64)
    in_parallel(count, 9, out)
    queue.put(out.tolist())


def test_in_parallel_works_in_a_forked_child():
    import multiprocessing
    test_in_parallel_covers_every_row_once(5)  # the parent's worker threads exist now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_count_rows_in_a_child, args=(queue,))
    child.start()
    child.join(120)
    assert child.exitcode == 0 and queue.get(timeout=5) == [1] * 9


def test_target_auto_with_a_gpu_but_no_cuda_libraries_compiles_for_the_cpu_and_says_why(monkeypatch):
    from knetc import compiler
    monkeypatch.setattr(compiler, "real_gpu_available", lambda: True)
    monkeypatch.setattr(compiler, "cuda_compiler_available", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"pip install -e \.\[cuda\]"):
        assert compiler.resolve_target("auto") == "cpu"
    monkeypatch.setattr(compiler, "cuda_compiler_available", lambda: True)
    assert compiler.resolve_target("auto") == "cuda"
    assert compiler.resolve_target("cpu") == "cpu"
