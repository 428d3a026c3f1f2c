#!/usr/bin/env bash
# `optiq serve` end to end with curl: routes, parity with `optiq generate`,
# streaming, images, errors, API keys, responsiveness under load and a clean
# stop on SIGTERM. Servers listen on ephemeral ports (--port 0; the port is read
# from the "listening on" line). Needs curl and jq.
set -u
source "$(dirname "$0")/serve_lib.sh"
vl="$root/tests/fixtures/models/qwen35-vl-mixed"
dense="$root/tests/fixtures/models/qwen35-dense-mixed"
pass=0; fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1${2:+: $2}"; fail=$((fail + 1)); }
check() { # name, then a command that must succeed
    local name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then
    echo "ok   serve tests skipped (curl or jq missing)"
    echo "0 passed, 0 failed"
    exit 0
fi

# start NAME ARGS...: runs optiq serve in the background (serve_lib.sh); sets $pid and $port
start() { serve_start "$@" && curl -sf "http://127.0.0.1:$port/health" >/dev/null; }
# stop PID: SIGTERM, then the exit status (124 when it did not exit within 15 s)
stop() { serve_stop "$1"; }

# post URL BODY_FILE OUT_FILE [curl args]: prints the HTTP status
post() {
    local url=$1 body=$2 out=$3; shift 3
    curl -sN -o "$out" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$body" "$@" "$url"
}

if ! start vl --model "$vl"; then
    bad "server starts" "$(cat "$work/vl.err")"
    echo "$pass passed, $fail failed"
    exit 1
fi
ok "server starts and prints its port ($port)"
base="http://127.0.0.1:$port"
vlpid=$pid
grep -q "(model qwen35-vl-mixed, vision on, 4 at once)" "$work/vl.err" && ok "ready line names the model and vision" ||
    bad "ready line names the model and vision" "$(head -1 "$work/vl.err")"

# ---- quick routes ----
check "GET /health" test "$(curl -s "$base/health" | jq -c .)" = '{"status":"ok"}'
check "GET /v1/models lists the image modality" \
    test "$(curl -s "$base/v1/models" | jq -r '.data[0].id + " " + (.data[0].input_modalities | join(","))')" = \
    "qwen35-vl-mixed text,image"
check "unknown path -> 404" test "$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/nothing")" = 404
code=$(curl -s -o "$work/405" -w '%{http_code}' "$base/v1/chat/completions")
check "GET on a POST route -> 405 with an error body" \
    test "$code $(jq -r .error.type "$work/405")" = "405 api_error"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "$base/health")
check "POST /health -> 405" test "$code" = 405

# ---- chat: non-stream matches optiq generate ----
prompt="Hello there"
jq -n --arg p "$prompt" '{messages:[{role:"user",content:$p}],max_tokens:8}' >"$work/chat.json"
code=$(post "$base/v1/chat/completions" "$work/chat.json" "$work/chat.out")
ref=$("$optiq" generate --model "$vl" --prompt "$prompt" --max-tokens 8 --json 2>/dev/null)
got=$(jq -r '.choices[0].message | (.reasoning_content // "") + (.content // "")' "$work/chat.out")
# the same split: reasoning_content = generate's "reasoning", content = its "text"
if [ "$code" = 200 ] && [ "$got" = "$(echo "$ref" | jq -r '(.reasoning // "") + .text')" ] &&
    [ "$(jq -r '.choices[0].message.content // ""' "$work/chat.out")" = "$(echo "$ref" | jq -r .text)" ] &&
    [ "$(jq -r '.usage.prompt_tokens, .usage.completion_tokens' "$work/chat.out" | tr '\n' ' ')" = \
      "$(echo "$ref" | jq -r '.prompt_tokens, (.tokens | length)' | tr '\n' ' ')" ]; then
    ok "chat completion equals optiq generate (text and usage)"
else
    bad "chat completion equals optiq generate" "$code $(cat "$work/chat.out") vs $ref"
fi
check "chat completion: id, object, model, finish_reason" \
    test "$(jq -r '[(.id | startswith("chatcmpl-")), .object, .model, .choices[0].finish_reason] | map(tostring) | join(" ")' "$work/chat.out")" = \
    "true chat.completion qwen35-vl-mixed length"

# ---- chat: stream ----
jq '. + {stream:true, stream_options:{include_usage:true}}' "$work/chat.json" >"$work/chats.json"
code=$(post "$base/v1/chat/completions" "$work/chats.json" "$work/chats.out")
streamed=$(grep '^data: {' "$work/chats.out" | sed 's/^data: //' |
    jq -rj '.choices[0].delta | (.reasoning_content // "") + (.content // "")')
if [ "$code" = 200 ] && [ "$streamed" = "$got" ]; then ok "stream deltas concatenate to the non-stream text"
else bad "stream deltas concatenate to the non-stream text" "$code '$streamed' vs '$got'"; fi
check "stream ends with data: [DONE]" test "$(grep -v '^$' "$work/chats.out" | tail -n 1)" = "data: [DONE]"
check "stream usage chunk" test "$(grep '^data: {' "$work/chats.out" | tail -n 1 | sed 's/^data: //' |
    jq -c '.usage | [.prompt_tokens, .completion_tokens]')" = \
    "$(jq -c '[.usage.prompt_tokens, .usage.completion_tokens]' "$work/chat.out")"

# ---- completions (no chat template) ----
jq -n --arg p "$prompt" '{prompt:$p,max_tokens:8}' >"$work/cmpl.json"
code=$(post "$base/v1/completions" "$work/cmpl.json" "$work/cmpl.out")
ref=$("$optiq" generate --model "$vl" --prompt "$prompt" --max-tokens 8 --no-chat-template --json 2>/dev/null |
    jq -r .text)
check "completion equals optiq generate --no-chat-template" \
    test "$code $(jq -r '.object + " " + .choices[0].text' "$work/cmpl.out")" = "200 text_completion $ref"

# ---- image as a data: URL ----
img="data:image/png;base64,$(base64 -w0 "$vl/images/img0.png")"
jq -n --arg u "$img" '{messages:[{role:"user",content:[{type:"image_url",image_url:{url:$u}},
    {type:"text",text:"What is in the picture? Describe it."}]}],max_tokens:4}' >"$work/img.json"
code=$(post "$base/v1/chat/completions" "$work/img.json" "$work/img.out")
check "image data: URL -> 200, prompt_tokens counts the image tokens (53)" \
    test "$code $(jq -r .usage.prompt_tokens "$work/img.out")" = "200 53"
jq '. + {stream:true}' "$work/img.json" >"$work/imgs.json"
code=$(post "$base/v1/chat/completions" "$work/imgs.json" "$work/imgs.out")
check "image request streams" test "$code $(grep -v '^$' "$work/imgs.out" | tail -n 1)" = "200 data: [DONE]"
jq --arg u "https://example.com/cat.png" '.messages[0].content[0].image_url.url = $u' "$work/img.json" >"$work/rimg.json"
code=$(post "$base/v1/chat/completions" "$work/rimg.json" "$work/rimg.out")
check "http image URL -> 400 (remote images disabled)" \
    test "$code $(jq -r '.error.message | test("remote image URLs are disabled")' "$work/rimg.out")" = "400 true"

# ---- Anthropic ----
jq -n --arg p "$prompt" '{model:"m",max_tokens:8,messages:[{role:"user",content:$p}]}' >"$work/msg.json"
code=$(post "$base/v1/messages" "$work/msg.json" "$work/msg.out")
check "messages: non-stream message with the same text" \
    test "$code $(jq -r '[.type, (.id | startswith("msg_")), .stop_reason, .usage.input_tokens] | map(tostring) | join(" ")' "$work/msg.out") $(jq -r '[.content[] | (.thinking // .text)] | join("")' "$work/msg.out")" = \
    "200 message true max_tokens 16 $got"
jq '. + {stream:true}' "$work/msg.json" >"$work/msgs.json"
code=$(post "$base/v1/messages" "$work/msgs.json" "$work/msgs.out")
order=$(grep '^event:' "$work/msgs.out" | sed 's/^event: //' | uniq | tr '\n' ' ')
check "messages: stream event order" \
    test "$code $order" = "200 message_start content_block_start content_block_delta content_block_stop content_block_start content_block_stop message_delta message_stop "
jq 'del(.max_tokens)' "$work/msg.json" >"$work/ct.json"
code=$(post "$base/v1/messages/count_tokens" "$work/ct.json" "$work/ct.out")
check "count_tokens" test "$code $(jq -c . "$work/ct.out")" = '200 {"input_tokens":16}'

# ---- errors ----
printf '{"messages": [' >"$work/broken.json"
code=$(post "$base/v1/chat/completions" "$work/broken.json" "$work/broken.out")
check "malformed JSON -> 400 OpenAI error" \
    test "$code $(jq -r .error.type "$work/broken.out")" = "400 invalid_request_error"
code=$(post "$base/v1/messages" "$work/broken.json" "$work/broken2.out")
check "malformed JSON on /v1/messages -> 400 Anthropic error" \
    test "$code $(jq -r '.type + " " + .error.type' "$work/broken2.out")" = "400 error invalid_request_error"
jq -n '{messages:[{role:"user",content:"hi"}],max_tokens:8}' >"$work/big.json"
for _ in $(seq 1 9); do jq '.messages[0].content = (.messages[0].content * 2) + " hello world"' "$work/big.json" >"$work/big2.json"; mv "$work/big2.json" "$work/big.json"; done
jq '.messages[0].content = (.messages[0].content * 3)' "$work/big.json" >"$work/big2.json"
code=$(post "$base/v1/chat/completions" "$work/big2.json" "$work/big.out")
check "prompt over the context -> 400" \
    test "$code $(jq -r '.error.message | test("context")' "$work/big.out")" = "400 true"

# ---- responsive while generating; SIGTERM under load ----
jq -n '{messages:[{role:"user",content:"Tell me a long story"}],max_tokens:200,stream:true}' >"$work/long.json"
jq -n '{messages:[{role:"user",content:"Hello there"}],max_tokens:480}' >"$work/load.json"
cpids=()
post "$base/v1/chat/completions" "$work/long.json" "$work/long.out" >"$work/long.code" &
cpids+=($!)
for i in $(seq 1 48); do
    post "$base/v1/chat/completions" "$work/load.json" "$work/load$i.out" >"$work/load$i.code" &
    cpids+=($!)
done
sleep 0.2
t0=$(date +%s%N)
h=$(curl -s -m 5 "$base/health")
t1=$(date +%s%N)
done_n=$(grep -lx 200 "$work"/load*.code 2>/dev/null | wc -l)
ms=$(((t1 - t0) / 1000000))
if [ "$h" = '{"status":"ok"}' ] && [ "$ms" -lt 1000 ] && [ "$done_n" -lt 48 ]; then
    ok "/health answers in ${ms} ms while generations run ($done_n of 48 queued done)"
else
    bad "/health answers while generations run" "health '$h' in ${ms} ms, $done_n of 48 done"
fi
wait_jobs() { for j in "${cpids[@]}"; do wait "$j"; done; cpids=(); }
wait_jobs
check "the long stream completed ([DONE])" test "$(cat "$work/long.code") $(grep -v '^$' "$work/long.out" | tail -n 1)" = "200 data: [DONE]"
check "all 48 queued requests answered 200" test "$(grep -lx 200 "$work"/load*.code | wc -l)" = 48
for i in $(seq 1 6); do
    post "$base/v1/chat/completions" "$work/load.json" "$work/late$i.out" >/dev/null &
    cpids+=($!)
done
sleep 0.1
stop "$vlpid"; rc=$?
check "SIGTERM with requests in flight: exit status 0" test "$rc" = 0
wait_jobs
grep -q "POST /v1/chat/completions 200 .* prompt=16 completion=8" "$work/vl.err" &&
    ok "request log line with prompt= completion=" || bad "request log line" "$(tail -3 "$work/vl.err")"

# ---- text-only folder, API key ----
if start dense --model "$dense" --api-key sekrit; then
    b2="http://127.0.0.1:$port"
    check "health stays open with --api-key" test "$(curl -s -o /dev/null -w '%{http_code}' "$b2/health")" = 200
    code=$(post "$b2/v1/chat/completions" "$work/chat.json" "$work/k1.out")
    check "no key -> 401 OpenAI error" test "$code $(jq -r .error.type "$work/k1.out")" = "401 authentication_error"
    code=$(post "$b2/v1/messages" "$work/msg.json" "$work/k2.out" -H 'x-api-key: wrong')
    check "wrong x-api-key -> 401 Anthropic error" \
        test "$code $(jq -r .error.type "$work/k2.out")" = "401 authentication_error"
    check "models needs the key" test "$(curl -s -o /dev/null -w '%{http_code}' "$b2/v1/models")" = 401
    code=$(post "$b2/v1/chat/completions" "$work/chat.json" "$work/k3.out" -H 'Authorization: Bearer sekrit')
    check "Bearer key -> 200" test "$code" = 200
    code=$(post "$b2/v1/messages" "$work/msg.json" "$work/k4.out" -H 'x-api-key: sekrit')
    check "x-api-key -> 200" test "$code" = 200
    check "text-only folder: models lists text only" \
        test "$(curl -s -H 'x-api-key: sekrit' "$b2/v1/models" | jq -c .data[0].input_modalities)" = '["text"]'
    code=$(post "$b2/v1/chat/completions" "$work/img.json" "$work/k5.out" -H 'x-api-key: sekrit')
    check "image to a text-only folder -> 400 (no vision sidecar)" \
        test "$code $(jq -r '.error.message | test("no vision sidecar")' "$work/k5.out")" = "400 true"
    stop "$pid"; rc=$?
    check "SIGTERM on an idle server: exit status 0" test "$rc" = 0
else
    bad "text-only server starts" "$(cat "$work/dense.err")"
fi

# ---- remote images (--allow-remote-images) against a local HTTP server ----
# It serves the fixture images, a non-image, 300 kB with and without a
# Content-Length, and redirects: /to-private (302 to
# a private address), /to-img0 (302 to img0.png), /loop (302 to itself).
cat >"$work/imgserver.py" <<'PY'
import http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        port = self.server.server_address[1]
        loc = {"/to-private": "http://10.0.0.1/x", "/to-file": "file:///etc/passwd",
               "/to-img0": "http://127.0.0.1:%d/img0.png" % port, "/loop": "/loop"}.get(self.path)
        if loc:
            self.send_response(302); self.send_header("Location", loc)
            self.send_header("Content-Length", "0"); self.end_headers(); return
        if self.path in ("/big.png", "/big-nolen.png"):
            self.send_response(200); self.send_header("Content-Type", "image/png")
            if self.path == "/big.png": self.send_header("Content-Length", "300000")
            self.end_headers(); self.wfile.write(b"\0" * 300000); return
        if self.path == "/notimage.png":
            body = b"this is not an image\n" * 10
            self.send_response(200); self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body); return
        return super().do_GET()
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: H(*a, directory=sys.argv[1]))
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
img_port=""
if command -v python3 >/dev/null; then
    python3 "$work/imgserver.py" "$vl/images" >"$work/imgserver.port" 2>"$work/imgserver.err" &
    pids+=($!)
    for _ in $(seq 1 100); do
        img_port=$(head -1 "$work/imgserver.port" 2>/dev/null)
        [ -n "$img_port" ] && break
        sleep 0.05
    done
fi
# rimg URL OUT [SERVER_BASE]: the image request with URL; prints the status
rimg() {
    jq --arg u "$1" '.messages[0].content[0].image_url.url = $u' "$work/img.json" >"$work/rimg_req.json"
    post "${3:-$rbase}/v1/chat/completions" "$work/rimg_req.json" "$work/$2"
}
msg_has() { jq -e --arg re "$2" '.error.message | test($re)' "$work/$1" >/dev/null; }
if [ -z "$img_port" ]; then
    echo "ok   remote image tests skipped (python3 or its HTTP server unavailable)"
elif start remote --model "$vl" --allow-remote-images --allow-image-host 127.0.0.1 --max-image-bytes 100000; then
    rbase="http://127.0.0.1:$port"
    rpid=$pid
    ibase="http://127.0.0.1:$img_port"
    code=$(rimg "$ibase/img0.png" r1.out)
    check "remote image from an allowed host -> 200, prompt_tokens 53 (as the data: URL)" \
        test "$code $(jq -r .usage.prompt_tokens "$work/r1.out")" = "200 53"
    check "remote image: same reply as the data: URL" \
        test "$(jq -c .choices[0].message "$work/r1.out")" = "$(jq -c .choices[0].message "$work/img.out")"
    code=$(rimg "$ibase/to-img0" r2.out)
    check "redirect to an allowed image -> 200" test "$code $(jq -r .usage.prompt_tokens "$work/r2.out")" = "200 53"
    code=$(rimg "$ibase/to-private" r3.out)
    if [ "$code" = 400 ] && msg_has r3.out "private address 10.0.0.1"; then ok "redirect to a private address -> 400"
    else bad "redirect to a private address -> 400" "$code $(cat "$work/r3.out")"; fi
    code=$(rimg "$ibase/to-file" r4.out)
    if [ "$code" = 400 ] && msg_has r4.out "scheme file is not allowed"; then ok "redirect to file:// -> 400"
    else bad "redirect to file:// -> 400" "$code $(cat "$work/r4.out")"; fi
    code=$(rimg "$ibase/loop" r5.out)
    if [ "$code" = 400 ] && msg_has r5.out "too many redirects"; then ok "redirect loop -> 400 too many redirects"
    else bad "redirect loop -> 400 too many redirects" "$code $(cat "$work/r5.out")"; fi
    code=$(rimg "file:///etc/passwd" r6.out)
    check "file:// image URL -> 400" test "$code" = 400
    code=$(rimg "http://169.254.169.254/latest/meta-data/" r7.out)
    if [ "$code" = 400 ] && msg_has r7.out "link-local address 169.254.169.254"; then
        ok "metadata address 169.254.169.254 -> 400"
    else bad "metadata address 169.254.169.254 -> 400" "$code $(cat "$work/r7.out")"; fi
    code=$(rimg "http://[::1]:$img_port/img0.png" r8.out)
    if [ "$code" = 400 ] && msg_has r8.out "loopback address ::1"; then ok "IPv6 loopback (not in the allow list) -> 400"
    else bad "IPv6 loopback (not in the allow list) -> 400" "$code $(cat "$work/r8.out")"; fi
    code=$(rimg "$ibase/notimage.png" r9.out)
    if [ "$code" = 400 ] && msg_has r9.out "unrecognized image data"; then ok "remote non-image -> 400 (decode error)"
    else bad "remote non-image -> 400 (decode error)" "$code $(cat "$work/r9.out")"; fi
    code=$(rimg "$ibase/missing.png" r10.out)
    if [ "$code" = 400 ] && msg_has r10.out "HTTP 404"; then ok "remote 404 -> 400"
    else bad "remote 404 -> 400" "$code $(cat "$work/r10.out")"; fi
    for b in big big-nolen; do
        code=$(rimg "$ibase/$b.png" "r11$b.out")
        if [ "$code" = 400 ] && msg_has "r11$b.out" "larger than 100000 bytes"; then ok "image over --max-image-bytes ($b) -> 400"
        else bad "image over --max-image-bytes ($b) -> 400" "$code $(cat "$work/r11$b.out")"; fi
    done
    stop "$rpid" >/dev/null
else
    bad "server with --allow-remote-images starts" "$(cat "$work/remote.err")"
fi
if [ -n "$img_port" ] && start remote2 --model "$vl" --allow-remote-images; then
    code=$(rimg "http://127.0.0.1:$img_port/img0.png" r20.out "http://127.0.0.1:$port")
    if [ "$code" = 400 ] && msg_has r20.out "loopback address 127.0.0.1"; then
        ok "loopback image host without --allow-image-host -> 400"
    else bad "loopback image host without --allow-image-host -> 400" "$code $(cat "$work/r20.out")"; fi
    code=$(rimg "http://192.168.0.10/img.png" r21.out "http://127.0.0.1:$port")
    if [ "$code" = 400 ] && msg_has r21.out "private address 192.168.0.10"; then ok "private image host -> 400"
    else bad "private image host -> 400" "$code $(cat "$work/r21.out")"; fi
    stop "$pid" >/dev/null
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
