#!/usr/bin/env bash
# Every GPU figure that matters, in ONE device call (one lent NVIDIA H200, no network), from the repo root:
#
#     bash bench/gpu/run.sh [STAGE...]       (carry [".gpu-wheels"], timeout_s 600; bench/gpu/README.md)
#
# The stages, in priority order; with no STAGE all five run, in this order, within a budget of 540 s, so
# that a run cut short keeps the most valuable part. Named stages run in the same order.
#   tests     python -m pytest -v -m gpu tests/gpu
#   eager     python -m bench.run --model sdxl-random --device cuda --size 1024 --requests 8 --concurrency 16
#               --server-args --dtype float16           (p50 of one request, images/s at 16 clients)
#   compiled  the same with --compile --warmup 1024x1024:1,8 --warmup-prompt-chunks 1 (torch.compile
#               reduce-overhead, CUDA graphs; the benchmark's prompts are one chunk, so no longer lengths)
#   mixed     the same as eager with --workload mixed (the continuous-batching phase), only when
#               `python -m bench.run --help` offers --workload; else recorded as "phase not present"
#   vae       python -m bench.vae --model sdxl-random --device cuda --size 1024 --batch 1 8 (float32 vs bfloat16)
#
# Each stage runs under its own `timeout` (its cap, or what the budget has left if less; a stage with under
# 20 s left is skipped), its process group killed at the end, and a failed or cut stage does not stop the
# next. While a stage runs, its figures are copied to $OUT within a second or two of bench.run/bench.vae
# writing them, and summary.md is rewritten then and at every stage's start and end, so a call cut short at
# any moment leaves the figures measured so far and a summary.md that says where it stopped. $OUT ends with
# at most 7 files: run.log (everything printed, stamped with the run's clock, and the servers' milestones:
# load, each warm-up/compile, ready), servers.log (the servers' logs), bench-eager.json,
# bench-compiled.json, bench-mixed.json, vae.json, summary.md (the Markdown for bench/RESULTS.md: stages,
# figures, each target met or not). The wheels are installed with --no-index --no-deps into a --target
# folder in /tmp that PYTHONPATH puts ahead of the machine's own packages (a venv made from
# /opt/torch/.venv/bin/python3 would not see its torch: --system-site-packages means the base interpreter's
# packages, not that venv's), with $PWD/src and $PWD (the project is not pip-installed: pyproject says
# python <3.12). Exits 0 when every stage run ended well.
#
# Knobs (environment): SDXL_GPU_PYTHON, SDXL_GPU_WHEELS, SDXL_GPU_MODEL (sdxl-random), SDXL_GPU_DEVICE (cuda),
# SDXL_GPU_SIZE (1024), SDXL_GPU_DTYPE (float16), SDXL_GPU_REQUESTS (8), SDXL_GPU_CONCURRENCY ("16"),
# SDXL_GPU_MIXED_CONCURRENCY ("16"), SDXL_GPU_WARMUP (SIZExSIZE:1,8), SDXL_GPU_SERVER_ARGS (more `serve`
# options), SDXL_GPU_BUDGET_S (540), SDXL_GPU_CAP_TESTS / _EAGER / _COMPILED / _MIXED / _VAE (seconds),
# SDXL_GPU_TESTS (tests/gpu; several paths space-separated), SDXL_GPU_MARK (gpu), SDXL_GPU_SCRATCH
# (/tmp/sdxl-gpu). SDXL_GPU_DRYRUN=1: the same plumbing on a CPU (tiny model, 128x128, 2 requests;
# `make gpu-check`).
set -u
set -o pipefail

STARTED=$SECONDS
STAGES=(tests eager compiled mixed vae) # the priority order
declare -A SELECTED
if [ $# = 0 ]; then
    for name in "${STAGES[@]}"; do SELECTED[$name]=1; done
fi
for name in "$@"; do
    case "$name" in
    tests | eager | compiled | mixed | vae) SELECTED[$name]=1 ;;
    *)
        echo "usage: bash bench/gpu/run.sh [tests] [eager] [compiled] [mixed] [vae]   (none: all five)" >&2
        exit 2
        ;;
    esac
done
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/bench/out/gpu}
mkdir -p "$OUT"
# One run's files only (the device tool empties $OUT; a local run may find an earlier one's there).
rm -f "$OUT"/{run.log,servers.log,bench-eager.json,bench-compiled.json,bench-mixed.json,vae.json,summary.md}
LOG=$OUT/run.log
SCRATCH=${SDXL_GPU_SCRATCH:-/tmp/sdxl-gpu}
mkdir -p "$SCRATCH"

# Caps and estimates in seconds (bench/gpu/README.md derives the estimates). A dry run on a small, shared
# CPU is slower than the GPU and is about the plumbing: its caps are wide.
declare -A CAP ESTIMATE
if [ "${SDXL_GPU_DRYRUN:-0}" = 1 ]; then
    DEFAULTS=(tiny cpu 128 float32 2 "2" "2" 2400)
    CAP=([tests]=300 [eager]=600 [compiled]=900 [mixed]=600 [vae]=300)
    ESTIMATE=([tests]=- [eager]=- [compiled]=- [mixed]=- [vae]=-)
else
    DEFAULTS=(sdxl-random cuda 1024 float16 8 "16" "16" 540)
    CAP=([tests]=90 [eager]=150 [compiled]=270 [mixed]=120 [vae]=60)
    ESTIMATE=([tests]=60 [eager]=100 [compiled]=235 [mixed]=90 [vae]=30)
fi
MODEL=${SDXL_GPU_MODEL:-${DEFAULTS[0]}}
DEVICE=${SDXL_GPU_DEVICE:-${DEFAULTS[1]}}
SIZE=${SDXL_GPU_SIZE:-${DEFAULTS[2]}}
DTYPE=${SDXL_GPU_DTYPE:-${DEFAULTS[3]}}
REQUESTS=${SDXL_GPU_REQUESTS:-${DEFAULTS[4]}}
read -r -a CONCURRENCY <<<"${SDXL_GPU_CONCURRENCY:-${DEFAULTS[5]}}"
read -r -a MIXED_CONCURRENCY <<<"${SDXL_GPU_MIXED_CONCURRENCY:-${DEFAULTS[6]}}"
BUDGET=${SDXL_GPU_BUDGET_S:-${DEFAULTS[7]}}
# A CPU compiles slowly (minutes a shape on a shared 2-core box): the dry run warms one shape, not two.
WARMUP_BATCHES=1,8
[ "${SDXL_GPU_DRYRUN:-0}" = 1 ] && WARMUP_BATCHES=1
WARMUP=${SDXL_GPU_WARMUP:-${SIZE}x${SIZE}:$WARMUP_BATCHES}
read -r -a SERVER_EXTRA <<<"${SDXL_GPU_SERVER_ARGS:-}"
for name in "${STAGES[@]}"; do
    knob=SDXL_GPU_CAP_${name^^}
    CAP[$name]=${!knob:-${CAP[$name]}}
done
# What a cut stage's processes get after SIGTERM before SIGKILL, and what the end of the run needs.
KILL_AFTER=5
RESERVE=10

say() { echo "[run.sh $((SECONDS - STARTED))s] $*" | tee -a "$LOG"; }
# Each line of a stage's output, stamped with the run's clock: the stamps are the timings the README's
# estimates are checked against.
stamp() {
    local line
    while IFS= read -r line; do printf '[%4ds] %s\n' $((SECONDS - STARTED)) "$line"; done
}

# -- the stages' record, which summary.md shows ------------------------------------------------------------
declare -A STATUS TOOK LIMIT
for name in "${STAGES[@]}"; do
    if [ -n "${SELECTED[$name]:-}" ]; then STATUS[$name]=waiting; else STATUS[$name]="not selected"; fi
done
STAGE_TABLE=$SCRATCH/stages.tsv
CARD="(not read yet)"

summarize() {
    local name
    {
        printf 'stage\tcap_s\testimate_s\tlimit_s\ttook_s\tstatus\n'
        for name in "${STAGES[@]}"; do
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${CAP[$name]}" "${ESTIMATE[$name]}" \
                "${LIMIT[$name]:--}" "${TOOK[$name]:--}" "${STATUS[$name]}"
        done
    } >"$STAGE_TABLE"
    # Written beside its final name and renamed: a cut mid-write never leaves half a summary.
    if "$PY" bench/gpu/summary.py --out "$OUT" --stages "$STAGE_TABLE" --card "$CARD" \
        --junit "$SCRATCH/pytest-gpu.xml" --elapsed $((SECONDS - STARTED)) --budget "$BUDGET" \
        >"$OUT/summary.md.part" 2>>"$LOG"; then
        mv -f "$OUT/summary.md.part" "$OUT/summary.md"
    else
        rm -f "$OUT/summary.md.part"
        say "summary.py failed (see above)"
    fi
}

# copy_if_changed SOURCE TARGET: TARGET in $OUT, replaced atomically; true when it changed. By content, not
# by time: a copy made while bench.run was writing is made again at the next poll.
copy_if_changed() {
    [ -e "$1" ] || return 1
    [ -e "$2" ] && [ "$(md5sum <"$1")" = "$(md5sum <"$2")" ] && return 1
    cp "$1" "$2.part" && mv -f "$2.part" "$2"
}

# The figures a running stage has written so far, into $OUT, and its servers' milestones, into run.log.
declare -A MILESTONES_SEEN
collect() {
    local name=$1 dir=$SCRATCH/$1 changed=0 source parts
    local target=$OUT/bench-$name.json
    [ "$name" = vae ] && target=$OUT/vae.json
    for source in "$dir"/bench-*.json "$dir"/vae-*.json; do
        if copy_if_changed "$source" "$target"; then
            changed=1
            # bench.run writes after its baseline, its server part and the codecs: the phases' times.
            parts=$(grep -o '^  "[a-z_0-9]*": {' "$target" | tr -d ' ":{' | xargs)
            say "$name: figures written, in $target: $parts"
        fi
    done
    shopt -s nullglob
    local logs=("$dir"/server-*.log)
    shopt -u nullglob
    if [ ${#logs[@]} -gt 0 ]; then
        local milestones count seen=${MILESTONES_SEEN[$name]:-0}
        milestones=$(grep -h -E 'listening on|warming up|GET /ping -> 200|Traceback|Error|shutting down' \
            "${logs[@]}" 2>/dev/null | head -n 200)
        count=$(printf '%s' "$milestones" | grep -c '')
        if [ "$count" -gt "$seen" ]; then
            printf '%s\n' "$milestones" | tail -n +$((seen + 1)) | while IFS= read -r line; do
                say "$name server: $line"
            done
            MILESTONES_SEEN[$name]=$count
        fi
        if [ -n "$(find "${logs[@]}" -newer "$OUT/servers.log" 2>/dev/null | head -n 1)" ] ||
            [ ! -e "$OUT/servers.log" ]; then
            servers_log
        fi
    fi
    [ "$changed" = 1 ] && summarize
    return 0
}

# servers.log: every stage's server logs so far, without the not-ready pings, rebuilt and renamed whole.
servers_log() {
    local stage server_log
    {
        for stage in eager compiled mixed; do
            for server_log in "$SCRATCH/$stage"/server-*.log; do
                [ -e "$server_log" ] || continue
                echo "===== $stage: $(basename "$server_log") (without its not-ready pings; last 3000 lines)"
                grep -v 'GET /ping -> 429' "$server_log" | tail -n 3000
            done
        done
    } >"$OUT/servers.log.part" && mv -f "$OUT/servers.log.part" "$OUT/servers.log"
}

# Seconds a stage may take: its cap, or what is left of the whole budget less the reserve if that is less.
allowance() {
    local left=$((BUDGET - (SECONDS - STARTED) - RESERVE - KILL_AFTER))
    if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

# run_stage NAME COMMAND...: the command under timeout (its whole process group: a server it started goes
# too), stamped output to the terminal and run.log, figures collected while it runs.
run_stage() {
    local name=$1 limit began rc
    shift
    limit=$(allowance "${CAP[$name]}")
    if [ "$limit" -lt 20 ]; then
        STATUS[$name]="skipped: ${limit}s left in the budget"
        say "stage $name: ${STATUS[$name]}"
        summarize
        return
    fi
    LIMIT[$name]=$limit
    STATUS[$name]=running
    say "stage $name: start (limit ${limit}s, cap ${CAP[$name]}s, estimate ${ESTIMATE[$name]}s): $*"
    summarize
    began=$SECONDS
    # timeout makes itself the leader of a process group that its command's children (a server) join.
    SDXL_GPU_STAGE=$name timeout --kill-after=$KILL_AFTER "$limit" "$@" > >(stamp | tee -a "$LOG") 2>&1 &
    local group=$!
    while kill -0 "$group" 2>/dev/null; do
        sleep 1
        collect "$name"
    done
    wait "$group"
    rc=$?
    if kill -0 -- "-$group" 2>/dev/null; then
        kill -KILL -- "-$group" 2>/dev/null && say "stage $name: killed what it left running"
        for _ in 1 2 3 4 5 6 7 8 9 10; do # the next stage needs the GPU's memory back
            kill -0 -- "-$group" 2>/dev/null || break
            sleep 0.5
        done
    fi
    TOOK[$name]=$((SECONDS - began))
    case "$rc" in
    0) STATUS[$name]=ok ;;
    124 | 137)
        if [ "$limit" -lt "${CAP[$name]}" ]; then
            STATUS[$name]="cut at the budget's end (${limit}s)"
        else
            STATUS[$name]="cut at its cap (${limit}s)"
        fi
        ;;
    *) STATUS[$name]="failed (exit $rc)" ;;
    esac
    say "stage $name: ${STATUS[$name]} after ${TOOK[$name]}s"
    collect "$name"
    summarize
}

say "stages: $(for name in "${STAGES[@]}"; do [ -n "${SELECTED[$name]:-}" ] && printf '%s ' "$name"; done)" \
    "model=$MODEL device=$DEVICE size=$SIZE dtype=$DTYPE requests=$REQUESTS" \
    "concurrency=${CONCURRENCY[*]} budget=${BUDGET}s out=$OUT"

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
    digest=$(cat "${wheel_files[@]}" | md5sum | cut -d' ' -f1)
    if [ "$(cat "$SITE/.stamp" 2>/dev/null)" = "$digest" ]; then
        say "wheels: already installed in $SITE"
    else
        rm -rf "$SITE"
        say "wheels: installing ${#wheel_files[@]} from $WHEELS into $SITE"
        if "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$SITE" "${wheel_files[@]}" 2>&1 | tee -a "$LOG"; then
            echo "$digest" >"$SITE/.stamp"
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
# Kept on a warm machine: a rerun of `compiled` right after a call reuses the compiled kernels.
export TORCHINDUCTOR_CACHE_DIR=$SCRATCH/inductor
export AWS_EC2_METADATA_DISABLED=true

# The card as the machine names it: the anchors are an H100's, and only figures of one card compare.
CARD=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
[ -n "$CARD" ] || CARD="no GPU (nvidia-smi absent): $(uname -m), $(nproc) cores"
rm -f "$SCRATCH/pytest-gpu.xml" "$OUT"/*.part
summarize
{
    echo "== machine: $CARD"
    if command -v nvidia-smi >/dev/null; then nvidia-smi 2>&1; else echo "(no nvidia-smi)"; fi
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
# One interpreter for the versions and the import check: each start costs the budget a torch import.
import bench.run, diffusers, sdxl_bedrock.app, sdxl_bedrock.engine.pipeline, tests.conftest, transformers  # noqa

print("imports: ok; transformers", transformers.__version__, "from", transformers.__file__)
EOF
    echo "== pip check (what the carried wheels and the machine's packages need of each other)"
    "$PY" -m pip check 2>&1 | head -40
} 2>&1 | stamp | tee -a "$LOG"

# -- the stages -----------------------------------------------------------------------------------------------
stage_tests() {
    local where
    read -r -a where <<<"${SDXL_GPU_TESTS:-tests/gpu}"
    if [ ! -e "${where[0]}" ]; then
        STATUS[tests]="absent: ${where[0]} does not exist"
        say "stage tests: ${STATUS[tests]}"
        return
    fi
    # -v: one stamped line per test in run.log, kept even when the stage is cut before pytest's report.
    run_stage tests "$PY" -m pytest -v -m "${SDXL_GPU_MARK:-gpu}" "${where[@]}" -p no:cacheprovider \
        --durations=5 --junitxml="$SCRATCH/pytest-gpu.xml"
    [ "${STATUS[tests]}" = "failed (exit 5)" ] && STATUS[tests]="failed: no test selected (exit 5)"
}

# stage_bench NAME "BENCH OPTIONS" SERVE_OPTIONS...: bench.run into $SCRATCH/NAME.
stage_bench() {
    local name=$1 options concurrency
    read -r -a options <<<"$2"
    shift 2
    concurrency=("${CONCURRENCY[@]}")
    [ "$name" = mixed ] && concurrency=("${MIXED_CONCURRENCY[@]}")
    rm -rf "${SCRATCH:?}/$name"
    mkdir -p "$SCRATCH/$name"
    run_stage "$name" "$PY" -m bench.run --model "$MODEL" --device "$DEVICE" --size "$SIZE" \
        --requests "$REQUESTS" --concurrency "${concurrency[@]}" --out-dir "$SCRATCH/$name" "${options[@]}" \
        --server-args --dtype "$DTYPE" "$@" "${SERVER_EXTRA[@]}"
}

stage_mixed() {
    # The continuous-batching issue adds --workload to bench.run; until it has, there is nothing to run.
    local usage
    usage=$(timeout 60 "$PY" -m bench.run --help 2>>"$LOG")
    if ! grep -q -- '--workload' <<<"$usage"; then
        STATUS[mixed]="phase not present (bench.run has no --workload)"
        say "stage mixed: ${STATUS[mixed]}"
        summarize
        return
    fi
    stage_bench mixed "--workload mixed"
}

stage_vae() {
    local batches=(1 8)
    [ "${SDXL_GPU_DRYRUN:-0}" = 1 ] && batches=(1 2)
    rm -rf "${SCRATCH:?}/vae"
    run_stage vae "$PY" -m bench.vae --model "$MODEL" --device "$DEVICE" --size "$SIZE" \
        --batch "${batches[@]}" --out-dir "$SCRATCH/vae"
}

[ -n "${SELECTED[tests]:-}" ] && stage_tests
[ -n "${SELECTED[eager]:-}" ] && stage_bench eager ""
[ -n "${SELECTED[compiled]:-}" ] && stage_bench compiled "" --compile --warmup "$WARMUP" --warmup-prompt-chunks 1
[ -n "${SELECTED[mixed]:-}" ] && stage_mixed
[ -n "${SELECTED[vae]:-}" ] && stage_vae

# -- what came of it ---------------------------------------------------------------------------------------
summarize
failed=0
for name in "${STAGES[@]}"; do
    case "${STATUS[$name]}" in ok | "not selected" | absent* | "phase not present"*) ;; *) failed=1 ;; esac
done
cat "$OUT/summary.md" >>"$LOG"
cat "$OUT/summary.md"
say "done in $((SECONDS - STARTED))s of ${BUDGET}s; in $OUT: $(cd "$OUT" && echo *)"
exit "$failed"
