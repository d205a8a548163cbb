"""Loops that stay loops: `for t in range(n)` traced once as a loop region (ir/loops.py,
frontend/loops.py), differentiated as a reversed loop (ad/reverse.py), run by a Python loop
in the driver. Every case compares the compiled value and gradients with the eager ones
(the Python function run by the tape), and checks the gradient numerically; the cases the
front end cannot trace once unroll, and must give the same answers."""
import numpy as np
import pytest

import knetc as kn
from knetc.ir.fuse import Loop

RNG = np.random.default_rng(7)


def normal(*shape, scale=0.5):
    return RNG.standard_normal(shape) * scale


# ---------------------------------------------------------------- loop bodies

def tanh_rnn(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b)
    return kn.sum(h * h)


def reversed_rnn(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[xs.shape[0] - 1 - t] @ W + h @ R + b)
    return kn.sum(h * h)


def negative_index_rnn(w, xs, h):
    W, R, b = w
    for t in range(3):
        h = kn.tanh(xs[-1 - t] @ W + h @ R + b)
    return kn.sum(h)


def strided_two_rows(w, xs, h):
    """Two rows of one array per step, every other step: rows never read get no gradient."""
    W, R, b = w
    for t in range(1, xs.shape[0], 2):
        h = kn.sigm((xs[t] - xs[t - 1]) @ W + h @ R + b)
    return kn.sum(h * h)


def accumulated_loss(w, xs, h):
    """total starts as a Python number: the first step is unrolled, the rest loops."""
    W, R, b = w
    total = 0
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b)
        total = total + kn.sum(h * xs[t][:, :1])
    return total


def two_carries(w, xs, h):
    W, R, b = w
    c = h * 0.5
    for t in range(xs.shape[0]):
        h, c = kn.tanh(xs[t] @ W + c @ R), c * 0.9 + h * b
    return kn.sum(h * c)


def nested_loops(w, xs, h):
    """A loop in a loop: rows of rows."""
    W, R, b = w
    for i in range(2):
        for t in range(xs.shape[0]):
            h = kn.tanh(xs[t] @ W + h @ R + b * (i + 1))
        h = h * 0.5
    return kn.sum(h * h)


def layers_in_a_loop(w, xs, h):
    """Unrolled layer loops (over lists) inside and after the time loop."""
    W, R, b = w
    for t in range(xs.shape[0]):
        x = xs[t] @ W
        for layer in [R, R.T]:
            x = kn.relu(x @ layer)
        h = kn.tanh(x + h @ R + b)
    for scale in (1.0, 2.0):
        h = h * scale
    return kn.sum(h * h)


def body_local_and_loop_variable(w, xs, h):
    """Python leaves the last step's values and the loop variable's last value bound."""
    W, R, b = w
    for t in range(xs.shape[0]):
        z = xs[t] @ W
        h = kn.tanh(z + h @ R + b)
    return kn.sum(h * z) * t


def loop_with_else(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b)
    else:
        h = h * 3.0
    return kn.sum(h)


def row_then_index(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t, :, 1:] @ W[1:] + h @ R + b)
    return kn.sum(h * h)


def scalar_sequence(w, xs, h):
    """Rows of a vector are 0-d values; a 0-d carry."""
    W, R, b = w
    s = kn.sum(h) * 0.1
    for t in range(xs.shape[0]):
        s = kn.tanh(s * 0.5 + xs[t, 0, 0] * b[0])
    return s * s


def composite_in_the_body(w, xs, h):
    # np.cumsum is decomposed after differentiation, inside the body: its constants (the
    # zeros it shifts in) are made there and must enter the loop (they were undefined names)
    W, R, b = w
    for t in range(xs.shape[0]):
        h = kn.tanh(np.cumsum(xs[t] @ W, axis=1) * 0.3 + h @ R + b)
        for _ in range(2):
            h = h + 0.1 * np.cumsum(h, axis=0)
    return kn.sum(h * h)


def carry_assigned_its_own_value(w, xs, h):
    W, R, b = w
    c = h * 0.5
    for t in range(xs.shape[0]):
        h, c = kn.tanh(xs[t] @ W + h @ R + b + c), c  # (c: its own value; the body reads it: NameError)
    return kn.sum(h * c)


LOOPS = {f.__name__: f for f in (scalar_sequence, tanh_rnn, reversed_rnn, negative_index_rnn, strided_two_rows, accumulated_loss,
                                 two_carries, nested_loops, layers_in_a_loop, body_local_and_loop_variable,
                                 loop_with_else, row_then_index, composite_in_the_body, carry_assigned_its_own_value)}


# ---------------------------------------------------------------- what unrolls

def branch_on_the_loop_variable(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        if t == 0:
            h = h * 2.0
        h = kn.tanh(xs[t] @ W + h @ R + b)
    return kn.sum(h * h)


def list_of_steps(w, xs, h):
    W, R, b = w
    hs = []
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b)
        hs.append(h)
    return kn.sum(hs[0] * hs[-1]) + kn.sum(hs[1])


def python_counter(w, xs, h):
    W, R, b = w
    k = 1.0
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b * k)
        k = k * 0.5
    return kn.sum(h * h)


def loop_variable_in_a_call(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b * float(t))
    return kn.sum(h * h)


def second_axis(w, xs, h):
    W, R, b = w
    ys = kn.permutedims(xs, (1, 0, 2))
    for t in range(xs.shape[0]):
        h = kn.tanh(ys[:, t] @ W + h @ R + b)
    return kn.sum(h * h)


def break_early(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b)
        if t == 2:
            break
    return kn.sum(h * h)


def row_of_a_value_computed_inside(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b)
        h = h + (xs * 0.1)[t] @ W
    return kn.sum(h * h)


def index_array_beside_the_row(w, xs, h):
    W, R, b = w
    for t in range(xs.shape[0]):  # (numpy: xs[t, :, ids] puts ids' axis first; xs[t][:, ids] does not)
        h = kn.tanh(xs[t, :, [3, 1, 0, 2]].T @ W + h @ R + b)
    return kn.sum(h * h)


UNROLLED = {f.__name__: f for f in (branch_on_the_loop_variable, list_of_steps, python_counter,
                                    loop_variable_in_a_call, second_axis, break_early,
                                    row_of_a_value_computed_inside, index_array_beside_the_row)}


def arguments(steps=5, batch=3, features=4, hidden=6):
    w = [normal(features, hidden), normal(hidden, hidden), normal(hidden, scale=0.1)]
    return w, normal(steps, batch, features, scale=1.0), normal(batch, hidden)


def loops_in(f):
    """The loop steps in the schedules of every executable compiled so far."""
    return [s for spec in f.specializations() for e in spec.executables()
            for _, s in e.schedule.walk() if isinstance(s, Loop)]


def check_against_eager(fn, args, rtol=1e-9):
    f = kn.compile(fn, target="cpu")
    np.testing.assert_allclose(f(*args), fn(*args), rtol=rtol)
    got, want = kn.grad(f)(*args), kn.grad(fn)(*args)
    for g, e in zip(got, want):
        if e is None:  # (a weight the function does not use)
            assert g is None
            continue
        np.testing.assert_allclose(g, e, rtol=rtol, atol=1e-12)
    return f


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_a_loop_region_computes_what_python_computes(name):
    fn = LOOPS[name]
    f = check_against_eager(fn, arguments())
    assert loops_in(f), "the time loop stays a loop"


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_a_loop_region_passes_gcheck(name):
    fn = LOOPS[name]
    f = kn.compile(fn, target="cpu")
    w, xs, h = arguments(steps=4)
    params = [kn.Param(a) for a in w]
    assert kn.gcheck(lambda p: f(p, xs, h), params)


@pytest.mark.parametrize("name", sorted(UNROLLED))
def test_a_loop_that_cannot_be_traced_once_unrolls_and_computes_what_python_computes(name):
    fn = UNROLLED[name]
    f = check_against_eager(fn, arguments())
    assert not loops_in(f)


def test_the_gradient_of_the_sliced_input_is_stacked_row_by_row():
    w, xs, h = arguments(steps=7)
    f = kn.compile(strided_two_rows, target="cpu")
    got = f.gradient_function(1)(w, xs, h)
    want = kn.grad(strided_two_rows, 1)(w, xs, h)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert np.all(got[6] == 0) and np.any(got[5] != 0)  # row 6 is never read: its gradient is 0


def test_a_new_length_traces_again_and_compiles_no_new_kernel():
    f = kn.compile(tanh_rnn, target="cpu")
    for steps in (3, 17, 64):
        w, xs, h = arguments(steps=steps)
        before = kn.stats()["compilations"]
        np.testing.assert_allclose(kn.grad(f)(w, xs, h)[1], kn.grad(tanh_rnn)(w, xs, h)[1], rtol=1e-9)
        if steps != 3:
            assert kn.stats()["compilations"] == before
    assert len(f.specializations()) == 3


def test_the_program_text_does_not_grow_with_the_number_of_steps():
    sizes = {}
    for steps in (4, 128):
        f = kn.compile(tanh_rnn, target="cpu")
        w, xs, h = arguments(steps=steps)
        kn.grad(f)(w, xs, h)
        (executable,) = f.specializations()[0].executables()
        sizes[steps] = len(executable.program.eqns), executable.generated.driver.count("\n")
    assert sizes[128] == sizes[4]


def test_a_loop_in_a_function_recorded_by_diff_trains_like_the_eager_one():
    w, xs, h = arguments()
    f = kn.compile(tanh_rnn, target="cpu")
    params = [kn.Param(a.copy()) for a in w]
    tape = kn.diff(lambda: f(params, xs, h))
    eager = [kn.Param(a.copy()) for a in w]
    want = kn.diff(lambda: tanh_rnn(eager, xs, h))
    assert np.allclose(kn.value(tape), kn.value(want))
    for p, q in zip(params, eager):
        np.testing.assert_allclose(kn.grad(tape, p), kn.grad(want, q), rtol=1e-9, atol=1e-12)
    assert loops_in(f)


def charlm_like(w, xs, labels, h):
    """nll per step, labels read by row: the label check covers the whole label array."""
    W, R, b = w
    loss = 0
    for t in range(xs.shape[0]):
        h = kn.tanh(xs[t] @ W + h @ R + b)
        loss = loss + kn.nll(h, labels[t])
    return loss


def test_labels_read_by_row_are_checked_before_anything_runs():
    w, xs, h = arguments()
    labels = RNG.integers(0, 6, size=(5, 3))
    f = kn.compile(charlm_like, target="cpu")
    np.testing.assert_allclose(f(w, xs, labels, h), charlm_like(w, xs, labels, h), rtol=1e-9)
    for g, e in zip(kn.grad(f)(w, xs, labels, h), kn.grad(charlm_like)(w, xs, labels, h)):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)
    assert loops_in(f)
    bad = labels.copy()
    bad[4, 1] = 6  # out of range in the last step only
    with pytest.raises(ValueError):
        f(w, xs, bad, h)
    with pytest.raises(ValueError):
        kn.grad(f)(w, xs, bad, h)


def test_inspect_shows_the_loop_and_what_its_adjoint_stacks():
    text = kn.inspect(kn.compile(tanh_rnn, target="cpu"), *arguments(), stage="fused,memory,driver")
    memory = text.split("--- memory ---")[1].split("--- driver ---")[0]
    assert memory.count("\nloop ") == 2 and "\n    matmul " in memory  # each loop, then its body's plan
    assert "loop[length=5, stacks 2 values per step for the adjoint]" in text  # h before and after each step
    assert "loop[length=5, reverse]" in text
    assert "for t" in text and "def loop" in text


def test_float32_loop_matches_float64_eager():
    w, xs, h = arguments()
    w32 = [a.astype(np.float32) for a in w]
    f = kn.compile(tanh_rnn, target="cpu")
    got = kn.grad(f)(w32, xs.astype(np.float32), h.astype(np.float32))
    want = kn.grad(tanh_rnn)(w, xs, h)
    for g, e in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tanh_rnn", "strided_two_rows", "nested_loops"])
def test_a_loop_region_on_cuda_computes_what_the_cpu_computes(name):
    """Under Numba's CUDA simulator: the driver's loop launches the body's kernels each step,
    reads rows of device arrays as views and stacks rows with device copies."""
    fn = LOOPS[name]
    w, xs, h = arguments(steps=4, batch=2, features=3, hidden=4)
    f = kn.compile(fn, target="cuda")
    np.testing.assert_allclose(f(w, xs, h), fn(w, xs, h), rtol=1e-9)
    for g, e in zip(f.gradient_function(0)(w, xs, h), kn.grad(fn)(w, xs, h)):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(f.gradient_function(1)(w, xs, h), kn.grad(fn, 1)(w, xs, h), rtol=1e-9, atol=1e-12)
    assert loops_in(f)


def test_the_cuda_kernels_of_a_loop_compile_to_ptx():
    from ptx import assert_modules_compile_to_ptx
    f = kn.compile(tanh_rnn, target="cuda")
    w, xs, h = arguments(steps=3, batch=2, features=3, hidden=4)
    f.gradient_function(0)(w, xs, h)
    assert_modules_compile_to_ptx(f.generated_modules())
