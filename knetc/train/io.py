"""Saving and loading, as Knet's `@save`/`@load`: `kn.save(path, a=a, b=b)`, `kn.load(path)`.

The file is a zip archive (entries stored, not compressed) holding:

- `manifest.json`: {"format": "knetc", "version": 1, "values": {name: node}}, where a node is
  a JSON null/bool/number/string for None/bools/ints/floats/strings, or an object tagged by
  "$": "list"/"tuple" (items), "dict" (items: [[key, value], ...]), "array" (an entry
  name), "scalar" (a numpy scalar, stored as a 0-d array), "complex", "param" (value, opt),
  "object" (a registered class name and its attributes) or "ref" (the same Param, array or
  object again: identity, e.g. tied weights, survives the round trip);
- `arrays/<k>.npy`: the arrays, in numpy's .npy format; object dtypes are refused.

Why this format: loading must never execute code from the file. There is no pickle
anywhere; JSON and the .npy header are parsed as data; arrays are read as raw bytes of a
checked dtype; and the only classes rebuilt are those registered with `@serializable`
(optimizers, for example), by setting their attributes without calling their constructor.
Writes go to a temporary file in the same directory, synced, then renamed over the
destination, so an interrupted save leaves the old file intact. The temporary file's name
holds the writer's host and process id (`.<name>.<host>-<pid>.<random>.tmp`): a later save
to the same path removes those its dead writers left behind (a killed process), never one a
live writer is still filling. Loading opens only regular files: a directory, FIFO or device
is refused at once rather than read (or waited on) forever.
"""
import errno
import json
import math
import numbers
import os
import re
import socket
import stat
import tempfile
import time
import zipfile
import zlib

import numpy as np

from ..autograd import Param
from ..knetarray import from_saved
from ..runtime.device_state import all_on_host

SERIALIZABLE = {}  # "module.QualName" -> class

FORMAT, VERSION = "knetc", 1
_MANIFEST = "manifest.json"
_ARRAY_NAME = re.compile(r"arrays/(0|[1-9][0-9]*)\.npy\Z")
_ZIP64_LIMIT = 1 << 31  # arrays larger than this need a zip64 entry, decided before writing


def serializable(cls):
    """Class decorator: instances may be saved with kn.save (their attributes, __slots__
    included, are stored) and rebuilt by kn.load without calling the constructor:

        @kn.serializable
        class Dense:
            def __init__(self, i, o): self.w, self.b = kn.param(i, o), kn.param0(o)

    The class must be defined (its module imported) before kn.load rebuilds it."""
    SERIALIZABLE[_class_name(cls)] = cls
    return cls


def _slots(cls):
    """The __slots__ fields of cls and its bases."""
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [n for n in slots if n not in ("__dict__", "__weakref__")]
    return list(dict.fromkeys(names))


def _class_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_device_array(x):
    return hasattr(x, "__cuda_array_interface__") or callable(getattr(x, "copy_to_host", None))


def _to_host(x):
    """The host (numpy) copy of a device array: numba's copy_to_host, CuPy's get(), or any
    object with __cuda_array_interface__ through numba.cuda."""
    if callable(getattr(x, "copy_to_host", None)):
        return np.asarray(x.copy_to_host())
    if callable(getattr(x, "get", None)):
        return np.asarray(x.get())
    from numba import cuda
    return cuda.as_cuda_array(x).copy_to_host()


# ---------------------------------------------------------------- save
class _Encoder:
    """Turns a tree of values into JSON nodes, collecting the arrays to write."""

    def __init__(self):
        self.arrays = []   # numpy arrays, written as arrays/<k>.npy
        self.seen = {}     # id(obj) -> (obj, ref index): Params, arrays, objects already stored
        self.active = set()  # ids of the containers being encoded: a cycle is an error

    def array(self, a, **tags):
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise TypeError(f"kn.save: cannot save an array of dtype {a.dtype} (object arrays "
                            f"would need pickle); convert it to a numeric or string dtype")
        self.arrays.append(a)
        return {"$": "array", "entry": f"arrays/{len(self.arrays) - 1}.npy", **tags}

    def shared(self, x, make):
        """Encode x once; later occurrences of the same object are references to it."""
        if id(x) in self.seen:
            return {"$": "ref", "id": self.seen[id(x)][1]}
        ref = len(self.seen)
        self.seen[id(x)] = (x, ref)  # keep x alive so its id is not reused; set first for self-references
        return {**make(), "id": ref}

    def __call__(self, x):
        if x is None or type(x) is bool:
            return x
        if isinstance(x, str):
            return str(x)
        if isinstance(x, np.generic):  # before int/float: np.float64 is a float; keep the dtype
            node = self.array(np.asarray(x))
            node["$"] = "scalar"
            return node
        if isinstance(x, numbers.Integral):
            return int(x)
        if isinstance(x, float):
            return float(x)  # JSON numbers; NaN and infinities are written as NaN/Infinity
        if isinstance(x, complex):
            return {"$": "complex", "re": x.real, "im": x.imag}
        if isinstance(x, np.ndarray):
            return self.shared(x, lambda: self.array(x))
        if _is_device_array(x):  # stored as host data, loaded as a numpy array
            return self.shared(x, lambda: self.array(_to_host(x), device=True))
        if isinstance(x, Param):
            return self.shared(x, lambda: {"$": "param", "value": self(x.value), "opt": self(x.opt)})
        if isinstance(x, (list, tuple, dict)):  # subclasses (namedtuple, OrderedDict) saved as the plain type
            if id(x) in self.active:
                raise ValueError("kn.save: the data contains itself (a cycle)")
            self.active.add(id(x))
            try:
                if isinstance(x, dict):
                    return {"$": "dict", "items": [[self(k), self(v)] for k, v in x.items()]}
                return {"$": "list" if isinstance(x, list) else "tuple", "items": [self(v) for v in x]}
            finally:
                self.active.discard(id(x))
        name = _class_name(type(x))
        if SERIALIZABLE.get(name) is type(x):
            return self.shared(x, lambda: self.obj(name, x))
        raise TypeError(f"kn.save: cannot save a {name} (save arrays, Params, numbers, strings, None, "
                        f"lists/tuples/dicts of them, or instances of @serializable classes)")

    def obj(self, name, x):
        attrs = dict(getattr(x, "__dict__", {}))
        attrs.update((slot, getattr(x, slot)) for slot in _slots(type(x)) if hasattr(x, slot))
        for key in attrs:
            _check_attribute(name, key, TypeError)
        return {"$": "object", "class": name, "attrs": {k: self(v) for k, v in attrs.items()}}


def _check_attribute(cls_name, key, error):
    # Only plain attribute names: never dunders such as __class__ or __dict__.
    if not isinstance(key, str) or not key.isidentifier() or key.startswith("__"):
        raise error(f"attribute {key!r} of {cls_name} cannot be saved or loaded")


def save(path, *pairs, **named):
    """Save named values to `path` (Knet's `Knet.@save "f" a b` is `kn.save("f", a=a, b=b)`):
    `kn.save("model.knetc", model=model, epoch=3)`. Knet's other forms work too: names and
    values in turn, `kn.save(path, "model", model, "epoch", 3)`, or one dict of them.

    Values may be numpy arrays, Params (with their optimizer state `opt`), device arrays
    (stored as host data), numbers, strings, bools, None, lists/tuples/dicts of these, and
    instances of classes registered with `@serializable`. The write is atomic: the file is
    either the old one or the complete new one, never a mix. Returns None.

    Example:
        >>> import os, tempfile, numpy as np, knetc as kn
        >>> path = os.path.join(tempfile.mkdtemp(), "model.knetc")
        >>> kn.save(path, model=[kn.Param(np.ones(2))], epoch=3)
        >>> kn.load(path, "epoch")
        3
    """
    if len(pairs) == 1 and isinstance(pairs[0], dict):
        pairs = [x for item in pairs[0].items() for x in item]
    if len(pairs) % 2 or not all(isinstance(name, str) for name in pairs[::2]):
        raise TypeError("kn.save: give names and values in turn, kn.save(path, 'model', model), a dict of "
                        "them, or keywords, kn.save(path, model=model)")
    if set(pairs[::2]) & set(named) or len(set(pairs[::2])) < len(pairs[::2]):
        raise ValueError(f"kn.save: a name is given twice: {sorted(pairs[::2])} and {sorted(named)}")
    named = {**dict(zip(pairs[::2], pairs[1::2])), **named}
    if not named:
        raise ValueError("kn.save: nothing to save; name the values, kn.save(path, model=model)")
    path = os.fspath(path)
    all_on_host()  # (state a compiled CUDA run left on the device: batchnorm's running statistics)
    encode = _Encoder()
    manifest = {"format": FORMAT, "version": VERSION, "values": {k: encode(v) for k, v in named.items()}}
    text = json.dumps(manifest, allow_nan=True).encode("utf-8")  # before touching the disk: errors leave it alone

    if os.path.islink(path):  # write through the link, as open() would (the rename below would replace it)
        path = os.path.realpath(path)
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        raise OSError(errno.EINVAL, "kn.save: the path is not a regular file (a FIFO, socket or device)", path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):  # (said of the user's path, not of the temporary file written first)
        raise FileNotFoundError(errno.ENOENT, f"kn.save: the folder {folder!r} does not exist", path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "kn.save: the path is a folder; give a file name in it", path)
    _remove_stale_temporaries(folder, os.path.basename(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.{_HOST}-{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as error:  # (said of the user's path, not of the temporary file it could not make)
        raise type(error)(error.errno, f"kn.save: cannot write in the folder {folder!r} ({error.strerror})",
                          path) from None
    try:
        with os.fdopen(fd, "w+b") as f:
            _write_zip(f, text, encode.arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


_HOST = format(zlib.crc32(socket.gethostname().encode()), "08x")  # which machine wrote a temporary file
_STALE_AGE = 24 * 3600  # seconds: a temporary file this old is abandoned, whoever wrote it


def _pid_alive(pid):
    """Whether process `pid` exists on this machine (None where that cannot be asked safely)."""
    if os.name != "posix":
        return None  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _remove_stale_temporaries(folder, name):
    """Remove temporary files of earlier saves to `folder/name` whose writer is gone: written
    on this host by a process that no longer exists, or (any writer) untouched for a day.
    Best effort: a save never fails because of this."""
    pattern = re.compile(r"\." + re.escape(name) + r"\.(?:([0-9a-f]{8})-([0-9]+)\.)?[A-Za-z0-9_]+\.tmp\Z")
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    now = time.time()
    for entry in entries:
        match = pattern.match(entry)
        if match is None:
            continue
        tmp = os.path.join(folder, entry)
        try:
            info = os.lstat(tmp)
            if not stat.S_ISREG(info.st_mode):
                continue
            host, pid = match.group(1), match.group(2)
            dead = host == _HOST and pid is not None and int(pid) != os.getpid() and _pid_alive(int(pid)) is False
            if dead or now - info.st_mtime > _STALE_AGE:
                os.unlink(tmp)
        except (OSError, ValueError):
            continue


def _write_zip(f, manifest, arrays):
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(_MANIFEST, manifest)
        for k, a in enumerate(arrays):
            with z.open(f"arrays/{k}.npy", "w", force_zip64=a.nbytes >= _ZIP64_LIMIT) as out:
                np.lib.format.write_array(out, a, allow_pickle=False)


def _new_file_mode(path):
    """The mode the file would get from open(): the old file's, else 0o666 minus the umask
    (mkstemp creates 0o600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder):
    """Make the rename itself durable (POSIX); best effort elsewhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- load
class _UnknownClass(ValueError):
    """A class name not in SERIALIZABLE: the file may be fine, the class is not available."""


class _Decoder:
    """Rebuilds values from JSON nodes, reading arrays from the open zip."""

    def __init__(self, z):
        self.z, self.refs, self.used = z, {}, set()

    def __call__(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list) or not isinstance(node, dict):
            raise ValueError(f"unexpected JSON value {node!r:.60}")
        tag = node.get("$")
        if tag == "list":
            return [self(v) for v in _field(node, "items", list)]
        if tag == "tuple":
            return tuple(self(v) for v in _field(node, "items", list))
        if tag == "dict":
            out = {}
            for item in _field(node, "items", list):
                if not (isinstance(item, list) and len(item) == 2):
                    raise ValueError("a dict item is not a [key, value] pair")
                key = self(item[0])
                try:
                    hash(key)
                except TypeError:
                    raise ValueError(f"unhashable dict key {key!r:.60}") from None
                out[key] = self(item[1])
            return out
        if tag == "complex":
            return complex(_field(node, "re", (int, float)), _field(node, "im", (int, float)))
        if tag == "scalar":
            a = self.array(node)
            if a.ndim != 0:
                raise ValueError("a scalar entry holds a non-scalar array")
            return a[()]
        if tag == "ref":
            ref = _field(node, "id", int)
            if ref not in self.refs:
                raise ValueError(f"reference to an undefined value {ref}")
            return self.refs[ref]
        if tag == "array":
            value = self.array(node)
            if node.get("device") is True:  # saved from the device: a KnetArray again when a GPU is active
                value = from_saved(value)
            return self.define(node, value)
        if tag == "param":
            if "value" not in node or "opt" not in node:
                raise ValueError("a param entry without value or opt")
            p = self.define(node, Param(None))  # defined first: its opt may refer back to it
            p.value, p.opt = self(node["value"]), self(node["opt"])
            return p
        if tag == "object":
            return self.obj(node)
        raise ValueError(f"unknown entry type {tag!r:.60}")

    def define(self, node, value):
        ref = _field(node, "id", int)
        if ref in self.refs:
            raise ValueError(f"value {ref} defined twice")
        self.refs[ref] = value
        return value

    def obj(self, node):
        name = _field(node, "class", str)
        cls = SERIALIZABLE.get(name)
        if cls is None:  # never import or look anything up by a name from the file
            raise _UnknownClass(f"class {name!r:.100} is not registered with @serializable (only registered "
                             f"classes are rebuilt; import the module defining it before loading)")
        attrs = _field(node, "attrs", dict)
        for key in attrs:
            _check_attribute(name, key, ValueError)
        x = cls.__new__(cls)  # no constructor call: the state is set attribute by attribute
        self.define(node, x)  # before the attributes, so refs inside them to x resolve
        for key, v in attrs.items():
            setattr(x, key, self(v))
        return x

    def array(self, node):
        entry = _field(node, "entry", str)
        if not _ARRAY_NAME.match(entry):
            raise ValueError(f"bad array entry name {entry!r:.100}")
        if entry in self.used:
            raise ValueError(f"array entry {entry} used twice")
        self.used.add(entry)
        try:
            info = self.z.getinfo(entry)
        except KeyError:
            raise ValueError(f"missing array entry {entry}") from None
        with self.z.open(info) as f:
            return _read_npy(f, info.file_size, entry)


def _field(node, key, types):
    v = node.get(key)
    if not isinstance(v, types) or (types is int and isinstance(v, bool)):
        raise ValueError(f"bad or missing field {key!r} in a {node.get('$')!r} entry")
    return v


def _read_npy(f, size, entry):
    """An array from a .npy stream, as data only: the header is parsed by numpy (a Python
    literal, no code), object dtypes are refused, and the declared size must match the
    entry's size before anything is allocated."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"{entry}: unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError(f"{entry}: object arrays are refused (they would need pickle)")
    if any(d < 0 for d in shape):
        raise ValueError(f"{entry}: bad shape {shape}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if dtype.itemsize == 0 and count > size:
        raise ValueError(f"{entry}: {count} elements of size 0")
    if nbytes != size - f.tell():
        raise ValueError(f"{entry}: the header says {shape} {dtype} ({nbytes} bytes) but the entry "
                         f"holds {size - f.tell()} bytes of data")
    out = np.empty(count, dtype=dtype)
    view = memoryview(out.view(np.uint8).reshape(-1)) if nbytes else memoryview(b"")
    done = 0
    while done < nbytes:  # in chunks: no second full-size copy
        got = f.readinto(view[done: done + (16 << 20)])
        if not got:
            raise ValueError(f"{entry}: truncated array data")
        done += got
    return out.reshape(shape[::-1]).T if fortran else out.reshape(shape)


def _open_regular(path):
    """The file at `path` opened for reading, if it is a regular file. A FIFO is opened
    without blocking (O_NONBLOCK) and refused, as are directories and devices (`/dev/zero`
    would be read forever), before anything is read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, f"kn.load: {path} is a directory, not a kn.save file", path)
        if not stat.S_ISREG(mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                    else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "not a regular file")
            raise ValueError(f"kn.load: {path} is {kind}, not a kn.save file (only regular files are read)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_checked(f):
    """The zip in the open file f, after checking its entries: only the manifest and
    arrays/<k>.npy, stored uncompressed (no decompression bombs), each name once."""
    z = zipfile.ZipFile(f, "r")
    try:
        names = [i.filename for i in z.infolist()]
        if len(set(names)) != len(names):
            raise ValueError("duplicate entries")
        if _MANIFEST not in names:
            raise ValueError("no manifest.json (not a kn.save file?)")
        total = os.fstat(f.fileno()).st_size
        for info in z.infolist():
            if info.filename != _MANIFEST and not _ARRAY_NAME.match(info.filename):
                raise ValueError(f"unexpected entry {info.filename!r:.100}")
            if info.compress_type != zipfile.ZIP_STORED or max(info.file_size, info.compress_size) > total:
                raise ValueError(f"entry {info.filename!r} is compressed or larger than the file")
            if info.flag_bits & 0x1:  # (zipfile would ask for a password: a RuntimeError)
                raise ValueError(f"entry {info.filename!r} is marked encrypted")
        return z
    except BaseException:
        z.close()
        raise


class _MissingName(Exception):
    """A name kn.load was asked for that the file does not hold (a KeyError for the caller)."""


def _read(path, names=()):
    """{name: value} of a kn.save file, of `names` only when given (the others are not
    decoded: a class not registered in this process elsewhere in the file does not matter);
    any defect raises ValueError naming the file."""
    f = _open_regular(path)  # OSErrors (missing file, permissions, a directory) pass as they are
    try:
        with f, _open_checked(f) as z:
            manifest = json.loads(z.read(_MANIFEST).decode("utf-8"))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise ValueError("not a kn.save file (no knetc manifest)")
            if manifest.get("version") != VERSION:
                raise ValueError(f"format version {manifest.get('version')!r:.20} is not supported "
                                 f"(this knetc reads version {VERSION})")
            values = manifest.get("values")
            if not isinstance(values, dict):
                raise ValueError("the manifest has no values")
            for name in names:
                if name not in values:
                    raise _MissingName(f"kn.load: {path} has no value named {name!r}; it has {sorted(values)}")
            decode = _Decoder(z)
            return {name: decode(values[name]) for name in (names or values)}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except _MissingName as e:
        raise KeyError(str(e)) from None
    except _UnknownClass as e:
        raise ValueError(f"kn.load: {path}: {e}") from None
    except (ValueError, TypeError, KeyError, EOFError, OSError, RecursionError, OverflowError,
            NotImplementedError, UnicodeDecodeError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        # json.JSONDecodeError is a ValueError; truncated zips are BadZipFile; bad CRCs too.
        raise ValueError(f"kn.load: {path} is not a valid kn.save file (corrupt or truncated?): "
                         f"{type(e).__name__}: {e}") from None


def load(path, *names):
    """Load what `kn.save` wrote (Knet's `Knet.load`/`@load`):

        d = kn.load("model.knetc")                # {"model": ..., "epoch": 3}
        model = kn.load("model.knetc", "model")   # one name: its value
        model, epoch = kn.load("model.knetc", "model", "epoch")   # several: a tuple

    Arrays come back as numpy arrays, Params with their `opt`; arrays saved from the device
    (KnetArrays) come back as KnetArrays when a GPU is active (`kn.gpu() >= 0`), as Knet's.
    Loading never executes code from the file: a corrupt, truncated or crafted file raises
    ValueError naming it, as does a class not registered with `@serializable`.

    Example:
        >>> import os, tempfile, numpy as np, knetc as kn
        >>> path = os.path.join(tempfile.mkdtemp(), "model.knetc")
        >>> kn.save(path, w=np.arange(3.0), epoch=3)
        >>> sorted(kn.load(path)), kn.load(path, "w", "epoch")
        (['epoch', 'w'], (array([0., 1., 2.]), 3))
    """
    path = os.fspath(path)
    values = _read(path, names)
    if not names:
        return values
    if len(names) == 1:
        return values[names[0]]
    return tuple(values[name] for name in names)
