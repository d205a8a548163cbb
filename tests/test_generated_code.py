"""The generated Numba source of a few small programs, CPU and CUDA, against golden files
in tests/golden/: shape-generic kernels, a driver that names values as the IR prints them
(`v8` is `%8`) with each step under its user's source lines, loop-invariant loads hoisted
out of inner loops.

The golden files are written from the generator and read by eye. After a deliberate change
to code generation, rewrite them and review the diff:

    KNETC_UPDATE_GOLDEN=1 python -m pytest -q tests/test_generated_code.py
"""
import os
import re

import numpy as np
import pytest

import knetc as kn
from knetc.backend.expressions import WIDE_BLOCK

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
UPDATE = os.environ.get("KNETC_UPDATE_GOLDEN") == "1"


def dense(x, w, b):
    return kn.relu(x @ w + b)


def row_softmax(x):
    e = kn.exp(x - kn.maximum(x, dims=1))
    return e / kn.sum(e, dims=1)


def row_scale(x, s):
    return x * s


def total(x):
    return kn.sum(x * x)


def dense_loss(x, w, b):
    h = kn.relu(x @ w + b)
    return kn.sum(h)


def _f32(*shape):
    return np.ones(shape, np.float32)


PROGRAMS = {
    "dense": (dense, (_f32(4, 3), _f32(3, 5), _f32(5)), "call"),
    "row_softmax": (row_softmax, (_f32(4, 6),), "call"),
    "row_scale": (row_scale, (_f32(4, 6), _f32(4, 1)), "call"),
    "total": (total, (_f32(8),), "call"),
    "dense_gradient": (dense_loss, (_f32(4, 3), _f32(3, 5), _f32(5)), "grad"),
}


def normalize(text):
    """Stable golden text: no digests of helper modules' source."""
    return re.sub(r"source sha256 [0-9a-f]+", "source sha256 ...", text)


def generated(name, target):
    fn, args, mode = PROGRAMS[name]
    text = kn.inspect(kn.compile(fn, target="cpu"), *args, stage="kernels,driver", target=target, mode=mode,
                      argnum=1)
    return normalize(text)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_generated_source_matches_golden(name, target):
    path = os.path.join(GOLDEN, f"{name}.{target}.txt")
    text = generated(name, target)
    if UPDATE or not os.path.exists(path):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        golden = f.read()
    assert text == golden, (f"the generated {target} source of {name} differs from {path}; if the change is "
                            f"meant, rewrite the golden files with `KNETC_UPDATE_GOLDEN=1 python -m pytest -q "
                            f"tests/test_generated_code.py` and review the diff")


def test_values_are_named_as_the_fused_ir_prints_them():
    fn, args, mode = PROGRAMS["dense"]
    text = kn.inspect(kn.compile(fn, target="cpu"), *args, stage="fused,kernels,driver", mode=mode)
    fused = text.split("--- fused ---")[1].split("--- kernels ---")[0]
    driver = text.split("--- driver ---")[1]
    assert "%3: f32[4,5] = matmul %0 %1" in fused and "%5: f32[4,5] = relu %4" in fused
    assert "matmul(v0, v1, v3)" in driver and "k_add_relu(v3, v2, v5, 0, 4)" in driver  # rows 0..4
    kernel = text.split("--- kernels ---")[1].split("--- driver ---")[0]
    assert "def k_add_relu(x0, x1, out, lo, hi):" in kernel  # kernels are shared: their names are their own


def test_each_step_follows_a_comment_with_its_source_line():
    text = generated("dense_gradient", "cpu")
    driver = text.split("--- driver ---")[1]
    first = dense_loss.__code__.co_firstlineno
    assert f"# test_generated_code.py:{first + 1}  h = kn.relu(x @ w + b)\n    v3 = np.empty((4, 5), np.float32)\n    matmul(v0, v1, v3)" in driver
    assert f"# test_generated_code.py:{first + 2}  return kn.sum(h)\n" in driver
    assert "# test_generated_code.py" not in text.split("--- driver ---")[0]  # kernels name no user's line


def test_kernels_read_sizes_and_numbers_at_run_time():
    text = generated("dense_gradient", "cpu")
    kernels = text.split("--- kernels ---")[1].split("--- driver ---")[0]
    # loops run to n0 (out.shape[0]), m0 (an argument) (a float32 sum: in blocks of WIDE_BLOCK)...
    assert not re.search(r"range\(\d+\)|range\(\d+, \d", kernels) and f"range(0, m1, {WIDE_BLOCK})" in kernels
    assert "float32(c0)" in kernels  # ...and numbers of the expression are arguments too
    assert "k_reduce_sum(v5, v6, 4, 5)" in text  # (one element: no rows)


def test_loads_invariant_in_an_inner_loop_are_read_outside_it():
    # The row's scale varies with the row (i0) only: it is read before the column loop.
    text = generated("row_scale", "cpu")
    kernel = next(k for k in text.split("# knetc kernel") if "x1[i0, 0]" in k)
    lines = [line.strip() for line in kernel.splitlines()]
    hoisted = next(i for i, line in enumerate(lines) if re.fullmatch(r"t\d+ = x1\[i0, 0\]", line))
    assert hoisted < lines.index("for i1 in range(n1):")


def test_a_value_per_row_is_computed_once_per_row_in_the_kernel_that_reads_it():
    # CPU: softmax's row maximum and row sum are loops inside the loop over rows, each before
    # the loop along the row that reads it: two kernels, no stored (4, 1) values.
    text = generated("row_softmax", "cpu")
    kernels = [k for k in text.split("--- driver ---")[0].split("# knetc kernel")[1:]]
    assert len(kernels) == 2
    for kernel in kernels:
        lines = [line.strip() for line in kernel.splitlines()]
        row = next(i for i, line in enumerate(lines) if line.startswith("for j1_1 in range("))
        rows, along = lines.index("for i0 in range(lo, hi):"), lines.index("for i1 in range(n1):")
        assert rows < row < along
    assert "np.empty((4, 1)" not in text
    # CUDA: one kernel: a group of threads per row computes the row's max and sum of exps in
    # one pass (an online pair, combined by a tree in shared memory), every thread takes the
    # results, then the group strides along the row.
    text = generated("row_softmax", "cuda")
    (kernel,) = text.split("--- driver ---")[0].split("# knetc kernel")[1:]
    lines = [line.strip() for line in kernel.splitlines()]
    tree, shared, along = (lines.index(line) for line in
                           ("cuda.syncthreads()", "t2 = sh1[tid - lane * q]", "for i1 in range(lane, n1, r):"))
    assert tree < shared < lines.index("t3 = sh1s[tid - lane * q]") < along


def test_cpu_kernels_call_no_numpy_or_builtin_code_that_numba_compiles_per_process():
    """max/min of two numbers and np.empty inside a kernel make Numba compile library code in
    every new process (about 0.03 s each, 0.1 s for np.empty): a ReLU is a select, a block's
    bounds are selects, a local array comes from a cached helper (kernels/scratch.py)."""
    column_sums = kn.compile(lambda x: kn.sum(kn.relu(x), dims=0), target="cpu")
    row_max = kn.compile(lambda x: kn.maximum(x, dims=1), target="cpu")  # integers: the monoid's plain step
    sliced = kn.compile(lambda x: kn.sum(x[1:4, ::2] ** 2), target="cpu")  # its gradient: a clamped pad_static
    ints, x = np.arange(-12, 12).reshape(4, 6) % 7, np.arange(30.0).reshape(5, 6)
    np.testing.assert_array_equal(row_max(ints), ints.max(axis=1, keepdims=True))
    expected = np.zeros_like(x)
    expected[1:4, ::2] = 2 * x[1:4, ::2]
    np.testing.assert_array_equal(kn.grad(sliced)(x), expected)
    texts = [generated(name, "cpu") for name in PROGRAMS]
    texts.append(kn.inspect(column_sums, _f32(64, 40), stage="kernels", target="cpu", mode="call"))
    texts.append(kn.inspect(row_max, ints, stage="kernels", target="cpu", mode="call"))
    texts.append(kn.inspect(sliced, x, stage="kernels", target="cpu"))
    kernels = [k for text in texts for k in text.split("--- driver ---")[0].split("# knetc kernel")[1:]]
    assert any("scratch_empty(" in k for k in kernels) and any("brows" in k for k in kernels)
    assert any("pad_static" in k for k in kernels) and any("reduce_max" in k for k in kernels)
    for kernel in kernels:
        assert not re.search(r"\b(max|min)\(|np\.empty\(", kernel), kernel
