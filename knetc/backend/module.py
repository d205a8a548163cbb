"""Generated kernel modules: written as real files in the cache directory (Numba caches
only functions that live in files) and imported from there."""
import hashlib
import importlib.util
import os
import sys
import tempfile

from ..version import __version__


def cache_dir():
    """KNETC_CACHE_DIR, else $XDG_CACHE_HOME/knetc, else ~/.cache/knetc."""
    path = os.environ.get("KNETC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "knetc")
    os.makedirs(path, exist_ok=True)
    return path


def load_module(name, source):
    """Write `source` to <cache>/<name>_<hash>.py (atomically) and import it."""
    digest = hashlib.sha256((__version__ + "\n" + source).encode()).hexdigest()[:16]
    module_name = f"knetc_generated_{name}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = os.path.join(cache_dir(), module_name + ".py")
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
