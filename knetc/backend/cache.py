"""The kernel cache: generated modules, and Numba's compiled machine code for them.

Generated modules are real files (Numba caches only functions that live in files) named by
a hash of everything they depend on: the knetc version, the cache directory, the source of
the compiled function and of every helper it inlines, and the generated code itself (which
fixes the argument signature and the target). Numba keeps its compiled code beside them in
`__pycache__` (keyed by its own signature and the GPU's compute capability).

Trust: modules are written atomically (a reader sees the whole old file or the whole new
one). Numba's cache files are sealed by a manifest of SHA-256 hashes once knetc has run
them; before a module is imported, every cache file of it that the manifest does not vouch
for (truncated, corrupted, or half-written by a concurrent process) is deleted, so Numba
rebuilds it instead of loading it.
"""
import atexit
import functools
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile

from ..report import report
from ..version import __version__

PREFIX = "knetc_generated_"


def cache_dir():
    """KNETC_CACHE_DIR, else $XDG_CACHE_HOME/knetc, else ~/.cache/knetc."""
    path = os.environ.get("KNETC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "knetc")
    os.makedirs(path, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def _private_dir():
    path = tempfile.mkdtemp(prefix="knetc-nocache-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def directory_for(cache):
    """Where modules go for `@kn.compile(cache=...)`: True, the cache directory; False, a
    directory private to this process (removed at exit); a path, that directory."""
    if cache is True:
        return cache_dir()
    if cache is False:
        return _private_dir()
    os.makedirs(cache, exist_ok=True)
    return os.fspath(cache)


def routines_key(paths):
    """A hash of the source files of library routines ("module:function") a module calls: Numba's
    cache of a caller does not notice when a callee changes, so the caller's key must."""
    digest = hashlib.sha256()
    for module in sorted({path.split(":")[0] for path in paths}):
        origin = importlib.util.find_spec(module).origin
        digest.update(module.encode() + (read_text(origin) or "").encode())
    return digest.hexdigest()[:16] if paths else ""


def load_module(name, source, directory=None, key=""):
    """Import generated `source` from <directory>/knetc_generated_<name>_<hash>.py.

    `key` names what the code was generated from (the user's sources), so editing them
    misses the cache even where the generated code would come out the same."""
    directory = os.path.abspath(directory or cache_dir())
    digest = hashlib.sha256("\n".join([__version__, directory, key, source]).encode()).hexdigest()[:16]
    module_name = f"{PREFIX}{name}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = os.path.join(directory, module_name + ".py")
    if read_text(path) != source:
        write_atomically(path, source)
        report("cache", f"miss {module_name}")
    _discard_unsealed(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    module.__knetc_path__ = path
    return module


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def write_atomically(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ----------------------------------------------------------------- Numba's files: seal/check

def numba_files(path):
    """Numba's cache files (.nbi index, .nbc data) for the module at `path`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return sorted(glob.glob(os.path.join(os.path.dirname(path), "__pycache__", glob.escape(stem) + ".*.nb[ic]")))


def _manifest_path(path):
    return path[:-3] + ".manifest.json"


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def seal(module):
    """Record the hashes of the module's Numba cache files, as they are after a good run."""
    path = module.__knetc_path__
    hashes = {os.path.basename(f): _sha256(f) for f in numba_files(path)}
    write_atomically(_manifest_path(path), json.dumps(hashes, indent=0, sort_keys=True))


def _discard_unsealed(path):
    try:
        with open(_manifest_path(path)) as f:
            sealed = json.load(f)
    except (OSError, ValueError):
        sealed = {}
    for f in numba_files(path):
        try:
            good = sealed.get(os.path.basename(f)) == _sha256(f)
        except OSError:
            continue  # removed meanwhile by another process
        if not good:
            report("cache", f"discarding unsealed or corrupt {os.path.basename(f)}")
            try:
                os.remove(f)
            except OSError:
                pass


# ----------------------------------------------------------------- knetc cache info|clear

def info(directory=None):
    """What the cache holds: modules, Numba's files, bytes."""
    directory = directory or cache_dir()
    modules = glob.glob(os.path.join(directory, PREFIX + "*.py"))
    compiled = [f for m in modules for f in numba_files(m)]
    ptx = glob.glob(os.path.join(directory, PREFIX + "*.ptx"))
    manifests = glob.glob(os.path.join(directory, PREFIX + "*.json"))
    size = sum(os.path.getsize(f) for f in modules + compiled + ptx + manifests)
    return {"directory": directory, "modules": len(modules), "numba_files": len(compiled), "ptx_files": len(ptx),
            "bytes": size}


def clear(directory=None):
    """Delete every knetc module, manifest and Numba cache file in the cache directory."""
    directory = directory or cache_dir()
    removed = 0
    for pattern in (PREFIX + "*", os.path.join("__pycache__", PREFIX + "*")):
        for f in glob.glob(os.path.join(directory, pattern)):
            os.remove(f)
            removed += 1
    return removed
