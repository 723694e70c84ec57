#!/usr/bin/env bash
# Package a cross-built edgedet as a Debian package for a board: arm64 for
# aarch64-unknown-linux-gnu, armhf for armv7-unknown-linux-gnueabihf.
#
# Usage: cross/package.sh TARGET [cargo deb arguments]
#   TARGET: aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf
#
# Packages the binary that cross/build.sh built, without building again:
# target/TARGET/dist/edgedet unless the arguments name another profile with
# --profile (dev packages target/TARGET/debug/edgedet). The package uses the
# "board" variant of Cargo.toml, whose Depends names the glibc that the binary
# really needs, rather than the one cargo-deb's $auto takes from Debian's cross
# glibc. Before packaging, the script reads the newest glibc symbol version the
# binary links against and fails when it is newer than that bound.
# The .deb goes to target/TARGET/debian/, or to the path given with --output.

set -euo pipefail

usage() {
    echo "usage: $(basename "$0") aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf [cargo deb arguments]"
}

fail() {
    echo "cross/package.sh: error: $*" >&2
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

target=$1
shift
if ! cross_target_settings "$target"; then
    usage >&2
    fail "unsupported target '$target'"
fi
deb_args=("$@")

profile=dist
has_profile=false
for ((i = 0; i < ${#deb_args[@]}; i++)); do
    case "${deb_args[i]}" in
        --profile) profile=${deb_args[i + 1]:-}; has_profile=true ;;
        --profile=*) profile=${deb_args[i]#--profile=}; has_profile=true ;;
    esac
done
[[ -n "$profile" ]] || fail "--profile needs a profile name"
[[ "$has_profile" == true ]] || deb_args=(--profile "$profile" "${deb_args[@]}")

folder=$profile
[[ "$profile" == dev ]] && folder=debug
binary="target/$target/$folder/edgedet"
[[ -f "$binary" ]] || fail "$binary not found: build it first with cross/build.sh $target --profile $profile --no-default-features"

command -v "$gcc_prefix-objdump" >/dev/null ||
    fail "$gcc_prefix-objdump not found: install it with 'apt-get install $gcc_package'"
command -v cargo-deb >/dev/null || fail "cargo-deb not found: install it with 'cargo install cargo-deb --locked'"

# The glibc bound that the board variant declares.
declared=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, re, sys
package = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "edgedet")
depends = package["metadata"]["deb"]["variants"]["board"]["depends"]
match = re.search(r"libc6 \(>= ([0-9.]+)\)", depends)
print(match.group(1) if match else "")
')
[[ -n "$declared" ]] || fail "Cargo.toml: package.metadata.deb.variants.board.depends names no 'libc6 (>= VERSION)'"

# The newest GLIBC_x.y version among the symbols the binary imports.
needed=$("$gcc_prefix-objdump" -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[[ -n "$needed" ]] || fail "$binary imports no versioned glibc symbol: is it a $target binary?"
if [[ "$(printf '%s\n%s\n' "$needed" "$declared" | sort -V | tail -1)" != "$declared" ]]; then
    fail "$binary needs glibc $needed, but Cargo.toml's board variant declares libc6 (>= $declared): raise that bound, and the oldest supported system in README.md with it"
fi
echo "$binary needs glibc $needed; the package declares libc6 (>= $declared)"

cargo deb --no-build --target "$target" --variant board "${deb_args[@]}"
