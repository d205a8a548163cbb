"""The kernel cache: generated modules, and Numba's compiled machine code for them.

Generated modules are real files (Numba caches only functions that live in files) named by
a hash of everything they depend on: the knetc version, the source of the compiled function
and of every helper it inlines, and the generated code itself (which fixes the argument
signature and the target). Numba keeps its compiled code beside them in `__pycache__`
(keyed by its own signature, a hash of the module's contents and the GPU's compute
capability). Nothing in a key depends on where the cache directory is, so a cache built
with `knetc build --cache-dir A` still hits after A is moved or copied elsewhere.

Trust: only what knetc wrote and sealed runs.
- A module is never imported through Python's bytecode cache (`__pycache__/*.pyc`, which no
  seal covers): the source knetc generated in memory is compiled and executed into a fresh
  module whose file is the cache file (checked to hold that same text, rewritten if not).
- Numba's cache files (.nbi index and .nbc data: pickled machine code) are sealed by a
  manifest of SHA-256 hashes once knetc has run them. Before a module is loaded, every
  Numba file of it that the manifest does not vouch for is deleted, so Numba compiles
  again instead of loading it: a warning when a sealed file was altered (corrupt or
  tampered), silently (KNETC_LOG=cache shows it) for a leftover that was never sealed.
- Writes are atomic (a reader sees the whole old file or the whole new one).

A cache directory that cannot be written (read-only, or a path below a regular file) is
not an error: kernels go to a private temporary directory for the rest of the process
(removed at exit), with one warning, so later runs compile again until it is fixed.
"""
import atexit
import contextlib
import functools
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import types
import warnings

from ..report import report
from ..runtime.launch import prepared
from ..version import __version__

PREFIX = "knetc_generated_"


def cache_dir():
    """KNETC_CACHE_DIR, else $XDG_CACHE_HOME/knetc, else ~/.cache/knetc (created when possible;
    `directory_for(True)` is where kernels really go)."""
    path = os.environ.get("KNETC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "knetc")
    with contextlib.suppress(OSError):  # (directory_for reports it and falls back)
        os.makedirs(path, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def _temporary_dir(prefix):
    """A directory private to this process (one per prefix), removed at exit."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_UNUSABLE = {}  # absolute directory -> why it cannot be written (checked once per process)


def why_unwritable(directory):
    """None when kernels can be cached in `directory` (and Numba in its __pycache__), else why not."""
    if directory not in _UNUSABLE:
        try:
            os.makedirs(directory, exist_ok=True)
            locked = [d for d in (directory, os.path.join(directory, "__pycache__"))
                      if os.path.isdir(d) and not os.access(d, os.W_OK | os.X_OK)]
            why = f"{locked[0]} is not writable" if locked else None
        except OSError as e:
            why = f"{type(e).__name__}: {e.strerror or e}"
        _UNUSABLE[directory] = why
    return _UNUSABLE[directory]


_FALLBACK = []  # the private directory used in place of unwritable cache directories, once made


def _fall_back(directory, why):
    """The private temporary directory used instead of `directory`, warning once."""
    _UNUSABLE[directory] = why
    if not _FALLBACK:
        _FALLBACK.append(_temporary_dir("knetc-cache-"))
        warnings.warn(f"knetc: the kernel cache directory {directory} cannot be used ({why}); compiled "
                      f"kernels go to a temporary directory for this process ({_FALLBACK[0]}), so later runs "
                      f"compile again. Set KNETC_CACHE_DIR to a writable directory.", RuntimeWarning, stacklevel=3)
    report("cache", f"{directory} unusable ({why}): using {_FALLBACK[0]}")
    return _FALLBACK[0]


def directory_for(cache):
    """Where modules go for `@kn.compile(cache=...)`: True, the cache directory; False, a
    directory private to this process (removed at exit); a path, that directory. A
    directory that cannot be written is replaced by a private temporary one (one warning)."""
    if cache is False:
        return _temporary_dir("knetc-nocache-")
    directory = os.path.abspath(cache_dir() if cache is True else os.fspath(cache))
    why = why_unwritable(directory)
    return directory if why is None else _fall_back(directory, why)


def routines_key(paths):
    """A hash of the source files of library routines ("module:function") a module calls: Numba's
    cache of a caller does not notice when a callee changes, so the caller's key must."""
    sha = hashlib.sha256()
    for module in sorted({path.split(":")[0] for path in paths}):
        sha.update(module.encode() + (read_text(importlib.util.find_spec(module).origin) or "").encode())
    return sha.hexdigest()[:16] if paths else ""


_LOADED = {}  # path -> module, loaded by this process
_KERNELS = {}  # digest -> kernel function, loaded by this process (what drivers bind)


def digest(source, key=""):
    """The hash that names a generated module: of the knetc version, `key` and the text."""
    return hashlib.sha256("\n".join([__version__, key, source]).encode()).hexdigest()[:16]


def load_kernel(source, directory=None):
    """Load a kernel module (backend.driver.KernelSource), shared by every driver that binds
    the same text: each distinct kernel is compiled once per process (and, cached, once)."""
    module = load_module("kernel", source.text, directory)
    _KERNELS.setdefault(source.digest, prepared(getattr(module, source.name)))  # (CUDA: runtime/launch.py)
    return module


def kernel(key):
    """The kernel a driver binds by digest (load_kernel loads it before the driver runs)."""
    try:
        return _KERNELS[key]
    except KeyError:
        raise RuntimeError(f"knetc: kernel {key} is not loaded; generated drivers are loaded by "
                           "knetc (compiler.load), not imported directly") from None


def load_module(name, source, directory=None, key=""):
    """Load generated `source` as module knetc_generated_<name>_<hash>, from its file in
    `directory` (default: the cache directory).

    `key` names what the code was generated from (the user's sources), so editing them
    misses the cache even where the generated code would come out the same. The code run
    is `source` itself (never a .pyc); the file holds the same text for Numba's cache."""
    directory = os.path.abspath(directory or directory_for(True))
    module_name = f"{PREFIX}{name}_{digest(source, key)}"
    path = os.path.join(directory, module_name + ".py")
    if path in _LOADED:
        return _LOADED[path]
    on_disk = read_text(path)
    if on_disk != source:
        if on_disk is not None:
            _warn_discarded(path, "the module's text differs from what knetc generated")
        try:
            write_atomically(path, source)
        except OSError as e:
            if directory in _FALLBACK:
                raise
            return load_module(name, source, _fall_back(directory, f"{type(e).__name__}: {e.strerror or e}"), key)
        report("cache", f"miss {module_name}")
    _discard_unsealed(path)
    module = types.ModuleType(module_name)
    module.__file__ = path  # Numba finds its cache files from here (functions' co_filename)
    module.__knetc_path__ = path
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module  # Numba's cached environments look the module up by name
    try:
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise
    _LOADED[path] = module
    return module


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
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
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


# ----------------------------------------------------------------- Numba's files: seal/check

def numba_files(path):
    """Numba's cache files (.nbi index, .nbc data) for the module at `path`: beside it in
    __pycache__, or below NUMBA_CACHE_DIR when that is set (Numba's own rule)."""
    from numba.core import caching, config
    directory = os.path.join(os.path.dirname(path), "__pycache__")
    if config.CACHE_DIR:
        directory = os.path.join(config.CACHE_DIR, caching._CacheLocator.get_suitable_cache_subpath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    return sorted(glob.glob(os.path.join(directory, glob.escape(stem) + ".*.nb[ic]")))


def _manifest_path(path):
    return path[:-3] + ".manifest.json"


def file_sha256(path):
    """The SHA-256 (hex) of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def seal(module):
    """Record the hashes of the module's Numba cache files, as they are after a good run.
    Best effort: an unwritable manifest only means the files are rebuilt next time."""
    path = module.__knetc_path__
    try:
        hashes = {os.path.basename(f): file_sha256(f) for f in numba_files(path)}
        write_atomically(_manifest_path(path), json.dumps(hashes, indent=0, sort_keys=True))
    except OSError as e:
        report("cache", f"could not seal {os.path.basename(path)}: {e}")


def _warn_discarded(path, why):
    report("cache", f"discarding unsealed or corrupt {os.path.basename(path)}: {why}")
    warnings.warn(f"knetc: discarded a corrupt or altered kernel cache entry {path} ({why}); it is rebuilt",
                  RuntimeWarning, stacklevel=4)


def _discard_unsealed(path):
    try:
        with open(_manifest_path(path)) as f:
            sealed = json.load(f)
        if not isinstance(sealed, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        sealed = {}
    except (OSError, ValueError) as e:
        sealed = {}
        if numba_files(path):
            _warn_discarded(_manifest_path(path), f"unreadable seal: {e}")
    for f in numba_files(path):
        try:
            digest = file_sha256(f)
        except OSError:
            continue  # removed meanwhile by another process
        expected = sealed.get(os.path.basename(f))
        if digest == expected:
            continue
        if expected is None:
            report("cache", f"discarding unsealed or corrupt {os.path.basename(f)}: never sealed")
        else:
            _warn_discarded(f, "its hash does not match the seal: corrupt, altered, or rewritten by another "
                               "process compiling the same kernel at the same time")
        with contextlib.suppress(OSError):
            os.remove(f)


# ----------------------------------------------------------------- knetc cache info|clear

def info(directory=None):
    """What the cache holds: modules, Numba's files, bytes."""
    directory = directory or cache_dir()
    modules = glob.glob(os.path.join(directory, PREFIX + "*.py"))
    compiled = [f for m in modules for f in numba_files(m)]
    ptx = glob.glob(os.path.join(directory, PREFIX + "*.ptx"))
    manifests = glob.glob(os.path.join(directory, PREFIX + "*.json"))
    return {"directory": directory, "modules": len(modules), "numba_files": len(compiled), "ptx_files": len(ptx),
            "bytes": sum(os.path.getsize(f) for f in modules + compiled + ptx + manifests)}


def clear(directory=None):
    """Delete every knetc module, manifest and Numba cache file in the cache directory."""
    directory = directory or cache_dir()
    files = [f for pattern in (PREFIX + "*", os.path.join("__pycache__", PREFIX + "*"))
             for f in glob.glob(os.path.join(directory, pattern))]
    for f in files:
        os.remove(f)
    return len(files)
