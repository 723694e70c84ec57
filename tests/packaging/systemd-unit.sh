#!/usr/bin/env bash
# Check systemd/edgedet.service with systemd's own tools:
#
#   security  `systemd-analyze security --offline=yes` rates the sandbox; the
#             overall exposure must be at most 2.0 (0 is fully locked down, 10
#             is no sandbox)
#   verify    `systemd-analyze verify` must print nothing: no unknown or
#             misspelt key, no missing executable, no broken dependency
#   devices   the sandbox must still let the daemon open cameras: DeviceAllow
#             for char-video4linux, SupplementaryGroups=video, no
#             PrivateDevices=yes
#
# verify runs against a throw-away root holding a copy of this machine's
# /usr/lib/systemd/system, the unit where the package installs it, and
# /usr/bin/edgedet, so it needs no running systemd and changes nothing here.
# /usr/bin/edgedet is $EDGEDET_BIN if set, else target/release/edgedet if
# built, else a stand-in script: verify only checks that it is executable.
#
# Needs bash 5 and systemd-analyze, which Debian's systemd package provides
# (apt-get install systemd). Written against systemd 252 (Debian 12); newer
# systemd versions add checks and may rate the unit differently.

set -euo pipefail

if ((BASH_VERSINFO[0] < 5)); then
    echo "systemd-unit.sh: error: bash 5 or newer is required, found $BASH_VERSION" >&2
    exit 1
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly UNIT="$repo/systemd/edgedet.service"
# systemd-analyze prints the exposure with one decimal, and --threshold takes
# it multiplied by ten.
readonly MAX_EXPOSURE=2.0
readonly MAX_EXPOSURE_TENTHS=20

fail() {
    echo "systemd-unit.sh: FAIL: $*" >&2
    exit 1
}

command -v systemd-analyze >/dev/null ||
    fail "systemd-analyze not found: install it with 'apt-get install systemd'"
[[ -f "$UNIT" ]] || fail "$UNIT not found"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "$(systemd-analyze --version | head -n 1), unit $UNIT"

# ---- security ---------------------------------------------------------------

check_security() {
    local output status=0
    output=$(systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE_TENTHS" --no-pager "$UNIT" 2>&1) ||
        status=$?

    local exposure
    exposure=$(sed -n 's/.*Overall exposure level for edgedet\.service: \([0-9][0-9]*\.[0-9]\).*/\1/p' <<<"$output")
    if [[ -z "$exposure" ]]; then
        echo "$output" >&2
        fail "systemd-analyze security printed no overall exposure level (exit status $status)"
    fi
    echo "security: overall exposure $exposure (limit $MAX_EXPOSURE)"

    if awk -v exposure="$exposure" -v limit="$MAX_EXPOSURE" 'BEGIN { exit !(exposure > limit) }'; then
        grep '✗' <<<"$output" >&2 || true
        fail "exposure $exposure is above $MAX_EXPOSURE; the lines above are the settings that count against it"
    fi
    [[ $status -eq 0 ]] ||
        fail "systemd-analyze security --threshold=$MAX_EXPOSURE_TENTHS exited with status $status at exposure $exposure"
}

# ---- verify -----------------------------------------------------------------

# Lays out a root that systemd-analyze verify --root= can load the unit from:
# the unit directory of this machine (for network-online.target,
# modprobe@.service and the like), the unit, and the programs it runs.
make_verify_root() {
    local root=$1 unit_file=$2
    mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
    ln -s usr/bin "$root/bin"
    ln -s usr/lib "$root/lib"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    cp "$unit_file" "$root/usr/lib/systemd/system/edgedet.service"

    local binary=${EDGEDET_BIN:-$repo/target/release/edgedet}
    if [[ -x "$binary" ]]; then
        cp "$binary" "$root/usr/bin/edgedet"
    else
        printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/edgedet"
        chmod 755 "$root/usr/bin/edgedet"
    fi
    # ExecReload runs /bin/kill, which the package gets from procps.
    printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/kill"
    chmod 755 "$root/usr/bin/kill"
}

# Prints what systemd-analyze verify reports for a unit file. Empty output
# means no findings.
verify_unit() {
    local unit_file=$1 root
    root=$(mktemp -d "$work/root.XXXXXX")
    make_verify_root "$root" "$unit_file"
    local output status=0
    output=$(systemd-analyze verify --root="$root" --man=no edgedet.service 2>&1) || status=$?
    if [[ $status -ne 0 && -z "$output" ]]; then
        output="systemd-analyze verify exited with status $status"
    fi
    printf '%s' "$output"
}

check_verify() {
    # systemd-analyze verify exits 0 even for unknown keys, so its output is
    # the verdict. First make sure this setup reports a real defect at all.
    sed 's|^ExecStart=/usr/bin/edgedet |ExecStart=/usr/bin/edgedet-missing |' "$UNIT" >"$work/broken.service"
    local broken
    broken=$(verify_unit "$work/broken.service")
    [[ "$broken" == *"/usr/bin/edgedet-missing is not executable"* ]] ||
        fail "verify did not report a missing ExecStart binary, so it cannot be trusted here; it printed: ${broken:-nothing}"

    local output
    output=$(verify_unit "$UNIT")
    if [[ -n "$output" ]]; then
        echo "$output" >&2
        fail "systemd-analyze verify reported the problems above"
    fi
    echo "verify: no findings"
}

# ---- device access ----------------------------------------------------------

# Prints the values of a [Service] key, one per line, without comments.
service_values() {
    local key=$1
    awk -v key="$key" '
        /^\[/ { in_service = ($0 == "[Service]") }
        in_service && index($0, key "=") == 1 { print substr($0, length(key) + 2) }
    ' "$UNIT"
}

check_devices() {
    service_values DeviceAllow | grep -qx 'char-video4linux rw' ||
        fail "no 'DeviceAllow=char-video4linux rw' in [Service]: the daemon could not open /dev/video*"
    [[ "$(service_values DevicePolicy)" == closed ]] ||
        fail "DevicePolicy is '$(service_values DevicePolicy)', expected closed"
    service_values SupplementaryGroups | tr ' ' '\n' | grep -qx video ||
        fail "SupplementaryGroups does not contain video: /dev/video* belongs to the group video"
    if service_values PrivateDevices | grep -qiE '^(yes|true|on|1)$'; then
        fail "PrivateDevices=yes hides the cameras"
    fi
    if service_values ProcSubset | grep -qx pid; then
        fail "ProcSubset=pid hides /proc/cpuinfo, which tract reads on ARM to choose its kernels"
    fi
    echo "devices: DeviceAllow=char-video4linux rw, SupplementaryGroups=video, no PrivateDevices"
}

check_security
check_verify
check_devices
echo "systemd-unit.sh: 3 passed, 0 failed"
