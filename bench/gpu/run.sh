#!/usr/bin/env bash
# The GPU tests and benchmarks on the lent machine (one H100, no network), from the repo root, in one command:
#
#     bash bench/gpu/run.sh [default|tests|eager|compiled|all]      (carry [".gpu-wheels"]; bench/gpu/README.md)
#
#   default   tests + eager + vae      (fits one 10-minute device call)
#   tests     python -m pytest -q -m gpu tests/gpu
#   eager     python -m bench.run --model sdxl-random --device cuda --size 1024 --server-args --dtype float16
#   vae       python -m bench.vae --model sdxl-random --device cuda --size 1024 --batch 1 8 (float32 vs bfloat16)
#   compiled  the same with --compile --warmup 1024x1024:1,2,4,8 (torch.compile, CUDA graphs)
#   all       tests + eager + vae + compiled (longer than one device call: for a machine without that limit)
#
# Installs .gpu-wheels/*.whl (`make gpu-wheels` here) with --no-index --no-deps into a --target folder in
# /tmp that PYTHONPATH puts ahead of the machine's own packages (a venv made from /opt/torch/.venv/bin/python3
# would not see its torch: --system-site-packages means the base interpreter's packages, not that venv's),
# with $PWD/src and $PWD (the project is not pip-installed: pyproject says python <3.12). Each stage runs
# under its own `timeout` inside a whole-run budget (SDXL_GPU_BUDGET_S: 560 s; `all` 1800 s), a failed
# stage does not stop the next, and whatever exists is in $OUT: run.log (everything printed), servers.log
# (the servers' logs), bench-eager.json, bench-compiled.json, vae.json, pytest-gpu.xml, summary.md (the
# figures for bench/RESULTS.md).
#
# Knobs (environment): SDXL_GPU_PYTHON, SDXL_GPU_WHEELS, SDXL_GPU_MODEL (sdxl-random), SDXL_GPU_DEVICE (cuda),
# SDXL_GPU_SIZE (1024), SDXL_GPU_DTYPE (float16), SDXL_GPU_REQUESTS (8), SDXL_GPU_CONCURRENCY ("1 4 8 16"),
# SDXL_GPU_WARMUP (SIZExSIZE:1,2,4,8), SDXL_GPU_SERVER_ARGS (more `serve` options), SDXL_GPU_BUDGET_S,
# SDXL_GPU_TIMEOUT_TESTS / _EAGER / _VAE / _COMPILED (seconds; caps inside the budget), SDXL_GPU_TESTS (tests/gpu;
# several paths space-separated), SDXL_GPU_MARK (gpu), SDXL_GPU_SCRATCH (/tmp/sdxl-gpu).
# SDXL_GPU_DRYRUN=1: the same plumbing on a CPU (tiny model, 256x256, 2 requests) to check the script.
set -u
set -o pipefail

STARTED=$SECONDS
STAGE=${1:-default}
case "$STAGE" in
default | tests | eager | vae | compiled | all) ;;
*)
    echo "usage: bash bench/gpu/run.sh [default|tests|eager|vae|compiled|all]" >&2
    exit 2
    ;;
esac
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/bench/out/gpu}
mkdir -p "$OUT"
LOG=$OUT/run.log
SCRATCH=${SDXL_GPU_SCRATCH:-/tmp/sdxl-gpu}
mkdir -p "$SCRATCH"

if [ "${SDXL_GPU_DRYRUN:-0}" = 1 ]; then
    DEFAULTS=(tiny cpu 256 float32 2 "1 2" 500)
else
    DEFAULTS=(sdxl-random cuda 1024 float16 8 "1 4 8 16" 560)
fi
MODEL=${SDXL_GPU_MODEL:-${DEFAULTS[0]}}
DEVICE=${SDXL_GPU_DEVICE:-${DEFAULTS[1]}}
SIZE=${SDXL_GPU_SIZE:-${DEFAULTS[2]}}
DTYPE=${SDXL_GPU_DTYPE:-${DEFAULTS[3]}}
REQUESTS=${SDXL_GPU_REQUESTS:-${DEFAULTS[4]}}
CONCURRENCY=${SDXL_GPU_CONCURRENCY:-${DEFAULTS[5]}}
BUDGET=${SDXL_GPU_BUDGET_S:-${DEFAULTS[6]}}
[ "$STAGE" = all ] && BUDGET=${SDXL_GPU_BUDGET_S:-1800}
WARMUP=${SDXL_GPU_WARMUP:-${SIZE}x${SIZE}:1,2,4,8}
read -r -a SERVER_EXTRA <<<"${SDXL_GPU_SERVER_ARGS:-}"
read -r -a CONCURRENCY_LIST <<<"$CONCURRENCY"

say() { echo "[run.sh $((SECONDS - STARTED))s] $*" | tee -a "$LOG"; }

# Seconds a stage may take: its cap, within what is left of the whole budget less a reserve for copying.
allowance() {
    local left=$((BUDGET - (SECONDS - STARTED) - 20))
    if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

# run_stage NAME CAP COMMAND...: the command under timeout (its whole process group: a server it started
# goes too), output to the terminal and run.log; the exit status is kept in STATUS[NAME].
declare -A STATUS
run_stage() {
    local name=$1 cap=$2 limit
    shift 2
    limit=$(allowance "$cap")
    if [ "$limit" -lt 20 ]; then
        say "stage $name: skipped, ${limit}s is all its cap and the budget allow"
        STATUS[$name]=skipped
        return
    fi
    say "stage $name: start (limit ${limit}s): $*"
    # timeout makes itself the leader of a process group that its command's children (a server) join.
    timeout --kill-after=15 "$limit" "$@" > >(tee -a "$LOG") 2>&1 &
    local group=$!
    wait "$group"
    local rc=$?
    [ "$rc" = 124 ] && say "stage $name: TIMED OUT after ${limit}s"
    if kill -0 -- "-$group" 2>/dev/null; then
        sleep 5 # a server that got SIGTERM finishes its batch; the next stage needs the GPU to itself
        kill -KILL -- "-$group" 2>/dev/null && say "stage $name: ended what it left running"
    fi
    say "stage $name: exit $rc"
    STATUS[$name]=$rc
}

say "stage=$STAGE model=$MODEL device=$DEVICE size=$SIZE dtype=$DTYPE requests=$REQUESTS" \
    "concurrency=$CONCURRENCY budget=${BUDGET}s out=$OUT"

# -- the interpreter and the carried wheels ------------------------------------------------------------------
PY=${SDXL_GPU_PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in /opt/torch/.venv/bin/python3 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then
            PY=$(command -v "$candidate")
            break
        fi
    done
fi
WHEELS=${SDXL_GPU_WHEELS:-$ROOT/.gpu-wheels}
SITE=$SCRATCH/site
shopt -s nullglob
wheel_files=("$WHEELS"/*.whl)
shopt -u nullglob
if [ ${#wheel_files[@]} = 0 ]; then
    say "ERROR: no wheels in $WHEELS: run \`make gpu-wheels\` on the CPU box and carry .gpu-wheels"
else
    # A warm machine that ran this before keeps /tmp: install again only when the wheels changed.
    stamp=$(cat "${wheel_files[@]}" | md5sum | cut -d' ' -f1)
    if [ "$(cat "$SITE/.stamp" 2>/dev/null)" = "$stamp" ]; then
        say "wheels: already installed in $SITE"
    else
        rm -rf "$SITE"
        say "wheels: installing ${#wheel_files[@]} from $WHEELS into $SITE"
        if "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$SITE" "${wheel_files[@]}" 2>&1 | tee -a "$LOG"; then
            echo "$stamp" >"$SITE/.stamp"
        else
            say "ERROR: pip install of the wheels failed"
        fi
    fi
fi
export PYTHONPATH=$SITE:$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# Nothing may reach for the network (there is none there: a lookup could hang instead of failing).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
export HF_HOME=$SCRATCH/hf SDXL_BEDROCK_CACHE=$SCRATCH/model-cache SDXL_BEDROCK_TEST_CACHE=$SCRATCH/model-cache
export TORCHINDUCTOR_CACHE_DIR=$SCRATCH/inductor
export AWS_EC2_METADATA_DISABLED=true

{
    echo "== machine"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    echo "== python: $PY"
    "$PY" - <<'EOF' 2>&1
import importlib.metadata as metadata
import platform
import sys

import torch

print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
for name in ("diffusers", "transformers", "huggingface-hub", "tokenizers", "safetensors", "accelerate",
             "numpy", "pydantic", "fastapi", "starlette", "granian", "boto3", "botocore", "typing-extensions"):
    try:
        print(f"  {name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"  {name} MISSING")
EOF
    echo "== pip check (what the carried wheels and the machine's packages need of each other)"
    "$PY" -m pip check 2>&1 | head -40
    echo "== imports"
    "$PY" -c "import sdxl_bedrock.app, sdxl_bedrock.engine.pipeline, bench.run, tests.conftest, diffusers, \
transformers; print('imports: ok; transformers', transformers.__version__, 'from', transformers.__file__)" 2>&1
} 2>&1 | tee -a "$LOG"

# -- the stages -----------------------------------------------------------------------------------------------
stage_tests() {
    local where
    read -r -a where <<<"${SDXL_GPU_TESTS:-tests/gpu}"
    if [ ! -e "${where[0]}" ]; then
        say "stage tests: ${where[0]} does not exist (yet): skipped"
        STATUS[tests]=absent
        return
    fi
    run_stage tests "$1" "$PY" -m pytest -q -m "${SDXL_GPU_MARK:-gpu}" "${where[@]}" -p no:cacheprovider \
        --junitxml="$OUT/pytest-gpu.xml"
    [ "${STATUS[tests]}" = 5 ] && say "stage tests: no test selected (exit 5)"
}

stage_bench() { # stage_bench NAME CAP SERVE_OPTIONS...
    local name=$1 cap=$2
    shift 2
    local dir=$SCRATCH/$name
    rm -rf "$dir"
    mkdir -p "$dir"
    run_stage "$name" "$cap" "$PY" -m bench.run --model "$MODEL" --device "$DEVICE" --size "$SIZE" \
        --requests "$REQUESTS" --concurrency "${CONCURRENCY_LIST[@]}" --out-dir "$dir" \
        --server-args --dtype "$DTYPE" "$@" "${SERVER_EXTRA[@]}"
    for json in "$dir"/bench-*.json; do
        [ -e "$json" ] && cp "$json" "$OUT/bench-$name.json"
    done
    for server_log in "$dir"/server-*.log; do
        [ -e "$server_log" ] || continue
        {
            echo "===== $name: $(basename "$server_log") (without its not-ready pings; last 3000 lines)"
            grep -v 'GET /ping -> 429' "$server_log" | tail -n 3000
        } >>"$OUT/servers.log"
    done
}

stage_vae() {
    local dir=$SCRATCH/vae batches=(1 8)
    [ "${SDXL_GPU_DRYRUN:-0}" = 1 ] && batches=(1 2)
    rm -rf "$dir"
    run_stage vae "$1" "$PY" -m bench.vae --model "$MODEL" --device "$DEVICE" --size "$SIZE" \
        --batch "${batches[@]}" --out-dir "$dir"
    for json in "$dir"/vae-*.json; do
        [ -e "$json" ] && cp "$json" "$OUT/vae.json"
    done
}

case "$STAGE" in
default)
    stage_tests "${SDXL_GPU_TIMEOUT_TESTS:-170}"
    stage_bench eager "${SDXL_GPU_TIMEOUT_EAGER:-400}"
    stage_vae "${SDXL_GPU_TIMEOUT_VAE:-90}"
    ;;
tests) stage_tests "${SDXL_GPU_TIMEOUT_TESTS:-600}" ;;
eager) stage_bench eager "${SDXL_GPU_TIMEOUT_EAGER:-600}" ;;
vae) stage_vae "${SDXL_GPU_TIMEOUT_VAE:-300}" ;;
compiled) stage_bench compiled "${SDXL_GPU_TIMEOUT_COMPILED:-600}" --compile --warmup "$WARMUP" ;;
all)
    stage_tests "${SDXL_GPU_TIMEOUT_TESTS:-300}"
    stage_bench eager "${SDXL_GPU_TIMEOUT_EAGER:-400}"
    stage_vae "${SDXL_GPU_TIMEOUT_VAE:-90}"
    stage_bench compiled "${SDXL_GPU_TIMEOUT_COMPILED:-600}" --compile --warmup "$WARMUP"
    ;;
esac

# -- what came of it ---------------------------------------------------------------------------------------
shopt -s nullglob
summaries=("$OUT"/bench-*.json "$OUT"/vae*.json)
shopt -u nullglob
if [ ${#summaries[@]} -gt 0 ]; then
    "$PY" bench/gpu/summary.py "${summaries[@]}" 2>&1 | tee "$OUT/summary.md" | tee -a "$LOG"
fi
failed=0
for name in "${!STATUS[@]}"; do
    say "result: $name ${STATUS[$name]}"
    case "${STATUS[$name]}" in 0 | absent) ;; *) failed=1 ;; esac
done
say "done in $((SECONDS - STARTED))s; files in $OUT:" "$OUT"/*
exit "$failed"
