"""The `knetc` command and the kernel cache, through the real console script in subprocesses
(with the real numba.cuda: the simulator is switched off for them)."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import knetc as kn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNETC = shutil.which("knetc")
pytestmark = pytest.mark.skipif(KNETC is None, reason="the knetc console script is not installed (pip install -e .)")


def environment(cache_dir, log=""):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "KNETC_LOG")}
    env["KNETC_CACHE_DIR"] = str(cache_dir)
    if log:
        env["KNETC_LOG"] = log
    return env


def run(args, cache_dir, log="", cwd=ROOT):
    proc = subprocess.run(args, capture_output=True, text=True, env=environment(cache_dir, log), cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def sections(text):
    """{stage: body} from `knetc inspect` output."""
    parts = re.split(r"^--- (\w+) ---$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_inspect_prints_every_stage_of_the_mnist_loss(tmp_path):
    out = run([KNETC, "inspect", "examples/mnist_mlp.py:loss", "--stage", "all", "--target", "cuda"], tmp_path).stdout
    assert "=== loss (gradient w.r.t. argument 0): f32[784,64], f32[64], f32[64,10], f32[10], f32[100,784], i64[100]" in out
    s = sections(out)
    assert list(s) == ["source", "ir", "adjoint", "fused", "memory", "kernels", "driver", "ptx", "resources"]
    assert "def loss(model, x, y):" in s["source"]
    for op in ("matmul", "relu", "logsoftmax", "iota", "reduce_sum"):
        assert f"= {op}" in s["ir"]
    assert s["adjoint"].count("= matmul") == 5 and "= transpose" in s["adjoint"]  # 2 forward, 3 adjoint GEMMs
    counts = re.search(r"# (\d+) ops -> (\d+) kernels \+ 5 GEMMs", s["fused"])
    ops, kernels = int(counts.group(1)), int(counts.group(2))
    assert kernels < ops and "# group 0" in s["fused"]
    distinct = s["kernels"].count("@cuda.jit(cache=True)")  # each kernel once, however often launched
    launches = re.findall(r"^\s+k_\w+\[", s["driver"], re.M)  # (a reduction over many blocks launches twice)
    assert 0 < distinct <= kernels <= len(launches) <= 2 * kernels
    assert "def driver(" in s["driver"] and s["driver"].count("gemm(") == 5
    assert s["ptx"].count(".target sm_90") == distinct and s["ptx"].count(".entry") == distinct
    rows = [line.split() for line in s["resources"].splitlines() if re.match(r"k_\w+ ", line)]
    assert len(rows) == distinct and all(int(row[1]) > 0 for row in rows)  # a register count per kernel
    assert len(list(tmp_path.glob("knetc_generated_kernel_*.sm_90.ptx"))) == distinct  # the PTX is cached
    assert "# peak " in s["memory"] and "then free" in s["memory"]
    info = run([KNETC, "cache", "info", "--cache-dir", str(tmp_path)], tmp_path).stdout
    assert re.search(rf"ptx files\s+{distinct}\b", info)


def test_inspect_cpu_kernels_and_steps(tmp_path):
    out = run([KNETC, "inspect", "examples/mnist_mlp.py:predict", "--stage", "kernels,driver"], tmp_path).stdout
    s = sections(out)
    assert "=== predict (call)" in out and list(s) == ["kernels", "driver"]
    assert "@njit(cache=True, nogil=True" in s["kernels"] and "matmul(" in s["driver"]


def test_inspect_in_python_matches_the_program():
    @kn.compile(target="cpu")
    def affine(w, x):
        return kn.sum(kn.tanh(x @ w))
    w, x = np.ones((3, 2)), np.ones((4, 3))
    text = kn.inspect(affine, w, x, stage="ir")
    (spec,) = affine.specializations()
    assert text.split("--- ir ---\n")[1].rstrip() == str(spec.program)
    with pytest.raises(ValueError, match="unknown stage"):
        kn.inspect(affine, w, x, stage="assembly")


SCRIPT = """\
import numpy as np, knetc as kn
from helper import scale

@kn.compile(target="cpu")
def f(x):
    return kn.sum(scale(x) * x)

print("value", float(f(np.arange(6.0).reshape(2, 3))), "stats", kn.stats())
"""


def write_script(directory, factor):
    (directory / "script.py").write_text(SCRIPT)
    (directory / "helper.py").write_text(f"def scale(x):\n    return x * {factor}\n")


def test_cache_hit_miss_after_editing_a_helper_and_recovery_from_truncation(tmp_path):
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    write_script(work, 2.0)
    script = [sys.executable, "script.py"]
    first = run(script, cache, "compile,cache,launch", cwd=work)
    assert "value 110.0" in first.stdout and "[knetc compile] f [cpu]" in first.stderr
    assert "[knetc launch] f [cpu]" in first.stderr
    second = run(script, cache, "compile,cache", cwd=work)
    assert "value 110.0" in second.stdout and "[knetc compile]" not in second.stderr
    assert "[knetc cache] hit f [cpu]" in second.stderr and "'compilations': 0" in second.stdout

    write_script(work, 3.0)  # edit the helper the compiled function inlines: a new driver...
    edited = run(script, cache, "compile,cache", cwd=work)
    assert "value 165.0" in edited.stdout and "[knetc cache] miss knetc_generated_cpu_f_" in edited.stderr
    # ...around the same kernel (the number is its argument): nothing to compile
    assert "[knetc compile]" not in edited.stderr and "'compilations': 0" in edited.stdout

    for name in os.listdir(cache / "__pycache__"):  # truncate every Numba cache file...
        path = cache / "__pycache__" / name
        path.write_bytes(path.read_bytes()[:40])
    for module in cache.glob("knetc_generated_*.py"):  # ...and every generated module
        module.write_text(module.read_text()[:50])
    recovered = run(script, cache, "compile,cache", cwd=work)
    assert "value 165.0" in recovered.stdout and "discarding unsealed or corrupt" in recovered.stderr
    assert "[knetc compile] f [cpu]" in recovered.stderr
    again = run(script, cache, "compile,cache", cwd=work)
    assert "[knetc compile]" not in again.stderr and "discarding" not in again.stderr


def test_two_processes_compiling_at_once_leave_a_sound_cache(tmp_path):
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    write_script(work, 2.0)
    env = environment(cache, "compile,cache")
    procs = [subprocess.Popen([sys.executable, "script.py"], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert all("value 110.0" in out for out, _ in outputs)
    after = run([sys.executable, "script.py"], cache, "compile,cache", cwd=work)
    assert "value 110.0" in after.stdout and "[knetc compile]" not in after.stderr


def test_build_then_run_compiles_nothing(tmp_path):
    built = tmp_path / "built"
    out = run([KNETC, "build", "examples/mnist_mlp.py", "--cache-dir", str(built), "--", "--epochs", "1"], tmp_path).stdout
    assert "knetc build: 2 specializations" in out and "predict" in out and "loss" in out
    started = time.perf_counter()
    later = run([sys.executable, "examples/mnist_mlp.py", "--epochs", "1"], built, "compile,cache")
    assert "[knetc compile]" not in later.stderr
    # The loss's kernels and predict's (its logits kernel: the loss fuses the bias into nll's) are loaded.
    assert "[knetc cache] hit loss [cpu]" in later.stderr and "[knetc cache] hit predict [cpu]" in later.stderr
    assert "test accuracy" in later.stdout and time.perf_counter() - started < 120


def test_cache_info_and_clear(tmp_path):
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    write_script(work, 2.0)
    run([sys.executable, "script.py"], cache, cwd=work)
    info = run([KNETC, "cache", "info", "--cache-dir", str(cache)], cache).stdout
    assert re.search(r"modules\s+2\b", info) and re.search(r"numba files\s+[1-9]", info)  # a driver, a kernel
    cleared = run([KNETC, "cache", "clear", "--cache-dir", str(cache)], cache).stdout
    assert re.match(r"removed [1-9]\d* files", cleared)
    assert re.search(r"modules\s+0\b", run([KNETC, "cache", "info", "--cache-dir", str(cache)], cache).stdout)


@pytest.mark.parametrize("argv, message", [
    (["inspect", "no_such_script.py:loss"], "knetc: no script 'no_such_script.py'"),
    (["build", "no_such_script.py"], "knetc: no script 'no_such_script.py'"),
    (["inspect", "examples/mnist_mlp.py:loss", "--stage", "bogus"], "unknown stage(s) ['bogus']"),
    (["inspect", "examples/mnist_mlp.py:loss", "--cc", "abc"], "--cc 'abc': give a compute capability as MAJOR.MINOR")])
def test_bad_command_lines_end_in_one_message_not_a_traceback(argv, message):
    from knetc import cli
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert message in str(info.value.code)


def test_steps_must_be_at_least_one(capsys):
    from knetc import cli
    for argv in (["inspect", "examples/mnist_mlp.py:loss", "--steps", "0"], ["build", "x.py", "--steps", "-3"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2 and "at least 1" in capsys.readouterr().err


FAILING_SCRIPTS = {
    "raises.py": "import numpy as np\nimport knetc as kn\n\n\ndef helper():\n    raise RuntimeError('boom')\n\n\nhelper()\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "uncompilable.py": textwrap.dedent("""
        import numpy as np
        import knetc as kn


        @kn.compile
        def g(x):
            return kn.sum(x * np.random.rand())


        g(np.ones(3))
    """),
}


@pytest.mark.parametrize("command", ["build", "inspect"])
@pytest.mark.parametrize("script, message", [
    ("raises.py", "raises.py raised RuntimeError"), ("exits.py", "exits.py exited with status 3"),
    ("uncompilable.py", "draws random numbers")])
def test_a_failing_script_fails_the_command_with_its_own_message(tmp_path, capsys, command, script, message):
    # `knetc build` of a script that raised or exited with an error reported success (exit 0,
    # nothing built); a CompileError came with knetc's own frames around it.
    from knetc import cli
    (tmp_path / script).write_text(FAILING_SCRIPTS[script])
    target = str(tmp_path / script) + (":g" if command == "inspect" else "")
    with pytest.raises(SystemExit) as info:
        cli.main([command, target])
    assert info.value.code not in (None, 0) and message in str(info.value.code), info.value.code
    err = capsys.readouterr().err
    assert "knetc/cli.py" not in err and "runpy" not in err, err
    if script == "raises.py":
        assert "raise RuntimeError('boom')" in err  # the user's traceback, from the script on


def test_ptx_under_the_simulator_says_what_it_needs(tmp_path, monkeypatch):
    from knetc import inspection
    monkeypatch.setattr(inspection, "simulator_active", lambda: True)
    monkeypatch.setenv("KNETC_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="need Numba's CUDA compiler"):
        kn.inspect(kn.compile(lambda_free_double, target="cpu", cache=str(tmp_path)), np.ones(3), stage="ptx",
                   target="cuda", mode="call")
    with pytest.raises(ValueError, match="mode must be 'grad' or 'call'"):
        kn.inspect(lambda_free_double, np.ones(3), mode="bogus")


def lambda_free_double(x):
    return kn.sum(x * 2)
