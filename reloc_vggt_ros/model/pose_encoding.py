"""VGGT pose encoding ("absT_quaR_FoV") <-> camera matrices.

enc = [t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w] describes the *camera-from-world*
transform X_cam = R X_world + t (OpenCV optical frame) with a scalar-last quaternion that need
not be unit-norm, and vertical/horizontal fields of view (radians) at the network input size.
Intrinsics put the principal point exactly at (W/2, H/2).

The rotation maths is :mod:`reloc_vggt_ros.geometry.torch_rotations` (w-first); the scalar-last
order is this encoding's convention and is converted here, at its boundary. The numpy helpers at
the bottom translate to this package's conventions: camera-to-world 4x4 ``T_world_cam``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from reloc_vggt_ros.geometry import Intrinsics, invert_T
from reloc_vggt_ros.geometry.torch_rotations import matrix_to_quat, quat_to_matrix, wxyz_to_xyzw, xyzw_to_wxyz

__all__ = ["pose_encoding_to_extri_intri", "extri_intri_to_pose_encoding", "pose_encoding_to_T_world_cam",
           "T_world_cam_to_pose_encoding"]


def pose_encoding_to_extri_intri(pose_enc: torch.Tensor, image_size_hw: Sequence[int]
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """pose_enc [B, S, 9] -> (extrinsics camera-from-world [B, S, 3, 4], K [B, S, 3, 3] fp32)."""
    if pose_enc.shape[-1] != 9:
        raise ValueError(f"pose encoding must have 9 values, got {tuple(pose_enc.shape)}")
    H, W = float(image_size_hw[0]), float(image_size_hw[1])
    R = quat_to_matrix(xyzw_to_wxyz(pose_enc[..., 3:7]))
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
    quat = wxyz_to_xyzw(matrix_to_quat(extrinsics[..., :3, :3]))
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
