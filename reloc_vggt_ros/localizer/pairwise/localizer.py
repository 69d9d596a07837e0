"""The ``pairwise`` backend: late fusion of query -> keyframe relative poses (Reloc3r-style).

Per query, each stage a function of its own module:

1. features (``geometric.features``): RootSIFT of the query;
2. retrieval (``..retrieval.VLADRetriever``, the geometric map's VLAD): top-k keyframes, half by
   distance to the prior when one is given;
3. relative poses (``geometric.relative_pose.two_view``): query vs each keyframe, essential
   matrix -> rotation and direction from the keyframe centre;
4. fusion (``fusion.fuse``): rotation averaging, least-squares intersection of the rays, outlier
   pairs out, covariance; then ``fusion.refine`` on all inlier matches of the kept pairs;
5. judgement (``judge``).

It needs no triangulated points, so it also serves maps whose keyframes hardly triangulate
(texture-poor, small baselines). Works in the geometric map's local frame (large coordinates).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

import numpy as np

from ...geometry import Intrinsics, shift_T
from ..base import PosePrior, RelocResult, RelocStatus
from ..geometric.features import extract_features, undistorted
from ..geometric.indexing import GeometricMap, index_store
from ..geometric.localizer import StageTrace, _check_input
from ..geometric.matching import single_thread_blas
from ..geometric.relative_pose import observation, two_view
from ..retrieval import VLADRetriever
from .config import PairwiseConfig
from .fusion import fuse, refine
from .judge import confidence, judge

if TYPE_CHECKING:
    from ...keyframes import KeyframeStore

__all__ = ["PairwiseLocalizer"]


def _retriever(gmap: GeometricMap) -> VLADRetriever:
    return gmap.retriever()


class PairwiseLocalizer:
    """Localizer protocol over a KeyframeStore (indexes the geometric map's blobs it lacks)."""

    name = "pairwise"

    def __init__(self, store: "KeyframeStore", config: PairwiseConfig | None = None) -> None:
        self.store = store
        self.config = config or PairwiseConfig()
        self._lock = threading.Lock()
        gmap = index_store(store, self.config.map)
        self._state = (gmap, _retriever(gmap))

    def refresh(self) -> None:
        with self._lock:
            gmap = self._state[0]
            if self.store.revision != gmap.revision:
                new = index_store(self.store, self.config.map, previous=gmap)
                self._state = (new, _retriever(new))

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None) -> RelocResult:
        gmap, retriever = self._state
        bad = _check_input(image_bgr, intrinsics)           # the geometric backend's input check
        if bad:
            return RelocResult(RelocStatus.INVALID_INPUT, reason=bad)
        if len(retriever) == 0:
            return RelocResult(RelocStatus.EMPTY_DATABASE, reason="the keyframe database is empty")
        T_prior = None if prior is None else shift_T(prior.T_world_cam, -gmap.origin)
        with single_thread_blas():
            res = self._localize(gmap, retriever, image_bgr, intrinsics, stamp_ns, T_prior)
        if res.T_world_cam is not None:
            res = dataclasses.replace(res, T_world_cam=shift_T(res.T_world_cam, gmap.origin))
        return res

    def _localize(self, gmap: GeometricMap, retriever: VLADRetriever, image_bgr: np.ndarray,
                  intrinsics: Intrinsics, stamp_ns: int, T_prior: np.ndarray | None) -> RelocResult:
        cfg = self.config
        trace = StageTrace(stamp_ns=stamp_ns)
        camera, intrinsics = intrinsics, intrinsics.pinhole      # keypoints undistorted, as the map's
        with trace.stage("feature"):
            feats = undistorted(extract_features(image_bgr, cfg.features), camera)
        with trace.stage("retrieval"):
            retrieved = retriever.retrieve(feats.descriptors, cfg.top_k, T_prior)
        obs, why = [], {}
        with trace.stage("relative"):
            for kf_id in retrieved:
                e = gmap.entries[kf_id]
                tv, reason = two_view(e.features, e.intrinsics, feats, intrinsics, cfg.two_view)
                if tv is None:
                    why[kf_id] = reason
                else:
                    obs.append(observation(kf_id, tv, e.intrinsics, e.T_local_cam, intrinsics))
        trace.note(method="pairwise", num_features=len(feats), retrieved=retrieved,
                   pairs=[o.kf_id for o in obs], pair_failures=why)
        with trace.stage("fusion"):
            fused, reason = fuse(obs, cfg)
            if fused is not None and cfg.refine:
                fused = refine(fused, obs, intrinsics)
        if fused is None:
            return trace.result(RelocStatus.NO_MATCH, reason=reason)
        trace.note(**fused.diagnostics, ray_span_deg=fused.span_deg)
        conf = confidence(fused, cfg)
        status, reason = judge(fused, conf, cfg)
        n_inl = int(sum(fused.diagnostics["pair_inliers"]))
        return trace.result(status, fused.T_world_cam, fused.covariance, conf, n_inl, reason)
