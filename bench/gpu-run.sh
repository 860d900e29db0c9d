#!/usr/bin/env bash
# Measure on a GPU what CPU cannot tell: the GPU-only tests, the kernel benchmark and the
# end-to-end `alexspec bench --ablate`. Results (JSON) and logs go to $OUT (default bench/results).
#
#   bash bench/gpu-run.sh [STAGE[:SECONDS]]...    stages: tests kernels bench startup bench-max-autotune
#                                                          bench-quick (no argument: the first four)
# tests: the GPU-only tests (quick autotuning), in parallel where pytest-xdist is installed, with their own Triton cache
# (the benchmark's first step still starts cold).
# bench: against the baselines a user would pick (eager; eager with the whole step as a CUDA graph and
# fused SGD; torch.compile default and reduce-overhead, fused SGD), headlined against the strongest,
# and each lever's effect; the JSON is rewritten
# after each measurement, so a stage stopped at its SECONDS keeps what it timed. Then which autotune
# config won for each kernel shape (autotune-DATE.json, bench/autotune_choices.py). It times every
# choice on this GPU (ALEXSPEC_PRETUNED=0), so that bench/pretune.py can make its table anew from that file.
# startup: spec -> warm module in fresh processes, with an empty then a warm Triton cache (and the warm
# one again under cProfile), then an empty one compiling layer by layer (ALEXSPEC_COMPILE_AHEAD=0), and
# where alexspec ships choices for this GPU model, an empty one timing every choice (ALEXSPEC_PRETUNED=0).
# bench-max-autotune: against torch.compile max-autotune alone, its CUDA graphs on and fused SGD (its
# compilation takes minutes).
# bench-quick: alexspec alone with ALEXSPEC_AUTOTUNE=quick (the first step without autotuning).
# Each stage takes a few minutes, bench-max-autotune up to about eight: where one command's time
# is limited, run a stage per command.
#
# On a machine without the project's dependencies installed, wheels in .gpu/wheels (jsonschema
# and its dependencies) are installed first; the project itself is installed editable without
# dependencies (the machine's torch and triton are used), or linked into place where it cannot be.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
export PYTHONUNBUFFERED=1
stages=${*:-tests kernels bench startup}
for stage in $stages; do
    case ${stage%%:*} in tests|kernels|bench|startup|bench-max-autotune|bench-quick) ;;
        *) echo "unknown stage ${stage%%:*} (tests, kernels, bench, startup, bench-max-autotune, bench-quick)" >&2
           exit 2 ;; esac
    case $stage in *:*) [[ ${stage#*:} =~ ^[0-9]+$ ]] || { echo "$stage: SECONDS must be a number" >&2; exit 2; } ;; esac
done
mkdir -p "$OUT"
if ! python3 -c "import jsonschema" 2>/dev/null && [ -d .gpu/wheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! python3 -c "import alexspec.kernels" 2>/dev/null \
        && ! python3 -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null; then
    # no setuptools for an editable install: lay the package out as installed, with links
    shim=/tmp/alexspec-shim
    rm -rf "$shim" && mkdir -p "$shim/alexspec" && ln -s "$PWD"/alexspec/* "$shim/alexspec/" \
        && ln -s "$PWD/kernels" "$shim/alexspec/kernels" && ln -s "$PWD/specs" "$shim/alexspec/specs" || exit 1
    export PYTHONPATH=$shim${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import alexspec.kernels" || exit 1
if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "bench/gpu-run.sh needs a CUDA GPU (none here); on CPU use: alexspec bench, python bench/kernels.py --smoke" >&2
    exit 2
fi
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
# Python's bytecode, cached where it can be written: on an image whose packages were installed
# read-only without theirs, each fresh process would compile their source again (torch._dynamo's,
# which torch.optim imports, alone takes seconds: the startup stage's "making the optimizer"),
# where pip compiles it once at install. Filled here, before anything is timed (even where the
# image sets PYTHONDONTWRITEBYTECODE, as the GPU image does).
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/alexspec-pycache}
PYTHONDONTWRITEBYTECODE= python3 -c "import time; t = time.perf_counter(); import torch._dynamo, alexspec.bench.run, alexspec.bench.startup, alexspec.train.session
print(f'Python bytecode cached in $PYTHONPYCACHEPREFIX ({time.perf_counter() - t:.1f} s)')" || exit 1
xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
day=$(date +%F)
run() { timeout --signal=INT --kill-after=20 "$limit" "$@"; }  # the stage's command, within its limit
status=0
for stage in $stages; do
    limit=0  # timeout's "no limit"
    case $stage in *:*) limit=${stage#*:}; stage=${stage%%:*} ;; esac
    echo "== $stage (limit ${limit}s) $(date +%T)"
    case $stage in
        tests) ALEXSPEC_AUTOTUNE=quick TRITON_CACHE_DIR=/tmp/triton-cache-tests run python3 -m pytest -q -m gpu $xdist -rfE tests 2>&1 \
            | tee "$OUT/gpu-tests.log" || status=1 ;;
        kernels) run python3 bench/kernels.py --batch 256 --out "$OUT/kernels-$day.json" 2>&1 \
            | tee "$OUT/kernels.log" || status=1 ;;
        bench) ALEXSPEC_PRETUNED=0 TRITON_CACHE_DIR=/tmp/triton-cache-bench run python3 -m alexspec bench alexnet --ablate \
            --out "$OUT/bench-$day.json" 2>&1 | tee "$OUT/bench.log" || status=1
            python3 bench/autotune_choices.py /tmp/triton-cache-bench --out "$OUT/autotune-$day.json" || status=1 ;;
        startup) run python3 -m alexspec bench alexnet --cold-start --compare "" --out "$OUT/bench-$day-startup.json" \
            2>&1 | tee "$OUT/startup.log" || status=1 ;;
        bench-max-autotune) run python3 -m alexspec bench alexnet --compare compile-max-autotune \
            --out "$OUT/bench-$day-max-autotune.json" 2>&1 | tee "$OUT/bench-max-autotune.log" || status=1 ;;
        bench-quick) ALEXSPEC_AUTOTUNE=quick run python3 -m alexspec bench alexnet --compare "" \
            --out "$OUT/bench-$day-quick-autotune.json" 2>&1 | tee "$OUT/bench-quick.log" || status=1 ;;
    esac
done
exit $status
