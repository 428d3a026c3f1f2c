#!/usr/bin/env bash
# `optiq lab`: the command (URL printed, browser opened only with a display
# and without --no-browser, flags shared with serve), then the Lab's page in
# headless Chromium (Debian's chromium + chromium-driver, installed by
# scripts/setup.sh) driven by Selenium (tests/lab/test_lab.py) against
# `optiq lab` on the tiny qwen35-vl-mixed fixture. Selenium comes from PyPI
# into $BUILD/lab-venv, pinned by tests/lab/requirements.txt and
# constraints.txt. Without Chromium the browser cases are skipped with a
# message (the HTTP cases still run). Screenshots: $BUILD/test-artifacts/lab*.png.
#
# The server runs with OPTIQ_SERVE_TOKEN_DELAY_MS=20 so that a reply of the
# tiny model takes seconds, long enough to watch it stream and to stop it.
set -u
root=${OPTIQ_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
build="${BUILD:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
optiq="$build/optiq"
vl="$root/tests/fixtures/models/qwen35-vl-mixed"
venv="$build/lab-venv"
lab="$root/tests/lab"
artifacts="$build/test-artifacts"
chromium=${CHROMIUM:-/usr/bin/chromium}
chromedriver=${CHROMEDRIVER:-/usr/bin/chromedriver}

pass=0; fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
not_ok() { echo "not ok $1${2:+: $2}"; fail=$((fail + 1)); }
fail_all() { echo "not ok $1${2:+: $2}"; echo "$pass passed, $((fail + 1)) failed"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# ---- the command ----
"$optiq" lab --help >"$work/help" 2>&1 && grep -q -- "--no-browser" "$work/help" && grep -q -- "--parallel" "$work/help" &&
    ok "optiq lab --help lists --no-browser and serve's options" || not_ok "optiq lab --help" "$(head -3 "$work/help")"
"$optiq" lab --no-browser >/dev/null 2>"$work/e"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--model DIR is required" "$work/e" && ok "optiq lab without --model: usage error (2)" ||
    not_ok "optiq lab without --model" "rc=$rc $(cat "$work/e")"
"$optiq" lab --model "$vl" --port 70000 >/dev/null 2>"$work/e"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--port" "$work/e" && ok "optiq lab --port 70000: usage error (shared parsing)" ||
    not_ok "optiq lab --port 70000" "rc=$rc $(cat "$work/e")"
"$optiq" serve --model "$vl" --no-browser >/dev/null 2>"$work/e"; rc=$?
[ $rc -eq 2 ] && grep -q "unknown option '--no-browser'" "$work/e" && ok "optiq serve refuses --no-browser" ||
    not_ok "optiq serve --no-browser" "rc=$rc $(cat "$work/e")"

# A fake xdg-open first on PATH records what it was asked to open.
mkdir -p "$work/bin"
printf '#!/bin/sh\necho "$@" >>"%s/opened"\n' "$work" >"$work/bin/xdg-open"
chmod +x "$work/bin/xdg-open"

# start_lab NAME ENV... -- ARGS...: optiq lab in the background; sets $url and $pid
start_lab() {
    local name=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    env -u DISPLAY -u WAYLAND_DISPLAY PATH="$work/bin:$PATH" "${envs[@]}" \
        "$optiq" lab --model "$vl" --port 0 "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pid=$!
    pids+=("$pid")
    url=""
    for _ in $(seq 1 200); do
        url=$(sed -n 's/^optiq lab: \(http:.*\)$/\1/p' "$work/$name.out" 2>/dev/null)
        [ -n "$url" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$url" ]
}
stop_lab() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

rm -f "$work/opened"
if start_lab display DISPLAY=:99 --; then
    sleep 0.5
    [ "$(cat "$work/opened" 2>/dev/null)" = "$url" ] && ok "with \$DISPLAY set, xdg-open gets the URL ($url)" ||
        not_ok "with \$DISPLAY set, xdg-open gets the URL" "opened: $(cat "$work/opened" 2>/dev/null)"
    case "$url" in http://127.0.0.1:[0-9]*/lab/) ok "the URL is printed on stdout";; *) not_ok "URL printed" "$url";; esac
    stop_lab "$pid"
else
    not_ok "optiq lab starts" "$(cat "$work/display.err")"
fi
rm -f "$work/opened"
if start_lab wayland WAYLAND_DISPLAY=wayland-0 -- --no-browser; then
    sleep 0.5
    [ ! -e "$work/opened" ] && ok "--no-browser: no browser even with a display" || not_ok "--no-browser" "$(cat "$work/opened")"
    stop_lab "$pid"
else
    not_ok "optiq lab --no-browser starts" "$(cat "$work/wayland.err")"
fi
rm -f "$work/opened"
if start_lab nodisplay --; then
    sleep 0.5
    [ ! -e "$work/opened" ] && grep -q "no display" "$work/nodisplay.err" &&
        ok "without a display: no browser, a note on stderr" || not_ok "without a display" "$(cat "$work/nodisplay.err")"
    stop_lab "$pid"
else
    not_ok "optiq lab without a display starts" "$(cat "$work/nodisplay.err")"
fi

# ---- the page ----
"$optiq" inspect "$vl" --json >"$work/inspect.json" 2>"$work/inspect.err" || fail_all "optiq inspect" "$(cat "$work/inspect.err")"
command -v python3 >/dev/null || fail_all "lab tests" "python3 not found"

browser=1
if [ ! -x "$chromium" ] || [ ! -x "$chromedriver" ]; then
    echo "# SKIP browser cases: $chromium or $chromedriver missing (scripts/setup.sh installs Debian's chromium and chromium-driver)"
    browser=0
fi
py=python3
if [ $browser -eq 1 ]; then
    hash=$(cat "$lab/requirements.txt" "$lab/constraints.txt" | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$venv/.requirements-hash" 2>/dev/null)" != "$hash" ] || [ ! -x "$venv/bin/python" ]; then
        rm -rf "$venv"
        log="$build/lab-venv.log"
        python3 -m venv "$venv" >"$log" 2>&1 || fail_all "lab tests" "python3 -m venv failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        if ! "$venv/bin/python" -m pip install --disable-pip-version-check \
                -r "$lab/requirements.txt" -c "$lab/constraints.txt" >>"$log" 2>&1; then
            rm -rf "$venv"
            fail_all "lab tests" "pip install of tests/lab/requirements.txt failed (needs PyPI access; log: $log)"
        fi
        echo "$hash" >"$venv/.requirements-hash"
    fi
    py="$venv/bin/python"
fi

start_lab keyed -- --no-browser --api-key lab-secret || fail_all "optiq lab --api-key starts" "$(cat "$work/keyed.err")"
key_url=$url; key_pid=$pid
start_lab page OPTIQ_SERVE_TOKEN_DELAY_MS=20 -- --no-browser --parallel 2 || fail_all "optiq lab starts" "$(cat "$work/page.err")"
mkdir -p "$artifacts"
args=(--url "$url" --model "$vl" --inspect-json "$work/inspect.json" --server-log "$work/page.err"
      --root "$root" --work "$work" --artifacts "$artifacts" --chromium "$chromium" --chromedriver "$chromedriver"
      --key-url "$key_url" --key lab-secret)
[ $browser -eq 1 ] || args+=(--no-browser)
"$py" "$lab/test_lab.py" "${args[@]}" >"$work/py.out" 2>&1
grep -E '^(ok|not ok|#)' "$work/py.out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$work/py.out" | tail -n 1)
if [ -z "$line" ]; then
    not_ok "test_lab.py ran to the end" "$(tail -n 5 "$work/py.out" | tr '\n' ' ')"
else
    pass=$((pass + $(echo "$line" | awk '{print $1}')))
    fail=$((fail + $(echo "$line" | awk '{print $3}')))
fi
kill -0 "$pid" 2>/dev/null && ok "the server is still up after the browser session" || not_ok "server alive" "$(tail -5 "$work/page.err")"
stop_lab "$pid"
stop_lab "$key_pid"
[ $fail -eq 0 ] || { echo "# server log:"; tail -n 20 "$work/page.err" | sed 's/^/# /'; }
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
