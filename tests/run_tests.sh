#!/usr/bin/env bash
# Runs each test program given on the command line, keeps its output in
# $BUILD/test-logs/, and prints a closing "N passed, N failed" over all cases.
set -u
logdir="${BUILD:-build}/test-logs"
mkdir -p "$logdir"
total_pass=0; total_fail=0; bad_progs=()
for prog in "$@"; do
    name=$(basename "$prog")
    log="$logdir/$name.log"
    "$prog" >"$log" 2>&1
    rc=$?
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}')
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or exited early
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    if [ "$rc" -ne 0 ]; then
        bad_progs+=("$name")
        echo "---- $name (exit $rc) ----"; grep -v '^ok ' "$log" | tail -n 40
    else
        echo "$name: $p passed"
    fi
done
[ ${#bad_progs[@]} -eq 0 ] || echo "failing programs: ${bad_progs[*]}"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
