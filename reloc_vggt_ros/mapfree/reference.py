"""The map-free reference: checked once, loaded from files, and given depth from known geometry.

Every map-free backend gets a :class:`~reloc_vggt_ros.mapfree.base.Reference`; what makes one
unusable (an image of another size than its intrinsics, a depth image of the wrong size, no
valid depth pixel, a non-rigid pose) is refused here with one clear :class:`DataError`, so the
backends and the node share the same reasons.

Depth files: 16-bit PNG/TIFF in ``depth_unit`` metres per count (the challenge's uint16
millimetres by default, 0 = no depth) or a float ``.npy`` in metres (0 / non-finite = none).

:func:`triangulated_depth` renders a sparse depth image of a posed view from its known-pose
neighbours (SIFT matches triangulated under the ground-truth poses, the geometric backend's
map-side triangulation): depth "from known geometry" for scenes that ship none, used by the
tests and benches on the shared scenes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..data import load_image
from ..errors import DataError
from ..geometry import Intrinsics, apply_T, invert_T, is_valid_T
from .base import Reference

if TYPE_CHECKING:
    from ..localizer.geometric.triangulation import View

__all__ = ["check_reference", "read_depth", "load_reference", "pixel_rays", "render_depth", "depth_from_views",
           "triangulated_depth"]


def check_reference(reference: Reference) -> Reference:
    """``reference`` unchanged, or DataError naming what makes it unusable."""
    img, intr = reference.image_bgr, reference.intrinsics
    if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
        raise DataError(f"reference image must be BGR uint8 [H, W, 3], got "
                        f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
    h, w = img.shape[:2]
    if (intr.width, intr.height) != (w, h):
        raise DataError(f"reference intrinsics are for {intr.width}x{intr.height} but the reference image is {w}x{h}")
    if not is_valid_T(np.asarray(reference.T_world_cam, float)):
        raise DataError("reference T_world_cam is not a finite rigid transform")
    depth = reference.depth_m
    if depth is not None:
        depth = np.asarray(depth)
        if depth.ndim != 2 or depth.shape != (h, w):
            raise DataError(f"reference depth is {'x'.join(map(str, depth.shape[::-1]))} but the reference "
                            f"image is {w}x{h}: a depth image must have the image's size")
        if not np.any(np.isfinite(depth) & (depth > 0)):
            raise DataError("reference depth has no valid pixel (all 0 or non-finite)")
        if np.any(depth < 0):
            raise DataError("reference depth has negative values: not a depth image in metres")
    second = reference.second
    if second is not None:
        simg, sintr = second.image_bgr, second.intrinsics
        if not (isinstance(simg, np.ndarray) and simg.dtype == np.uint8 and simg.ndim in (2, 3)):
            raise DataError("second reference image must be a uint8 [H, W] or [H, W, 3] array")
        if (sintr.width, sintr.height) != (simg.shape[1], simg.shape[0]):
            raise DataError(f"second reference intrinsics are for {sintr.width}x{sintr.height} but its image is "
                            f"{simg.shape[1]}x{simg.shape[0]}")
        T2 = np.asarray(second.T_world_cam, float)
        if not is_valid_T(T2):
            raise DataError("second reference T_world_cam is not a finite rigid transform")
        if np.linalg.norm(T2[:3, 3] - np.asarray(reference.T_world_cam, float)[:3, 3]) <= 0:
            raise DataError("second reference is at the reference's position: no baseline, no scale")
    return reference


def read_depth(path: str | Path, depth_unit: float = 0.001) -> np.ndarray:
    """Depth image in metres, float32 [H, W] (0 where invalid), from a 16-bit PNG/TIFF
    (``depth_unit`` metres per count) or a float ``.npy`` (metres)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"depth image not found: {path}")
    if path.suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a numpy array: {err}") from err
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
            raise DataError(f"{path}: a .npy depth must be a float [H, W] array in metres, got {depth.dtype} "
                            f"{depth.shape}")
        depth = depth.astype(np.float32)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
            raise DataError(f"{path}: a depth image must be single-channel 16-bit (PNG/TIFF), got "
                            f"{'nothing readable' if raw is None else f'{raw.dtype} {raw.shape}'}")
        depth = raw.astype(np.float32) * np.float32(depth_unit)
    depth[~np.isfinite(depth)] = 0
    return depth


def load_reference(image_path: str | Path, camera: Sequence[float], T_world_cam: np.ndarray,
                   depth_path: str | Path = "", depth_unit: float = 0.001) -> Reference:
    """A checked reference from an image file, its ``camera`` ``(fx, fy, cx, cy)`` in pixels of
    that image, its pose and an optional depth file; DataError on bad input."""
    image_path = Path(image_path)
    if not image_path.is_file():
        raise DataError(f"reference image not found: {image_path}")
    image = load_image(image_path)
    try:
        fx, fy, cx, cy = (float(v) for v in camera)
        intrinsics = Intrinsics(fx, fy, cx, cy, image.shape[1], image.shape[0])
    except ValueError as err:
        raise DataError(f"reference intrinsics {list(camera)} are unusable: {err}") from err
    depth = read_depth(depth_path, depth_unit) if str(depth_path) else None
    return check_reference(Reference(image, intrinsics, np.asarray(T_world_cam, float), depth, name=image_path.name))


def pixel_rays(xy_px: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Camera-frame rays [N, 3] with z = 1 through raw image pixels ``xy_px`` [N, 2] (OpenCV
    centres; undistorted first when the camera has a lens model): a pixel with depth z is the
    camera point ``z * ray``."""
    xy = intrinsics.undistort_px(xy_px)
    return np.stack([(xy[:, 0] - intrinsics.cx) / intrinsics.fx,
                     (xy[:, 1] - intrinsics.cy) / intrinsics.fy, np.ones(len(xy))], axis=1)


def render_depth(points_world: np.ndarray, intrinsics: Intrinsics, T_world_cam: np.ndarray) -> np.ndarray:
    """Sparse depth image float32 [H, W] in metres: each point in front of the camera at its
    nearest pixel, the closest one where several land (0 elsewhere)."""
    X = apply_T(invert_T(T_world_cam), np.asarray(points_world, float).reshape(-1, 3))
    X = X[np.all(np.isfinite(X), axis=1) & (X[:, 2] > 0)]
    uv = np.round(intrinsics.project(X)).astype(int)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < intrinsics.width) & (uv[:, 1] >= 0) & (uv[:, 1] < intrinsics.height)
    uv, z = uv[inside], X[inside, 2]
    order = np.argsort(-z)                       # far first: the nearest point is written last
    depth = np.zeros((intrinsics.height, intrinsics.width), np.float32)
    depth[uv[order, 1], uv[order, 0]] = z[order]
    return depth


def triangulated_depth(image_bgr: np.ndarray, intrinsics: Intrinsics, T_world_cam: np.ndarray,
                       neighbours: Sequence[tuple[np.ndarray, Intrinsics, np.ndarray]]) -> np.ndarray:
    """Sparse depth of a posed view from posed neighbour views ``(image, intrinsics, T_world_cam)``:
    its SIFT keypoints triangulated under the known poses (default map settings), rendered by
    :func:`render_depth`. DataError if no point survives."""
    from ..localizer.geometric.config import FeatureConfig
    from ..localizer.geometric.features import extract_features
    from ..localizer.geometric.triangulation import View

    features = FeatureConfig()
    ref = View(extract_features(image_bgr, features), intrinsics, np.asarray(T_world_cam, float))
    others = [View(extract_features(img, features), intr, np.asarray(T, float)) for img, intr, T in neighbours]
    depth = depth_from_views(ref, others)
    if not np.any(depth > 0):
        raise DataError("no point of the view triangulates with its neighbours: no depth")
    return depth


def depth_from_views(ref: View, others: Sequence[View]) -> np.ndarray:
    """Depth (metres, 0 = none) of ``ref``: its keypoints triangulated with ``others`` under the
    known poses (default triangulation settings), rendered at their pixels (:func:`render_depth`)."""
    from ..localizer.geometric.config import TriangulationConfig
    from ..localizer.geometric.triangulation import triangulate_keyframe

    with np.errstate(divide="ignore", invalid="ignore"):
        points, _ = triangulate_keyframe(ref, list(others), TriangulationConfig())
    return render_depth(points[np.all(np.isfinite(points), axis=1)], ref.intrinsics, ref.T_world_cam)
