"""Reference depth for converted scenes: sparse depth triangulated from the source folder's other views.

Our posed folders ship no depth. To exercise (and measure) the depth-scale path honestly, the
reference's keypoints are triangulated with its known pose and those of the source images that
the scene does **not** contain (neither its queries nor, in Track 2, their window frames; images
are matched by content, the converter copies them byte for byte) — like a depth sensor beside the
reference camera that never saw the queries. The depth (metres, or the source's units) is
rendered at the triangulated points' pixels (``reference.render_depth``) into ``seq0/frame_00000.<suffix>.png`` (uint16
millimetres, 0 elsewhere: the challenge's depth format), so ``mapfree localize --depth-suffix``
reads it like any other depth file.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np

from ..data import read_posed_folder
from ..localizer.geometric.config import FeatureConfig
from ..localizer.geometric.features import extract_features
from ..localizer.geometric.triangulation import View
from .dataset import read_dataset, read_info
from .reference import depth_from_views

__all__ = ["TRIANGULATED_SUFFIX", "write_triangulated_depth"]

logger = logging.getLogger(__name__)

TRIANGULATED_SUFFIX = "tri"


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def write_triangulated_depth(dataset: Path | str, sources: dict[str, Path], suffix: str = TRIANGULATED_SUFFIX,
                             features: FeatureConfig | None = None) -> dict[str, int]:
    """Write the reference depth of every scene of a converted ``dataset`` whose source folder
    (``mapfree.json``'s ``source``) is in ``sources``; returns {scene: depth pixels written}
    (0: no view left to triangulate with, no file written)."""
    info = read_info(dataset).get("scenes", {})
    feat_cfg = features or FeatureConfig()
    folders: dict[str, list] = {}
    views: dict[Path, View] = {}                 # each source image described once
    written: dict[str, int] = {}
    for scene in read_dataset(dataset):
        src = info.get(scene.name, {}).get("source")
        if src not in sources:
            continue
        images = folders.setdefault(src, read_posed_folder(sources[src]))
        used = {_digest(q.path) for q in scene.queries} | {_digest(scene.reference.path)}
        ref_rec = next(r for r in images if r.name == info[scene.name]["reference"])
        others = [r for r in images if _digest(r.path) not in used]
        out = scene.reference.path.with_name(scene.reference.path.stem + f".{suffix}.png")
        out.unlink(missing_ok=True)
        if not others:
            written[scene.name] = 0
            continue

        def view(rec) -> View:                                      # noqa: ANN001 - PosedImage
            if rec.path not in views:
                views[rec.path] = View(extract_features(cv2.imread(str(rec.path)), feat_cfg), rec.intrinsics,
                                       rec.T_world_cam)
            return views[rec.path]

        metres = depth_from_views(view(ref_rec), [view(r) for r in others])
        depth = np.where(metres > 0, np.clip(np.round(metres * 1000.0), 1, 65535), 0).astype(np.uint16)
        written[scene.name] = int(np.count_nonzero(depth))
        if written[scene.name]:
            cv2.imwrite(str(out), depth)
        logger.info("%s: %d depth pixels from %d other views", scene.name, written[scene.name], len(others))
    return written
