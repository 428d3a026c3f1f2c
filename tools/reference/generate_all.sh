#!/usr/bin/env bash
# Regenerate every reference fixture with the real MLX (CPU build):
#   tests/fixtures/quant/*.safetensors         gen_quant.py
#   tests/fixtures/quant/spec_vectors.safetensors + spec check report   check_spec_vectors.py
#   tests/fixtures/models/tiny-{mixed,q4}/      gen_model.py
#   tests/fixtures/models/qwen35-*/             gen_qwen35.py (Qwen3.5 dense/MoE + reference activations)
#   tests/fixtures/models/qwen35-vl-*/          gen_qwen35_vl.py (images: mlx-vlm references, mlx-optiq sidecar)
#   tests/fixtures/models/gemma4-*/             gen_gemma4.py (Gemma 4 text: PLE/KV sharing, K-eq-V, MoE, unified)
#   tests/fixtures/models/gemma4-vl-*/, preprocess/gemma4/   gen_gemma4_vl.py (Gemma 4 images: mlx-vlm references, mlx-optiq sidecar)
#   tests/fixtures/images/, preprocess/         gen_images.py, gen_preprocess.py (Pillow / mlx-vlm processor)
#   tests/fixtures/json/                        gen_json.py
#   src/text/tokenizer_unicode_tab.c           gen_unicode_tables.py (Unicode 16.0 classes)
#   tests/fixtures/tokenizers/                  gen_tokenizer.py (+ tokenizer_corpus.py)
#   tests/fixtures/templates/                   gen_templates.py
#   tests/fixtures/VERSIONS.md                  package versions used
# Output is deterministic: running it twice gives byte-identical files.
#
# Usage: bash tools/reference/generate_all.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$here/.venv/bin/python"

bash "$here/setup.sh"
cd "$root"

echo "== quantization fixtures"
"$py" "$here/gen_quant.py"

echo "== spec vectors"
"$py" "$here/check_spec_vectors.py" | tee "$root/tests/fixtures/quant/spec_check.txt"

echo "== model folders"
"$py" "$here/gen_model.py"
"$py" "$here/gen_qwen35.py"
"$py" "$here/gen_qwen35_vl.py"   # tests/fixtures/models/qwen35-vl-{base,mixed}/ (mlx-vlm + mlx-optiq sidecar)
"$py" "$here/gen_gemma4.py"      # tests/fixtures/models/gemma4-*/ (mlx-lm references)
"$py" "$here/gen_gemma4_vl.py"   # tests/fixtures/models/gemma4-vl-{mixed,unified}/, preprocess/gemma4/ (mlx-vlm + mlx-optiq sidecar)

echo "== unicode tables, tokenizers"
"$py" "$here/gen_unicode_tables.py"
"$py" "$here/gen_tokenizer.py"

echo "== chat templates"
"$py" "$here/gen_templates.py"
"$py" "$here/gen_sampler.py"   # tests/fixtures/sampler/filters.json (mlx-lm sampling filters, penalties)
"$py" "$here/gen_json.py"      # tests/fixtures/json/ (Python json.dumps formatting)

echo "== versions"
"$py" - "$root/tests/fixtures/VERSIONS.md" <<'EOF'
import platform, subprocess, sys
from importlib import metadata

relevant = ["mlx", "mlx-cpu", "mlx-lm", "mlx-vlm", "mlx-optiq", "numpy", "safetensors", "transformers",
            "tokenizers", "huggingface-hub", "jinja2", "sentencepiece", "protobuf", "pillow", "scikit-image"]
pins = "\n".join(f"{p}=={metadata.version(p)}" for p in relevant)
text = f"""# Reference fixture versions

The fixtures under `tests/fixtures/quant/` and `tests/fixtures/models/` are produced by the
real MLX packages from PyPI (CPU build), with exactly these versions:

```
python=={platform.python_version()}
{pins}
```

Full environment pin set: `tools/reference/constraints.txt` (direct dependencies in
`tools/reference/requirements.txt`).  Platform used: {platform.system()} {platform.machine()}.

## Regenerate

```
bash tools/reference/generate_all.sh
```

This creates `tools/reference/.venv` if needed (`tools/reference/setup.sh`, needs Python >= 3.10
and access to PyPI), then runs `gen_quant.py`, `check_spec_vectors.py` (its report is kept in
`tests/fixtures/quant/spec_check.txt`), `gen_model.py`, and rewrites this file.  The output is
deterministic: with the same versions, every fixture file is byte-identical after a rerun, so
`git status` shows no change unless a version or a generator changed.

When bumping a version: rerun, read `spec_check.txt` (the `quant_model.py` cross-check must
still say AGREE; `check_spec_vectors.py` exits non-zero otherwise), and update the findings in
`tests/fixtures/quant/README.md` if MLX changed behaviour.
"""
open(sys.argv[1], "w").write(text)
print("wrote", sys.argv[1])
EOF

"$py" "$here/gen_images.py"   # tests/fixtures/images/ (mlx-vlm load_image pixels); appends its VERSIONS.md section, so after the rewrite above
"$py" "$here/gen_preprocess.py"   # tests/fixtures/preprocess/ (mlx-vlm Qwen3-VL image processor); appends its VERSIONS.md section, so after the rewrite above
du -sh tests/fixtures/quant tests/fixtures/models/*/ | sed 's/^/size /'
