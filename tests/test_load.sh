#!/usr/bin/env bash
# `optiq serve` under load, from other processes (curl): 32 concurrent
# streaming clients send 200 requests (three rounds) — text and image prompts of mixed
# lengths, on the Qwen3.5 and Gemma-4 vision fixtures — to a server running
# 8 generations at once (--parallel 8). Every greedy reply must equal the
# reply the same request gets alone (--parallel 1, one request at a time),
# nothing may fail, and the server's resident memory after a third identical
# round must stay within 5% (+1 MB) of the second (no leak); /metrics counts them.
# The serial server runs with the prefix and vision caches off, the loaded one
# with them on (the default): repeated prompts resume from cached states and
# repeated images are not re-encoded, and the replies must not change.
# Also: a full queue answers 429 in the API's format. Needs curl and jq.
set -u
source "$(dirname "$0")/serve_lib.sh"
pass=0; fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1${2:+: $2}"; fail=$((fail + 1)); }
if ! command -v curl >/dev/null || ! command -v jq >/dev/null || ! command -v base64 >/dev/null; then
    echo "ok   load tests skipped (curl, jq or base64 missing)"
    echo "0 passed, 0 failed"
    exit 0
fi

start() { # NAME ARGS...: sets $pid and $port
    # two malloc arenas: the connection threads' own arenas otherwise keep freed request
    # buffers at sizes that depend on which thread served what (noise, not leaks)
    MALLOC_ARENA_MAX=2 serve_start "$@"
}
stop() { serve_stop "$1"; }
# an AddressSanitizer build: its quarantine holds freed memory, so leaks are LeakSanitizer's to report
asan=0
if command -v ldd >/dev/null && ldd "$optiq" 2>/dev/null | grep -q libasan; then asan=1; fi
rss_kb() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; } # anonymous memory: the heap, not the mapped weights

# The requests: K distinct prompts (text of several lengths, one and two
# images), each with its own max_tokens, streamed; request i uses prompt i % K.
make_requests() { # MODEL_DIR IMG1 IMG2 -> $work/req/*.json
    local dir=$1 img1 img2
    img1="data:image/png;base64,$(base64 -w0 "$2")"
    img2="data:image/png;base64,$(base64 -w0 "$3")"
    rm -rf "$work/req"; mkdir -p "$work/req"
    local texts=("Hi" "Tell me a story about a river and seven stone bridges." "Name a color."
                 "Count: one two three four five six seven eight nine ten eleven twelve" "Why?")
    local k=0
    for t in "${texts[@]}"; do
        jq -n --arg t "$t" --argjson m $((8 + 9 * k)) \
            '{messages:[{role:"user",content:$t}],max_tokens:$m,temperature:0,stream:true}' >"$work/req/$k.json"
        k=$((k + 1))
    done
    jq -n --arg u "$img1" '{messages:[{role:"user",content:[{type:"image_url",image_url:{url:$u}},
        {type:"text",text:"What is in the picture?"}]}],max_tokens:20,temperature:0,stream:true}' >"$work/req/$k.json"
    k=$((k + 1))
    jq -n --arg u "$img1" --arg v "$img2" '{messages:[{role:"user",content:[{type:"image_url",image_url:{url:$u}},
        {type:"image_url",image_url:{url:$v}},{type:"text",text:"Compare them."}]}],max_tokens:30,temperature:0,
        stream:true}' >"$work/req/$k.json"
    k=$((k + 1))
    echo "$k" >"$work/req/count"
}

# The streamed reply as one string: reasoning + content deltas, then the finish reason.
reply_of() {
    grep '^data: {' "$1" | sed 's/^data: //' |
        jq -rj '.choices[0] | ((.delta.reasoning_content // "") + (.delta.content // "")), (if .finish_reason then "\n<" + .finish_reason + ">" else "" end)'
}

send() { # PORT REQ OUT: the status code to OUT.code, the body to OUT
    curl -s -N -o "$2.body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data-binary @"$1" "http://127.0.0.1:$port/v1/chat/completions" >"$2.code"
}

round() { # NAME N CONCURRENCY
    local name=$1 n=$2 c=$3 k
    k=$(cat "$work/req/count")
    mkdir -p "$work/$name"
    local cl=() i
    for i in $(seq 0 $((n - 1))); do
        send "$work/req/$((i % k)).json" "$work/$name/$i" &
        cl+=($!)
        # at most c clients at once (the server runs in the background too: wait for clients only)
        if [ "${#cl[@]}" -ge "$c" ]; then wait "${cl[0]}"; cl=("${cl[@]:1}"); fi
    done
    for i in "${cl[@]}"; do wait "$i"; done
}

check_model() { # LABEL MODEL_DIR IMG1 IMG2
    local label=$1 dir=$2
    make_requests "$dir" "$3" "$4"
    local k; k=$(cat "$work/req/count")
    # alone: one request at a time on a server that runs one generation at once
    if ! start "$label-serial" --model "$dir" --parallel 1 --prefix-cache 0 --vision-cache 0; then
        bad "$label: serial server starts"; return
    fi
    local sp=$pid
    round "$label-serial" "$k" 1
    stop "$sp"
    for i in $(seq 0 $((k - 1))); do reply_of "$work/$label-serial/$i.body" >"$work/$label-serial/$i.txt"; done
    # 200 requests from 32 clients, twice
    if ! start "$label-load" --model "$dir" --parallel 8 --max-queue 256; then bad "$label: server starts"; return; fi
    local lp=$pid
    local t0 t1 bad_codes mism rss1 rss2 rss3
    t0=$(date +%s%N)
    round "$label-load1" 200 32
    t1=$(date +%s%N)
    rss1=$(rss_kb "$lp")
    round "$label-load2" 200 32
    rss2=$(rss_kb "$lp")
    round "$label-load3" 200 32
    rss3=$(rss_kb "$lp")
    for r in load1 load2 load3; do
        bad_codes=$(grep -Lx 200 "$work/$label-$r"/*.code | wc -l)
        mism=0
        for i in $(seq 0 199); do
            reply_of "$work/$label-$r/$i.body" >"$work/$label-$r/$i.txt"
            cmp -s "$work/$label-$r/$i.txt" "$work/$label-serial/$((i % k)).txt" || mism=$((mism + 1))
        done
        if [ "$bad_codes" -eq 0 ] && [ "$mism" -eq 0 ]; then
            ok "$label round ${r#load}: 200 streamed requests from 32 clients, all 200, every reply == the request alone"
        else
            bad "$label round ${r#load}" "$bad_codes failed, $mism replies differ from the request alone"
        fi
    done
    echo "     $label: round 1 in $(((t1 - t0) / 1000000)) ms; anonymous RSS after rounds 1, 2, 3: ${rss1}, ${rss2}, ${rss3} kB"
    # the first rounds grow the slots' caches and the allocator's per-thread arenas to their
    # working size; an identical later round must not add more (a leak would, every round)
    if [ "$asan" = 1 ]; then
        : # checked after the server stops: LeakSanitizer's report (ASan's quarantine keeps freed memory)
    elif [ -n "$rss2" ] && [ -n "$rss3" ] && [ "$rss3" -le $((rss2 + rss2 / 20 + 1024)) ]; then
        ok "$label: resident memory stable across an identical further round (${rss2} -> ${rss3} kB)"
    else
        bad "$label: resident memory grew" "${rss1} -> ${rss2} -> ${rss3} kB"
    fi
    # /metrics (Prometheus text): the 400 requests, and steps that advanced several generations at once
    local met okc steps rows
    met=$(curl -s "http://127.0.0.1:$port/metrics")
    okc=$(echo "$met" | sed -n 's/^optiq_requests_total{outcome="ok"} //p')
    steps=$(echo "$met" | sed -n 's/^optiq_batch_steps_total //p')
    rows=$(echo "$met" | sed -n 's/^optiq_batch_rows_total //p')
    if [ "$okc" = 600 ] && [ -n "$steps" ] && [ "$steps" -gt 0 ] && [ "$rows" -gt $((2 * steps)) ]; then
        ok "$label: /metrics counts the 600 requests, mean batch size $((rows / steps))"
    else
        bad "$label: /metrics" "ok=$okc steps=$steps rows=$rows"
    fi
    # the caches worked: prompts resumed from cached states, images encoded once each
    local hits reused enc
    hits=$(echo "$met" | sed -n 's/^optiq_prefix_cache_lookups_total{outcome="hit"} //p')
    reused=$(echo "$met" | sed -n 's/^optiq_prefix_cache_tokens_reused_total //p')
    enc=$(echo "$met" | sed -n 's/^optiq_vision_images_encoded_total //p')
    if [ -n "$hits" ] && [ "$hits" -gt 0 ] && [ "$reused" -gt 0 ] && [ -n "$enc" ] && [ "$enc" -le 2 ]; then
        ok "$label: /metrics: $hits requests resumed from the prefix cache ($reused tokens reused), $enc images encoded"
    else
        bad "$label: cache metrics" "hits=$hits reused=$reused encoded=$enc"
    fi
    stop "$lp"
    if [ "$asan" = 1 ]; then
        if grep -q "ERROR: \(LeakSanitizer\|AddressSanitizer\)" "$work/$label-load.err"; then
            bad "$label: sanitizer report after 600 requests" "$(grep -m1 ERROR "$work/$label-load.err")"
        else
            ok "$label: no leak or memory error reported by the sanitizers after 600 requests"
        fi
    fi
}

fx="$root/tests/fixtures"
check_model qwen35 "$fx/models/qwen35-vl-mixed" "$fx/models/qwen35-vl-mixed/images/img0.png" \
    "$fx/models/qwen35-vl-mixed/images/img1.png"
check_model gemma4 "$fx/models/gemma4-vl-mixed" "$fx/preprocess/gemma4/astronaut_96x128.png" \
    "$fx/preprocess/gemma4/coffee_50x100.png"

# a full queue: 1 generation at once, 2 waiting; the rest get 429
if start queue --model "$fx/models/qwen35-dense-mixed" --parallel 1 --max-queue 2; then
    jq -n '{messages:[{role:"user",content:"Hello"}],max_tokens:400,ignore_eos:true}' >"$work/q.json"
    mkdir -p "$work/q"
    qp=()
    for i in $(seq 1 8); do
        curl -s -o "$work/q/$i.body" -w '%{http_code}' -X POST --data-binary @"$work/q.json" \
            "http://127.0.0.1:$port/v1/chat/completions" >"$work/q/$i.code" &
        qp+=($!)
    done
    for i in "${qp[@]}"; do wait "$i"; done
    n429=$(grep -lx 429 "$work"/q/*.code | wc -l)
    n200=$(grep -lx 200 "$work"/q/*.code | wc -l)
    body=$(for f in "$work"/q/*.code; do grep -qx 429 "$f" && cat "${f%.code}.body" && break; done)
    if [ "$n429" -ge 1 ] && [ "$n200" -ge 2 ] && [ $((n429 + n200)) -eq 8 ] &&
        [ "$(echo "$body" | jq -r '.error.message | test("too many requests")')" = true ]; then
        ok "a full queue answers 429 in the API's format ($n200 served, $n429 refused)"
        rej=$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^optiq_requests_total{outcome="rejected"} //p')
        [ "$rej" = "$n429" ] && ok "/metrics counts the refused requests ($rej)" || bad "/metrics rejected" "$rej"
    else
        bad "queue limit" "$n200 served, $n429 refused: $body"
    fi
    stop "$pid"
else
    bad "queue server starts"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
