"""Output activations of the VGGT heads (pose encoding, dense maps)."""

from __future__ import annotations

import torch

__all__ = ["activate_pose", "activate_dense"]


def activate_pose(raw: torch.Tensor) -> torch.Tensor:
    """raw [..., 9] -> [t (identity), quat xyzw (identity), ReLU(fov_h, fov_w)]."""
    return torch.cat([raw[..., :7], torch.relu(raw[..., 7:])], dim=-1)


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "exp":
        return torch.exp(x)
    if activation == "expp1":
        return 1 + torch.exp(x)
    if activation == "inv_log":
        return torch.sign(x) * (torch.exp(torch.abs(x)) - 1)
    if activation == "linear":
        return x
    raise ValueError(f"unknown activation {activation!r}")


def activate_dense(out: torch.Tensor, activation: str, conf_activation: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """out [N, D, H, W] (last channel = confidence) -> (values [N, H, W, D-1], conf [N, H, W])."""
    out = out.permute(0, 2, 3, 1)
    return _activate(out[..., :-1], activation), _activate(out[..., -1], conf_activation)
