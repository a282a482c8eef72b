#!/usr/bin/env bash
# `make test`: the whole suite, twice.
#   (a) plain build (BUILD=build): unit tests, integration tests, format check, short fuzz runs;
#   (b) ASan+UBSan build (SAN=1 BUILD=build/asan): unit and integration tests again.
# Every check appends "PASS name" / "FAIL name" to $MP_RESULTS (build/test-results.txt); the last
# line printed is "N passed, N failed" and the exit status is non-zero on any failure.
# Knobs: FUZZ_TIME (seconds per fuzz target, default 15), SAN_CC (default clang),
#        MP_SKIP_ASAN=1 / MP_SKIP_FUZZ=1 for quick local runs (reported, never silent).
set -u
cd "$(dirname "$0")/.."
root=$PWD
mkdir -p build
export MP_RESULTS=$root/build/test-results.txt
: >"$MP_RESULTS"
start=$(date +%s)

record() { # record PASS|FAIL name
    echo "$1 $2" >>"$MP_RESULTS"
    echo "$1 $2"
}

# Runs a command, logs it to build/logs/<name>.log, records PASS/FAIL; shows the tail on failure.
step() {
    local name=$1
    shift
    local log=$root/build/logs/${name//\//_}.log
    mkdir -p "$root/build/logs"
    echo "== $name: $*"
    if "$@" >"$log" 2>&1; then
        record PASS "$name"
    else
        record FAIL "$name"
        tail -40 "$log"
    fi
}

# Builds with make -k so a missing piece (e.g. proxy/main.c) still lets the rest build and run.
build_tree() { # build_tree tag make-args...
    local tag=$1
    shift
    step "$tag/build" make -k -j2 "$@"
}

run_integration() { # run_integration tag magpie-binary
    echo "== $1/integration ($2)"
    MAGPIE_BIN=$2 MP_TEST_TAG=$1 /usr/bin/python3 tests/integration/run.py
}

# ---- (a) plain ----
build_tree plain BUILD=build
echo "== plain/unit"
tests/run_unit.sh build
step plain/check-format tests/check_format.sh
run_integration plain "$root/build/magpie"
if [ "${MP_SKIP_FUZZ:-0}" = 1 ]; then
    echo "SKIP fuzz (MP_SKIP_FUZZ=1)" | tee -a "$MP_RESULTS"
else
    echo "== fuzz"
    FUZZ_TIME=${FUZZ_TIME:-15} FUZZ_SEED=${FUZZ_SEED:-1} tests/fuzz/run.sh
fi

# ---- (b) ASan + UBSan ----
if [ "${MP_SKIP_ASAN:-0}" = 1 ]; then
    echo "SKIP asan (MP_SKIP_ASAN=1)" | tee -a "$MP_RESULTS"
else
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    build_tree asan SAN=1 BUILD=build/asan CC="${SAN_CC:-clang}"
    echo "== asan/unit"
    # run_unit.sh names results unit/<binary>; prefix them so the two halves stay distinct.
    MP_RESULTS=$root/build/asan-unit-results.txt
    : >"$MP_RESULTS"
    MP_RESULTS=$MP_RESULTS tests/run_unit.sh build/asan
    sed 's#^\(PASS\|FAIL\) #\1 asan/#' "$MP_RESULTS" >>"$root/build/test-results.txt"
    MP_RESULTS=$root/build/test-results.txt
    run_integration asan "$root/build/asan/magpie"
fi

elapsed=$(($(date +%s) - start))
skipped=$(grep -c '^SKIP ' "$MP_RESULTS")
passed=$(grep -c '^PASS ' "$MP_RESULTS")
failed=$(grep -c '^FAIL ' "$MP_RESULTS")
echo
echo "results: $MP_RESULTS (${elapsed}s)"
if [ "$failed" -gt 0 ]; then
    echo "failed:"
    grep '^FAIL ' "$MP_RESULTS" | sed 's/^/  /'
fi
[ "$skipped" -gt 0 ] && echo "$skipped skipped (listed as SKIP in $MP_RESULTS)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
