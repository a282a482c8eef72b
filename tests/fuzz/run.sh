#!/usr/bin/env bash
# `make fuzz` (and a short run inside `make test`): builds every tests/fuzz/fuzz_*.c as a libFuzzer
# binary with ASan+UBSan against the library sources, then runs each for FUZZ_TIME seconds on a
# scratch copy of tests/fuzz/corpus/<name>/ (the repo corpus is never modified).  Appends
# "PASS fuzz/<name>" / "FAIL fuzz/<name>" to $MP_RESULTS when set.  Crash inputs are kept under
# build/fuzz/artifacts/.  Knobs: FUZZ_TIME (default 20), FUZZ_SEED (default 0: random),
# FUZZ_JOBS (parallel compiles, default 2), FUZZ_ONLY (run only targets whose name contains it).
set -u
cd "$(dirname "$0")/../.."
root=$PWD
out=$root/build/fuzz
time=${FUZZ_TIME:-20}
# 0: a random seed (exploration, `make fuzz`).  `make test` passes a fixed one so that its short
# run replays a sequence already explored here rather than a new one every time.
seed=${FUZZ_SEED:-0}
jobs=${FUZZ_JOBS:-2}
fail=0

record() {
    echo "$1 $2"
    [ -n "${MP_RESULTS:-}" ] && echo "$1 $2" >>"$MP_RESULTS"
    [ "$1" = FAIL ] && fail=1
    return 0
}

shopt -s nullglob
targets=(tests/fuzz/fuzz_*.c)
if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz: no targets yet (tests/fuzz/fuzz_*.c)"
    exit 0
fi

mkdir -p "$out/obj" "$out/artifacts"
# Generated protobuf sources come from the Makefile (protoc-c); build only those targets.
if ! make -s BUILD=build build/gen/.protos build/gen/pb_registry.c >"$out/gen.log" 2>&1; then
    cat "$out/gen.log"
    record FAIL fuzz/build
    exit 1
fi

PKGS="libnghttp2 libcares libcjson yaml-0.1 libprotobuf-c libpcre2-8 libssl libcrypto"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CPP="-D_GNU_SOURCE -Iinclude -Ibuild/gen -I/usr/share/include/llhttp"
CFLAGS="-std=c11 -O1 -g $SAN -fsanitize=fuzzer-no-link -pthread"
LIBS="$(pkg-config --libs $PKGS) -lev -lm -pthread"

# One object per source, rebuilt only when the source is newer; -w for generated and Debian code.
compile_one() { # compile_one src
    local src=$1 obj=$out/obj/${1//\//_}.o extra=""
    case $src in build/gen/* | /usr/share/llhttp/*) extra="-w" ;; esac
    # Up to date only if newer than its source and every header it included (clang -MD).
    if [ "$obj" -nt "$src" ] && [ -f "$obj.d" ]; then
        local stale=0 dep
        for dep in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$obj.d"); do
            [ "$dep" -nt "$obj" ] && stale=1 && break
        done
        [ $stale = 0 ] && return 0
    fi
    clang $CPP $CFLAGS $extra -MD -MF "$obj.d" -c "$src" -o "$obj"
}
export -f compile_one
export out CPP CFLAGS

mapfile -t srcs < <(
    ls proxy/*.c xds/*.c filters/*.c 2>/dev/null | grep -v '^proxy/main\.c$'
    find build/gen -name '*.pb-c.c' | sort
    echo build/gen/pb_registry.c
    ls /usr/share/llhttp/*.c
)
if ! printf '%s\n' "${srcs[@]}" | xargs -P "$jobs" -I{} bash -c 'compile_one "$@"' _ {} \
    >"$out/compile.log" 2>&1; then
    tail -40 "$out/compile.log"
    record FAIL fuzz/build
    exit 1
fi
objs=()
for s in "${srcs[@]}"; do objs+=("$out/obj/${s//\//_}.o"); done

for t in "${targets[@]}"; do
    name=$(basename "$t" .c)
    short=${name#fuzz_}
    [[ $name == *"${FUZZ_ONLY:-}"* ]] || continue
    bin=$out/$name
    if ! clang $CPP $CFLAGS -fsanitize=fuzzer "$t" "${objs[@]}" $LIBS -o "$bin" \
        >"$out/$name.build.log" 2>&1; then
        tail -30 "$out/$name.build.log"
        record FAIL "fuzz/$name"
        continue
    fi
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/mp-fuzz-$short.XXXXXX")
    [ -d "tests/fuzz/corpus/$short" ] && cp -r "tests/fuzz/corpus/$short/." "$scratch/"
    if "$bin" -seed="$seed" -max_total_time="$time" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$name-" "$scratch" >"$out/$name.run.log" 2>&1; then
        record PASS "fuzz/$name"
    else
        tail -40 "$out/$name.run.log"
        record FAIL "fuzz/$name"
    fi
    rm -rf "$scratch"
done
exit $fail
