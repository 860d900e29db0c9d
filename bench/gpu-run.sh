#!/usr/bin/env bash
# Measure on a GPU what CPU cannot tell: the GPU-only tests, the kernel benchmark and the
# end-to-end `alexspec bench --ablate`. Results (JSON) and logs go to $OUT (default bench/results).
#
#   bash bench/gpu-run.sh [tests] [kernels] [bench] [bench-max-autotune] [bench-quick]
#                                                                     (no argument: the first three)
# bench: against eager and torch.compile (default mode), each lever's effect, start-up time.
# bench-max-autotune: against torch.compile max-autotune alone (its compilation takes minutes).
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
stages=${*:-tests kernels bench}
for stage in $stages; do
    case $stage in tests|kernels|bench|bench-max-autotune|bench-quick) ;;
        *) echo "unknown stage $stage (tests, kernels, bench, bench-max-autotune, bench-quick)" >&2; exit 2 ;; esac
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
status=0
for stage in $stages; do
    case $stage in
        tests) python3 -m pytest -q -m gpu tests 2>&1 | tee "$OUT/gpu-tests.log" || status=1 ;;
        kernels) python3 bench/kernels.py --out "$OUT/kernels-$(date +%F).json" 2>&1 | tee "$OUT/kernels.log" \
            || status=1 ;;
        bench) python3 -m alexspec bench alexnet --ablate --cold-start --out "$OUT/bench-$(date +%F).json" 2>&1 \
            | tee "$OUT/bench.log" || status=1 ;;
        bench-max-autotune) python3 -m alexspec bench alexnet --compare compile --max-autotune \
            --out "$OUT/bench-$(date +%F)-max-autotune.json" 2>&1 | tee "$OUT/bench-max-autotune.log" || status=1 ;;
        bench-quick) ALEXSPEC_AUTOTUNE=quick python3 -m alexspec bench alexnet --compare "" \
            --out "$OUT/bench-$(date +%F)-quick-autotune.json" 2>&1 | tee "$OUT/bench-quick.log" || status=1 ;;
    esac
done
exit $status
