#!/usr/bin/env bash
# The serving figures of bench/README.md: batched decode (8 sequences vs 1)
# and time to first token of a 2,000-token conversation's second turn with
# the prefix cache, on the synthetic Qwen3.5-0.8B (random weights, real
# shapes). Prints the table row; the JSON goes to $OUT (default: a file in /tmp).
#   bench/run_serving.sh [OPTIQ_BINARY] [THREADS]
# MODEL=gemma4-e2b picks another synthetic model (default qwen3_5-0.8b).
# Takes a few minutes on two cores. Not part of `make test` (a smoke run of
# the same code path on a tiny model is, in tests/test_prefix_cache.c).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
optiq=${1:-"$root/build/optiq"}
threads=${2:-2}
model=${MODEL:-qwen3_5-0.8b}
out=${OUT:-$(mktemp /tmp/optiq-serving-XXXXXX.json)}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$optiq" bench --synthetic "$model" --serving --threads "$threads" --json >"$out"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
jq -r --arg lb "$load_before" --arg la "$load_after" '
  .serving as $s | ($s.decode) as $d | ($s.prefix) as $p |
  "| \($s.threads) | \($d.single_tokens_per_s * 100 | round / 100) | \($d.batched_tokens_per_s * 100 | round / 100) | x\($d.speedup * 100 | round / 100) | \($p.turn1_ttft_s * 100 | round / 100) s | \($p.turn2_ttft_s * 100 | round / 100) s (\($p.restored_tokens) of \($p.turn2_prompt_tokens) restored) | x\($p.speedup_vs_turn1 * 10 | round / 10) | \($p.identical_logits) | \($lb) → \($la) |"' "$out"
echo "JSON: $out"
