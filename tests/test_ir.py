"""The IR and its passes, without generating code: the printed form is stable, the adjoint
program holds the expected ops, CSE/DCE/simplify do their one job each, and fusion groups
elementwise chains and reduction prologues into single kernels."""
import inspect

import numpy as np

import knetc as kn
from knetc.ad.reverse import adjoint_program, split
from knetc.frontend import trace
from knetc.ir.fuse import Kernel, Matmul, fuse
from knetc.ir.passes import cse, dce, decompose, optimize, simplify


def tiny(w, b, x):
    h = kn.tanh(x @ w + b)
    return kn.sum(h * h)


def f32(*shape):
    return np.ones(shape, np.float32)


def f64(*shape):
    return np.ones(shape, np.float64)


def program_of(fn, *args, **kwargs):
    program, _, _ = trace(fn, args, kwargs)
    return program


def op_names(program):
    return [e.op.name for e in program.eqns]


TINY_GOLDEN = """\
def tiny(%0: f32[3,2], %1: f32[2], %2: f32[4,3]):
  %3: f32[4,2] = matmul %2 %0                                     # test_ir.py:{h}
  %4: f32[4,2] = add %3 %1                                        # test_ir.py:{h}
  %5: f32[4,2] = tanh %4                                          # test_ir.py:{h}
  %6: f32[4,2] = mul %5 %5                                        # test_ir.py:{r}
  %7: f32[1,1] = reduce_sum[axes=(0, 1)] %6                       # test_ir.py:{r}
  %8: f32[] = reshape[shape=()] %7                                # test_ir.py:{r}
  return %8"""


def test_printed_ir_of_a_tiny_program_is_stable():
    first = inspect.getsourcelines(tiny)[1]
    program = program_of(tiny, f32(3, 2), f32(2), f32(4, 3))
    assert str(program) == TINY_GOLDEN.format(h=first + 1, r=first + 2)
    assert str(program_of(tiny, f32(3, 2), f32(2), f32(4, 3))) == str(program)  # same text every time


def test_printed_ir_names_types_and_parameters():
    program = program_of(lambda x: kn.logsumexp(kn.transpose(x), dims=0), f64(2, 3))
    text = str(program)
    assert "f64[2,3]" in text and "f64[3,2]" in text and "f64[1,2]" in text
    assert "transpose[perm=(1, 0)]" in text and "logsumexp[axes=(0,)]" in text


def test_python_scalars_are_weakly_typed_constants():
    program = program_of(lambda x: kn.sum(x * 2.5 - 1), f32(3))
    assert [e.op.name for e in program.eqns][:2] == ["mul", "sub"]
    assert program.eqns[0].inputs[1] == 2.5 and program.eqns[0].out.aval.dtype == np.float32
    assert "%1: f32[3] = mul %0 2.5" in str(program) and "%2: f32[3] = sub %1 1" in str(program)


def test_compile_time_python_leaves_no_trace_in_the_ir():
    def loop(ws, x, n_layers=2):
        for w in ws[:n_layers]:
            x = x @ w
        return kn.sum(x) if x.shape[1] == 4 else kn.mean(x)
    program = program_of(loop, [f64(3, 3), f64(3, 4), f64(4, 5)], f64(2, 3))
    assert op_names(program) == ["matmul", "matmul", "reduce_sum", "reshape"]
    assert len(program.inputs) == 4  # every array leaf is an input, used or not


# ---------------------------------------------------------------- the adjoint program

def test_adjoint_program_holds_the_expected_ops():
    program = program_of(tiny, f64(3, 2), f64(2), f64(4, 3))
    joint = adjoint_program(program, [0, 1])
    names = op_names(joint)
    assert names[:len(program.eqns)] == op_names(program)  # the primal comes first
    adjoint = names[len(program.eqns):]
    assert adjoint[0] == "full"  # the seed, 1.0
    assert "broadcast_to" in adjoint  # the adjoint of sum
    assert "sub" in adjoint and adjoint.count("mul") >= 3  # tanh: dy * (1 - y*y); h*h: dy*h + dy*h
    assert "transpose" in adjoint and "matmul" in adjoint  # dw = x.T @ dy
    grad_b = joint.eqns[names.index("reduce_sum", len(program.eqns))]
    assert grad_b.params == {"axes": (0,)}  # the bias was broadcast over the instances
    assert [v.aval for v in joint.outputs] == [program.outputs[0].aval, program.inputs[0].aval, program.inputs[1].aval]


def test_adjoint_of_an_input_the_output_does_not_depend_on_is_none():
    program = program_of(lambda x, unused: kn.sum(kn.exp(x)), f64(3), f64(3))
    joint = adjoint_program(program, [0, 1])
    assert joint.outputs[1] is not None and joint.outputs[2] is None
    assert op_names(joint).count("exp") == 1  # d exp = dy * y reuses the primal value


def test_adjoint_with_a_seed_input_and_split():
    program = program_of(lambda w, x: kn.sum(kn.tanh(x @ w)), f64(3, 2), f64(4, 3))
    joint = optimize(adjoint_program(program, [0], seed_input=True))
    assert len(joint.inputs) == 3 and joint.inputs[2].aval == program.outputs[0].aval
    forward, backward, n_residuals = split(joint, 1, 2)
    assert op_names(forward)[0] == "matmul" and "tanh" in op_names(forward)
    assert "tanh" not in op_names(backward)  # the backward pass reads tanh's output as a residual
    assert n_residuals >= 1 and len(forward.outputs) == 1 + n_residuals
    assert len(backward.inputs) == 3 + n_residuals and backward.outputs[0].aval == program.inputs[0].aval


def test_split_computes_cheap_values_again_instead_of_storing_them():
    """A GELU: the backward pass reads 0.5 * h and h * c; storing h and computing them again
    there costs no more reads, and the forward pass then fuses them instead of storing them."""
    program = program_of(lambda w, x: kn.sum(0.5 * (x @ w) * (1 + kn.erf((x @ w) * 0.7071067811865476))),
                         f64(3, 2), f64(4, 3))
    joint = optimize(adjoint_program(program, [0], seed_input=True))
    forward, backward, n_residuals = split(joint, 1, 2)
    made_by = {e.out: e.op.name for e in forward.eqns}
    residuals = [made_by[v] for v in forward.outputs[1:]]
    assert "mul" not in residuals and "matmul" in residuals  # h = x @ w, not 0.5 * h or h * c
    assert "erf" in residuals or "add" in residuals  # erf is not cheap: stored, not computed again
    assert op_names(backward).count("mul") > op_names(joint)[len(forward.eqns):].count("mul")
    assert len(backward.inputs) == 3 + n_residuals


def test_composite_ops_decompose_into_reductions_and_elementwise_ops():
    program = program_of(lambda x, y: kn.nll(x, y), f64(4, 3), np.zeros(4, np.int64))
    assert "logsoftmax" in op_names(program)
    names = op_names(decompose(program))
    assert "logsoftmax" not in names and "logsumexp" not in names
    assert {"reduce_max", "exp", "log", "reduce_sum", "sub"} <= set(names)


# ---------------------------------------------------------------- passes

def test_cse_merges_duplicate_equations():
    program = program_of(lambda x: kn.sum(kn.exp(x) * 2) + kn.sum(kn.exp(x) * 2), f64(3))
    assert op_names(program).count("exp") == 2 and op_names(program).count("mul") == 2
    merged = cse(program)
    assert op_names(merged).count("exp") == 1 and op_names(merged).count("mul") == 1
    assert op_names(merged).count("reduce_sum") == 1
    add = merged.eqns[-1]
    assert add.op.name == "add" and add.inputs[0] is add.inputs[1]


def test_cse_keeps_equations_that_differ_in_parameters():
    program = program_of(lambda x: kn.sum(kn.sum(x, dims=0)) + kn.sum(kn.sum(x, dims=1)), f64(3, 3))
    assert op_names(cse(program)).count("reduce_sum") == op_names(program).count("reduce_sum")


def test_dce_removes_unused_equations():
    def f(x):
        unused = kn.tanh(x) @ np.ones((3, 2))  # noqa: F841
        return kn.sum(x)
    program = program_of(f, f64(2, 3))
    assert "tanh" in op_names(program) and "matmul" in op_names(program)
    assert op_names(dce(program)) == ["reduce_sum", "reshape"]


def test_simplify_removes_identities():
    program = program_of(lambda x: kn.sum(-(-(x * 1 - 0 + -0.0) / 1)), f64(3))
    assert {"mul", "add", "sub", "div", "neg"} <= set(op_names(program))
    assert op_names(dce(simplify(program))) == ["reduce_sum", "reshape"]
    # x + 0.0 turns -0.0 into 0.0 (IEEE, numpy): kept for floats, removed for integers
    assert "add" in op_names(dce(simplify(program_of(lambda x: x + 0.0, f64(3)))))
    assert "add" not in op_names(dce(simplify(program_of(lambda x: x + 0, np.ones(3, np.int64)))))


def test_simplify_removes_double_transposes_and_same_shape_reshapes():
    program = program_of(lambda x: kn.sum(kn.transpose(kn.transpose(x)) * kn.reshape(x, (2, 3))), f64(2, 3))
    assert op_names(dce(simplify(program))) == ["mul", "reduce_sum", "reshape"]


def test_simplify_keeps_a_multiplication_by_one_that_broadcasts():
    program = program_of(lambda x: kn.sum(x * np.ones((2, 3))), f64(3))
    assert "mul" in op_names(optimize(program))


def test_optimize_leaves_the_adjoint_of_tiny_small():
    program = program_of(tiny, f64(3, 2), f64(2), f64(4, 3))
    joint = adjoint_program(program, [0, 1])
    optimized = optimize(joint)
    assert len(optimized.eqns) < len(joint.eqns)
    assert op_names(optimized).count("mul") < op_names(joint).count("mul")  # h*h is computed once


# ---------------------------------------------------------------- fusion

def test_an_elementwise_chain_is_one_kernel():
    program = optimize(program_of(lambda x, b: kn.exp(kn.tanh(x) * 2 + b) - kn.sigm(x) / 3, f64(4, 5), f64(5)))
    elementwise = [e for e in program.eqns if e.op.kind == "elementwise"]
    assert len(elementwise) == 7
    schedule = fuse(program)
    assert len(schedule.steps) == 1 and isinstance(schedule.steps[0], Kernel)
    assert schedule.steps[0].inputs == program.inputs  # x is read once per element, b broadcast
    assert set(schedule.groups().values()) == {0} and len(schedule.groups()) == 7


def test_a_reduction_fuses_its_elementwise_producers():
    program = optimize(program_of(lambda x: kn.sum(kn.exp(x) * x + 1, dims=1), f64(4, 5)))
    names = op_names(program)
    assert names == ["exp", "mul", "add", "reduce_sum"]
    kernels = fuse(program).kernels()
    assert len(kernels) == 1 < len(names)
    assert kernels[0].eqn.op.name == "reduce_sum" and kernels[0].inputs == program.inputs


def test_fusion_of_a_loss_needs_fewer_kernels_than_equations():
    program = optimize(program_of(lambda x, y: kn.nll(kn.tanh(x) * 2, y), f64(4, 3), np.zeros(4, np.int64)))
    fusible = [e for e in program.eqns if e.op.kind in ("elementwise", "reduce")]
    assert len(fuse(program).kernels()) < len(fusible)


def test_a_value_with_two_consumers_is_stored_once():
    program = optimize(program_of(lambda x: kn.exp(x) + kn.sum(kn.exp(x), dims=0), f64(4, 5)))
    assert op_names(program).count("exp") == 1
    schedule = fuse(program)
    exp_out = next(e.out for e in program.eqns if e.op.name == "exp")
    assert exp_out not in schedule.inlined and any(s.out is exp_out for s in schedule.kernels())


def test_transposes_read_by_a_matmul_become_flags():
    program = optimize(program_of(lambda a, b: a.T @ b, f64(3, 2), f64(3, 4)))
    schedule = fuse(program)
    assert len(schedule.steps) == 1
    step = schedule.steps[0]
    assert isinstance(step, Matmul) and step.trans_a and not step.trans_b
    assert step.a is program.inputs[0]
