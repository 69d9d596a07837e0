"""bench.attention_scaling: JSON layout, analytic FLOPs bookkeeping, a real (tiny) run of each config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.attention_scaling import HEADLINE, MODELS, analytic_scaling, main, tokens_per_frame, vggt_flops
from reloc_vggt_ros.model.aggregator import Aggregator
from reloc_vggt_ros.model.config import VGGTConfig


def test_flops_differ_exactly_by_the_skipped_attention_blocks() -> None:
    cfg = VGGTConfig()
    P = 5 + 37 * 37
    for n in (3, 8, 64):
        dense, sparse = vggt_flops(n, "dense"), vggt_flops(n, "sparse")
        skipped = n * n - (5 * n - 6)
        expected = cfg.depth * skipped * 4 * P * P * cfg.embed_dim / 1e9
        assert dense["gflops"] - sparse["gflops"] == pytest.approx(expected)
    # one frame of VGGT-1B: ~2 FLOPs per aggregator weight per token, plus attention
    one = vggt_flops(1, "dense")["gflops"]
    assert 2 * 0.9e9 * P / 1e9 < one < 2 * 0.9e9 * P / 1e9 * 1.5
    # cached per query stays close to one frame; dense at 64 frames is > 64x one frame
    assert vggt_flops(64, "cached")["gflops"] < 6 * one < vggt_flops(64, "dense")["gflops"] / 64 * 6


def test_the_headline_config_is_the_one_where_attention_matters() -> None:
    assert HEADLINE == "attention"
    big, toy = MODELS["attention"].config(), MODELS["toy"].config()
    assert (big.img_size, big.embed_dim, big.depth, big.num_heads, big.patch_embed) == (224, 256, 8, 4, "conv")
    assert (toy.img_size, toy.embed_dim, toy.depth, toy.num_heads) == (56, 128, 4, 4)
    assert (tokens_per_frame(big), tokens_per_frame(toy)) == (261, 21)
    for cfg in (big, toy):
        Aggregator(cfg)                       # a buildable model (dpt_layers within depth, heads divide C)
    # what FLOPs predict from N = 8 to 64: at 224 px attention dominates and the sparse mask
    # cuts the growth ~3.5x against dense; at the toy size the linear layers keep both close
    b, t = analytic_scaling(big, 8, 64), analytic_scaling(toy, 8, 64)
    assert b["dense_attention_share_n8"] > 0.3 and b["dense_attention_share_n64"] > 0.8
    assert t["dense_attention_share_n8"] < 0.1
    assert b["dense_ratio"] / b["sparse_ratio"] > 3.0 > 2.0 > t["dense_ratio"] / t["sparse_ratio"]
    assert b["dense_ratio"] == pytest.approx(29.4, abs=0.1) and b["sparse_ratio"] == pytest.approx(8.3, abs=0.1)


def test_quick_cli_writes_json_with_all_modes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "as.json"
    assert main(["--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["headline"] == "toy" and list(report["configs"]) == ["toy"]
    block = report["configs"]["toy"]
    assert block["tokens_per_frame"] == 21 and block["repeats"] == 1
    for mode in ("dense", "sparse", "cached"):
        rows = block["modes"][mode]
        assert [r["n"] for r in rows] == [2, 4]
        assert all(r["ms"] > 0 and r["peak_mb"] >= 0 for r in rows)
        assert [r["n"] for r in report["flops_1b"][mode]] == [2, 4]
    assert block["ratio"]["from_n"] == 2 and block["ratio"]["to_n"] == 4 and block["ratio"]["dense"] > 0
    assert all(r["sparse_over_cached"] > 0 for r in block["modes"]["cached"])
    assert report["flops_1b"]["tokens_per_frame"] == 5 + 37 * 37
    text = capsys.readouterr().out
    assert "HEADLINE: toy config" in text and "dense ms" in text and "VGGT-1B" in text
    assert "FLOPs alone predict" in text and set(block["flops"]) >= {"dense_ratio", "sparse_ratio", "cached_ratio"}


def test_attention_config_runs_at_small_n(tmp_path: Path) -> None:
    out = tmp_path / "big.json"
    assert main(["--config", "attention", "toy", "--frames", "2", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["headline"] == "attention" and list(report["configs"]) == ["attention", "toy"]
    assert report["configs"]["attention"]["tokens_per_frame"] == 261
    assert report["configs"]["attention"]["modes"]["sparse"][0]["ms"] > report["configs"]["toy"]["modes"]["sparse"][0]["ms"]
