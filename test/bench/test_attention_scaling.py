"""bench.attention_scaling: JSON layout, analytic FLOPs bookkeeping, a real (tiny) run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.attention_scaling import main, vggt_flops
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


def test_cli_writes_json_with_all_modes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "as.json"
    assert main(["--frames", "2", "4", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for mode in ("dense", "sparse", "cached"):
        rows = report["modes"][mode]
        assert [r["n"] for r in rows] == [2, 4]
        assert all(r["ms"] > 0 and r["peak_mb"] >= 0 for r in rows)
        assert [r["n"] for r in report["flops_1b"][mode]] == [2, 4]
    assert report["flops_1b"]["tokens_per_frame"] == 5 + 37 * 37
    assert "dense ms" in capsys.readouterr().out
