"""The kernel cache runs only what knetc wrote and sealed: no .pyc, altered Numba files are
discarded and rebuilt (with a warning), an unwritable directory falls back to a temporary
one, and a built cache still hits after it is moved or copied. Subprocesses run with the
real numba (the CUDA simulator switched off), as tests/test_cli.py."""
import os
import py_compile
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import knetc as kn
from knetc.backend import cache

KNETC = shutil.which("knetc")

SCRIPT = """\
import sys
import numpy as np, knetc as kn

@kn.compile(target="cpu")
def f(x):
    return kn.sum(x * x + 1.0)

print("value", float(f(np.arange(6.0).reshape(2, 3))), "stats", kn.stats())
"""
VALUE = float(np.sum(np.arange(6.0) ** 2 + 1.0))


def environment(cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "KNETC_LOG", "NUMBA_CACHE_DIR")}
    env["KNETC_CACHE_DIR"] = str(cache_dir)
    return env


def run_script(work, cache_dir):
    proc = subprocess.run([sys.executable, "script.py"], cwd=work, env=environment(cache_dir), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"value {VALUE}" in proc.stdout, proc.stdout
    stats = eval(proc.stdout.split("stats", 1)[1])  # a dict literal printed by the script
    return stats, proc.stderr


@pytest.fixture
def work(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "script.py").write_text(SCRIPT)
    return tmp_path / "work"


def _copy_without_times(src, dst):
    """A copy whose files all get new modification times (as `cp -r` without -p)."""
    for root, _, files in os.walk(src):
        target = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            shutil.copyfile(os.path.join(root, name), os.path.join(target, name))


@pytest.mark.skipif(KNETC is None, reason="the knetc console script is not installed (pip install -e .)")
def test_a_built_cache_hits_after_being_moved_or_copied(work, tmp_path):
    built, moved, copied = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    proc = subprocess.run([KNETC, "build", "script.py", "--cache-dir", str(built)], cwd=work,
                          env=environment(tmp_path / "unused"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "knetc build: 1 specializations" in proc.stdout and "1 compiled now" in proc.stdout
    shutil.move(str(built), str(moved))
    stats, _ = run_script(work, moved)
    assert stats["compilations"] == 0 and stats["cache_hits"] > 0
    _copy_without_times(moved, copied)
    stats, _ = run_script(work, copied)
    assert stats["compilations"] == 0 and stats["cache_hits"] > 0


def test_generated_modules_never_run_from_bytecode(work, tmp_path):
    store = tmp_path / "cache"
    stats, _ = run_script(work, store)
    assert stats["compilations"] == 1
    assert not list(store.rglob("*.pyc"))  # none written...
    (module,) = store.glob("knetc_generated_kernel_*.py")  # (and the driver: both run from source)
    # ...and one planted (unchecked-hash: Python's importer would trust it without looking
    # at the source) is never run.
    marker = tmp_path / "planted-code-ran"
    evil = tmp_path / "evil.py"
    evil.write_text(module.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    pyc = store / "__pycache__" / f"{module.stem}.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(str(evil), cfile=str(pyc), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    stats, _ = run_script(work, store)
    assert not marker.exists()
    assert stats["compilations"] == 0 and stats["cache_hits"] == 1


def test_altered_numba_files_and_seals_are_discarded_and_rebuilt(work, tmp_path):
    store = tmp_path / "cache"
    run_script(work, store)
    numba_files = sorted((store / "__pycache__").glob("*.nb[ic]"))
    assert numba_files and all(f.suffix in (".nbi", ".nbc") for f in numba_files)
    for f in numba_files:  # flip a byte in every sealed file: pickled machine code must not load
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    stats, stderr = run_script(work, store)
    assert "RuntimeWarning" in stderr and "discarded a corrupt or altered kernel cache entry" in stderr
    assert stats["compilations"] == 1  # rebuilt, not loaded
    stats, stderr = run_script(work, store)  # and sealed again: the next run loads it quietly
    assert (stats["compilations"], stats["cache_hits"]) == (0, 1) and "Warning" not in stderr
    (manifest,) = store.glob("*.manifest.json")
    manifest.write_text("{not json")
    stats, stderr = run_script(work, store)
    assert "unreadable seal" in stderr and stats["compilations"] == 1
    stats, stderr = run_script(work, store)
    assert (stats["compilations"], stats["cache_hits"]) == (0, 1) and "Warning" not in stderr


# ---------------------------------------------------------------- unwritable cache directories (in process)

@pytest.fixture
def fresh_fallback(monkeypatch):
    """Forget this process's view of which directories are usable, and the warning given."""
    monkeypatch.setattr(cache, "_UNUSABLE", {})
    monkeypatch.setattr(cache, "_FALLBACK", [])


def _square_sum(x):
    return kn.sum(x * x)


def _cube_sum(x):
    return kn.sum(x * x * x)


def _compile_and_check(fn, cache_option=True):
    compiled = kn.compile(fn, target="cpu", cache=cache_option)
    x = np.arange(4.0)
    np.testing.assert_allclose(compiled(x), fn(x))
    driver, kernel = compiled.generated_modules()
    assert os.path.dirname(driver.__knetc_path__) == os.path.dirname(kernel.__knetc_path__)
    return driver.__knetc_path__


def _recorded(record, text):
    return [w for w in record if text in str(w.message)]


def test_a_cache_path_below_a_file_falls_back_with_one_warning(tmp_path, monkeypatch, fresh_fallback):
    (tmp_path / "file").write_text("not a directory")
    bad = tmp_path / "file" / "cache"
    monkeypatch.setenv("KNETC_CACHE_DIR", str(bad))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = _compile_and_check(_square_sum)
        second = _compile_and_check(_cube_sum)
    falls = _recorded(record, "cannot be used")
    assert len(falls) == 1 and str(bad) in str(falls[0].message)
    assert os.path.dirname(first) == os.path.dirname(second) == cache._FALLBACK[0]
    assert not str(first).startswith(str(tmp_path))


def test_an_unwritable_directory_falls_back(tmp_path, monkeypatch, fresh_fallback):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(cache.os, "access",  # root ignores chmod 555: say so instead
                        lambda path, mode, **kw: False if str(path) == str(locked) else real_access(path, mode, **kw))
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        path = _compile_and_check(_square_sum, locked)
    assert os.path.dirname(path) == cache._FALLBACK[0] and not os.listdir(locked)


def test_a_failing_write_falls_back(tmp_path, monkeypatch, fresh_fallback):
    target = tmp_path / "full-disk"
    real_write = cache.write_atomically

    def write(path, text):
        if str(path).startswith(str(target)):
            raise OSError(28, "No space left on device")
        return real_write(path, text)
    monkeypatch.setattr(cache, "write_atomically", write)
    with pytest.warns(RuntimeWarning, match="No space left"):
        path = _compile_and_check(_cube_sum, target)
    assert os.path.dirname(path) == cache._FALLBACK[0]


@pytest.mark.skipif(KNETC is None, reason="the knetc console script is not installed (pip install -e .)")
def test_build_into_an_unusable_directory_is_an_error(work, tmp_path):
    (tmp_path / "file").write_text("")
    proc = subprocess.run([KNETC, "build", "script.py", "--cache-dir", str(tmp_path / "file" / "x")], cwd=work,
                          env=environment(tmp_path / "unused"), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "cannot build into" in proc.stderr and str(tmp_path / "file") in proc.stderr
