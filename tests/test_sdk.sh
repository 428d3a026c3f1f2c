#!/usr/bin/env bash
# `optiq serve` driven by the official openai and anthropic Python SDKs
# (tests/sdk/test_sdk.py and structured.py; JSON documents checked with the
# jsonschema package). They are installed from PyPI into a virtualenv
# under $BUILD/sdk-venv, pinned by tests/sdk/requirements.txt and
# constraints.txt, and reused while those files do not change. Needs python3
# and PyPI access: without them the test fails. Servers listen on ephemeral
# ports (--port 0; the port is read from the "listening on" line).
set -u
source "$(dirname "$0")/serve_lib.sh"
vl="$root/tests/fixtures/models/qwen35-vl-mixed"
dense="$root/tests/fixtures/models/qwen35-dense-mixed"
sdk="$root/tests/sdk"
venv="$build/sdk-venv"

fail_all() { echo "FAIL $1${2:+: $2}"; echo "0 passed, 1 failed"; exit 1; }

# ---- the virtualenv ----
command -v python3 >/dev/null || fail_all "sdk tests" "python3 not found (needed to install the openai and anthropic SDKs)"
hash=$(cat "$sdk/requirements.txt" "$sdk/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements-hash" 2>/dev/null)" != "$hash" ] || [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    log="$build/sdk-venv.log"
    if ! python3 -m venv "$venv" >"$log" 2>&1; then
        fail_all "sdk tests" "python3 -m venv failed: $(tail -n 3 "$log" | tr '\n' ' ')"
    fi
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check \
            -r "$sdk/requirements.txt" -c "$sdk/constraints.txt" >>"$log" 2>&1; then
        rm -rf "$venv"
        fail_all "sdk tests" "pip install of tests/sdk/requirements.txt failed (needs PyPI access; log: $log): $(grep -m 3 -iE 'error|connect|retrying' "$log" | tr '\n' ' ')"
    fi
    echo "$hash" >"$venv/.requirements-hash"
fi

# ---- the servers ----
# start NAME ARGS...: runs optiq serve in the background (serve_lib.sh) and waits for /health; sets $port
start() {
    serve_start "$@" || return 1
    for _ in $(seq 1 100); do
        "$venv/bin/python" -c "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:$port/health', timeout=2).status != 200)" \
            2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# a local image server for the http-URL cases (remote fetching allowed for 127.0.0.1 only)
img_port=$("$venv/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
(cd "$vl/images" && exec "$venv/bin/python" -m http.server "$img_port" --bind 127.0.0.1 >"$work/img.log" 2>&1) &
pids+=("$!")
for _ in $(seq 1 100); do
    "$venv/bin/python" -c "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:$img_port/img0.png', timeout=2).status != 200)" \
        2>/dev/null && break
    sleep 0.05
done

start vl --model "$vl" --allow-remote-images --allow-image-host 127.0.0.1 ||
    fail_all "vision server starts" "$(cat "$work/vl.err")"
vl_url="http://127.0.0.1:$port"
start dense --model "$dense" || fail_all "text-only server starts" "$(cat "$work/dense.err")"
dense_url="http://127.0.0.1:$port"

# Tool calls need the tool definitions in the prompt: rendered by the Qwen3.5
# template they take ~760 tokens of the fixture's tiny vocabulary, more than
# its 512-position config allows. The same weights (linked) with
# max_position_embeddings raised to 4096 serve those cases; the random
# weights do not care.
q35="$work/qwen35-dense-4k"
mkdir -p "$q35"
for f in "$dense"/*; do [ "$(basename "$f")" = config.json ] || ln -s "$f" "$q35/"; done
"$venv/bin/python" - "$dense/config.json" "$q35/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
(c.get("text_config") or c)["max_position_embeddings"] = 4096
json.dump(c, open(sys.argv[2], "w"), indent=4)
PY
start qwen_tools --model "$q35" || fail_all "qwen3.5 tools server starts" "$(cat "$work/qwen_tools.err")"
qwen_tools_url="http://127.0.0.1:$port"
start gemma --model "$root/tests/fixtures/models/gemma4-e2b-mixed" || fail_all "gemma-4 server starts" "$(cat "$work/gemma.err")"
gemma_url="http://127.0.0.1:$port"

"$venv/bin/python" "$sdk/test_sdk.py" --vl-url "$vl_url" --dense-url "$dense_url" --image-url "http://127.0.0.1:$img_port" \
    --optiq "$optiq" --vl-model "$vl" --qwen-tools-url "$qwen_tools_url" --gemma-url "$gemma_url" --dense-model "$dense"
