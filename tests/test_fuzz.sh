#!/usr/bin/env bash
# Bounded libFuzzer runs of every fuzz target built under $BUILD/fuzz/
# (one case per target). Each target fuzz_NAME uses the seed corpus
# tests/fuzz/corpus_NAME/ and the dictionary tests/fuzz/NAME.dict when present.
# FUZZ_RUNS sets the iterations per target (default 200000) and FUZZ_SECONDS
# caps each run's time (default 30 s), whichever comes first.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build="${BUILD:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
pass=0; fail=0
if [ "${NO_FUZZ:-0}" = 1 ]; then
    echo "ok   fuzz targets not built in this configuration (NO_FUZZ=1)"
    echo "0 passed, 0 failed"
    exit 0
fi
shopt -s nullglob
for bin in "$build"/fuzz/fuzz_*; do
    [ -x "$bin" ] && [ -f "$bin" ] || continue
    name=$(basename "$bin"); short=${name#fuzz_}
    work="$build/fuzz/work_$short"; mkdir -p "$work"
    args=(-runs="${FUZZ_RUNS:-200000}" -max_total_time="${FUZZ_SECONDS:-30}" -max_len=4096 -print_final_stats=0)
    [ -f "$root/tests/fuzz/$short.dict" ] && args+=(-dict="$root/tests/fuzz/$short.dict")
    corpora=("$work")
    [ -d "$root/tests/fuzz/corpus_$short" ] && corpora+=("$root/tests/fuzz/corpus_$short")
    if (cd "$root" && "$bin" "${args[@]}" "${corpora[@]}") >"$build/fuzz/$name.log" 2>&1; then
        echo "ok   $name: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$build/fuzz/$name.log" | tail -n 1)s"
        pass=$((pass + 1))
    else
        echo "FAIL $name: see $build/fuzz/$name.log"; tail -n 30 "$build/fuzz/$name.log"
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
