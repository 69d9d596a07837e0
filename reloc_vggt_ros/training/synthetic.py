"""Synthetic textured scenes rendered with exact poses and intrinsics (pretraining and tests).

A scene is a room (floor, ceiling, four walls) plus a few boxes, every face a rectangle with its
own procedural texture. Rendering is exact ray casting: each pixel's ray (OpenCV pixel convention,
centre of the top-left pixel at (0, 0)) is intersected with every rectangle, the nearest hit wins
(z-buffer) and its texture is sampled with ``cv2.remap``. So a 3D point projected with the stored
``K`` and ``T_world_cam`` lands exactly on the pixel that shows it, which is what ground truth must
mean. Images are rendered at ``supersample``x resolution and area-averaged, with the intrinsics
scaled by :meth:`Intrinsics.scaled` so the pixel convention stays exact.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from ..geometry import Intrinsics, invert_T, make_T, T_to_quat_t

__all__ = ["SyntheticConfig", "TexturedRect", "SyntheticScene", "generate_scene", "render_view",
           "look_at", "write_scene_folder", "generate_scene_folders"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticConfig:
    """Scene and camera distribution. Lengths in metres, angles in degrees (config-facing)."""

    image_hw: tuple[int, int] = (112, 112)
    num_views: int = 24
    room_size: tuple[float, float, float] = (6.0, 5.0, 3.0)   # x, y, z (z up)
    num_boxes: int = 3
    fov_deg: tuple[float, float] = (50.0, 75.0)               # horizontal fov range
    camera_region: float = 0.35                               # fraction of the room cameras roam
    yaw_spread_deg: float = 70.0                              # viewing directions: +- around a scene heading
    pitch_deg: tuple[float, float] = (math.degrees(-0.35), math.degrees(0.25))   # up is positive
    roll_deg: float = math.degrees(0.15)                      # +- around the optical axis
    texture_px: int = 256
    supersample: int = 2
    query_every: int = 3                                       # split.txt: every 3rd view is a query

    def __post_init__(self) -> None:
        h, w = self.image_hw
        if h < 8 or w < 8:
            raise ConfigError(f"synthetic image_hw must be >= 8x8, got {self.image_hw}")
        if self.num_views < 2:
            raise ConfigError(f"synthetic num_views must be >= 2, got {self.num_views}")
        if min(self.room_size) <= 0.5:
            raise ConfigError(f"synthetic room_size must be > 0.5 m per axis, got {self.room_size}")
        if not 0 < self.fov_deg[0] <= self.fov_deg[1] < 170:
            raise ConfigError(f"synthetic fov_deg must be 0 < lo <= hi < 170, got {self.fov_deg}")
        if not 0 < self.yaw_spread_deg <= 180:
            raise ConfigError(f"synthetic yaw_spread_deg must be in (0, 180], got {self.yaw_spread_deg}")
        if not -80 < self.pitch_deg[0] <= self.pitch_deg[1] < 80 or not 0 <= self.roll_deg < 90:
            raise ConfigError(f"synthetic pitch_deg must be -80 < lo <= hi < 80 and roll_deg in [0, 90), "
                              f"got {self.pitch_deg}, {self.roll_deg}")
        if not 0 < self.camera_region < 1:
            raise ConfigError(f"synthetic camera_region must be in (0, 1), got {self.camera_region}")
        if self.supersample < 1 or self.texture_px < 16 or self.num_boxes < 0 or self.query_every < 2:
            raise ConfigError("synthetic supersample >= 1, texture_px >= 16, num_boxes >= 0, "
                              "query_every >= 2 required")


@dataclass(frozen=True)
class TexturedRect:
    """Rectangle ``X = origin + s * edge_u + t * edge_v`` with s, t in [0, 1]; texture BGR uint8.

    Texture pixel (col, row) = (s * W_tex - 0.5, t * H_tex - 0.5): the texture covers the rectangle
    edge to edge.
    """

    origin: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    texture: np.ndarray

    def point(self, s: float, t: float) -> np.ndarray:
        return self.origin + s * self.edge_u + t * self.edge_v


@dataclass
class SyntheticScene:
    """Rectangles plus the views to render (camera-to-world poses and intrinsics)."""

    rects: list[TexturedRect]
    views: list[tuple[np.ndarray, Intrinsics]] = field(default_factory=list)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Distinctive procedural texture: smooth colour field, shapes, lines and fine noise."""
    low = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(6, 14))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        p = tuple(int(v) for v in rng.integers(0, size, 2))
        if kind == 0:
            cv2.circle(img, p, int(rng.integers(size // 24, size // 5)), colour, -1, cv2.LINE_AA)
        elif kind == 1:
            q = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.rectangle(img, p, q, colour, -1)
        else:
            q = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, p, q, colour, int(rng.integers(2, max(3, size // 24))), cv2.LINE_AA)
    img += rng.normal(0, 12, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _box_faces(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(origin, edge_u, edge_v) of the six faces of an axis-aligned box."""
    d = hi - lo
    ex, ey, ez = np.diag(d)
    return [(lo, ex, ey), (lo + ez, ex, ey), (lo, ex, ez), (lo + ey, ex, ez), (lo, ey, ez), (lo + ex, ey, ez)]


def look_at(centre: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0]),
            roll_rad: float = 0.0) -> np.ndarray:
    """Camera-to-world pose of an OpenCV camera at ``centre`` looking at ``target``."""
    fwd = target - centre
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("look_at: viewing direction is parallel to up")
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    right, down = c * right + s * down, -s * right + c * down
    return make_T(np.stack([right, down, fwd], axis=1), centre)


def generate_scene(seed: int, cfg: SyntheticConfig = SyntheticConfig()) -> SyntheticScene:
    """A random room with boxes and ``cfg.num_views`` cameras, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    size = np.asarray(cfg.room_size, float) * rng.uniform(0.8, 1.25, 3)
    lo, hi = -size / 2, size / 2
    rects = [TexturedRect(o, u, v, _texture(rng, cfg.texture_px)) for o, u, v in _box_faces(lo, hi)]
    for _ in range(cfg.num_boxes):
        extent = rng.uniform(0.3, 1.0, 3) * np.array([1.0, 1.0, 1.5])
        centre = rng.uniform(lo + extent / 2, hi - extent / 2)
        centre[2] = lo[2] + extent[2] / 2                       # standing on the floor
        for o, u, v in _box_faces(centre - extent / 2, centre + extent / 2):
            rects.append(TexturedRect(o, u, v, _texture(rng, cfg.texture_px // 2)))
    scene = SyntheticScene(rects)
    h, w = cfg.image_hw
    region = size * cfg.camera_region / 2
    region[2] = min(region[2], size[2] * 0.2)
    heading, spread = rng.uniform(-math.pi, math.pi), math.radians(cfg.yaw_spread_deg)
    for _ in range(cfg.num_views):
        centre = rng.uniform(-region, region)
        yaw = heading + rng.uniform(-spread, spread)
        pitch = rng.uniform(math.radians(cfg.pitch_deg[0]), math.radians(cfg.pitch_deg[1]))
        fwd = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
        roll = math.radians(cfg.roll_deg)
        T_world_cam = look_at(centre, centre + fwd, roll_rad=rng.uniform(-roll, roll))
        fov_w = math.radians(rng.uniform(*cfg.fov_deg))
        fx = (w / 2) / math.tan(fov_w / 2)
        fy = fx * rng.uniform(0.97, 1.03)
        cx, cy = (w - 1) / 2 + rng.uniform(-1, 1), (h - 1) / 2 + rng.uniform(-1, 1)
        scene.views.append((T_world_cam, Intrinsics(fx, fy, cx, cy, w, h)))
    return scene


def render_view(scene: SyntheticScene, T_world_cam: np.ndarray, intrinsics: Intrinsics,
                supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(BGR uint8 [H,W,3], depth float32 [H,W] in metres along the optical axis, 0 = no hit)."""
    K_r = intrinsics.scaled(supersample) if supersample > 1 else intrinsics
    h, w = K_r.height, K_r.width
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_cam = np.stack([(u - K_r.cx) / K_r.fx, (v - K_r.cy) / K_r.fy, np.ones_like(u)], -1)  # z = 1
    R, C = T_world_cam[:3, :3], T_world_cam[:3, 3]
    rays = rays_cam @ R.T
    depth = np.full((h, w), np.inf)
    image = np.zeros((h, w, 3), np.float32)
    for rect in scene.rects:
        n = np.cross(rect.edge_u, rect.edge_v)
        denom = rays @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = ((rect.origin - C) @ n) / denom                     # depth: ray has unit z
        X = C + lam[..., None] * rays - rect.origin
        s = X @ rect.edge_u / (rect.edge_u @ rect.edge_u)
        t = X @ rect.edge_v / (rect.edge_v @ rect.edge_v)
        hit = np.isfinite(lam) & (lam > 1e-3) & (s >= 0) & (s <= 1) & (t >= 0) & (t <= 1) & (lam < depth)
        if not hit.any():
            continue
        th, tw = rect.texture.shape[:2]
        map_x = (s * tw - 0.5).astype(np.float32)
        map_y = (t * th - 0.5).astype(np.float32)
        colour = cv2.remap(rect.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        image[hit] = colour[hit]
        depth[hit] = lam[hit]
    depth[~np.isfinite(depth)] = 0.0
    if supersample > 1:
        image = cv2.resize(image, (intrinsics.width, intrinsics.height), interpolation=cv2.INTER_AREA)
        depth = depth[supersample // 2::supersample, supersample // 2::supersample]  # nearest sample
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), depth.astype(np.float32)


def write_scene_folder(scene: SyntheticScene, out_dir: Path, supersample: int = 2,
                       query_every: int = 3) -> Path:
    """Render every view into a posed-image folder (``images/*.png``, ``poses.txt``, ``split.txt``)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    pose_lines = ["# name fx fy cx cy qw qx qy qz tx ty tz (world-to-camera; synthetic, exact)"]
    split_lines = []
    for i, (T_world_cam, K) in enumerate(scene.views):
        name = f"{i:04d}.png"
        image, _ = render_view(scene, T_world_cam, K, supersample)
        cv2.imwrite(str(out_dir / "images" / name), image)
        q, t = T_to_quat_t(invert_T(T_world_cam))
        vals = [K.fx, K.fy, K.cx, K.cy, *q, *t]
        pose_lines.append(name + " " + " ".join(f"{v:.10g}" for v in vals))
        split_lines.append(f"{'query' if i % query_every == 1 else 'db'} {name}")
    (out_dir / "poses.txt").write_text("\n".join(pose_lines) + "\n")
    (out_dir / "split.txt").write_text("\n".join(split_lines) + "\n")
    return out_dir


def generate_scene_folders(out_root: Path, num_scenes: int, seed: int,
                           cfg: SyntheticConfig = SyntheticConfig(), overwrite: bool = False) -> list[Path]:
    """``out_root/scene_XXXX`` posed folders; scene i uses seed ``seed * 100003 + i``.

    Scenes whose ``poses.txt`` already exists are kept unless ``overwrite``.
    """
    out_root = Path(out_root)
    folders = []
    for i in range(num_scenes):
        folder = out_root / f"scene_{i:04d}"
        if overwrite or not (folder / "poses.txt").is_file():
            write_scene_folder(generate_scene(seed * 100003 + i, cfg), folder, cfg.supersample, cfg.query_every)
        folders.append(folder)
    logger.info("synthetic scenes: %d in %s (seed %d, %dx%d px, %d views)", num_scenes, out_root, seed,
                cfg.image_hw[0], cfg.image_hw[1], cfg.num_views)
    return folders
