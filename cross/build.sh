#!/usr/bin/env bash
# Cross-build a release edgedet for a 64-bit or 32-bit ARM Linux board on a
# Debian x86_64 host, with Debian's cross gcc as linker and C compiler.
#
# Usage: cross/build.sh TARGET [extra cargo build arguments]
#   TARGET: aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf
#
# The binary lands in target/TARGET/release/edgedet. See cross/README.md for
# the packages to install first.

set -euo pipefail

usage() {
    echo "usage: $(basename "$0") aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf [cargo build arguments]"
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

target=$1
shift

# The Debian package that provides each target's cross gcc, and its command prefix.
case "$target" in
    aarch64-unknown-linux-gnu)
        gcc_package=gcc-aarch64-linux-gnu
        gcc_prefix=aarch64-linux-gnu
        ;;
    armv7-unknown-linux-gnueabihf)
        gcc_package=gcc-arm-linux-gnueabihf
        gcc_prefix=arm-linux-gnueabihf
        ;;
    *)
        usage >&2
        fail "unsupported target '$target'"
        ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

command -v "$gcc_prefix-gcc" >/dev/null ||
    fail "$gcc_prefix-gcc not found: install it with 'apt-get install $gcc_package'"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    fail "the Rust standard library for $target is not installed: run 'rustup target add $target'"
fi

# Cargo reads the linker from CARGO_TARGET_<TRIPLE>_LINKER. The cc crate (used
# by tract-linalg for its assembly kernels) reads CC_<triple> and AR_<triple>.
triple_upper=$(tr 'a-z-' 'A-Z_' <<<"$target")
triple_lower=${target//-/_}
export "CARGO_TARGET_${triple_upper}_LINKER=$gcc_prefix-gcc"
export "CC_${triple_lower}=$gcc_prefix-gcc"
export "AR_${triple_lower}=$gcc_prefix-ar"

cargo build --release --target "$target" "$@"

binary="target/$target/release/edgedet"
[[ -f "$binary" ]] || fail "cargo finished but $binary does not exist"
echo "built $repo/$binary ($(wc -c <"$binary" | tr -d ' ') bytes)"
if command -v file >/dev/null; then
    file "$binary"
fi
