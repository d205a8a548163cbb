"""kn.save / kn.load: round trips, optimizer state, safety against crafted files, atomic writes."""
import io
import json
import os
import pickle
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import knetc as kn
import knetc.train.io as kio
from knetc.train.io import serializable


@serializable
class AdamState:
    """A stand-in optimizer: numbers, arrays and None as attributes, as the real ones."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, gclip=0):
        self.lr, self.beta1, self.beta2, self.eps, self.gclip = lr, beta1, beta2, eps, gclip
        self.t, self.fstm, self.scndm = 0, None, None

    def update(self, w, g):
        if self.fstm is None:
            self.fstm, self.scndm = np.zeros_like(w), np.zeros_like(w)
        self.t += 1
        self.fstm[...] = self.beta1 * self.fstm + (1 - self.beta1) * g
        self.scndm[...] = self.beta2 * self.scndm + (1 - self.beta2) * g * g
        mhat = self.fstm / (1 - self.beta1 ** self.t)
        vhat = self.scndm / (1 - self.beta2 ** self.t)
        w -= self.lr * mhat / (np.sqrt(vhat) + self.eps)


class NotRegistered:
    def __init__(self):
        self.a = 1


def same(a, b):
    """Deep equality with types: arrays by dtype, shape and values (NaN == NaN)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            same(u, v)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, kn.Param):
        same(a.value, b.value)
        same(a.opt, b.opt)
    elif isinstance(a, AdamState):
        same(vars(a), vars(b))
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


# ---------------------------------------------------------------- round trips
def test_nested_containers_numbers_strings(tmp_path):
    path = tmp_path / "a.knetc"
    values = dict(
        nested=[1, 2.5, (3, "x", [None, True, False]), {"k": [np.arange(3)], 7: "seven", (1, "t"): None}],
        numbers=(0, -1, 2 ** 80, 1.5, float("inf"), -float("inf"), float("nan"), 1 + 2j, 1e-310),
        strings=["", "héllo ✓", "a\x00b", "lone surrogate \ud800", "quote\"\\"],
        numpy_scalars=[np.float32(1.5), np.int64(-3), np.bool_(True), np.complex64(1j)],
        empty=([], (), {}),
        none=None,
    )
    kn.save(path, **values)
    loaded = kn.load(path)
    assert list(loaded) == list(values)
    for k in values:
        same(values[k], loaded[k])
    assert loaded["numpy_scalars"][0].dtype == np.float32  # numpy scalars keep their dtype


@pytest.mark.parametrize("a", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(12, dtype=np.float64).reshape(3, 4).T,          # Fortran order
    np.arange(24, dtype=np.int16).reshape(2, 3, 4)[:, ::2, 1:],  # non-contiguous view
    np.array(3.0),                                              # 0-d
    np.zeros((0, 5), dtype=np.float32),                         # empty
    np.array([True, False]),
    np.array([1 + 2j, 3 - 1j], dtype=np.complex128),
    np.array(["ab", "c"]),                                      # unicode strings: not objects
    np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),     # structured
    np.arange(5, dtype=">i4"),                                  # big-endian
])
def test_arrays_round_trip(tmp_path, a):
    kn.save(tmp_path / "a.knetc", a=a)
    b = kn.load(tmp_path / "a.knetc", "a")
    same(np.asarray(a), b)
    assert b.flags.writeable  # loaded arrays can be trained in place


def test_params_with_optimizer_state_resume_training(tmp_path):
    rng = np.random.default_rng(0)
    w = kn.Param(rng.standard_normal((4, 3)), AdamState(lr=0.01))
    b = kn.Param(np.zeros(3), AdamState(lr=0.02))
    model = [(w, b)]
    grads = [(rng.standard_normal((4, 3)), rng.standard_normal(3)) for _ in range(4)]
    for gw, gb in grads[:2]:
        w.opt.update(w.value, gw)
        b.opt.update(b.value, gb)
    kn.save(tmp_path / "m.knetc", model=model, epoch=2)
    model2, epoch = kn.load(tmp_path / "m.knetc", "model", "epoch")
    assert epoch == 2
    same(model, model2)
    (w2, b2), = model2
    assert isinstance(w2, kn.Param) and isinstance(w2.opt, AdamState) and w2.opt.t == 2
    for gw, gb in grads[2:]:  # resuming from the file gives exactly the uninterrupted run
        for p, g in ((w, gw), (b, gb), (w2, gw), (b2, gb)):
            p.opt.update(p.value, g)
    np.testing.assert_array_equal(w.value, w2.value)
    np.testing.assert_array_equal(b.value, b2.value)
    assert w2.opt.t == 4


def test_param_without_opt_and_shared_identity(tmp_path):
    w = kn.param(3, 2)
    shared = np.ones(4)
    kn.save(tmp_path / "t.knetc", layers=[w, w], tied=w, arrays=[shared, shared])
    layers, tied, arrays = kn.load(tmp_path / "t.knetc", "layers", "tied", "arrays")
    assert layers[0] is layers[1] is tied and tied.opt is None  # tied weights stay tied
    assert arrays[0] is arrays[1]
    same(w.value, tied.value)


def test_optimizer_referring_back_to_its_param(tmp_path):
    opt = AdamState()
    w = kn.Param(np.ones(2), opt)
    opt.owner = w  # a cycle through registered objects is fine
    kn.save(tmp_path / "c.knetc", w=w)
    w2 = kn.load(tmp_path / "c.knetc", "w")
    assert w2.opt.owner is w2


def test_load_names(tmp_path):
    kn.save(tmp_path / "n.knetc", a=1, b="two", c=[3])
    assert kn.load(tmp_path / "n.knetc") == {"a": 1, "b": "two", "c": [3]}
    assert kn.load(tmp_path / "n.knetc", "b") == "two"  # one name: its value, as Knet
    assert kn.load(tmp_path / "n.knetc", "c", "a") == ([3], 1)
    with pytest.raises(KeyError, match="nope"):
        kn.load(tmp_path / "n.knetc", "a", "nope")
    kn.save(str(tmp_path / "n.knetc"), a=2)  # str paths, overwriting
    assert kn.load(str(tmp_path / "n.knetc")) == {"a": 2}


class FakeDeviceArray:
    """Looks like a numba device array: __cuda_array_interface__ and copy_to_host."""

    def __init__(self, host):
        self._host = host
        self.__cuda_array_interface__ = {"shape": host.shape, "typestr": host.dtype.str, "data": (0, False), "version": 3}

    def copy_to_host(self):
        return self._host.copy()


def test_device_arrays_stored_as_host_data(tmp_path, monkeypatch):
    monkeypatch.setattr(kn.knetarray, "gpu", lambda device=None: -1)  # loads give numpy (no GPU active)
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    d = FakeDeviceArray(host)
    kn.save(tmp_path / "d.knetc", x=d, p=kn.Param(d), both=[d, d])
    x, p, both = kn.load(tmp_path / "d.knetc", "x", "p", "both")
    same(host, x)
    same(host, p.value)
    assert both[0] is both[1] and isinstance(both[0], np.ndarray)


# ---------------------------------------------------------------- refused at save
@pytest.mark.parametrize("bad", [
    NotRegistered(),
    np.array([object(), 1], dtype=object),
    [1, {2, 3}],
    lambda: 0,
    b"bytes",
])
def test_unsupported_values_refused_and_file_untouched(tmp_path, bad):
    path = tmp_path / "keep.knetc"
    kn.save(path, a=1)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot save"):
        kn.save(path, a=2, bad=bad)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.knetc"]


def test_cycle_and_empty_save_refused(tmp_path):
    a = [1]
    a.append(a)
    with pytest.raises(ValueError, match="cycle"):
        kn.save(tmp_path / "c.knetc", a=a)
    with pytest.raises(ValueError, match="nothing to save"):
        kn.save(tmp_path / "c.knetc")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------- crafted files
def craft(path, manifest, entries=(), compression=zipfile.ZIP_STORED):
    """A zip with the given manifest (a dict, or raw bytes) and extra entries {name: bytes}."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        if manifest is not None:
            z.writestr("manifest.json", manifest if isinstance(manifest, bytes) else json.dumps(manifest))
        for name, data in dict(entries).items():
            z.writestr(name, data)
    return path


def manifest(values):
    return {"format": "knetc", "version": 1, "values": values}


def npy_bytes(a, **kw):
    f = io.BytesIO()
    np.lib.format.write_array(f, a, **kw)
    return f.getvalue()


class Boom:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_unregistered_class_refused_nothing_imported(tmp_path):
    assert "antigravity" not in sys.modules
    for name in ("antigravity.Fly", "subprocess.Popen", "builtins.eval", f"{__name__}.NotRegistered"):
        path = craft(tmp_path / "cls.knetc", manifest({"x": {"$": "object", "class": name, "attrs": {}, "id": 0}}))
        with pytest.raises(ValueError, match=r"cls\.knetc.*not registered"):
            kn.load(path)
    assert "antigravity" not in sys.modules  # the name was not imported


def test_dunder_attribute_refused(tmp_path):
    name = kio._class_name(AdamState)
    path = craft(tmp_path / "d.knetc", manifest({"x": {"$": "object", "class": name, "id": 0,
                                                       "attrs": {"__class__": "x"}}}))
    with pytest.raises(ValueError, match="__class__"):
        kn.load(path)


def test_pickle_payload_in_npy_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = np.array([Boom(str(marker))], dtype=object)
    data = npy_bytes(payload, allow_pickle=True)  # an object .npy: a pickle inside
    path = craft(tmp_path / "p.knetc", manifest({"x": {"$": "array", "entry": "arrays/0.npy", "id": 0}}),
                 {"arrays/0.npy": data})
    with pytest.raises(ValueError, match=r"p\.knetc.*object"):
        kn.load(path)
    assert not marker.exists()
    path = tmp_path / "raw.pkl"  # a plain pickle file
    path.write_bytes(pickle.dumps(Boom(str(marker))))
    with pytest.raises(ValueError, match="raw.pkl"):
        kn.load(path)
    np.save(tmp_path / "obj.npy", payload, allow_pickle=True)  # a .npy file, not a kn.save file
    with pytest.raises(ValueError, match="obj.npy"):
        kn.load(tmp_path / "obj.npy")
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["../evil.npy", "/etc/passwd", "arrays/../../x.npy", "arrays/01.npy", "manifest.json"])
def test_bad_entry_names_refused(tmp_path, entry):
    data = npy_bytes(np.arange(3))
    path = craft(tmp_path / "e.knetc", manifest({"x": {"$": "array", "entry": entry, "id": 0}}),
                 {} if entry == "manifest.json" else {entry: data})
    with pytest.raises(ValueError, match=r"e\.knetc"):
        kn.load(path)
    assert not (tmp_path.parent / "evil.npy").exists() and not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("case", ["deflated", "lying header", "undefined ref", "no manifest", "not knetc",
                                  "version 2", "duplicate", "deep nesting", "bad json", "unknown tag",
                                  "unhashable key", "array used twice"])
def test_malformed_files_refused(tmp_path, case):
    good = {"x": {"$": "array", "entry": "arrays/0.npy", "id": 0}}
    entries = {"arrays/0.npy": npy_bytes(np.arange(3.0))}
    path, compression, m = tmp_path / "m.knetc", zipfile.ZIP_STORED, manifest(good)
    if case == "deflated":
        compression = zipfile.ZIP_DEFLATED
    elif case == "lying header":
        entries = {"arrays/0.npy": npy_bytes(np.arange(3.0))[:-8]}  # header says 24 bytes, 16 there
    elif case == "undefined ref":
        m = manifest({"x": {"$": "ref", "id": 5}})
    elif case == "no manifest":
        m = None
    elif case == "not knetc":
        m = {"format": "other", "values": {}}
    elif case == "version 2":
        m = {"format": "knetc", "version": 2, "values": {}}
    elif case == "duplicate":
        m = manifest({"x": 1})
    elif case == "deep nesting":
        m = b'{"format": "knetc", "version": 1, "values": {"x": ' + b"[" * 100000 + b"]" * 100000 + b"}}"
    elif case == "bad json":
        m = b'{"format": "knetc", "version": 1, "values": {'
    elif case == "unknown tag":
        m = manifest({"x": {"$": "eval", "code": "1"}})
    elif case == "unhashable key":
        m = manifest({"x": {"$": "dict", "items": [[{"$": "list", "items": []}, 1]]}})
    elif case == "array used twice":
        m = manifest({"x": [good["x"], {"$": "array", "entry": "arrays/0.npy", "id": 1}]})
        m["values"]["x"] = {"$": "list", "items": m["values"]["x"]}
    craft(path, m, entries, compression)
    if case == "duplicate":
        with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as z:
            z.writestr("manifest.json", "{}")
    with pytest.raises(ValueError, match=r"m\.knetc"):
        kn.load(path)


def test_truncated_and_corrupted_files(tmp_path):
    path = tmp_path / "full.knetc"
    kn.save(path, model=[kn.Param(np.arange(1000.0), AdamState())], step=3)
    data = path.read_bytes()
    cut = tmp_path / "cut.knetc"
    for n in (0, 10, 100, len(data) // 2, len(data) - 100, len(data) - 1):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match=r"cut\.knetc.*(corrupt or truncated)"):
            kn.load(cut)
    start = data.index(b"\x93NUMPY") + 200  # inside the first array's data: the CRC check fails
    cut.write_bytes(data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1:])
    with pytest.raises(ValueError, match=r"cut\.knetc"):
        kn.load(cut)
    with pytest.raises(FileNotFoundError):
        kn.load(tmp_path / "missing.knetc")


# ---------------------------------------------------------------- atomic writes
def test_failure_mid_write_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.knetc"
    kn.save(path, w=np.arange(10.0), note="old")
    before = path.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def crash(f, a, **kw):  # write the first array, then die inside the second
        calls.append(1)
        if len(calls) == 2:
            f.write(b"\x93NUMPY partial")
            raise KeyboardInterrupt("simulated crash")
        return real(f, a, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(KeyboardInterrupt):
        kn.save(path, w=np.zeros(10), v=np.ones(1000), note="new")
    assert path.read_bytes() == before and kn.load(path, "note") == "old"
    assert os.listdir(tmp_path) == ["model.knetc"]  # no temporary file left behind


def test_failure_before_rename_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.knetc"
    kn.save(path, a=1)

    def no_space(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        kn.save(path, a=2)
    monkeypatch.undo()
    assert kn.load(path, "a") == 1 and os.listdir(tmp_path) == ["model.knetc"]


def test_new_file_mode_follows_umask(tmp_path):
    path = tmp_path / "f.knetc"
    kn.save(path, a=1)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- the real optimizers, once they exist
def test_real_optimizers_round_trip(tmp_path):
    opts = pytest.importorskip("knetc.train.optimizers")
    found = [getattr(opts, n) for n in ("SGD", "Momentum", "Nesterov", "Adagrad", "Rmsprop", "Adadelta", "Adam")
             if hasattr(opts, n)]
    if not found:
        pytest.skip("no optimizer classes yet")
    for cls in found:
        assert kio._class_name(cls) in kio.SERIALIZABLE, f"{cls.__name__} is not @serializable"
        w = kn.Param(np.ones((2, 2)), cls())
        kn.save(tmp_path / "o.knetc", w=w)
        w2 = kn.load(tmp_path / "o.knetc", "w")
        assert type(w2.opt) is cls
        assert vars(w2.opt).keys() == vars(w.opt).keys()


# ---------------------------------------------------------------- non-regular files, stale temporaries
def _load_in_thread(path):
    """kn.load(path) in a thread: (finished within 20 s, the exception raised or None)."""
    import threading
    result = []

    def target():
        try:
            kn.load(path)
            result.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result.append(e)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)
    return (not thread.is_alive()), (result[0] if result else None)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_load_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "pipe.knetc"
    os.mkfifo(fifo)  # no writer: a blocking open would wait forever
    finished, error = _load_in_thread(fifo)
    assert finished, "kn.load blocked on a FIFO"
    assert isinstance(error, ValueError) and "FIFO" in str(error) and str(fifo) in str(error)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_load_refuses_devices_and_directories(tmp_path):
    finished, error = _load_in_thread("/dev/zero")  # endless data: reading it would never end
    assert finished and isinstance(error, ValueError) and "/dev/zero" in str(error) and "device" in str(error)
    with pytest.raises(IsADirectoryError, match="directory"):
        kn.load(tmp_path)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_save_removes_temporaries_of_dead_writers_only(tmp_path):
    import subprocess
    import time
    path = tmp_path / "m.knetc"
    kn.save(path, a=1)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".m.knetc.{kio._HOST}-{_dead_pid()}.k2j4h5l6.tmp",   # killed mid-save: removed
            "live": f".m.knetc.{kio._HOST}-{live.pid}.a1b2c3d4.tmp",       # a concurrent writer: kept
            "other host": f".m.knetc.0badf00d-{_dead_pid()}.q1w2e3r4.tmp",  # can't tell from here: kept
            "old style, old": ".m.knetc.zx8cv7bn.tmp",                     # abandoned long ago: removed
            "old style, new": ".m.knetc.poi8uy7t.tmp",                     # maybe live: kept
            "other target": f".n.knetc.{kio._HOST}-{_dead_pid()}.mnbv1234.tmp",  # not this file's: kept
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(tmp_path / names["old style, old"], (two_days_ago, two_days_ago))
        kn.save(path, a=2)
        left = set(os.listdir(tmp_path))
        assert kn.load(path, "a") == 2
        assert names["dead"] not in left and names["old style, old"] not in left
        for kept in ("live", "other host", "old style, new", "other target"):
            assert names[kept] in left, kept
        assert left == {"m.knetc"} | {names[k] for k in ("live", "other host", "old style, new", "other target")}
    finally:
        live.kill()
        live.wait()


def test_temporary_name_names_the_writer(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    kn.save(tmp_path / "w.knetc", a=1)
    assert len(seen) == 1 and seen[0].startswith(f".w.knetc.{kio._HOST}-{os.getpid()}.") and seen[0].endswith(".tmp")


@kn.serializable
class SlottedDense:
    __slots__ = ("w", "b")

    def __init__(self, i, o):
        self.w, self.b = kn.param(i, o), kn.param0(o)

    def __call__(self, x):
        return x @ self.w + self.b


def test_layers_and_user_classes_round_trip(tmp_path):
    rnn, moments, dense = kn.RNN(2, 3, rnn_type="gru"), kn.bnmoments(momentum=0.2), SlottedDense(4, 2)
    x = np.random.default_rng(0).random((5, 3, 2)).astype(np.float32)
    kn.batchnorm(np.random.default_rng(1).random((6, 4)), moments, training=True)  # fills the running statistics
    kn.save(tmp_path / "m.knetc", rnn=rnn, moments=moments, dense=dense)
    loaded = kn.load(tmp_path / "m.knetc")
    r, m, d = loaded["rnn"], loaded["moments"], loaded["dense"]
    assert isinstance(r, kn.RNN) and r.config == rnn.config and r.rnn_type == "gru"
    rnn.h = rnn.c = r.h = r.c = None
    np.testing.assert_array_equal(r(x), rnn(x))
    assert m.momentum == 0.2
    np.testing.assert_array_equal(m.mean, moments.mean)
    np.testing.assert_array_equal(m.var, moments.var)
    xs = np.ones((1, 4))
    np.testing.assert_array_equal(d(xs), dense(xs))
    assert isinstance(d.w, kn.Param) and len(kn.params(d)) == 2


def test_save_takes_knets_names_and_values_in_turn_and_a_dict(tmp_path):
    path = str(tmp_path / "forms.knetc")
    w = kn.Param(np.arange(3.0))
    kn.save(path, "w", w, "epoch", 3)
    loaded = kn.load(path)
    assert sorted(loaded) == ["epoch", "w"] and loaded["epoch"] == 3
    np.testing.assert_array_equal(loaded["w"].value, w.value)
    kn.save(path, {"a": np.ones(2), "b": "text"}, c=None)
    assert kn.load(path, "a", "b", "c")[1:] == ("text", None)
    for bad in (("w",), (3, w), ("w", w, "w", w)):
        with pytest.raises((TypeError, ValueError)):
            kn.save(path, *bad)
    with pytest.raises(ValueError, match="twice"):
        kn.save(path, "a", 1, a=2)
    assert kn.load(path, "b") == "text"  # (a refused save leaves the file as it was)


def test_save_writes_through_a_symbolic_link_and_refuses_a_fifo(tmp_path):
    # The atomic rename replaced the link by a file (the run's checkpoint kept the old
    # values), and a FIFO by a file.
    run = tmp_path / "run3"
    run.mkdir()
    kn.save(run / "model.knetc", a=1)
    latest = tmp_path / "latest.knetc"
    latest.symlink_to(run / "model.knetc")
    kn.save(latest, a=2)
    assert latest.is_symlink() and kn.load(run / "model.knetc", "a") == 2  # (one name: its value)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        kn.save(fifo, a=1)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


SAVES_A_CLASS = """
import sys
import numpy as np
import knetc as kn


@kn.serializable
class Lin:
    def __init__(self, w):
        self.w = w


kn.save(sys.argv[1], obj=Lin(np.ones(2)), epoch=3)
"""


def test_loading_some_names_decodes_only_those(tmp_path):
    # A process that never defined Lin can read the epoch; asking for a missing name says so
    # (both raised "class '__main__.Lin' is not registered": the whole file was decoded).
    script, path = tmp_path / "saves.py", tmp_path / "with_class.knetc"
    script.write_text(SAVES_A_CLASS)
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert kn.load(path, "epoch") == 3
    with pytest.raises(KeyError, match="has no value named 'nosuch'"):
        kn.load(path, "nosuch")
    with pytest.raises(ValueError, match="not registered"):
        kn.load(path)


def test_an_entry_marked_encrypted_is_a_corrupt_file(tmp_path):
    # zipfile asks for a password (a RuntimeError without the path); kn.load names the file.
    path = tmp_path / "enc.knetc"
    kn.save(path, w=np.ones(3))
    data = bytearray(path.read_bytes())
    directory = data.find(b"PK\x01\x02")  # the first central-directory entry; its flags at +8
    data[directory + 8] |= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"enc\.knetc.*encrypted"):
        kn.load(path)


def test_a_folder_that_cannot_be_written_is_named_with_the_users_path(tmp_path, monkeypatch):
    # (the error named the hidden temporary file kn.save writes first)
    import tempfile
    path = tmp_path / "m.knetc"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".m.knetc.tmp"))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match="cannot write in the folder") as info:
        kn.save(str(path), a=np.ones(2))
    assert info.value.filename == str(path)
