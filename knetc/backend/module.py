"""Generated kernel modules: written as real files in the cache directory (Numba caches
only functions that live in files) and imported from there."""
import atexit
import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile

from ..version import __version__


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


def load_module(name, source, directory=None):
    """Write `source` to <directory>/<name>_<hash>.py (atomically) and import it."""
    directory = directory or cache_dir()
    digest = hashlib.sha256((__version__ + "\n" + directory + "\n" + source).encode()).hexdigest()[:16]
    module_name = f"knetc_generated_{name}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = os.path.join(directory, module_name + ".py")
    if not _has_content(path, source):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)  # readers see the old file or the whole new one, never half
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


def _has_content(path, source):
    try:
        with open(path) as f:
            return f.read() == source
    except OSError:
        return False
