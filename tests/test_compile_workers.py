"""A cold program's kernels compile in several processes at once (runtime/compile_workers.py): the
driver's dry run finds each kernel's argument types, forked copies compile some of them into
Numba's cache, and this process loads what they built. The answers, the cache and the
compile counts are those of a compile in one process; a copy that fails, dies or hangs
costs time, never a wrong or missing kernel."""
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import knetc as kn
from knetc.runtime import compile_workers as workers

pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and hasattr(os, "fork")),
                                reason="compile workers are forked processes (Linux)")

RNG = np.random.default_rng(11)

PROGRAM = textwrap.dedent("""
    import json, sys
    import numpy as np
    import knetc as kn

    def loss(model, x, y):
        for w, b in model[:-1]:
            x = kn.tanh(x @ w + b) * 0.5 + kn.sigm(x @ w)
        w, b = model[-1]
        return kn.nll(x @ w + b, y)

    rng = np.random.default_rng(3)
    model = [(rng.standard_normal((30, 20)).astype(np.float32), np.zeros(20, np.float32)),
             (rng.standard_normal((20, 7)).astype(np.float32), np.zeros(7, np.float32))]
    x, y = rng.standard_normal((40, 30)).astype(np.float32), rng.integers(0, 7, 40)
    grads = kn.grad(kn.compile(loss, target="cpu"))(model, x, y)
    print(json.dumps({"grads": [[g.tolist() for g in layer] for layer in grads], "stats": kn.stats()}))
""")


def _run(cache, workers_, tmp_path):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNETC_")}
    env.update(KNETC_CACHE_DIR=str(cache), KNETC_COMPILE_WORKERS=str(workers_), KNETC_LOG="compile,cache")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1]), out.stderr


def test_a_cold_program_compiles_in_several_processes_as_it_would_in_one(tmp_path):
    together, log = _run(tmp_path / "two", 2, tmp_path)
    alone, alone_log = _run(tmp_path / "one", 1, tmp_path)
    assert together["grads"] == alone["grads"]  # bitwise: the same kernels, compiled elsewhere
    assert together["stats"]["compilations"] == alone["stats"]["compilations"] == 1
    compile_line = next(line for line in log.splitlines() if line.startswith("[knetc compile]"))
    kernels = int(compile_line.split(": ")[1].split(" of ")[0])
    helped = int(compile_line.split("(")[1].split(" in other processes")[0])
    assert 1 <= helped < kernels, compile_line  # this process compiled some, a copy the others
    assert "in other processes" not in alone_log
    # The copies' cache files are sealed like this process's own: the next process loads them all.
    again, again_log = _run(tmp_path / "two", 2, tmp_path)
    assert again["grads"] == alone["grads"]
    assert again["stats"]["compilations"] == 0 and again["stats"]["cache_hits"] == 1
    assert "discarding" not in again_log and "[knetc compile]" not in again_log


def _functions(tmp_path, name, bodies):
    """A module of cached njit functions f0, f1, ... (one per body), new to this process."""
    path = tmp_path / f"{name}.py"
    source = "from numba import njit\n"
    for i, body in enumerate(bodies):
        source += f"\n@njit(cache=True)\ndef f{i}(x):\n" + textwrap.indent(body, "    ") + "\n"
    path.write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(tmp_path))
    return [getattr(module, f"f{i}") for i in range(len(bodies))]


BODIES = ["return x * 2.0", "s = 0.0\nfor v in x:\n    s += v * v\nreturn s", "return x.sum() + 1.0",
          "return (x - x.mean()).max()"]


def _work(functions):
    from numba import float64
    from numba.core import types
    return [(f, [(types.Array(float64, 1, "C"),)]) for f in functions]


def _check_answers(functions):
    x = np.arange(5.0)
    assert functions[0](x).tolist() == (x * 2).tolist()
    assert functions[1](x) == 30.0
    assert functions[2](x) == 11.0
    assert functions[3](x) == 2.0


def test_copies_compile_into_the_cache_and_this_process_loads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "3")
    functions = _functions(tmp_path, "workers_module_a", BODIES)
    built = workers.compile_all(_work(functions))
    assert built and all(f in functions for f in built)
    assert all(len(f.overloads) == (0 if f in built else 1) for f in functions)  # this process compiled the rest
    _check_answers(functions)
    assert all(sum(f.stats.cache_hits.values()) == 1 for f in built)  # loaded, not compiled again


def test_one_process_or_one_kernel_forks_nothing(tmp_path, monkeypatch):
    functions = _functions(tmp_path, "workers_module_b", BODIES[:2])
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "1")
    assert workers.compile_all(_work(functions)) == {}
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "4")
    assert workers.compile_all(_work(functions[:1])) == {}
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "two")
    with pytest.raises(ValueError, match="KNETC_COMPILE_WORKERS"):
        workers.processes()


def _dies_after_taking_one(work, tasks, done):
    workers._take(tasks)
    os._exit(9)


def _hangs_after_taking_one(work, tasks, done):
    workers._take(tasks)
    time.sleep(600)


@pytest.mark.parametrize("copy", [_dies_after_taking_one, _hangs_after_taking_one])
def test_a_copy_that_dies_or_hangs_costs_time_not_kernels(tmp_path, monkeypatch, copy):
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "2")
    monkeypatch.setattr(workers, "_copy", copy)
    monkeypatch.setattr(workers, "STALL_S", 1.0)
    functions = _functions(tmp_path, f"workers_module_{copy.__name__}", BODIES)
    started = time.monotonic()
    assert workers.compile_all(_work(functions)) == {}  # the copy finished nothing
    assert time.monotonic() - started < 60
    assert sum(len(f.overloads) == 0 for f in functions) == 1  # the one it took: compiled on first call
    _check_answers(functions)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # the copy was stopped and reaped


def test_a_kernel_that_fails_to_compile_fails_where_it_is_called(tmp_path, monkeypatch):
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "2")
    functions = _functions(tmp_path, "workers_module_c", BODIES + ["return x.no_such_attribute"])
    built = workers.compile_all(_work(functions))
    assert functions[-1] not in built
    _check_answers(functions)
    from numba.core.errors import TypingError
    with pytest.raises(TypingError, match="no_such_attribute"):
        functions[-1](np.arange(5.0))


def scaled_rows(w, xs):
    h = xs[0] * 0.0
    for t in range(xs.shape[0]):  # a loop region: its body's kernels are called in a Python loop
        h = kn.tanh(xs[t] @ w + h) + h * 0.5
    return kn.sum(kn.exp(h) * 3.0 - kn.sum(h, dims=1))


def _fresh_kernel_cache(monkeypatch, tmp_path):
    """Kernels new to this process: an empty cache directory, nothing loaded from it yet."""
    from knetc.backend import cache
    monkeypatch.setenv("KNETC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_LOADED", {})
    monkeypatch.setattr(cache, "_KERNELS", {})


def test_the_dry_run_records_the_argument_types_the_run_passes_and_changes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "2")
    _fresh_kernel_cache(monkeypatch, tmp_path)
    dry_runs, dry_run = [], workers.calls_made

    def recorded(function, arguments, dispatchers):
        before = [a.copy() for a in arguments]
        calls = dry_run(function, arguments, dispatchers)
        assert all(np.array_equal(a, b) for a, b in zip(arguments, before))  # nothing written
        assert all(len(d.overloads) == 0 for d in dispatchers)  # nothing compiled
        dry_runs.append((dispatchers, calls))
        return calls
    monkeypatch.setattr(workers, "calls_made", recorded)
    f = kn.compile(scaled_rows, target="cpu")
    x, w = RNG.standard_normal((3, 700, 300)), RNG.standard_normal((300, 300)) * 0.05
    dw, value = kn.gradloss(f)(w, x)
    want_dw, want_value = kn.gradloss(scaled_rows)(w, x)  # eager
    np.testing.assert_allclose(value, want_value, rtol=1e-10)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-9, atol=1e-12)
    drivers = [e.generated.driver for s in f.specializations() for e in s.executables()]
    assert any("in_parallel(" in d for d in drivers)  # threaded kernels are recorded too
    assert any("for t" in d for d in drivers)  # and kernels called from a loop's body
    assert dry_runs
    for dispatchers, calls in dry_runs:
        assert set(calls) == set(dispatchers)  # every new kernel is called
        for kernel, signatures in calls.items():
            assert signatures and set(signatures) <= set(kernel.overloads)  # what the real run compiled or loaded


def test_a_warm_cache_needs_no_dry_run(tmp_path):
    _, log = _run(tmp_path / "warm", 2, tmp_path)
    script = tmp_path / "probe.py"
    script.write_text(PROGRAM.replace("import knetc as kn", "import knetc as kn\n"
                                      "from knetc.runtime import compile_workers\n"
                                      "def refuse(*a): raise AssertionError('a dry run')\n"
                                      "compile_workers.calls_made = refuse"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNETC_")}
    env.update(KNETC_CACHE_DIR=str(tmp_path / "warm"), KNETC_COMPILE_WORKERS="2")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1])["stats"]["cache_hits"] == 1


def test_a_process_sharing_the_cores_compiles_in_its_share(monkeypatch):
    """Data-parallel ranks share the cores (threads.share_cores): each compiles in as many
    processes as its share, not one per core."""
    from knetc.runtime import threads
    monkeypatch.delenv("KNETC_COMPILE_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(threads, "_share", None)
    assert workers.processes() == workers.MAX_DEFAULT
    monkeypatch.setattr(threads, "_share", 2)
    assert workers.processes() == 2


def test_a_dry_run_that_fails_leaves_the_compile_to_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "2")
    functions = _functions(tmp_path, "workers_module_d", BODIES)

    def driver(x):
        functions[0](x)
        raise RuntimeError("not for a dry run")
    assert workers.compile_calls(driver, [np.arange(3.0)], functions) == {}
    assert all(not f.overloads for f in functions)  # nothing compiled yet: the run compiles them
    _check_answers(functions)


def test_no_copies_once_the_process_has_started_cuda(monkeypatch):
    import types as pytypes
    monkeypatch.setenv("KNETC_COMPILE_WORKERS", "2")
    assert workers.usable() == (not workers._cuda_started())
    started = pytypes.SimpleNamespace(driver=pytypes.SimpleNamespace(pid=os.getpid(), initialization_error=None))
    monkeypatch.setitem(sys.modules, "numba.cuda.cudadrv.driver", started)
    assert not workers.usable()
    started.driver.pid = None  # imported, never initialised
    assert workers.usable()
