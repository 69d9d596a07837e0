"""Pose losses: zero at the target, sign-invariant quaternions, geodesic = geometry's metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import R_to_quat, rotation_error_deg, so3_exp
from reloc_vggt_ros.geometry.torch_rotations import quat_angle
from reloc_vggt_ros.training.losses import LossConfig, pose_loss


def _enc(rotvecs: list[list[float]], t: list[list[float]]) -> torch.Tensor:
    rows = []
    for w, tt in zip(rotvecs, t):
        q = R_to_quat(so3_exp(w))                     # w-first
        rows.append([*tt, q[1], q[2], q[3], q[0], 0.9, 1.1])
    return torch.tensor(rows, dtype=torch.float64)[None]


def test_zero_at_target_and_sign_invariant() -> None:
    gt = _enc([[0, 0, 0], [0.1, -0.2, 0.3], [0.5, 0.1, 0.0]], [[0, 0, 0], [1, 0, 0], [0, 1, 1]])
    loss, terms = pose_loss([gt.clone()], gt, LossConfig())
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    flipped = gt.clone()
    flipped[..., 3:7] *= -2.5                      # same rotations, other sign and norm
    loss, terms = pose_loss([flipped], gt, LossConfig())
    assert terms["q"] == pytest.approx(0.0, abs=1e-6) and terms["rot"] == pytest.approx(0.0, abs=1e-6)


def test_geodesic_matches_geometry_metric() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        Ra, Rb = so3_exp(rng.normal(size=3)), so3_exp(rng.normal(size=3))
        qa, qb = R_to_quat(Ra), R_to_quat(Rb)
        ang = quat_angle(torch.tensor(qa), torch.tensor(qb))
        assert np.degrees(float(ang)) == pytest.approx(rotation_error_deg(Ra, Rb), abs=1e-5)


def test_terms_weights_and_gradients() -> None:
    gt = _enc([[0, 0, 0], [0.1, 0, 0], [0, 0.2, 0]], [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    pred = gt.clone()
    pred[0, 2, 0] += 0.5                            # query translation off by 0.5
    pred.requires_grad_(True)
    cfg = LossConfig(w_t=1, w_q=0, w_fov=0, w_rot=0, query_weight=1.0, db_weight=0.0)
    loss, terms = pose_loss([pred], gt, cfg)
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert torch.isfinite(pred.grad).all()          # also at zero rotation error (atan2 form)
    assert pred.grad[0, 2, 0] > 0 and pred.grad[0, 1].abs().sum() == 0
    # Earlier refinement iterations count less (gamma ** (n - 1 - i)).
    bad = gt.clone()
    bad[..., :3] += 1.0
    late_good, _ = pose_loss([bad, gt], gt, LossConfig())
    late_bad, _ = pose_loss([gt, bad], gt, LossConfig())
    assert float(late_good) < float(late_bad)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="w_t"):
        LossConfig(w_t=-1)
    with pytest.raises(ConfigError, match="iter_gamma"):
        LossConfig(iter_gamma=0)
    with pytest.raises(ValueError, match=r"\[B, S, 9\]"):
        pose_loss([torch.zeros(1, 3, 9)], torch.zeros(1, 4, 9), LossConfig())
