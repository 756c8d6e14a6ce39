#!/usr/bin/env bash
# A CPU rehearsal of bench/gpu/run.sh (`make gpu-check`): proves the carried wheel set complete over a
# stand-in for the GPU machine's python3, the script's plumbing end to end, and its priority order under a
# cut at each stage.
#
#     bash bench/gpu/simulate.sh [all|full|cuts]      (default all: full, then cuts)
#
# The stand-in ($SIM/device, a venv of python3.11: this box has no CUDA torch and no cp312 CPU torch) holds
# torch 2.13.0+cpu and the machine's own packages that the wheel set relies on or shadows
# (`bench/gpu/wheels.py --python 3.11 --list machine`), at the machine's versions where known and on PyPI
# (transformers 5.17.0, huggingface-hub 1.33.0, ...; numpy 2.5.2 is not on PyPI: the newest is used), a
# deliberately old typing-extensions, and NONE of the packages carried because the machine lacks them. It is
# made again whenever that list changes. The wheels are the set bench/gpu/wheels.py derives, for cp311, in
# $SIM, not .gpu-wheels.
#   full: run.sh with every stage, SDXL_GPU_DRYRUN=1 (cpu, tiny model, 128x128, 2 requests, one compiled
#         shape), offline (PIP_NO_INDEX=1), the tests stage on tests/gpu (collected, skipped without CUDA)
#         and tests/test_codecs.py, into bench/out/gpu-dryrun/full; it must exit 0. The mixed stage runs
#         for real once bench.run has --workload, and says "phase not present" until then.
#   cuts: bench/gpu/rehearse.py on what `full` recorded: the call killed during each stage in turn, and one
#         stage past its own cap (seconds each; bench/out/gpu-dryrun/cut-*).
# The first `full` compiles the tiny UNet on this CPU (minutes); the inductor cache in $SIM keeps it for the
# next. What it cannot show: CUDA, the machine's Python 3.12, its exact package versions, sdxl-random's size
# and the timings (bench/gpu/README.md estimates those).
set -eu
cd "$(dirname "$0")/../.."
ROOT=$PWD
SIM=${SDXL_GPU_SIM:-/tmp/sdxl-gpu-sim}
PYTHON=${PYTHON:-python3.11}
WHAT=${1:-all}
case "$WHAT" in all | full | cuts) ;; *)
    echo "usage: bash bench/gpu/simulate.sh [all|full|cuts]" >&2
    exit 2
    ;;
esac
mkdir -p "$SIM"

DERIVE=("$ROOT/.venv/bin/python" bench/gpu/wheels.py --python 3.11)
# The carried packages that the machine does not have at all (not those carried to replace its version).
CARRIED=$("${DERIVE[@]}" --list absent | xargs)
# numpy 2.5.2, the machine's, is not on PyPI.
MACHINE=$("${DERIVE[@]}" --list machine | sed -E 's/^numpy==.*/numpy/' | xargs)
# The machine has these too, and they act without being imported: hypothesis is a pytest plugin, and
# granian's event loop is uvloop wherever uvloop is installed.
ACTING_UNIMPORTED="hypothesis uvloop"
STAND_IN="torch==2.13.0 $MACHINE $ACTING_UNIMPORTED typing-extensions==4.12.2 -- without: $CARRIED"
if [ "$(cat "$SIM/device/.ready" 2>/dev/null)" != "$STAND_IN" ]; then
    rm -rf "$SIM/device"
    "$PYTHON" -m venv "$SIM/device"
    "$SIM/device/bin/pip" install --quiet torch==2.13.0
    # shellcheck disable=SC2086
    "$SIM/device/bin/pip" install --quiet torch==2.13.0 $MACHINE $ACTING_UNIMPORTED
    # Whatever the resolver pulled in that the machine lacks goes: the carried wheels must bring it.
    # shellcheck disable=SC2086
    "$SIM/device/bin/pip" uninstall --quiet -y $CARRIED 2>/dev/null || true
    "$SIM/device/bin/pip" install --quiet --force-reinstall --no-deps typing-extensions==4.12.2
    echo "$STAND_IN" >"$SIM/device/.ready"
fi
echo "stand-in python: $("$SIM/device/bin/python" -c 'import sys, torch, transformers, typing_extensions as t
print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)')"
for name in $CARRIED; do
    if "$SIM/device/bin/pip" show --quiet "$name" >/dev/null 2>&1; then
        echo "error: the stand-in has $name, which the machine lacks" >&2
        exit 1
    fi
done

"${DERIVE[@]}" --dest "$SIM/wheels-cp311"

BASE=${OUT:-$ROOT/bench/out/gpu-dryrun}
RECORDED=$SIM/recorded
if [ "$WHAT" != cuts ]; then
    export OUT=$BASE/full
    rm -rf "$OUT"
    mkdir -p "$OUT"
    env SDXL_GPU_DRYRUN=1 PIP_NO_INDEX=1 SDXL_GPU_PYTHON="$SIM/device/bin/python" \
        SDXL_GPU_WHEELS="$SIM/wheels-cp311" SDXL_GPU_SCRATCH="$SIM/scratch" \
        SDXL_GPU_TESTS="${SDXL_GPU_TESTS:-tests/gpu tests/test_codecs.py}" \
        SDXL_GPU_MARK="${SDXL_GPU_MARK:-gpu or not gpu}" \
        bash bench/gpu/run.sh && status=0 || status=$?
    echo "simulate.sh: run.sh exited $status; $OUT holds $(find "$OUT" -type f | wc -l) files (8 come back):"
    ls -la "$OUT"
    [ "$status" = 0 ] || exit "$status"
    rm -rf "$RECORDED"
    mkdir -p "$RECORDED"
    cp "$OUT"/* "$SIM/scratch/pytest-gpu.xml" "$RECORDED"/
fi
if [ "$WHAT" != full ]; then
    if [ ! -e "$RECORDED/bench-eager.json" ]; then
        echo "error: nothing recorded in $RECORDED: run \`bash bench/gpu/simulate.sh full\` first" >&2
        exit 1
    fi
    "$SIM/device/bin/python" bench/gpu/rehearse.py --recorded "$RECORDED" --python "$SIM/device/bin/python" \
        --wheels "$SIM/wheels-cp311" --scratch "$SIM/scratch" --out-root "$BASE"
fi
echo "simulate.sh: $WHAT: ok"
