"""The analytic GPU estimate counts the real model's parameters and orders the masks correctly."""

from __future__ import annotations

from reloc_vggt_ros.model.reloc_vggt import RelocVGGT, RelocVGGTConfig
from reloc_vggt_ros.training.estimate import estimate_step


def test_counts_match_the_real_model_and_masks_order() -> None:
    cfg = RelocVGGTConfig.tiny(depth=2)
    model = RelocVGGT(cfg)
    e1 = estimate_step(cfg, batch=2, num_frames=16, stage=1)
    e2 = estimate_step(cfg, batch=2, num_frames=16, stage=2)
    assert e1.params_total == sum(p.numel() for p in model.parameters())
    assert e1.params_trainable == sum(p.numel() for n, p in model.named_parameters()
                                      if n.split(".")[0] in model.new_module_names())
    assert e2.params_trainable == e2.params_total
    assert e2.tflops_per_step > e1.tflops_per_step and e2.memory_gb > e1.memory_gb
    flops = {m: estimate_step(RelocVGGTConfig.tiny(mask=m), 1, 16, 2).tflops_per_step
             for m in ("dense", "sparse", "cached")}
    assert flops["dense"] > flops["sparse"] > flops["cached"]
    assert e1.tokens_per_frame == (56 // 14) * (70 // 14) + 5
