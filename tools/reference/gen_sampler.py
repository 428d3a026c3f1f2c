"""Generate tests/fixtures/sampler/filters.json with mlx-lm's own sampling code.

mlx-lm's generate_step applies the logits processors (make_logits_processors:
repetition, presence, frequency penalties over the token history), then
logprobs = logits - logsumexp(logits), then the sampler (make_sampler: apply_top_p,
apply_min_p, apply_top_k in that order, then categorical_sampling with the
temperature).  Everything before the random draw is deterministic; this script
records it for a handful of fixed logit vectors:

  "logprobs":  logits -> logits - mx.logsumexp(logits)         (as generate_step)
  "filters":   logprobs -> apply_top_p / apply_min_p / apply_top_k, alone and
               chained in make_sampler's order; top_p 1, min_p 0, top_k 0 = off
  "penalties": logits + history -> make_logits_processors(...) applied in order,
               plus the greedy token (mx.argmax) of the result

-inf is written as null.  Floats are float32 values printed with 9 significant
digits (enough to round-trip).  A (vector, top_p) pair is left out when top_p * total
lies within 1e-4 of a cumulative mass at which the kept set changes, so that
the float32 summation order of mlx cannot matter.  For top_k, mlx's argpartition
keeps an unspecified subset of entries tied at the k-th value; the C test
allows exactly that freedom.

Usage: python tools/reference/gen_sampler.py [--out tests/fixtures/sampler/filters.json]
"""

import argparse
import json
import math
import os
from importlib import metadata

import mlx.core as mx
import numpy as np
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, make_logits_processors

SEED = 20260823


def vectors():
    rng = np.random.default_rng(SEED)
    v = {}
    v["peaked"] = [9.0, 2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -3.0, 4.0, 3.25, -0.5, 2.5]
    v["ties"] = [2.0, 1.0, 2.0, 0.0, 1.0, 2.0, -1.0, 0.0, 1.0, 0.0]
    v["flat"] = [0.0] * 16
    # softmax = (0.5, 0.29, 0.21): top_p 0.75 / 0.8 fall on either side of the
    # third token's mass-above (0.79), so the boundary token is visible.
    v["separated"] = [math.log(0.29), math.log(0.5), math.log(0.21)]
    v["masked"] = [1.0, -math.inf, 0.5, -math.inf, 3.0, -2.0, -math.inf, 0.25]
    v["random"] = (rng.standard_normal(32) * 2.0).astype(np.float32).tolist()
    v["wide"] = (rng.standard_normal(48) * 6.0).astype(np.float32).tolist()
    return v


TOP_P = (0.1, 0.3, 0.5, 0.75, 0.8, 0.9, 0.95, 0.99)
MIN_P = (0.01, 0.05, 0.1, 0.5, 1.0)
CHAINS = ((0.9, 0.05, 3), (0.5, 0.0, 2), (0.95, 0.2, 0), (1.0, 0.1, 4))


def top_k_values(n):
    return sorted({k for k in (1, 2, 3, 5, n - 1) if 0 < k < n})


def f32list(a):
    out = []
    for x in np.asarray(a, dtype=np.float32).reshape(-1).tolist():
        out.append(None if x == -math.inf else float(f"{x:.9g}"))
    return out


def top_p_margin(lp, top_p):
    """Distance (float64) from top_p * total to the nearest cumulative mass at a
    change of value in descending order: closer than that and float32 rounding
    could move the boundary."""
    p = np.sort(np.exp(np.asarray(lp, dtype=np.float64)))[::-1]
    total = p.sum()
    target = top_p * total
    cum = np.concatenate([[0.0], np.cumsum(p)[:-1]])
    change = np.concatenate([[True], p[1:] != p[:-1]])
    return float(np.min(np.abs(cum[change] - target)))


def apply_chain(lp, top_p, min_p, top_k):
    # The order of make_sampler's sampling_methods, each under its own guard.
    x = mx.array(lp)[None]
    if 0 < top_p < 1.0:
        x = apply_top_p(x, top_p)
    if min_p != 0.0:
        x = apply_min_p(x, min_p, 1)
    if top_k > 0:
        x = apply_top_k(x, top_k)
    return np.array(x[0])


def penalty_cases():
    cases = []
    logits = [1.5, -2.0, 0.0, 3.0, -0.5, 2.25, -4.0, 0.75, 1.0, -1.25, 0.5, 2.0]
    # 26 tokens: with context 20 the first 6 fall out of the window.
    hist = [6, 6, 6, 9, 9, 9, 0, 1, 1, 3, 3, 3, 2, 4, 1, 5, 3, 7, 7, 7, 7, 1, 0, 2, 3, 3]
    cases.append(("repetition", logits, hist, 1.5, 0.0, 0.0, 20))
    cases.append(("repetition_below_one", logits, hist, 0.5, 0.0, 0.0, 20))
    cases.append(("repetition_short_context", logits, hist, 1.3, 0.0, 0.0, 5))
    cases.append(("presence", logits, hist, 0.0, 0.7, 0.0, 20))
    cases.append(("frequency", logits, hist, 0.0, 0.0, 0.3, 20))
    cases.append(("all_three", logits, hist, 1.2, 0.4, 0.25, 20))
    cases.append(("all_three_context_8", logits, hist, 1.2, 0.4, 0.25, 8))
    cases.append(("negative_presence", logits, hist, 0.0, -0.5, 0.0, 20))
    cases.append(("changes_argmax", logits, [3, 3, 3, 5], 1.0, 0.5, 0.5, 20))
    cases.append(("long_history", logits, [i % 12 for i in range(200)], 1.1, 0.1, 0.05, 64))
    out = []
    for name, lg, h, rp, pp, fp, ctx in cases:
        procs = make_logits_processors(
            repetition_penalty=rp if rp else None, repetition_context_size=ctx,
            presence_penalty=pp if pp else None, presence_context_size=ctx,
            frequency_penalty=fp if fp else None, frequency_context_size=ctx)
        x = mx.array(lg, dtype=mx.float32)[None]
        toks = mx.array(h, dtype=mx.int32)
        for proc in procs:
            x = proc(toks, x)
        out.append({
            "name": name, "logits": f32list(lg), "history": h,
            "repetition_penalty": rp, "presence_penalty": pp, "frequency_penalty": fp,
            "context": ctx, "expected": f32list(np.array(x[0])),
            "argmax": int(mx.argmax(x[0]).item()),
        })
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/sampler/filters.json")
    args = ap.parse_args()
    mx.set_default_device(mx.cpu)

    lps, filters, skipped = [], [], []
    for name, lg in vectors().items():
        x = mx.array(lg, dtype=mx.float32)
        lp = x - mx.logsumexp(x, keepdims=True)
        lp_np = np.array(lp)
        lps.append({"name": name, "logits": f32list(lg), "logprobs": f32list(lp_np)})
        n = len(lg)
        specs = [(p, 0.0, 0) for p in TOP_P] + [(1.0, m, 0) for m in MIN_P]
        specs += [(1.0, 0.0, k) for k in top_k_values(n)] + [c for c in CHAINS if c[2] < n]
        for top_p, min_p, top_k in specs:
            if 0 < top_p < 1.0:
                if top_p_margin(lp_np, top_p) < 1e-4:
                    if f"{name}/top_p={top_p}" not in skipped:
                        skipped.append(f"{name}/top_p={top_p}")
                    continue
            got = apply_chain(lp_np, top_p, min_p, top_k)
            filters.append({"vector": name, "top_p": top_p, "min_p": min_p, "top_k": top_k,
                            "expected": f32list(got)})

    doc = {
        "generator": "tools/reference/gen_sampler.py",
        "mlx": metadata.version("mlx"),
        "mlx_lm": metadata.version("mlx-lm"),
        "logprobs": lps,
        "filters": filters,
        "penalties": penalty_cases(),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    # One case per line: small diffs when a version changes behaviour.
    lines = ["{"]
    keys = list(doc)
    for i, k in enumerate(keys):
        sep = "," if i + 1 < len(keys) else ""
        v = doc[k]
        if isinstance(v, list):
            lines.append(f'"{k}": [')
            for j, item in enumerate(v):
                lines.append(json.dumps(item, separators=(",", ":")) + ("," if j + 1 < len(v) else ""))
            lines.append("]" + sep)
        else:
            lines.append(f'"{k}": {json.dumps(v)}{sep}')
    lines.append("}")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", args.out, f"({len(lps)} vectors, {len(filters)} filter cases, "
          f"{len(doc['penalties'])} penalty cases; left out near a boundary: "
          f"{', '.join(skipped) or 'none'})")


if __name__ == "__main__":
    main()
