"""depth_pnp (the weights-free stand-in): metric poses from the reference depth, and no pose
without it (never an invented scale)."""

from __future__ import annotations

import dataclasses

from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.localizer.base import RelocStatus
from reloc_vggt_ros.mapfree.registry import make_mapfree_localizer

from mapfree_scene import build_reference


def test_depth_pnp_metric_pose_and_no_pose_without_depth() -> None:
    ref, queries = build_reference()
    loc = make_mapfree_localizer("depth_pnp")
    loc.set_reference(ref)
    for query, T_gt in queries:
        res = loc.localize(query)
        t_err, r_err = pose_error(res.T_world_cam, T_gt)
        assert res.ok and res.diagnostics["scale"] == "depth" and t_err < 0.02 and r_err < 0.2, (res, t_err, r_err)
    loc.set_reference(dataclasses.replace(ref, depth_m=None))
    res = loc.localize(queries[0][0])
    assert res.status is RelocStatus.NO_MATCH and "has no depth image" in res.reason
    assert res.T_world_cam is None and res.diagnostics["scale"] == "unknown"
