#!/usr/bin/env bash
# Runs every unit-test binary under BUILD/tests and appends one result line per test binary to
# $MP_RESULTS (if set): "PASS name" or "FAIL name".  Usage: run_unit.sh BUILD
set -u
build=${1:-build}
fail=0
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    name="unit/$(basename "$t")"
    if out=$("$t" 2>&1); then
        echo "PASS $name ${out##*$'\n'}"
        [ -n "${MP_RESULTS:-}" ] && echo "PASS $name" >>"$MP_RESULTS"
    else
        echo "FAIL $name"; echo "$out" | tail -30
        [ -n "${MP_RESULTS:-}" ] && echo "FAIL $name" >>"$MP_RESULTS"
        fail=1
    fi
done
exit $fail
