"""The CUDA target: generated kernels run under the simulator and compile to PTX for sm_90.

Each program below is compiled for "cuda" and "cpu"; forward values and gradients of the
CUDA target must match the CPU target and the eager path (the undecorated function on
numpy arrays). Sizes are tiny: the simulator runs every GPU thread in Python.
"""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import cuda

import knetc as kn
from knetc.backend.cuda import thread_indices

from ptx import assert_modules_compile_to_ptx

RTOL = {np.float64: 1e-10, np.float32: 1e-4}


# ----------------------------------------------------------------------------- programs

@kn.compile(target="cuda")
def broadcast_chain(x, y, b):
    return kn.sum(kn.tanh(x * y + b) - 0.5 * x / (1 + y * y) + (b - y) * 2)


@kn.compile(target="cuda")
def activations(x):
    positive = kn.abs(x) + 0.5
    return kn.sum(kn.relu(x) + kn.sigm(x) * kn.tanh(x) + kn.exp(x) / 4
                  + kn.log(positive) * kn.sqrt(positive) - kn.abs(x))


@kn.compile(target="cuda")
def powers(x):
    return kn.sum(x ** 2 + x ** 3 / 3 + (x * x + 1) ** -0.5 + (kn.abs(x) + 1) ** 1.5)


@kn.compile(target="cuda")
def reductions(x):
    columns = kn.sum(x, dims=0)                              # (1, 5)
    rows = kn.mean(x, dims=1) * kn.maximum(x, dims=1)        # (4, 1)
    return kn.sum(columns * columns) + kn.sum(rows) + kn.maximum(x) - kn.mean(x * x)


@kn.compile(target="cuda")
def normalizations(x, labels):
    return (kn.nll(x, labels) + kn.sum(kn.softmax(x, dims=1) * x)
            + 0.1 * kn.sum(kn.logsoftmax(x, dims=0) ** 2) + kn.logsumexp(x)
            + kn.sum(kn.logsumexp(x, dims=1)))


@kn.compile(target="cuda")
def matmuls(ab, v):
    a, b = ab
    c = kn.tanh(a @ b)                  # (4, 3); its gradient needs a.T @ dy and dy @ b.T
    return kn.sum(c * c) + kn.sum(c @ v) + kn.sum(kn.transpose(b) @ kn.transpose(a))


@kn.compile(target="cuda")
def views(x):
    flat = kn.reshape(x, (4, 6))                       # a view of the stored input
    turned = kn.transpose(x, (2, 0, 1))                # (4, 2, 3), fused into its consumer
    return kn.sum(kn.transpose(flat) * kn.reshape(turned * 2 + 1, (6, 4))) + kn.sum(kn.reshape(x, -1) ** 2)


@kn.compile(target="cuda")
def mlp(model, x, labels):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, labels)


@kn.compile(target="cuda")
def mixed_matmul(a, b):
    return kn.sum(kn.sigm(a @ b))  # float32 @ float64: the float32 operand is cast on the device


def _rng(seed=0):
    return np.random.default_rng(seed)


def _mlp_args(dtype):
    r = _rng(1)
    model = [(r.standard_normal((6, 5)) * 0.5, r.standard_normal(5) * 0.1),
             (r.standard_normal((5, 3)) * 0.5, r.standard_normal(3) * 0.1)]
    model = [(w.astype(dtype), b.astype(dtype)) for w, b in model]
    return model, r.standard_normal((4, 6)).astype(dtype), np.array([0, 2, 1, 2])


# name -> (function, argument builder(dtype), dtypes to test)
PROGRAMS = {
    "broadcast_chain": (broadcast_chain, lambda dt: tuple(a.astype(dt) for a in (
        _rng().standard_normal((3, 4)), _rng(1).standard_normal((3, 1)), _rng(2).standard_normal(4))), (np.float64,)),
    "activations": (activations, lambda dt: (_rng().standard_normal((3, 4)).astype(dt),), (np.float64, np.float32)),
    "powers": (powers, lambda dt: (_rng().standard_normal((2, 5)).astype(dt),), (np.float64,)),
    "reductions": (reductions, lambda dt: (_rng().standard_normal((4, 5)).astype(dt),), (np.float64,)),
    "normalizations": (normalizations, lambda dt: (_rng().standard_normal((4, 3)).astype(dt), np.array([2, 0, 1, 1])),
                       (np.float64,)),
    "matmuls": (matmuls, lambda dt: ((_rng().standard_normal((4, 5)).astype(dt), _rng(1).standard_normal((5, 3)).astype(dt)),
                                     _rng(2).standard_normal(3).astype(dt)), (np.float64,)),
    "views": (views, lambda dt: (_rng().standard_normal((2, 3, 4)).astype(dt),), (np.float64,)),
    "mlp": (mlp, _mlp_args, (np.float64, np.float32)),
    "mixed_matmul": (mixed_matmul, lambda dt: (_rng().standard_normal((3, 4)).astype(np.float32),
                                               _rng(1).standard_normal((4, 2))), (np.float64,)),
}
CASES = [(name, dtype) for name, (_, _, dtypes) in PROGRAMS.items() for dtype in dtypes]
CASE_IDS = [f"{name}-{np.dtype(dtype).name}" for name, dtype in CASES]


@functools.cache
def _cpu_version(name):
    return kn.compile(PROGRAMS[name][0].fn, target="cpu")


@functools.cache
def results(name, dtype):
    """{target: (value, gradient w.r.t. the first argument)} for cuda, eager and cpu."""
    f, make_args, _ = PROGRAMS[name]
    args = make_args(dtype)
    out = {}
    for target, g in (("cuda", f), ("eager", f.fn), ("cpu", _cpu_version(name))):
        out[target] = (g(*args), kn.grad(g)(*args))
    return out


def _leaves(tree):
    if isinstance(tree, (list, tuple)):
        return [leaf for x in tree for leaf in _leaves(x)]
    return [tree]


def assert_close(actual, expected, dtype):
    rtol = RTOL[dtype]
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (actual, expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1.0, float(np.abs(expected).max())))


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("name,dtype", CASES, ids=CASE_IDS)
def test_forward_matches_cpu_and_eager(name, dtype):
    out = results(name, dtype)
    value = out["cuda"][0]
    assert isinstance(value, np.ndarray)  # host inputs give host outputs, as on the CPU target
    assert_close(value, out["eager"][0], dtype)
    assert_close(value, out["cpu"][0], dtype)


@pytest.mark.parametrize("name,dtype", CASES, ids=CASE_IDS)
def test_gradient_matches_cpu_and_eager(name, dtype):
    out = results(name, dtype)
    grads = _leaves(out["cuda"][1])
    assert all(isinstance(g, np.ndarray) for g in grads)
    for g, eager in zip(grads, _leaves(out["eager"][1]), strict=True):
        assert_close(g, eager, dtype)
    for g, cpu in zip(grads, _leaves(out["cpu"][1]), strict=True):
        assert_close(g, cpu, dtype)


def test_diff_records_the_compiled_forward_and_backward():
    model, x, labels = _mlp_args(np.float64)
    params = [(kn.Param(w), kn.Param(b)) for w, b in model]
    loss = kn.diff(mlp, params, x, labels)
    expected_loss = mlp.fn(model, x, labels)
    expected = _leaves(kn.grad(mlp.fn)(model, x, labels))
    assert_close(kn.value(loss), expected_loss, np.float64)
    for p, g in zip(_leaves(params), expected, strict=True):
        assert_close(kn.grad(loss, p), g, np.float64)


def _call_executable(f, dtype=None):
    """The executable of f's plain (not gradient, not diff-recorded) specialization; with
    `dtype`, the one whose float inputs have it (other tests in the process may have called f with
    other dtypes first)."""
    return next(s.executable for s in f.specializations() if hasattr(s, "executable") and not hasattr(s, "grad_slots")
                and (dtype is None or all(v.aval.dtype == dtype for v in s.executable.program.inputs
                                        if v.aval.dtype.kind == "f")))


def test_device_inputs_give_device_outputs():
    # Through the executable: the simulator's arrays are not yet pytree leaves of the front end.
    x = _rng().standard_normal((4, 5))
    expected = reductions(x)
    executable = _call_executable(reductions)
    (y,) = executable.run([cuda.to_device(x)])
    assert not isinstance(y, np.ndarray) and y.shape == ()
    assert_close(y.copy_to_host(), expected, np.float64)
    strided = cuda.to_device(np.repeat(x, 2, axis=1))[:, ::2]  # a view: every other column
    with pytest.raises(ValueError, match="C-contiguous"):  # (a real device array's .T is a copy)
        executable.run([strided])


def test_thread_indices_unravel_row_major_and_skip_unit_axes():
    sizes, indices, count = thread_indices((4, 1, 6, 5))
    assert sizes == ["n0 = out.shape[0]", "n2 = out.shape[2]", "n3 = out.shape[3]"]
    assert indices == ["rest = t", "i3 = rest % n3", "rest //= n3", "i2 = rest % n2", "rest //= n2", "i0 = rest"]
    assert count == "n0 * n2 * n3"
    for shape in [(4, 1, 6, 5), (2, 3), (1, 7, 1)]:  # the lines unravel every t as numpy does
        sizes, indices, count = thread_indices(shape)
        out = np.empty(shape)
        for t in range(out.size):
            scope = {"t": t, "out": out}
            exec("\n".join(sizes + indices), scope)
            expected = np.unravel_index(t, shape)
            assert all(scope[f"i{a}"] == expected[a] for a in range(len(shape)) if shape[a] != 1)
    assert thread_indices((7,)) == (["n0 = out.shape[0]"], ["i0 = t"], "n0") and thread_indices(()) == ([], [], "1")


def test_generated_module_reads_like_numba():
    results("mlp", np.float64)
    generated = _call_executable(mlp, np.float64).generated
    kernel = generated.kernels["k_add_relu"].text
    assert "@cuda.jit(cache=True)\ndef k_add_relu(x0, x1, out):\n    t = cuda.grid(1)\n" in kernel
    assert "PTX_SIGNATURES = {'k_add_relu': 'void(float64[:, ::1], float64[::1], float64[:, ::1])'}" in kernel
    assert "    gemm(v4, v0, v6)\n" in generated.driver and "device_array((4, 5), np.float64)" in generated.driver
    assert "k_add_relu[launch(20)](v6, v1, v8)" in generated.driver


def test_mixed_dtype_matmul_casts_the_narrow_operand():
    results("mixed_matmul", np.float64)
    generated = _call_executable(mixed_matmul).generated
    assert "def cast_float32_to_float64(x0, out):" in generated.kernels["cast_float32_to_float64"].text
    assert "gemm(v0_float64, v1, v2)" in generated.driver


@kn.compile(target="cuda")
def integer_matmul(a, b):
    return a @ b


def test_integer_matmul_is_refused_with_a_hint():
    with pytest.raises(NotImplementedError, match="astype"):
        integer_matmul(np.ones((2, 3), np.int64), np.ones((3, 2), np.int64))


# ----------------------------------------------------------------------------- PTX

@pytest.mark.parametrize("name", list(PROGRAMS))
def test_every_kernel_compiles_to_ptx_for_sm90(name):
    f, _, dtypes = PROGRAMS[name]
    for dtype in dtypes:
        results(name, dtype)
    if name == "mlp":
        test_diff_records_the_compiled_forward_and_backward()
    assert_modules_compile_to_ptx(f.generated_modules())


def test_cuda_target_without_a_gpu_raises_a_clear_error(tmp_path):
    if os.environ.get("KNETC_TEST_GPU") == "1":
        pytest.skip("a real GPU is present")
    script = tmp_path / "needs_gpu.py"
    script.write_text(
        "import numpy as np, knetc as kn\n"
        "@kn.compile(target='cuda')\n"
        "def f(x):\n"
        "    return kn.sum(x * x)\n"
        "try:\n"
        "    f(np.ones(3))\n"
        "except RuntimeError as error:\n"
        "    print('refused:', error, len(f.specializations()))\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert "refused: target='cuda' needs a CUDA GPU" in out.stdout, out.stderr
    assert out.stdout.strip().endswith(" 0")  # nothing half-built was kept
