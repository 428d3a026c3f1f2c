#!/usr/bin/env bash
# The Python package (python/): installed into a virtualenv under
# $BUILD/python-venv the documented way (`pip install ./python`, here with
# OPTIQ_BUILD_DIR=$BUILD so that it bundles this build's liboptiq.so and optiq
# instead of running make, which would rebuild build/ or pick up sources
# changed since this build), then python/tests/ run with pytest against the installed
# package and the tiny fixtures; every generation is compared with
# `$BUILD/optiq generate --json` for the same inputs. pytest, setuptools and
# Pillow come from PyPI, pinned by python/tests/requirements.txt, and the
# virtualenv is reused while that file does not change. Needs python3 and PyPI
# access: without them the test fails.
set -u
root=${OPTIQ_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
build="${BUILD:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
venv="$build/python-venv"
req="$root/python/tests/requirements.txt"

fail_all() { echo "not ok $1${2:+: $2}"; echo "0 passed, 1 failed"; exit 1; }

[ -f "$build/liboptiq.so" ] && [ -x "$build/optiq" ] || fail_all "python package" "$build/liboptiq.so or $build/optiq missing (run make first)"

# ---- the virtualenv ----
command -v python3 >/dev/null || fail_all "python package" "python3 not found"
hash=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements-hash" 2>/dev/null)" != "$hash" ] || [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    log="$build/python-venv.log"
    if ! python3 -m venv "$venv" >"$log" 2>&1; then
        fail_all "python package" "python3 -m venv failed (Debian: python3-venv): $(tail -n 3 "$log" | tr '\n' ' ')"
    fi
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -r "$req" >>"$log" 2>&1; then
        rm -rf "$venv"
        fail_all "python package" "pip install of python/tests/requirements.txt failed (needs PyPI access; log: $log): $(grep -m 3 -iE 'error|connect|retrying' "$log" | tr '\n' ' ')"
    fi
    echo "$hash" >"$venv/.requirements-hash"
fi

# ---- the package, installed as the README says (bundling $build) ----
# from a copy of python/: pip builds in the source folder (build/, *.egg-info),
# and test runs of other build folders may be installing at the same time
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
tar -C "$root" --exclude=python/build --exclude='python/*.egg-info' --exclude='__pycache__' -cf - python | tar -C "$src" -xf -
log="$build/python-install.log"
if ! (cd "$src" && OPTIQ_BUILD_DIR="$build" "$venv/bin/python" -m pip install --disable-pip-version-check \
        --no-build-isolation --force-reinstall --no-deps ./python) >"$log" 2>&1; then
    fail_all "pip install ./python" "$(grep -m 5 -iE 'error|optiq:' "$log" | tr '\n' ' ') (log: $log)"
fi
echo "ok pip install ./python"

# ---- the tests ----
# A library built with AddressSanitizer (make asan) can only be loaded into the
# uninstrumented interpreter with the sanitizer runtimes preloaded; the
# interpreter's own allocations at exit are not the library's leaks (those are
# LeakSanitizer's job in the C tests), so leak detection is off here.
preload=()
if ldd "$build/liboptiq.so" 2>/dev/null | grep -q libasan; then
    preload=(LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
             ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}")
fi
out="$build/python-tests.log"
(cd "$root" && env -u OPTIQ_LIB -u OPTIQ_CLI "${preload[@]}" PYTHONDONTWRITEBYTECODE=1 OPTIQ_ROOT="$root" \
    OPTIQ_TEST_CLI="$build/optiq" \
    timeout 600 "$venv/bin/python" -m pytest -p no:cacheprovider -q -rA --tb=short python/tests) >"$out" 2>&1
rc=$?
# the tracebacks of failures, then one line per test
sed -nE '/^=+ (FAILURES|ERRORS) =+$/,/^=+ (PASSES|short test summary)/p' "$out" | head -n 200
sed -nE 's/^PASSED (.*)$/ok \1/p; s/^(FAILED|ERROR) (.*)$/not ok \2/p' "$out"
pass=$(grep -cE '^PASSED ' "$out")
fail=$(grep -cE '^(FAILED|ERROR) ' "$out")
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
    echo "not ok pytest exited with status $rc: $(tail -n 5 "$out" | tr '\n' ' ')"
    fail=1
fi
echo "$((pass + 1)) passed, $fail failed"
[ "$fail" -eq 0 ]
