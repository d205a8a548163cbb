#!/usr/bin/env bash
# knetc's GPU check: one H200 (or H100, sm_90), no network, 8 minutes at most (issue 16).
#
#   bash benchmarks/device_check.sh        # from the repository root; logs under $OUT (or ./gpu-check-out)
#
# What it does, each step under its own time limit inside KNETC_CHECK_BUDGET (default 465 s):
#   1. installs the project offline: astor (the one dependency the GPU image lacks) from the
#      wheel carried in .whl/, numba-cuda from .whl/opt/ only if the image's is missing or
#      older than 0.20, then `pip install -e .` with no index and no dependencies;
#   2. runs the GPU tests (KNETC_TEST_GPU=1: real kernels, no simulator), and beside them the
#      examples with --target cuda for one epoch (mnist_mlp, lenet; charlm for 150 steps);
#   3. runs benchmarks/gpu.py alone on the GPU: one table of knetc against PyTorch CUDA (MLP,
#      LeNet, CharLM steps, the 4096 MLP, the 1e7 sum beside the copy bandwidth, the softmax),
#      then benchmarks/launch_costs.py (host time of a launch's and an allocation's parts).
# Writes summary.txt, env.log, install.log, pytest.log, pytest.xml, examples.log, bench.log, launch.log.
#
# The image is expected to hold numba, numba-cuda, cuda-bindings, cuda-pathfinder, cuBLAS,
# cuDNN, pytest, hypothesis and PyTorch (the device README's H200 image). The CUDA libraries
# are not carried: the image's match its driver.
#
# Prepare on the CPU machine, in the repository root (.whl/ is ignored by .gitignore):
#   mkdir -p .whl && python3 -m pip download --no-deps --only-binary=:all: -d .whl astor==0.8.1
#   (or copy a numba_cuda-*-cp3XX-*.whl into .whl/opt/ as the fallback)
# Device call: run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=540)
#
# Env: PYTHON (default python3), OUT (log folder), KNETC_CHECK_BUDGET (seconds), KNETC_SITE
# (where the carried wheels install, default /tmp/site), KNETC_WHEELS (default ./.whl),
# KNETC_CHECK_WITHOUT_GPU=1 (go on without a GPU: tries the script's flow, every step fails).
set -u
ROOT=$(pwd)
OUTDIR=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUTDIR"
WHL=${KNETC_WHEELS:-$ROOT/.whl}
PY=${PYTHON:-python3}
SITE=${KNETC_SITE:-/tmp/site}
START=$(date +%s)
BUDGET=${KNETC_CHECK_BUDGET:-465}
export PYTHONUNBUFFERED=1 KNETC_CACHE_DIR=${KNETC_CACHE_DIR:-/tmp/knetc-cache} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
unset NUMBA_ENABLE_CUDASIM
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
cap() { local l; l=$(left); if [ "$1" -lt "$l" ]; then echo "$1"; elif [ "$l" -gt 5 ]; then echo $(( l - 5 )); else echo 1; fi; }
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUTDIR/summary.txt"; }
: > "$OUTDIR/summary.txt"

if [ ! -f "$ROOT/setup.cfg" ] || [ ! -d "$ROOT/knetc" ]; then
  log "run me from the knetc repository root (found no setup.cfg and knetc/ in $ROOT)"; exit 2
fi

# ------------------------------------------------------------------ 0. the machine
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  $PY -V; uname -m
  $PY -m pip list 2>/dev/null | grep -iE "^(numba|numba-cuda|llvmlite|numpy|scipy|cuda-|nvidia-cublas|nvidia-cudnn|nvidia-nvjitlink|torch |pytest|hypothesis|astor)"
  ls -l "$WHL" "$WHL/opt" 2>&1
} > "$OUTDIR/env.log" 2>&1
log "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -1); $($PY -V 2>&1)"

# ------------------------------------------------------------------ 1. install, offline
{
  set -x
  if ! $PY -c "import astor" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/astor-*.whl
  fi
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  NCV=$($PY -c "import importlib.metadata as m; print(m.version('numba-cuda'))" 2>/dev/null || echo 0)
  if $PY -c "import sys; v = [int(x) for x in sys.argv[1].split('.')[:2] if x.isdigit()]; sys.exit(0 if v >= [0, 20] else 1)" "$NCV"; then
    echo "the image's numba-cuda $NCV is kept"
  else
    TAG=$($PY -c "import sys; print('cp%d%d' % sys.version_info[:2])")
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHL"/opt/numba_cuda-*-"$TAG"-*.whl
  fi
  if $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . ; then echo INSTALL=editable
  else
    # No build backend to hand (e.g. setuptools without bdist_wheel): run from the tree, with
    # runtime/ and kernels/ linked where the install would put them (knetc.runtime, knetc.kernels).
    ln -sfn ../runtime knetc/runtime && ln -sfn ../kernels knetc/kernels && echo INSTALL=tree
  fi
  set +x
} > "$OUTDIR/install.log" 2>&1
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
grep -q "INSTALL=tree" "$OUTDIR/install.log" && export PYTHONPATH=$ROOT:$PYTHONPATH
if ! $PY -c "import knetc, knetc.runtime.pool, knetc.kernels.conv, astor" >> "$OUTDIR/install.log" 2>&1; then
  log "INSTALL FAILED (install.log):"; tail -20 "$OUTDIR/install.log" | tee -a "$OUTDIR/summary.txt"; exit 1
fi
AVAILABLE=$($PY -c "from numba import cuda; print(cuda.is_available())" 2>>"$OUTDIR/install.log" | tail -1)
if [ "$AVAILABLE" != "True" ] && [ -d /usr/local/cuda ]; then
  export CUDA_HOME=/usr/local/cuda  # numba-cuda may need the toolkit's NVVM found this way
  AVAILABLE=$($PY -c "from numba import cuda; print(cuda.is_available())" 2>>"$OUTDIR/install.log" | tail -1)
fi
log "install: $(grep -o 'INSTALL=[a-z]*' "$OUTDIR/install.log" | tail -1); numba.cuda.is_available()=$AVAILABLE"
if [ "$AVAILABLE" != "True" ]; then
  log "NO GPU visible to Numba: the GPU tests and benchmarks cannot run (see install.log)"
  [ "${KNETC_CHECK_WITHOUT_GPU:-0}" = 1 ] || exit 1  # 1: go on anyway, to try the script's own flow
fi

# ------------------------------------------------------------------ 2. GPU tests, and the examples beside them
# (NCCL's one-rank test is left out: in the device tool's VM its bootstrap finds no network
# and retries until stopped; see benchmarks/RESULTS.md, 2026-12-04.)
TIMEOUT_OPT=$($PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout 150")
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
( KNETC_TEST_GPU=1 timeout "$(cap 210)" $PY -m pytest tests -v -p no:cacheprovider $XDIST $TIMEOUT_OPT \
    -k "(cuda or gpu or cudnn or knetarray or KnetArray or device or pool or optimizers or launch or dropout) and not one_rank_communicator" \
    -rfE --junitxml "$OUTDIR/pytest.xml" > "$OUTDIR/pytest.log" 2>&1; echo "pytest rc=$?" >> "$OUTDIR/pytest.log" ) &
TESTS=$!
{
  echo "### examples/mnist_mlp.py --epochs 1 --target cuda"
  KNETC_LOG=compile timeout "$(cap 90)" $PY examples/mnist_mlp.py --epochs 1 --target cuda; echo "rc=$?"
  echo "### examples/lenet.py --epochs 1 --target cuda"
  KNETC_LOG=compile,cudnn timeout "$(cap 100)" $PY examples/lenet.py --epochs 1 --target cuda; echo "rc=$?"
  echo "### examples/charlm.py --target cuda --steps 150"
  KNETC_LOG=compile,cudnn timeout "$(cap 90)" $PY examples/charlm.py --target cuda --steps 150 --report 50 \
    --chars 300000 --minutes 1 --sample 100; echo "rc=$?"
} > "$OUTDIR/examples.log" 2>&1
wait $TESTS
log "tests: $(grep -E '(passed|failed|error)' "$OUTDIR/pytest.log" | tail -1) $(grep 'pytest rc=' "$OUTDIR/pytest.log")"
grep -E "^(FAILED|ERROR)" "$OUTDIR/pytest.log" | head -30 | tee -a "$OUTDIR/summary.txt"
log "examples:"
grep -E "^(###|knetc|epoch|total|step|trained|held-out|rc=|Traceback|[A-Za-z]*Error)" "$OUTDIR/examples.log" | tee -a "$OUTDIR/summary.txt"

# ------------------------------------------------------------------ 3. benchmarks, alone on the GPU
timeout "$(cap 150)" $PY benchmarks/gpu.py > "$OUTDIR/bench.log" 2>&1
echo "gpu.py rc=$?" >> "$OUTDIR/bench.log"
log "benchmarks (benchmarks/gpu.py):"
grep -E "^(knetc|\||- |gpu.py rc=|\[)|Error" "$OUTDIR/bench.log" | tee -a "$OUTDIR/summary.txt"
timeout "$(cap 40)" $PY benchmarks/launch_costs.py > "$OUTDIR/launch.log" 2>&1
echo "launch_costs.py rc=$?" >> "$OUTDIR/launch.log"
log "host costs of a launch and an allocation (benchmarks/launch_costs.py):"
cat "$OUTDIR/launch.log" | tee -a "$OUTDIR/summary.txt"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader >> "$OUTDIR/env.log" 2>&1
log "done in $(( $(date +%s) - START ))s; files in $OUTDIR: $(ls "$OUTDIR" | tr '\n' ' ')"
