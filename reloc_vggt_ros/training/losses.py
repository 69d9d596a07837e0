"""Pose losses on VGGT pose encodings ``[B, S, 9] = [t(3), q_xyzw(4), fov_h, fov_w]``.

Terms (weights in the config; as in the Reloc-VGGT paper):
* ``t``: L1 on translations. Targets are already in the tuple's normalised scale (see
  :mod:`.datasets`), so the term is scale-free across scenes;
* ``q``: L1 between the unit-normalised predicted quaternion and the target, sign-invariant
  (q and -q are the same rotation);
* ``fov``: L1 on (fov_h, fov_w) in radians;
* ``rot``: geodesic rotation angle (radians) between predicted and target rotations
  (:func:`~reloc_vggt_ros.geometry.torch_rotations.quat_angle`, well-conditioned near zero).
Frames are weighted: the query (last) by ``query_weight``, database frames 1..S-2 by ``db_weight``;
the anchor's target is the identity and is skipped. Refinement iterations are weighted
``iter_gamma ** (n - 1 - i)`` (last iteration weight 1) and normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..geometry.torch_rotations import quat_angle, quat_normalize, xyzw_to_wxyz

__all__ = ["LossConfig", "pose_loss"]


@dataclass(frozen=True)
class LossConfig:
    w_t: float = 1.0
    w_q: float = 1.0
    w_fov: float = 0.5
    w_rot: float = 1.0
    query_weight: float = 1.0
    db_weight: float = 0.5
    iter_gamma: float = 0.6

    def __post_init__(self) -> None:
        for name in ("w_t", "w_q", "w_fov", "w_rot", "query_weight", "db_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss {name} must be >= 0, got {getattr(self, name)}")
        if self.w_t + self.w_q + self.w_fov + self.w_rot <= 0:
            raise ConfigError("at least one loss weight must be positive")
        if not 0 < self.iter_gamma <= 1:
            raise ConfigError(f"loss iter_gamma must be in (0, 1], got {self.iter_gamma}")


def _frame_weights(S: int, cfg: LossConfig, device: torch.device) -> torch.Tensor:
    w = torch.full((S,), cfg.db_weight, device=device)
    w[0] = 0.0
    w[-1] = cfg.query_weight
    return w / w.sum().clamp(min=1e-12)


def _terms(pred: torch.Tensor, gt: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    q_pred = quat_normalize(pred[..., 3:7])
    q_gt = gt[..., 3:7]
    q_l1 = torch.minimum((q_pred - q_gt).abs().sum(-1), (q_pred + q_gt).abs().sum(-1))
    per_frame = {
        "t": (pred[..., :3] - gt[..., :3]).abs().sum(-1),
        "q": q_l1,
        "fov": (pred[..., 7:9] - gt[..., 7:9]).abs().sum(-1),
        "rot": quat_angle(xyzw_to_wxyz(q_gt), xyzw_to_wxyz(pred[..., 3:7])),
    }
    return {k: (v.float() * w).sum(-1).mean() for k, v in per_frame.items()}


def pose_loss(pose_enc_list: list[torch.Tensor], target: torch.Tensor, cfg: LossConfig
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted loss over refinement iterations; returns (total, {term: value of the last iteration})."""
    if target.shape[-1] != 9 or pose_enc_list[-1].shape != target.shape:
        raise ValueError(f"prediction {tuple(pose_enc_list[-1].shape)} and target {tuple(target.shape)} "
                         "must both be [B, S, 9]")
    w = _frame_weights(target.shape[1], cfg, target.device)
    n = len(pose_enc_list)
    iter_w = torch.tensor([cfg.iter_gamma ** (n - 1 - i) for i in range(n)])
    iter_w = iter_w / iter_w.sum()
    total = target.new_zeros(())
    last: dict[str, torch.Tensor] = {}
    for i, pred in enumerate(pose_enc_list):
        terms = _terms(pred.float(), target.float(), w)
        total = total + iter_w[i] * (cfg.w_t * terms["t"] + cfg.w_q * terms["q"]
                                     + cfg.w_fov * terms["fov"] + cfg.w_rot * terms["rot"])
        last = terms
    return total, {k: float(v.detach()) for k, v in last.items()}
