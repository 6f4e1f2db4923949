#!/bin/sh
# run.sh - `make fuzz`: run each libFuzzer target for a fixed time, one
# after the other (the machine's cores are the other tests').
#   usage: run.sh BUILDDIR SRCDIR SECONDS TARGET...
# Each target starts from its seeds, read-only: tests/corpus/fuzz/<name>/
# and the shared corpora below; what it learns goes to
# BUILDDIR/fuzz-corpus/<name>/ (kept between runs). Prints one line per
# target: executions, executions per second, and libFuzzer's last cov: and
# ft:; the lines are also in BUILDDIR/fuzz-out/summary.txt. A crash, leak or
# timeout fails the run; its input is in BUILDDIR/fuzz-out/<name>/ and
# the target's log beside it.
set -eu

[ $# -ge 4 ] || { echo "usage: run.sh BUILDDIR SRCDIR SECONDS TARGET..." >&2; exit 2; }
build=$1 src=$2 secs=$3
shift 3

# the seed directories of a target, beyond tests/corpus/fuzz/<name>
seeds_of() {
    case $1 in
        fuzz_wizard) echo "$src/tests/corpus/wizard" ;;
        fuzz_provider_parse) echo "$src/tests/corpus/providers" ;;
        fuzz_config) echo "$src/tests/corpus/config" ;;
        *) ;;
    esac
}

mkdir -p "$build/fuzz-out"
summary=$build/fuzz-out/summary.txt
: >"$summary"
failed=0
for t in "$@"; do
    name=$(basename "$t")
    work=$build/fuzz-corpus/$name
    out=$build/fuzz-out/$name
    mkdir -p "$work" "$out"
    dirs="$work"
    [ -d "$src/tests/corpus/fuzz/$name" ] && dirs="$dirs $src/tests/corpus/fuzz/$name"
    for d in $(seeds_of "$name"); do
        dirs="$dirs $d"
    done
    log=$out/fuzz.log
    printf '%-22s %ss ... ' "$name" "$secs"
    # shellcheck disable=SC2086  # dirs is a list of directories
    if ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
       UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
       "$build/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
           -max_len=65536 -print_final_stats=1 -artifact_prefix="$out/" \
           $dirs >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    line=$(printf '%-22s %-6s runs %-9s exec/s %-7s cov %-6s ft %s' "$name" "$status" \
        "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}")
    echo "$status"
    echo "$line" >>"$summary"
    if [ "$status" = FAILED ]; then
        echo "---- $log (last 60 lines) ----"
        tail -n 60 "$log"
    fi
done
echo
cat "$summary"
exit "$failed"
