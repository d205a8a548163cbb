"""An op is a complete record: passes, fusion and code generators read its declared fields
(knetc/ops/core.py `Op`) and never test an op's name."""
import ast
import pathlib

import pytest

import knetc
from knetc.ops.core import OPS

PACKAGE = pathlib.Path(knetc.__file__).parent
SCANNED = sorted([*PACKAGE.glob("ir/*.py"), *PACKAGE.glob("backend/*.py"), PACKAGE / "compiler.py"])


def _strings(node):
    return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _is_kind(node):
    # `op.kind == "matmul"` compares a lowering kind, which may share a name with an op
    return isinstance(node, ast.Attribute) and node.attr == "kind"


def op_name_tests(source):
    """(line, name) of each op name in a comparison, an `in` test or a dict key."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(map(_is_kind, sides)):
                continue
            found += [(c.lineno, c.value) for side in sides for c in _strings(side) if c.value in OPS]
        elif isinstance(node, ast.Dict):
            found += [(c.lineno, c.value) for key in node.keys if key is not None for c in _strings(key)
                      if c.value in OPS]
    return found


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_passes_and_code_generators_name_no_op(path):
    found = op_name_tests(path.read_text())
    assert not found, f"{path.name} tests op names {found}: declare the property as an Op field instead"


def test_the_scan_finds_a_name_test():
    source = 'if eqn.op.name == "transpose": pass\nSTEP = {"reduce_sum": 1}\nok = eqn.op.kind == "matmul"'
    assert op_name_tests(source) == [(1, "transpose"), (2, "reduce_sum")]


def test_every_reduction_declares_its_monoid():
    for op in OPS.values():
        assert op.kind != "reduce" or op.monoid is not None, op.name


def test_simplification_rules_are_declared_with_their_ops():
    assert {name for name, op in OPS.items() if op.simplify is not None} >= {
        "add", "sub", "mul", "div", "neg", "reshape", "transpose", "broadcast_to", "astype", "reduce_sum"}
