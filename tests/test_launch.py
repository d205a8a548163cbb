"""Prepared launches (runtime/launch.py): a kernel's arguments packed as Numba's own launcher
packs them, keys that tell apart what Numba types apart, and Numba's call wherever the
prepared path does not apply. The launches themselves need a GPU (KNETC_TEST_GPU=1 runs
every CUDA test through them)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from knetc.runtime import launch

pytest.importorskip("numba.cuda")

# Runs without the simulator (the real numba.cuda: its launcher's packing, no GPU needed).
PACKING = textwrap.dedent("""
    import ctypes
    import numpy as np
    import knetc
    from numba import types
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.dispatcher import _Kernel
    from knetc.runtime import launch

    class Memory:
        device_ctypes_pointer = ctypes.c_void_p(4096)

    class NoExtensions:
        extensions = []

    whole = DeviceNDArray((3, 4), (16, 4), np.float32, gpu_data=Memory())
    columns = DeviceNDArray((3, 2), (16, 8), np.float32, gpu_data=Memory())  # every other column
    scalar = DeviceNDArray((), (), np.int64, gpu_data=Memory())
    cases = [(types.Array(types.float32, 2, "C"), whole), (types.Array(types.float32, 2, "A"), columns),
             (types.Array(types.int64, 0, "C"), scalar), (types.float64, 1.5), (types.int64, -7),
             (types.float32, np.float32(0.5)), (types.int32, np.int32(3)), (types.uint64, np.uint64(2 ** 63 + 5))]
    for ty, value in cases:
        numbas, mine = [], []
        _Kernel._prepare_args(NoExtensions(), ty, value, 0, [], numbas)
        launch.pack(value, mine)
        plain = lambda xs: [(type(x).__name__, getattr(x, "value", x)) for x in xs]
        assert plain(mine) == plain(numbas), (ty, plain(mine), plain(numbas))
    keys = {launch.argument_key(a) for a in (whole, columns, scalar)}
    assert len(keys) == 3 and launch.argument_key(whole) == ("array", "<f4", 2, True, False)
    print("packed", len(cases))
""")


def test_arguments_are_packed_as_numbas_launcher_packs_them():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", PACKING], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "packed 8"


def test_keys_follow_numbas_argument_types():
    assert launch.argument_key(1.0) is float and launch.argument_key(3) is int
    assert launch.argument_key(np.float32(1)) is np.float32
    assert launch.argument_key(2 ** 63) is None  # Numba types it uint64: its own call decides
    assert launch.argument_key(True) is None and launch.argument_key(np.zeros(3)) is None  # Numba's call
    assert launch.argument_key(1 + 2j) is None


def test_numbas_call_where_the_prepared_path_does_not_apply(monkeypatch):
    def kernel():
        pass
    assert launch.prepared(kernel) is kernel  # the simulator or no GPU: Numba's dispatcher as it is
    monkeypatch.setattr(launch, "_ENABLED", [True])
    assert launch.prepared(kernel) is kernel  # not a Numba CUDA kernel


def test_an_unknown_argument_kind_always_takes_numbas_call():
    calls = []

    class Dispatcher:
        def __getitem__(self, config):
            return lambda *args: calls.append((config, args))
    k = launch.Prepared(Dispatcher())
    host = np.zeros(3)
    for _ in range(3):
        k[2, 64](host, 1.0)  # a host array: no key
    assert len(calls) == 3 and all(config == (2, 64) and args[0] is host for config, args in calls)
    assert k.compiled == {(None, float): None}


def test_library_routines_prepare_each_kernel_once(monkeypatch):
    class Dispatcher:
        pass
    monkeypatch.setattr(launch, "_PREPARED", {})
    monkeypatch.setattr(launch, "prepared", lambda k: ("prepared", k))
    first = Dispatcher()
    assert launch.prepared_once(first) is launch.prepared_once(first) == ("prepared", first)
    assert launch.prepared_once(Dispatcher()) is not launch.prepared_once(first)


def test_kernels_found_are_forgotten_when_another_device_becomes_current():
    class Dispatcher:
        def __getitem__(self, config):
            return lambda *args: None
    k = launch.Prepared(Dispatcher())
    k.compiled[(float,)] = "a kernel of device 0"
    launch.forget()
    assert k.compiled == {}


def test_every_library_kernel_launches_through_library_launch():
    # A kernel launched as `kernel[blocks, threads](...)` goes through Numba's dispatcher on
    # every call (about 50 us of host time on a GPU); kernels/*.py launch through
    # launch.library_launch instead (knetc's tiled GEMM, the fallback when cuBLAS is missing,
    # passes a stream and keeps Numba's call).
    import ast
    import importlib
    import pathlib
    root = pathlib.Path(launch.__file__).resolve().parent.parent / "kernels"
    direct = []
    for path in sorted(root.glob("*.py")):
        module = importlib.import_module(f"knetc.kernels.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript) \
                    and isinstance(node.func.value, ast.Name):
                kernel = getattr(module, node.func.value.id, None)
                if type(kernel).__module__.startswith("numba.cuda"):
                    direct.append(f"{path.name}:{node.lineno} {node.func.value.id}")
    assert not direct, direct
