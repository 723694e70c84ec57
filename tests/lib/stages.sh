# shellcheck shell=bash
# Stage bookkeeping for tests/run.sh and tests/arm/run-qemu.sh, which source
# it: run_stage times each stage, the exit trap names the stage that failed,
# and the summary ends with the totals of cargo test's "test result:" lines.
#
# The sourcing script sets these variables before its first stage:
#   script_name    how its error messages start, such as tests/run.sh
#   summary_title  the heading of the summary, such as "summary"
# and writes the output of cargo test to $test_log, a temporary file that the
# exit trap removes. It needs bash 5 for EPOCHREALTIME.

# shellcheck disable=SC2154 # script_name and summary_title, as above

current_stage=
stage_started_us=0
# A stage may set stage_note to text that its summary line ends with.
stage_note=
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

fail() {
    echo "$script_name: error: $*" >&2
    exit 1
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
    echo "==> $summary_title"
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

# Runs the command given after the stage name as that stage, and records its
# duration. A failing command ends the script through set -e and the trap.
run_stage() {
    local name=$1
    shift
    echo
    echo "==> stage $name"
    current_stage=$name
    stage_started_us=$(now_us)

    stage_note=
    "$@"

    local line
    line="stage $name: $(seconds_since "$stage_started_us") s$stage_note"
    echo "$line"
    stage_summaries+=("$line")
    current_stage=
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        fail "'$*' needs root, and sudo is not installed: run it as root, then run this script again"
    fi
}
