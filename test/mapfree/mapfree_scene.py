"""A real map-free test scene: fountain-P11 (sample/, 640 px) reference 0003.jpg with depth
triangulated from three posed neighbours under the ground-truth poses; queries 0004 and 0001."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.mapfree.base import QueryFrame, Reference
from reloc_vggt_ros.mapfree.reference import triangulated_depth

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "fountain-P11-small"
REFERENCE, NEIGHBOURS, QUERIES = "0003.jpg", ("0002.jpg", "0005.jpg", "0000.jpg"), ("0004.jpg", "0001.jpg")


def build_reference() -> tuple[Reference, list[tuple[QueryFrame, np.ndarray]]]:
    """The reference (with depth) and the queries with their ground-truth ``T_world_cam``."""
    recs = {r.name: r for r in read_posed_folder(SAMPLE, "db") + read_posed_folder(SAMPLE, "query")}
    ref = recs[REFERENCE]
    image = load_image(ref.path)
    depth = triangulated_depth(image, ref.intrinsics, ref.T_world_cam,
                               [(load_image(recs[n].path), recs[n].intrinsics, recs[n].T_world_cam) for n in NEIGHBOURS])
    reference = Reference(image, ref.intrinsics, ref.T_world_cam, depth, REFERENCE)
    queries = [(QueryFrame(load_image(recs[n].path), recs[n].intrinsics, name=n), recs[n].T_world_cam)
               for n in QUERIES]
    return reference, queries
