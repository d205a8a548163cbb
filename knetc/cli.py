"""The `knetc` command.

    knetc inspect SCRIPT.py:FUNCTION [--stage STAGE] [--steps N] [--target cpu|cuda] [--cc 9.0] [-- ARGS]
    knetc build SCRIPT.py [--steps N] [--cache-dir DIR] [-- ARGS]
    knetc cache info|clear [--cache-dir DIR]

`inspect` runs the script until FUNCTION (a @kn.compile function) has been called N times
(default 1), then prints the asked stages of each specialization it met. `build` runs the
script (give it arguments for a short run, or --steps N to stop after N compiled calls) so
every specialization it meets is compiled into the kernel cache; later runs with the same
KNETC_CACHE_DIR compile nothing (KNETC_LOG=compile shows it). The built directory may be
moved or copied (shipped with the script): nothing in the cache depends on its location.
"""
import argparse
import os
import re
import runpy
import sys
import traceback

from . import compiler, inspection
from .backend import cache
from .errors import CompileError
from .report import stats
from .train.plot import positive


class _Stop(BaseException):
    """Ends the user's script early (BaseException: the script's `except Exception` keeps out)."""


def run_script(script, args, observe, command):
    """Run `script` as __main__ with argv [script, *args], telling `observe` of every compiled
    call. A script that fails (raises, or exits with a non-zero status) ends the command with
    its own traceback or message (a CompileError: its message alone) and a non-zero status."""
    if not os.path.isfile(script):
        raise SystemExit(f"knetc: no script {script!r} (give a Python file, e.g. examples/mnist_mlp.py)")
    compiler.OBSERVERS.append(observe)
    saved_argv, saved_path = sys.argv, list(sys.path)
    script = os.path.abspath(script)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except _Stop:
        pass
    except SystemExit as done:
        if done.code not in (None, 0):  # (argparse's usage error, sys.exit(3))
            raise SystemExit(f"knetc {command}: {os.path.basename(script)} exited with status {done.code}") from None
    except CompileError as error:
        raise SystemExit(f"knetc {command}: {error}") from None
    except Exception as error:  # the user's traceback, from the script's frame on
        traceback.print_exception(type(error), error, _from_script(error.__traceback__, script))
        raise SystemExit(f"knetc {command}: {os.path.basename(script)} raised {type(error).__name__}") from None
    finally:
        compiler.OBSERVERS.remove(observe)
        sys.argv, sys.path[:] = saved_argv, saved_path


def _from_script(tb, script):
    """The traceback from the script's first frame on (not knetc's and runpy's frames above it)."""
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    return tb


def inspect_command(options):
    script, _, name = options.target_function.rpartition(":")
    if not script or not name:
        raise SystemExit("knetc inspect: expected SCRIPT.py:FUNCTION, e.g. examples/mnist_mlp.py:loss")
    try:
        stages = inspection.stages(options.stage)
    except ValueError as error:
        raise SystemExit(f"knetc inspect: {error}") from None
    if not re.fullmatch(r"\d+\.\d+", options.cc):
        raise SystemExit(f"knetc inspect: --cc {options.cc!r}: give a compute capability as MAJOR.MINOR, e.g. 9.0")
    cc = tuple(int(part) for part in options.cc.split("."))
    seen, calls = [], [0]

    def observe(fn, spec):
        if name not in (fn.fn.__name__, fn.fn.__qualname__):
            return
        if all(spec is not s for _, s in seen):
            seen.append((fn, spec))
        calls[0] += 1
        if calls[0] >= options.steps:
            raise _Stop()
    run_script(script, options.script_args, observe, "inspect")
    if not seen:
        raise SystemExit(f"knetc inspect: {script} never called a compiled function named {name!r}")
    for fn, spec in seen:
        try:
            sys.stdout.write(inspection.describe(fn, spec, stages, options.target or fn.target, cc))
        except ValueError as error:  # (a stage this environment cannot show)
            raise SystemExit(f"knetc inspect: {error}") from None


def build_command(options):
    if options.cache_dir:
        os.environ["KNETC_CACHE_DIR"] = os.path.abspath(options.cache_dir)
    directory = os.path.abspath(cache.cache_dir())
    why = cache.why_unwritable(directory)
    if why is not None:  # building into a temporary fallback would be lost at exit
        raise SystemExit(f"knetc build: cannot build into {directory}: {why}")
    built, calls = [], [0]

    def observe(fn, spec):
        # Stop at the call after the last one asked for, so that call has run (and compiled).
        if options.steps is not None and calls[0] >= options.steps:
            raise _Stop()
        calls[0] += 1
        if all(spec is not s for _, s in built):
            built.append((fn, spec))
    run_script(options.script, options.script_args, observe, "build")
    counts = stats()
    print(f"knetc build: {len(built)} specializations in {directory} "
          f"({counts['compilations']} compiled now, {counts['cache_hits']} already built)")
    for fn, spec in built:
        for executable in spec.executables():
            print(f"  {fn.fn.__qualname__:<20} {inspection.mode_text(spec.mode):<28} "
                  f"{os.path.basename(executable.module.__knetc_path__)}")


def cache_command(options):
    directory = os.path.abspath(options.cache_dir) if options.cache_dir else cache.cache_dir()
    if options.action == "info":
        info = cache.info(directory)
        print(f"directory   {info['directory']}\nmodules     {info['modules']}\n"
              f"numba files {info['numba_files']}\nptx files   {info['ptx_files']}\nbytes       {info['bytes']}")
    else:
        print(f"removed {cache.clear(directory)} files from {directory}")


def parser():
    p = argparse.ArgumentParser(prog="knetc", description="knetc: inspect compiled functions, build scripts "
                                "ahead of time, manage the kernel cache.")
    commands = p.add_subparsers(dest="command", required=True)
    i = commands.add_parser("inspect", help="show the stages of a compiled function met by a script")
    i.add_argument("target_function", metavar="SCRIPT.py:FUNCTION")
    i.add_argument("--stage", default="all", help=f"one or more of {', '.join(inspection.STAGES)} "
                   "(comma-separated), or all (default)")
    i.add_argument("--steps", type=positive, default=1, help="stop after FUNCTION has been called N times")
    i.add_argument("--target", choices=("cpu", "cuda"), help="target of the kernels and driver stages")
    i.add_argument("--cc", default="9.0", help="compute capability for ptx and resources (default 9.0)")
    b = commands.add_parser("build", help="compile every specialization a (short) run of a script meets")
    b.add_argument("script", metavar="SCRIPT.py")
    b.add_argument("--steps", type=positive, help="stop the script after N compiled calls")
    b.add_argument("--cache-dir", help="build into this directory (run the script later with KNETC_CACHE_DIR=DIR)")
    c = commands.add_parser("cache", help="the kernel cache: info or clear")
    c.add_argument("action", choices=("info", "clear"))
    c.add_argument("--cache-dir", help="a cache directory other than KNETC_CACHE_DIR's")
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)  # what follows -- goes to the script
    options = parser().parse_args(argv[:split])
    options.script_args = argv[split + 1:]
    {"inspect": inspect_command, "build": build_command, "cache": cache_command}[options.command](options)


if __name__ == "__main__":
    main()
