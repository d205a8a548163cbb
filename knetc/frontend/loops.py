"""Loops that stay loops: the front end's side of loop regions (ir/loops.py).

`for t in range(...)` with at least MIN_STEPS steps is traced once, as one loop region,
when one trace can stand for every step:
  - t is only used in integer arithmetic and to index arrays from outside the loop along
    their first axis (`xs[t]`, `xs[n - 1 - t]`, `xs[2 * t + 1]`, `xs[t, 0]`);
  - the arrays the body assigns to names from before the loop (the carries) keep their
    shapes and dtypes from one step to the next. When only the first step changes them
    (`loss = 0` then `loss = loss + ...`), that step is unrolled and the rest loops;
  - the body changes no Python value (counters, lists) and keeps no array in a list;
  - no op in it updates state in place (dropout's counter, batchnorm's statistics).
Anything else unrolls, as loops over lists do: the body's trace is discarded and the
Python loop runs step by step. Either way the program computes what Python would.
"""
import ast

from ..ir.core import Builder, Var, current_builder
from ..ir.loops import bodies, emit_loop
from ..ops.core import Aval

MIN_STEPS = 2


class NotALoop(Exception):
    """The body cannot be traced once for every step: unroll it."""


class LoopIndex:
    """The loop variable inside a region: `scale * t + offset` for the region's counter t."""
    __slots__ = ("region", "scale", "offset")

    def __init__(self, region, scale, offset):
        self.region, self.scale, self.offset = region, scale, offset

    def at(self, t):
        return self.scale * t + self.offset

    def _affine(self, scale, offset):
        return LoopIndex(self.region, scale, offset) if scale else offset

    def __add__(self, other):
        return self._affine(self.scale, self.offset + _int(other))

    __radd__ = __add__

    def __sub__(self, other):
        return self._affine(self.scale, self.offset - _int(other))

    def __rsub__(self, other):
        return self._affine(-self.scale, _int(other) - self.offset)

    def __mul__(self, other):
        return self._affine(self.scale * _int(other), self.offset * _int(other))

    __rmul__ = __mul__

    def __neg__(self):
        return self._affine(-self.scale, -self.offset)

    def __pos__(self):
        return self

    def _unknown(self, *args):
        raise NotALoop("the loop variable's value is known only when the loop runs")

    __index__ = __int__ = __float__ = __bool__ = __hash__ = __format__ = __str__ = _unknown
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _unknown
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __truediv__ = __rtruediv__ = __pow__ = _unknown


def _int(x):
    if type(x) is not int:
        raise NotALoop("the loop variable meets a value other than a Python int")
    return x


def holds_loop_index(x):
    return isinstance(x, LoopIndex) or isinstance(x, tuple) and any(isinstance(i, LoopIndex) for i in x)


class Region:
    """A loop being traced: its body's builder, inputs and the rows it reads."""

    def __init__(self, regions, length, inputs):
        self.regions, self.length = regions, length  # (regions: the stack of regions being traced)
        # rows: (id(source), scale, offset) -> (row Var, source, scale, offset)
        self.inputs, self.rows, self.builder = set(inputs), {}, None

    def row(self, source, index):
        """source[index] for a loop index of this region: a row of `source`, which must come
        from outside the loop."""
        if not source.aval.shape or self._inside(source):
            raise NotALoop("a row of a value computed inside the loop")
        n, offset = source.aval.shape[0], index.offset
        low, high = sorted((index.at(0), index.at(self.length - 1)))
        if -n <= low and high < 0:
            offset += n  # (xs[-1 - t])
        elif not (0 <= low and high < n):
            raise NotALoop("the index leaves the array in some step")  # (Python raises there: unrolling says where)
        key = (id(source), index.scale, offset)
        if key not in self.rows:
            row = Var(Aval(source.aval.shape[1:], source.aval.dtype))
            self.rows[key] = (row, source, index.scale, offset)
            self.inputs.add(row)
        return self.rows[key][0]

    def _inside(self, v):
        inner = self.regions[self.regions.index(self):]
        return any(v in r.inputs or any(e.out is v for e in r.builder.eqns) for r in inner)


def subscript(obj, index):
    """obj[index] where the index holds a loop variable (and obj is an IR value)."""
    first, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
    if not isinstance(first, LoopIndex) or any(isinstance(i, LoopIndex) for i in rest):
        raise NotALoop("the loop variable indexes an axis other than the first")
    if any(isinstance(i, (list, tuple)) or getattr(i, "shape", ()) != () for i in rest):
        raise NotALoop("an index array beside t")  # (numpy: xs[t, :, ids] puts ids' axis first, not xs[t][:, ids])
    row = first.region.row(obj, first)
    return row[rest] if rest else row


def trace_region(translator, node, steps):
    """Trace `for target in steps: body` as one loop region in the current program.
    Returns "looped", "peel" (the first step changes a carried value's type or shape: unroll
    it and try the rest), or "unroll"; except when looped, everything is as before."""
    if len(steps) < MIN_STEPS:
        return "unroll"
    scope = translator.scope
    before = dict(scope)
    containers = _containers(before.values())
    assigned = _assigned_names(node.body)
    carries = [(name, before[name], Var(before[name].aval))  # (name, start, body Var)
               for name in assigned if isinstance(before.get(name), Var)]
    scope.update((name, v) for name, _, v in carries)
    region = Region(translator.translation.regions, len(steps), [v for *_, v in carries])
    scope[node.target.id] = LoopIndex(region, steps.step, steps.start)
    outer = current_builder()
    region.regions.append(region)
    try:
        with Builder() as body:
            body.loc, region.builder = outer.loc, body
            translator.block(node.body)
        verdict = _verdict(scope, before, assigned, carries, body, containers)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # (NotALoop, or anything the unrolled loop will report at its step)
        verdict = "unroll"
    finally:
        region.regions.pop()
    if verdict != "looped":
        for container, contents in [(scope, before), *containers]:  # (as if the body was never traced)
            if isinstance(container, list):
                container[:] = contents
            else:
                container.clear()
                container.update(contents)
        return verdict

    outer.constants.update(body.constants)
    kept = [(name, start, v, scope[name]) for name, start, v in carries]  # (one assigned its own value too: the body reads it)
    for name in assigned:  # the body's own values, as Python leaves them after the loop
        value = scope.get(name)
        if name not in before and isinstance(value, Var):
            kept.append((name, outer.filled(value.aval, 0), Var(value.aval), value))
        elif isinstance(value, LoopIndex):
            scope[name] = value.at(len(steps) - 1)
    finals, _ = emit_loop(outer, len(steps), [(v, start) for _, start, v, _ in kept], [], list(region.rows.values()),
                          body.eqns, [new for *_, new in kept], [])
    scope.update((name, final) for (name, *_), final in zip(kept, finals))
    if node.target.id not in assigned:  # (else what the body's last step assigned it, as above)
        scope[node.target.id] = steps[-1]
    return "looped"


def _verdict(scope, before, assigned, carries, body, containers):
    """Can the traced body stand for every step ("looped"), for every step but the first
    ("peel"), or not ("unroll")?"""
    verdict = "looped"
    for name, start, v in carries:
        new = scope.get(name)
        if isinstance(new, Var) and new is not v and new.aval != v.aval:
            verdict = "peel"  # (h = zeros((1, n)) grows to the batch's shape in the first step)
        elif not isinstance(new, Var):
            return "unroll"
    for name in assigned:
        old, new = before.get(name, _MISSING), scope.get(name, _MISSING)
        if isinstance(old, Var) or new is old:
            continue
        if old is not _MISSING and isinstance(new, Var):
            verdict = "peel"  # (total = 0, then total = total + loss)
        elif old is not _MISSING and not _same(old, new) or new is _MISSING \
                or not isinstance(new, (Var, LoopIndex)) and holds_var(new):
            return "unroll"  # (a Python value changes from step to step, or a list of the step's arrays)
    if any(_changed(container, contents) for container, contents in containers):
        return "unroll"  # (ys.append(h): Python keeps every step's value)
    eqns = body.eqns + [e for b in bodies(body.eqns) for e in b.eqns]
    return "unroll" if any(e.op.state_inputs for e in eqns) else verdict  # (state updated in place: dropout's counter)


_MISSING = object()


def _same(a, b):
    try:
        return type(a) is type(b) and isinstance(a, (int, float, str, bool, tuple, type(None))) and a == b
    except Exception:
        return False


def holds_var(x):
    """Does x hold an IR value (or a loop region's variable), itself or in nested lists, tuples,
    sets and dicts?"""
    if isinstance(x, dict):
        x = x.values()
    elif not isinstance(x, (list, tuple, set)):
        return isinstance(x, (Var, LoopIndex))
    return any(holds_var(i) for i in x)


def _containers(values, found=None):
    """(container, its contents) for every list, dict and set reachable from `values`."""
    found = [] if found is None else found
    for x in values:
        if isinstance(x, (list, dict, set)) and not any(x is c for c, _ in found):
            found.append((x, dict(x) if isinstance(x, dict) else list(x)))
            _containers(x.values() if isinstance(x, dict) else list(x), found)
        elif isinstance(x, tuple):
            _containers(x, found)
    return found


def _changed(container, contents):
    if isinstance(container, dict):
        return container.keys() != contents.keys() or any(container[k] is not v for k, v in contents.items())
    return len(container) != len(contents) or any(a is not b for a, b in zip(container, contents))


def _assigned_names(statements):
    """The names a block of statements may assign (in any branch), in order."""
    nodes = (node for stmt in statements for node in ast.walk(stmt))
    return list(dict.fromkeys(node.id if isinstance(node, ast.Name) else node.name for node in nodes
                              if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del))
                              or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))))
