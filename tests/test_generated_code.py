"""The generated Numba source of a few small programs, CPU and CUDA, against golden files
in tests/golden/: values named as the IR prints them (`v8` is `%8`), each fused op under
its user's source line, loop-invariant loads hoisted out of inner loops.

The golden files are written from the generator and read by eye. After a deliberate change
to code generation, rewrite them and review the diff:

    KNETC_UPDATE_GOLDEN=1 python -m pytest -q tests/test_generated_code.py
"""
import os
import re

import numpy as np
import pytest

import knetc as kn

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
UPDATE = os.environ.get("KNETC_UPDATE_GOLDEN") == "1"


def dense(x, w, b):
    return kn.relu(x @ w + b)


def row_softmax(x):
    e = kn.exp(x - kn.maximum(x, dims=1))
    return e / kn.sum(e, dims=1)


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
    assert "%4: f32[4,5] = add %3 %2" in fused and "%5: f32[4,5] = relu %4" in fused
    assert "def k0(v3, v2, out):  # add relu" in text
    assert "v4 = t1 + t2" in text and "v5 = max(v4, float32(0.0))" in text
    assert "v3 = np.dot(v0, v1)" in text


def test_each_fused_op_follows_a_comment_with_its_source_line():
    text = generated("dense", "cpu")
    assert text.count("# test_generated_code.py:") >= 2  # once in the kernel, once in the driver
    assert "# test_generated_code.py:23  return kn.relu(x @ w + b)\n" in text


def test_loads_invariant_in_an_inner_loop_are_read_outside_it():
    # The row maximum varies with the row (i0) only: it is read before the column loop.
    text = generated("row_softmax", "cpu")
    kernel = next(k for k in text.split("\n\n\n") if "def k1(" in k)
    lines = [line.strip() for line in kernel.splitlines()]
    hoisted = next(i for i, line in enumerate(lines) if re.fullmatch(r"t\d+ = v\d+\[i0, 0\]", line))
    assert hoisted < lines.index("for i1 in range(6):")
