#!/usr/bin/env bash
# Cross-build edgedet for 64-bit and 32-bit ARM Linux boards on a Debian
# x86_64 host, with Debian's cross gcc as linker and C compiler.
#
# Usage: cross/build.sh TARGET|all [cargo build arguments]
#   TARGET: aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf;
#           all builds both, one after the other
#
# The release profile is used unless the arguments name another with
# --profile (cross/build.sh all --profile dist builds the packaged binaries).
# The binary lands in target/TARGET/PROFILE/edgedet. See cross/README.md for
# the packages to install first.

set -euo pipefail

usage() {
    echo "usage: $(basename "$0") aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf|all [cargo build arguments]"
}

fail() {
    echo "cross/build.sh: error: $*" >&2
    exit 1
}

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    usage
    [[ $# -ge 1 ]] && exit 0
    exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=cross/targets.sh
source "$repo/cross/targets.sh"

targets=("$1")
[[ "$1" == all ]] && targets=("${CROSS_TARGETS[@]}")
shift
cargo_args=("$@")
# The stripped binary of the dist profile, as packaged, in bytes.
readonly DIST_SIZE_LIMIT=15000000

# Cargo rejects --release next to --profile, and names the binary's folder
# after the profile ("release" for --release).
profile=release
add_release=true
for ((i = 0; i < ${#cargo_args[@]}; i++)); do
    case "${cargo_args[i]}" in
        --profile)
            profile=${cargo_args[i + 1]:-}
            add_release=false
            ;;
        --profile=*)
            profile=${cargo_args[i]#--profile=}
            add_release=false
            ;;
        --release | -r) add_release=false ;;
    esac
done
[[ -n "$profile" ]] || fail "--profile needs a profile name"
[[ "$add_release" == true ]] && cargo_args=(--release "${cargo_args[@]}")

for target in "${targets[@]}"; do
    if ! cross_target_settings "$target"; then
        usage >&2
        fail "unsupported target '$target'"
    fi
    command -v "$gcc_prefix-gcc" >/dev/null ||
        fail "$gcc_prefix-gcc not found: install it with 'apt-get install $gcc_package'"
    [[ -e "$sysroot/lib/crt1.o" ]] ||
        fail "the glibc of $target for linking is not installed: run 'apt-get install $libc_package'"
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
        fail "the Rust standard library for $target is not installed: run 'rustup target add $target'"
    fi
done

for target in "${targets[@]}"; do
    cross_target_settings "$target"
    # Subshell, so that one target's variables do not reach the next build.
    (
        cross_export_toolchain "$target"
        started=$SECONDS
        cargo build --target "$target" "${cargo_args[@]}"

        binary="target/$target/$profile/edgedet"
        [[ -f "$binary" ]] || fail "cargo finished but $binary does not exist"
        size=$(wc -c <"$binary" | tr -d ' ')
        echo "built $repo/$binary ($size bytes) in $((SECONDS - started)) s"
        if command -v file >/dev/null; then
            file "$binary"
        fi
        # Boards have small SD cards and packages are downloaded over slow
        # links: the packaged binary (dist, without the embedded broker) must
        # stay within DIST_SIZE_LIMIT.
        if [[ "$profile" == dist && " ${cargo_args[*]} " == *" --no-default-features "* ]] &&
            ((size > DIST_SIZE_LIMIT)); then
            fail "$binary is $size bytes, over the limit of $DIST_SIZE_LIMIT bytes for the packaged binary (cross/README.md, Binary size, shows what takes the room)"
        fi
    )
done
