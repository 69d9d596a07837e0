"""Pose tokens of Reloc-VGGT: known keyframe poses (relative to the anchor) as camera tokens.

A pose is given as VGGT's 9-d ``absT_quaR_FoV`` encoding ``[t(3), q_xyzw(4), fov_h, fov_w]`` of
the camera-from-anchor transform (VGGT's convention with frame 0 = world, here frame 0 = anchor).

Tokenizer (no parameters): the quaternion becomes the continuous 6-D rotation representation
(first two columns of R, Zhou et al. 2019) — unlike a quaternion it has no sign ambiguity
(q and −q give the same 6-D vector) and does not need to be unit-norm. Each group is then
NeRF-style Fourier-embedded, ``γ(x) = [x, sin(2⁰πx), cos(2⁰πx), …, sin(2^{L−1}πx), cos(2^{L−1}πx)]``
per scalar, with ``L`` = ``t_freqs`` (translation, anchor-relative and scale-normalised so the
mean db-camera distance is 1, see :func:`relative_pose_encoding`), ``rot_freqs`` (6-D rotation,
entries in [−1, 1]) and ``fov_freqs`` (fov in radians). Width: 3(1+2L_t) + 6(1+2L_r) + 2(1+2L_f).

Projector: Linear(F→C) → GELU → Linear(C→C). Its last layer starts at zero, so a model built
from VGGT weights starts *exactly* as VGGT (token = pretrained camera token + 0); stage-1
training then learns the residual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..geometry import Intrinsics, R_to_quat, invert_T, quat_wxyz_to_xyzw
from ..geometry.torch_rotations import quat_to_rot6d, xyzw_to_wxyz

__all__ = ["fourier_features", "PoseTokenizer", "PoseProjector", "relative_pose_encoding"]


def fourier_features(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """``[..., D] -> [..., D(1 + 2 n_freqs)]``: the input, then sin/cos at 2^k·π, k = 0…n−1."""
    if n_freqs == 0:
        return x
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)
    xf = (x.unsqueeze(-1) * freqs).flatten(-2)                 # [..., D·n], scalar-major
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], dim=-1)


class PoseTokenizer(nn.Module):
    """``pose_enc [..., 9] -> features [..., out_dim]`` (parameter-free Fourier embedding)."""

    def __init__(self, t_freqs: int = 6, rot_freqs: int = 4, fov_freqs: int = 4) -> None:
        super().__init__()
        for name, n in (("t_freqs", t_freqs), ("rot_freqs", rot_freqs), ("fov_freqs", fov_freqs)):
            if not 0 <= n <= 16:
                raise ValueError(f"{name} must be in 0..16, got {n}")
        self.t_freqs, self.rot_freqs, self.fov_freqs = t_freqs, rot_freqs, fov_freqs
        self.out_dim = 3 * (1 + 2 * t_freqs) + 6 * (1 + 2 * rot_freqs) + 2 * (1 + 2 * fov_freqs)

    def forward(self, pose_enc: torch.Tensor) -> torch.Tensor:
        t, q, fov = pose_enc[..., :3], pose_enc[..., 3:7], pose_enc[..., 7:9]
        return torch.cat([fourier_features(t, self.t_freqs),
                          fourier_features(quat_to_rot6d(xyzw_to_wxyz(q)), self.rot_freqs),
                          fourier_features(fov, self.fov_freqs)], dim=-1)


class PoseProjector(nn.Module):
    """MLP from Fourier features to the token width C; zero-initialised output layer."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(feats)))


def relative_pose_encoding(T_world_cams: Sequence[np.ndarray], intrinsics: Sequence[Intrinsics],
                           normalize: bool = True) -> tuple[np.ndarray, float]:
    """VGGT pose encodings ``[N, 9]`` of cameras relative to the first one (the anchor).

    Each row encodes ``T_cam_anchor`` (camera-from-anchor; anchor = world, as VGGT's frame 0):
    translation, quaternion x-y-z-w with w ≥ 0, then (fov_h, fov_w) of that camera's image.
    With ``normalize`` the translations are divided by ``scale`` = mean camera distance from the
    anchor (1 if all cameras sit on the anchor), so tokens see unit-scale geometry; multiply a
    predicted translation by ``scale`` to get back to metres. Returns ``(enc, scale)``.
    """
    if len(T_world_cams) == 0 or len(T_world_cams) != len(intrinsics):
        raise ValueError(f"need one intrinsics per pose, got {len(T_world_cams)} poses and "
                         f"{len(intrinsics)} intrinsics")
    T_world_anchor = np.asarray(T_world_cams[0], float)
    rows, dists = [], []
    for T_world_cam, K in zip(T_world_cams, intrinsics):
        T_cam_anchor = invert_T(np.asarray(T_world_cam, float)) @ T_world_anchor
        fov_h, fov_w = K.fov_rad()
        rows.append([*T_cam_anchor[:3, 3], *quat_wxyz_to_xyzw(R_to_quat(T_cam_anchor[:3, :3])), fov_h, fov_w])
        dists.append(float(np.linalg.norm(T_world_cam[:3, 3] - T_world_anchor[:3, 3])))
    enc = np.asarray(rows, dtype=np.float64)
    far = [d for d in dists[1:] if d > 1e-9]
    scale = float(np.mean(far)) if normalize and far else 1.0
    enc[:, :3] /= scale
    return enc, scale
