#!/usr/bin/env bash
# Issue 14's measurements still missing on a real GPU, as ONE device call (docs: the workplace's device
# README): FP8 and regional compile against the bf16 baseline (vace bench), the compile warm-up cold and from
# the persistent cache, and fast mode's LoRA cost. Most valuable first; each step has its own time limit, so a
# slow one cannot starve the rest; everything lands in $OUT.
#
#   bash benchmarks/gpu_session.sh --prepare   # here, once: wheels the GPU image lacks, into .whl/
#   bash benchmarks/gpu_session.sh             # there: device run, carry [".whl"], timeout_s 600
#   TINY=1 OUT=/tmp/out bash benchmarks/gpu_session.sh   # the same steps at toy size on a CPU
#
# Commit what comes back under benchmarks/results/ with the device and the date in the names.
set -u
cd "$(dirname "$0")/.."
WHEELS=(diffusers==0.42.1 torchao==0.18.0)  # the GPU image has torch 2.11, peft, transformers; not these

if [ "${1:-}" = "--prepare" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    for wheel in "${WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
            --platform manylinux_2_17_x86_64 -d .whl "$wheel" || exit 1
    done
    ls -l .whl
    exit 0
fi

OUT=${OUT:?the device machine sets OUT}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -n "${TINY:-}" ]; then
    BENCH=(--tiny) FULL=() DEVICE=cpu SHAPES=64x48x5 FAST=(--tiny)
else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
    BENCH=() FULL=(--full-size) DEVICE=cuda SHAPES=720p FAST=(--shape 720p --rank 64)
fi

step() {  # step NAME SECONDS COMMAND...: run under its own limit, keep its output
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

# 1. bf16 baseline and FP8 at 720p/480p, eager and compiled, FP8's error and memory (~5 min on an H100).
step bench 300 python3 -m pipelines.bench "${BENCH[@]}" --budget-s 270 --out "$OUT" \
    --only forward_720p_native --only forward_480p_native --only compile --only fp8
# 2. Compile warm-up at 720p: cold, then from the persistent cache (what a restarted worker pays).
step compile_warmup 110 python3 -m benchmarks.compile_warmup "${FULL[@]}" --device "$DEVICE" --shapes "$SHAPES"
# 3. Fast mode: a rank-64 LoRA off and on, eager and compiled, at 720p.
step fast_lora 150 python3 -m benchmarks.fast_lora "${FAST[@]}" --out "$OUT"
ls -l "$OUT"
