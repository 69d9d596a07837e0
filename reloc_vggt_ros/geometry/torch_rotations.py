"""Torch rotation maths: batched, differentiable versions of :mod:`.se3`'s quaternion formulas.

Same convention as :mod:`.se3`: Hamilton quaternions, scalar first ``(w, x, y, z)``, shape
``[..., 4]``. VGGT's pose encoding stores them scalar last; the model converts at that boundary
with :func:`xyzw_to_wxyz` / :func:`wxyz_to_xyzw` (pure reindexing, exact). Not imported by
``reloc_vggt_ros.geometry`` itself, so the weights-free code never loads torch.

The squared norm is summed as ``x² + y² + z² + w²`` (vector part first): torch sums a
length-4 last axis left to right, so this is bit-identical to ``(q * q).sum(-1)`` over VGGT's
``(x, y, z, w)`` layout, and exported VGGT numbers do not move by an ulp.
"""

from __future__ import annotations

import torch

__all__ = ["xyzw_to_wxyz", "wxyz_to_xyzw", "quat_normalize", "quat_conjugate", "quat_multiply",
           "quat_to_matrix", "matrix_to_quat", "quat_to_rot6d", "quat_angle"]


def xyzw_to_wxyz(q: torch.Tensor) -> torch.Tensor:
    """Scalar-last ``[..., 4]`` (VGGT's encoding) -> scalar-first."""
    return torch.cat([q[..., 3:], q[..., :3]], dim=-1)


def wxyz_to_xyzw(q: torch.Tensor) -> torch.Tensor:
    """Scalar-first ``[..., 4]`` -> scalar-last (VGGT's encoding)."""
    return torch.cat([q[..., 1:], q[..., :1]], dim=-1)


def quat_normalize(q: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Unit quaternions ``q / max(|q|, eps)`` (the norm does not depend on the component order)."""
    return q / q.norm(dim=-1, keepdim=True).clamp(min=eps)


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    """``(w, -x, -y, -z)``: the inverse rotation of a unit quaternion."""
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a ⊗ b`` (rotation b, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def quat_to_matrix(q: torch.Tensor, min_sq_norm: float = 0.0) -> torch.Tensor:
    """``[..., 4]`` of any non-zero norm -> rotation ``[..., 3, 3]`` (uses ``s = 2 / |q|²``).

    ``min_sq_norm`` floors ``|q|²``; at the default 0 a zero quaternion gives non-finite entries,
    which is how a degenerate network output shows up downstream.
    """
    r, i, j, k = q.unbind(-1)
    s = 2.0 / (i * i + j * j + k * k + r * r).clamp_min(min_sq_norm)
    R = torch.stack([
        1 - s * (j * j + k * k), s * (i * j - k * r), s * (i * k + j * r),
        s * (i * j + k * r), 1 - s * (i * i + k * k), s * (j * k - i * r),
        s * (i * k - j * r), s * (j * k + i * r), 1 - s * (i * i + j * j),
    ], dim=-1)
    return R.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation ``[..., 3, 3]`` -> unit quaternion ``[..., 4]`` with w >= 0.

    Builds the four candidate quaternions (one per largest component) and keeps, per matrix,
    the one whose pivot component is largest, which avoids dividing by a small number.
    """
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = R.reshape(R.shape[:-2] + (9,)).unbind(-1)
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
    return torch.where(wxyz[..., :1] < 0, -wxyz, wxyz)


def quat_to_rot6d(q: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (any non-zero norm) -> first two columns of R, ``[..., 6]`` (Zhou et al. 2019):
    continuous and free of the quaternion's sign and scale ambiguity."""
    R = quat_to_matrix(q, min_sq_norm=1e-12)
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def quat_angle(q_a: torch.Tensor, q_b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Geodesic angle (radians) between rotations ``[..., 4]`` of any non-zero norm.

    ``2 atan2(|v|, |w|)`` of the relative quaternion: well-conditioned near zero (unlike
    ``acos``) and sign-invariant.
    """
    rel = quat_multiply(quat_conjugate(quat_normalize(q_a, eps)), quat_normalize(q_b, eps))
    vec = torch.sqrt((rel[..., 1:] ** 2).sum(-1) + eps ** 2)
    return 2 * torch.atan2(vec, rel[..., 0].abs())
