"""optiq.vlm.build_vision_sidecar: the quant folder as it was before the
sidecar, equipped from the bf16 base, must equal what `optiq sidecar` makes of
it byte for byte and generate with images as the fixture does."""
import filecmp
import json
import os
import shutil

import pytest

from conftest import IMAGES, QWEN_BASE, QWEN_VL, assert_same, cli_generate, run_cli

RESTORED = ("vision_config", "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
            "optiq_vision")


def quant_before_sidecar(d):
    """QWEN_VL without its sidecar and what the builder adds."""
    os.makedirs(d)
    for name in os.listdir(QWEN_VL):
        p = os.path.join(QWEN_VL, name)
        if os.path.isfile(p) and name not in ("optiq_vision.safetensors", "preprocessor_config.json"):
            shutil.copy(p, d)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    for k in RESTORED:
        cfg.pop(k, None)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        idx = json.load(f)
    idx["weight_map"] = {k: v for k, v in idx["weight_map"].items() if v != "optiq_vision.safetensors"}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(idx, f, indent=2)
    return d


def test_sidecar_equals_the_cli_and_generates_with_images(optiq_mod, tmp_path):
    from optiq.vlm import build_vision_sidecar

    mine = quant_before_sidecar(str(tmp_path / "py"))
    theirs = quant_before_sidecar(str(tmp_path / "cli"))
    with pytest.raises(optiq_mod.OptiqError):  # text-only until the sidecar is there
        optiq_mod.Engine.load(mine).generate("x", images=[os.path.join(IMAGES, "img0.png")])
    summary = build_vision_sidecar(base=QWEN_BASE, quant_dir=mine)
    assert summary["sidecar"].endswith("optiq_vision.safetensors") and summary["n_tensors"] > 0
    assert summary["dtype"] == "bfloat16" and summary["index_updated"] is True
    assert summary["config_keys"] == list(RESTORED[:5]) and summary["copied"] == ["preprocessor_config.json"]
    run_cli("sidecar", "--base", QWEN_BASE, "--quant-dir", theirs)
    for name in sorted(os.listdir(theirs)):
        assert filecmp.cmp(os.path.join(mine, name), os.path.join(theirs, name), shallow=False), name
    assert sorted(os.listdir(mine)) == sorted(os.listdir(theirs))
    img = os.path.join(IMAGES, "img1.png")
    eng = optiq_mod.Engine.load(mine)
    assert eng.has_vision
    assert_same(eng.generate("Describe", images=[img], max_tokens=10),
                cli_generate(QWEN_VL, "Describe", "--image", img, "--max-tokens", "10"))
    eng.close()
    # a second build is refused without force, with the library's message; force rebuilds the same bytes
    with pytest.raises(optiq_mod.OptiqError) as e:
        build_vision_sidecar(base=QWEN_BASE, quant_dir=mine)
    assert "optiq_vision.safetensors" in str(e.value)
    build_vision_sidecar(base=QWEN_BASE, quant_dir=mine, force=True)
    assert filecmp.cmp(os.path.join(mine, "optiq_vision.safetensors"), os.path.join(theirs, "optiq_vision.safetensors"),
                       shallow=False)


def test_sidecar_base_from_the_hf_cache(optiq_mod, tmp_path, monkeypatch):
    from optiq.vlm import build_vision_sidecar

    sha = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--test-org--qwen-base"
    shutil.copytree(QWEN_BASE, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    q = quant_before_sidecar(str(tmp_path / "q"))
    summary = build_vision_sidecar(base="test-org/qwen-base", quant_dir=q)
    assert summary["base"] == str(repo / "snapshots" / sha)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    local = quant_before_sidecar(str(tmp_path / "local"))
    build_vision_sidecar(base=QWEN_BASE, quant_dir=local)
    assert filecmp.cmp(os.path.join(q, "optiq_vision.safetensors"), os.path.join(local, "optiq_vision.safetensors"),
                       shallow=False)


def test_sidecar_errors(optiq_mod, tmp_path):
    from optiq.vlm import build_vision_sidecar

    with pytest.raises(optiq_mod.OptiqError) as e:
        build_vision_sidecar(base=str(tmp_path), quant_dir=str(tmp_path))
    assert str(e.value)
    with pytest.raises(optiq_mod.OptiqError):
        build_vision_sidecar(base=QWEN_BASE, quant_dir=str(tmp_path / "missing"))
