# serve_lib.sh — what the shell tests that run `optiq serve` share (sourced,
# not run: tests/run_tests.sh only runs tests/test_*.sh).
#   root, build, optiq   the repository, the build folder (BUILD, default build), the CLI
#   work                 a scratch folder, removed at exit (kept with KEEP=1)
#   pids                 background processes killed at exit
#   serve_start NAME ARGS...
#                        `optiq serve --port 0 ARGS` in the background, its stderr in
#                        $work/NAME.err; sets $pid and $port (read from the "listening on"
#                        line; 20 s at most); fails when the server does not come up.
#                        Variables assigned before the call reach the server's environment.
#   serve_stop PID       SIGTERM, then the exit status (124 when it did not exit within 15 s)
root=${OPTIQ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
build="${BUILD:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
optiq="$build/optiq"

work=$(mktemp -d)
pids=()
serve_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$work"; [ -n "${KEEP:-}" ] && echo "kept $work"
}
trap serve_cleanup EXIT

serve_start() {
    local name=$1; shift
    "$optiq" serve --port 0 "$@" 2>"$work/$name.err" &
    pid=$!
    pids+=("$pid")
    port=""
    for _ in $(seq 1 400); do
        port=$(sed -n 's/^optiq serve: listening on http:\/\/[^ ]*:\([0-9][0-9]*\) .*/\1/p' "$work/$name.err")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$port" ]
}

serve_stop() {
    local p=$1
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 1 150); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p"; wait "$p" 2>/dev/null; return 124; fi
    wait "$p"
}
