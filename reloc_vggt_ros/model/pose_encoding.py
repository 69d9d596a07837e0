"""VGGT pose encoding ("absT_quaR_FoV") <-> camera matrices.

enc = [t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w] describes the *camera-from-world*
transform X_cam = R X_world + t (OpenCV optical frame) with a scalar-last quaternion that need
not be unit-norm, and vertical/horizontal fields of view (radians) at the network input size.
Intrinsics put the principal point exactly at (W/2, H/2).

The numpy helpers at the bottom translate to this package's conventions: camera-to-world
4x4 ``T_world_cam`` and w-first quaternions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from reloc_vggt_ros.geometry import Intrinsics, invert_T

__all__ = ["pose_encoding_to_extri_intri", "extri_intri_to_pose_encoding",
           "quat_xyzw_to_matrix", "matrix_to_quat_xyzw", "pose_encoding_to_T_world_cam",
           "T_world_cam_to_pose_encoding"]


def quat_xyzw_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """[..., 4] (x, y, z, w), any non-zero norm -> rotation [..., 3, 3] (uses s = 2/|q|^2)."""
    i, j, k, r = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    R = torch.stack([
        1 - s * (j * j + k * k), s * (i * j - k * r), s * (i * k + j * r),
        s * (i * j + k * r), 1 - s * (i * i + k * k), s * (j * k - i * r),
        s * (i * k - j * r), s * (j * k + i * r), 1 - s * (i * i + j * j),
    ], dim=-1)
    return R.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat_xyzw(R: torch.Tensor) -> torch.Tensor:
    """rotation [..., 3, 3] -> unit quaternion [..., 4] (x, y, z, w) with w >= 0.

    Builds the four candidate quaternions (one per largest component) and keeps, per matrix,
    the one whose pivot component is largest, which avoids dividing by a small number.
    """
    m = R.reshape(R.shape[:-2] + (9,)).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    # 4 * component^2 for (w, x, y, z), clamped at 0 before the square root.
    four_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                           1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    two_abs = torch.sqrt(torch.clamp(four_sq, min=0.0))  # 2|component|
    # Row c: (w, x, y, z) scaled by 2 * component_c (exact when that pivot is used).
    cand = torch.stack([
        torch.stack([two_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, two_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, two_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, two_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)
    cand = cand / (2.0 * two_abs[..., None].clamp(min=0.1))
    best = two_abs.argmax(dim=-1)
    wxyz = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    wxyz = torch.where(wxyz[..., :1] < 0, -wxyz, wxyz)
    return torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)


def pose_encoding_to_extri_intri(pose_enc: torch.Tensor, image_size_hw: Sequence[int]
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """pose_enc [B, S, 9] -> (extrinsics camera-from-world [B, S, 3, 4], K [B, S, 3, 3] fp32)."""
    if pose_enc.shape[-1] != 9:
        raise ValueError(f"pose encoding must have 9 values, got {tuple(pose_enc.shape)}")
    H, W = float(image_size_hw[0]), float(image_size_hw[1])
    R = quat_xyzw_to_matrix(pose_enc[..., 3:7])
    extrinsics = torch.cat([R, pose_enc[..., :3, None]], dim=-1)
    fy = (H / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    fx = (W / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    K = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=torch.float32, device=pose_enc.device)
    K[..., 0, 0], K[..., 1, 1] = fx, fy
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = W / 2.0, H / 2.0, 1.0
    return extrinsics, K


def extri_intri_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                                 image_size_hw: Sequence[int]) -> torch.Tensor:
    """extrinsics camera-from-world [B, S, 3, 4], K [B, S, 3, 3] -> pose_enc [B, S, 9]."""
    if extrinsics.shape[-2:] != (3, 4) or intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"need [..., 3, 4] extrinsics and [..., 3, 3] intrinsics, got "
                         f"{tuple(extrinsics.shape)} and {tuple(intrinsics.shape)}")
    H, W = float(image_size_hw[0]), float(image_size_hw[1])
    quat = matrix_to_quat_xyzw(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((H / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2.0) / intrinsics[..., 0, 0])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]],
                     dim=-1).to(extrinsics.dtype)


# -- numpy helpers in this package's conventions -----------------------------------------------

def pose_encoding_to_T_world_cam(pose_enc: np.ndarray, image_size_hw: Sequence[int]
                                 ) -> tuple[np.ndarray, list[Intrinsics]]:
    """pose_enc [S, 9] -> (T_world_cam [S, 4, 4] float64, one Intrinsics per frame)."""
    enc = torch.as_tensor(np.asarray(pose_enc, dtype=np.float64)).reshape(-1, 9)
    extr, K = pose_encoding_to_extri_intri(enc, image_size_hw)
    T_world_cam = np.empty((enc.shape[0], 4, 4))
    intrinsics = []
    H, W = int(image_size_hw[0]), int(image_size_hw[1])
    for s in range(enc.shape[0]):
        T_cam_world = np.eye(4)
        T_cam_world[:3, :] = extr[s].numpy()
        T_world_cam[s] = invert_T(T_cam_world)
        k = K[s].double().numpy()
        intrinsics.append(Intrinsics(fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]),
                                     cy=float(k[1, 2]), width=W, height=H))
    return T_world_cam, intrinsics


def T_world_cam_to_pose_encoding(T_world_cam: np.ndarray, K: np.ndarray,
                                 image_size_hw: Sequence[int]) -> np.ndarray:
    """T_world_cam [S, 4, 4] and K [S, 3, 3] (or one [3, 3]) -> pose_enc [S, 9] float64.

    K must already be expressed at ``image_size_hw``; the encoding keeps only the FoVs (the
    principal point is assumed at the image centre).
    """
    T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
    K = np.broadcast_to(np.asarray(K, dtype=np.float64), (T.shape[0], 3, 3))
    extr = np.stack([invert_T(t)[:3, :] for t in T])
    enc = extri_intri_to_pose_encoding(torch.from_numpy(extr), torch.from_numpy(K.copy()),
                                       image_size_hw)
    return enc.numpy()
