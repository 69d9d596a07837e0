"""Weights-free geometric localizer: the query pipeline as a list of named stages.

Per query (:meth:`GeometricLocalizer._localize`), each stage a function of its own module:

1. features (``features``): RootSIFT at the query's working resolution, keypoints undistorted
   (``features.undistorted``: every later stage sees ideal pixels of the pinhole camera);
2. retrieval (``..retrieval.VLADRetriever``): top-k keyframes by VLAD similarity, half of them
   by distance to the prior pose when one is given;
3. 2D-3D matching (``matching.match_2d3d``): ratio + mutual against each keyframe's points;
4. local-map selection (``local_map``): only keyframes consistent with the best-matched one;
5. PnP RANSAC (``pnp.solve_pnp``): poselib LO-RANSAC P3P with Cauchy refinement, then a PnP of
   every other place the matches fit (``places``: keyframes far from that pose) and the choice
   between look-alike places (``judge.choose_place``: by the prior, else "ambiguous");
6. refinement (``pnp.refine_weighted``, optionally on ``lk_refine`` tracks): each match
   weighted by its expected localisation error;
7. covariance (``pnp.covariance``): from the refinement Jacobian plus the map terms;
8. judgement (``judge``): confidence, OK / LOW_CONFIDENCE with the reason.

A camera rig (:meth:`GeometricLocalizer.localize_rig`, stages in ``rig``) runs stages 1-4 per
camera and one generalized PnP of the base over all cameras' matches, then 7-8.

When the retrieved keyframes hold too few 3D points, relative poses to several keyframes
(essential matrices) are intersected instead (``relative_pose.relative_fallback``). Timings
and diagnostics are collected by one :class:`StageTrace` per query.

Every stage works in the map's local frame (``GeometricMap.origin``, see ``indexing``): the
prior is shifted into it and the pose out of it (``geometry.shift_T``), so world coordinates of
any size (UTM) give the same precision as a map at the origin.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ...errors import ConfigError
from ...geometry import Intrinsics, shift_T
from ..base import PosePrior, RelocResult, RelocStatus
from ..retrieval import VLADRetriever
from .config import PRESETS, GeometricConfig
from .features import extract_features, undistorted
from .indexing import GeometricMap, index_store
from .judge import PlaceChoice, choose_place, judge, pnp_confidence, relative_confidence
from .lk_refine import KeyframeImages, track_inliers
from .matching import match_2d3d, single_thread_blas
from .places import Place, group_by_place, keyframe_spacing, other_places, solve_place
from .pnp import (Correspondences, KeyframeObservations, covariance, inlier_spread, keypoint_sigma_px, other_session_offset,
                  refine_weighted, RigObservations, refine_rig_weighted, rig_covariance, solve_rig_pnp)
from .relative_pose import relative_fallback
from .rig import CameraView, RigFrame, camera_inliers, observe_camera, rig_input_problem, rig_observations

if TYPE_CHECKING:
    from ...keyframes import KeyframeStore

__all__ = ["GeometricConfig", "PRESETS", "GeometricLocalizer", "StageTrace", "index_store"]

logger = logging.getLogger(__name__)


class StageTrace:
    """Timings (``<stage>_ms``) and diagnostics of one query, in one dict."""

    def __init__(self, **values: Any) -> None:
        self.t0 = time.perf_counter()
        self.diagnostics: dict[str, Any] = dict(values)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.diagnostics[f"{name}_ms"] = 1e3 * (time.perf_counter() - t)

    def note(self, **values: Any) -> None:
        self.diagnostics.update(values)

    def result(self, status: RelocStatus, T_world_cam: np.ndarray | None = None, cov: np.ndarray | None = None,
               confidence: float = 0.0, num_inliers: int = 0, reason: str = "") -> RelocResult:
        self.diagnostics["total_ms"] = 1e3 * (time.perf_counter() - self.t0)
        return RelocResult(status, T_world_cam, cov, float(confidence), num_inliers, reason, self.diagnostics)


class GeometricLocalizer:
    """Localizer protocol over a KeyframeStore; indexes missing blobs on construction/refresh."""

    name = "geometric"
    concurrent_refresh = True      # refresh() may run beside localize(): the map is swapped in as one snapshot

    def __init__(self, store: "KeyframeStore", config: GeometricConfig | None = None) -> None:
        self.store = store
        self.config = config or PRESETS["default"]
        if self.config.num_threads:
            cv2.setNumThreads(self.config.num_threads)
        logger.info("geometric localizer: %s", self.config)
        self._lock = threading.Lock()
        self._source: GeometricLocalizer | None = None      # set on a variant (see variant)
        threads = self.config.query.match_threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="geometric-match") if threads > 1 else None
        self._state = _Snapshot.of(index_store(store, self.config.map))
        self._kf_images = KeyframeImages(store, int(self.config.lk.cache_mb * 2**20))
        self._warm()

    def _warm(self) -> None:
        """A map that fits its caches is loaded at start-up / refresh, not inside the first
        queries (keyframe data: damage found and, writable, repaired now; LK images decoded);
        a larger one loads what the queries retrieve."""
        gmap = self._state.map
        if gmap.cache is not None and gmap.footprint_bytes <= gmap.cache.capacity_bytes:
            for kf_id in gmap.entries:
                gmap.entries[kf_id]
        if self.config.lk.enabled and len(gmap.entries):
            pixels = sum(gmap.entries.intrinsics(i).width * gmap.entries.intrinsics(i).height for i in gmap.entries)
            if pixels <= self._kf_images.capacity_bytes:
                self._kf_images.warm([int(i) for i in self._state.retriever.ids])

    @property
    def keyframe_spacing_m(self) -> float:
        """The map's median nearest-keyframe distance (0 with fewer than two keyframes)."""
        return self._state.spacing

    @property
    def _map(self) -> GeometricMap:
        return self._state.map

    def variant(self, config: GeometricConfig) -> "GeometricLocalizer":
        """A localizer with other query settings over this one's map and keyframe images (no second
        index, and none on refresh: a variant's refresh refreshes this one and takes its map; the
        tracking cascade's fuller pass). ``config.map`` must be this one's map settings."""
        if config.map != self.config.map:
            raise ConfigError("a variant shares the map: its map settings must equal this localizer's")
        other = copy.copy(self)
        other.config = config
        other._source = self._source or self          # refresh() re-indexes the source's map only
        threads = config.query.match_threads
        other._pool = ThreadPoolExecutor(threads, thread_name_prefix="geometric-match") if threads > 1 else None
        return other

    def refresh(self) -> None:
        """Index keyframes added or removed since the last call (cheap when nothing changed).

        Safe to call from another thread than :meth:`localize`: the new map is swapped in as one
        snapshot, a running query finishes on the old one.
        """
        if self._source is not None:           # a variant: the map (and its refresh) is its source's
            self._source.refresh()
            self._state = self._source._state
            return
        with self._lock:
            if self.store.revision != self._state.map.revision:
                old = self._state.map
                self._state = _Snapshot.of(index_store(self.store, self.config.map, previous=old))
                # keyframe images never change (ids are never reused): drop only removed keyframes'
                self._kf_images.forget({int(i) for i in self._state.map.entries})
                self._warm()

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None) -> RelocResult:
        state = self._state                     # one snapshot (and local frame) for the whole query
        origin = state.map.origin
        T_prior = None if prior is None else shift_T(prior.T_world_cam, -origin)
        prior_cov = None if prior is None else prior.covariance
        # Every product of a query is small; OpenBLAS's own workers, once woken, spin on the
        # other core after it (measured on temple with the rest of the machine stopped: p50 75-84
        # -> 60-63 ms, CPU 146-166 -> 88-91 ms per query), so the whole query runs BLAS on the
        # calling thread; the match pool parallelises instead.
        with single_thread_blas():
            res = self._localize(state, image_bgr, intrinsics, stamp_ns, T_prior, prior_cov)
        if res.T_world_cam is not None:
            res = dataclasses.replace(res, T_world_cam=shift_T(res.T_world_cam, origin))
        return res

    def track_from_keyframes(self, image: np.ndarray, camera: Intrinsics, T_world_cam: np.ndarray, x2d: np.ndarray,
                             x3d: np.ndarray, sigma: np.ndarray, kf_id: np.ndarray, kf_kp: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The refinement stage of a query (``lk_refine.track_inliers``) for 2D-3D points found
        elsewhere (camera-rate tracking): each point's keyframe observation (``kf_id``, ``kf_kp``,
        as in ``Correspondences``) tracked into ``image`` from ``x2d`` (ideal pixels of
        ``camera``'s pinhole, near ``T_world_cam``), so a tracked frame is localised against the
        map's images as a fix is, not against the frame of the fix. Points whose keyframe is gone
        or no longer holds that world point ``x3d`` keep ``x2d`` and ``sigma``. Returns
        ``(x2d, sigma, kept [N] bool)``; does nothing when ``lk`` is off."""
        state = self._state
        entries, origin = state.map.entries, state.map.origin
        if not self.config.lk.enabled or not len(x2d):
            return x2d, sigma, np.zeros(len(x2d), bool)
        valid = np.zeros(len(x2d), bool)
        for k in np.unique(kf_id):
            rows = np.flatnonzero(kf_id == k)
            e = entries.get(int(k))
            if e is not None and np.all(kf_kp[rows] < len(e.points_local)):
                valid[rows] = np.all(np.abs(e.points_local[kf_kp[rows]] - (x3d[rows] - origin)) < 1e-6, axis=1)
        with single_thread_blas():
            return track_inliers(entries, self._kf_images, image, camera, shift_T(T_world_cam, -origin), x2d, sigma,
                                 kf_id, kf_kp, valid, self.config.lk)

    def localize_rig(self, frames: Sequence[RigFrame], stamp_ns: int = 0, prior: PosePrior | None = None
                     ) -> RelocResult:
        """Pose of a rig's base (``T_world_cam`` of the result is ``T_world_base``; ``prior`` is a
        base pose) from the images of the cameras present in ``frames`` (any subset of the rig).
        ``diagnostics["cameras"]`` holds per camera its features, retrieved keyframes, matches
        and inliers."""
        state = self._state
        origin = state.map.origin
        T_prior = None if prior is None else shift_T(prior.T_world_cam, -origin)
        with single_thread_blas():
            res = self._localize_rig(state, frames, stamp_ns, T_prior)
        if res.T_world_cam is not None:
            res = dataclasses.replace(res, T_world_cam=shift_T(res.T_world_cam, origin))
        return res

    def _localize_rig(self, state: "_Snapshot", frames: Sequence[RigFrame], stamp_ns: int,
                      T_prior: np.ndarray | None) -> RelocResult:
        """The rig query in the map's local frame (stages in ``rig``)."""
        trace = StageTrace(stamp_ns=stamp_ns, method="rig_pnp")
        bad = rig_input_problem(frames, _check_input)
        if bad:
            return RelocResult(RelocStatus.INVALID_INPUT, reason=bad)
        if len(state.retriever) == 0:
            return RelocResult(RelocStatus.EMPTY_DATABASE, reason="the keyframe database is empty")
        q, acc = self.config.query, self.config.acceptance
        with trace.stage("observe"):
            views = [observe_camera(state.map.entries, state.retriever, f, T_prior, self.config, self._pool)
                     for f in frames]
        cams = {v.frame.camera.name: {"num_features": len(v.features), "retrieved": v.retrieved,
                                      "num_matches_2d3d": len(v.local.matches), "num_inliers": 0}
                for v in views}
        trace.note(cameras=cams)
        obs = rig_observations(views, q.scale_weighted)
        n_matched = sum(v.local.matches.num_query_keypoints for v in views)
        if n_matched < acc.min_inliers:
            return trace.result(RelocStatus.NO_MATCH, reason=f"only {n_matched} 2D-3D matches over "
                                f"{len(views)} camera(s) (< min_inliers {acc.min_inliers})")
        with trace.stage("pnp"):
            solved = solve_rig_pnp(obs, q.pnp_max_reproj_px)
        if solved is None:
            return trace.result(RelocStatus.NO_MATCH, reason="generalized PnP RANSAC found no pose")
        T, inliers, iterations = solved
        if q.scale_weighted:
            if self.config.lk.enabled:
                with trace.stage("lk"):
                    obs = [self._track_camera(state, v, o, T, m) for v, o, m in zip(views, obs, inliers)]
            with trace.stage("refine"):
                T = refine_rig_weighted(T, [o.subset(m) for o, m in zip(obs, inliers) if m.any()])
        keep = [camera_inliers(T, o, v.local.matches.q_idx, m) for o, v, m in zip(obs, views, inliers)]
        used = [o.subset(k) for o, k in zip(obs, keep) if k.any()]
        with trace.stage("covariance"):
            cov = rig_covariance(T, used, q)
        spreads = [inlier_spread(o.x2d[k], o.intr) for o, k in zip(obs, keep)]
        for v, k, spread in zip(views, keep, spreads):
            cams[v.frame.camera.name].update(num_inliers=int(k.sum()), inlier_spread=spread)
        n_inl = int(sum(k.sum() for k in keep))
        ratio = n_inl / max(n_matched, 1)
        confidence = pnp_confidence(n_inl, ratio, max(spreads), acc)
        verdict = judge(n_inl, confidence, cov.covariance, acc, "")
        trace.note(num_inliers=n_inl, inlier_ratio=ratio, reproj_rms_px=cov.reproj_rms_px,
                   covariance_inflation=cov.inflation, ransac_iterations=iterations)
        return trace.result(verdict.status, T, cov.covariance, confidence, n_inl, verdict.reason)

    def _track_camera(self, state: "_Snapshot", view: CameraView, obs: RigObservations, T_local_base: np.ndarray,
                      inliers: np.ndarray) -> RigObservations:
        """One rig camera's observations with its inliers re-placed by LK tracks (``lk_refine``)."""
        m, f = view.local.matches, view.frame
        x2d, sigma, _ = track_inliers(state.map.entries, self._kf_images, f.image_bgr, f.intrinsics,
                                      T_local_base @ obs.T_base_cam, obs.x2d, obs.sigma_px, m.kf_id, m.kf_kp,
                                      inliers, self.config.lk)
        return dataclasses.replace(obs, x2d=x2d, sigma_px=sigma)

    def _localize(self, state: "_Snapshot", image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int,
                  T_prior: np.ndarray | None, prior_cov: np.ndarray | None = None) -> RelocResult:
        """The query in the map's local frame (``T_prior`` and the pose returned are local)."""
        trace = StageTrace(stamp_ns=stamp_ns)
        bad = _check_input(image_bgr, intrinsics)
        if bad:
            return RelocResult(RelocStatus.INVALID_INPUT, reason=bad)
        cfg, q, acc = self.config, self.config.query, self.config.acceptance
        if len(state.retriever) == 0:
            return RelocResult(RelocStatus.EMPTY_DATABASE, reason="the keyframe database is empty")
        entries = state.map.entries

        camera, intrinsics = intrinsics, intrinsics.pinhole
        with trace.stage("feature"):
            feats = undistorted(extract_features(image_bgr, q.features), camera)
        with trace.stage("retrieval"):
            retrieved = state.retriever.retrieve(feats.descriptors, q.top_k, T_prior)
        with trace.stage("match"):
            matches = match_2d3d(entries, feats.descriptors, retrieved, q.match_ratio, self._pool)
        trace.note(num_features=len(feats), retrieved=retrieved, num_matches_2d3d=len(matches))
        if matches.num_query_keypoints < acc.min_inliers:
            if q.relative_fallback:
                return self._fallback(trace, state, feats, intrinsics, retrieved, T_prior, prior_cov)
            return trace.result(RelocStatus.NO_MATCH, reason=f"only {len(matches)} 2D-3D matches "
                                f"(< min_inliers {acc.min_inliers})")

        with trace.stage("pnp"):
            first = solve_place(entries, matches, feats.keypoints_px, intrinsics, q.pnp_max_reproj_px,
                                acc.min_inliers)
        if first is None:
            return trace.result(RelocStatus.NO_MATCH, reason="PnP RANSAC found no pose")
        with trace.stage("places"):
            place, choice = self._choose_place(state, trace, matches, feats.keypoints_px, intrinsics, first,
                                               T_prior, prior_cov)
        local, pnp, keep = place.local, place.pnp, place.keep
        if local.excluded_keyframes:
            trace.note(inconsistent_keyframes=local.excluded_keyframes)
        m = local.matches
        x2d = feats.keypoints_px[m.q_idx]
        n_inl = int(keep.sum())
        T, sigma = pnp.T_world_cam, None

        if q.scale_weighted:
            sigma = keypoint_sigma_px(feats.scales_px[m.q_idx])
            if cfg.lk.enabled:
                with trace.stage("lk"):
                    x2d, sigma, n_tracked = track_inliers(entries, self._kf_images, image_bgr, camera, T, x2d,
                                                          sigma, m.kf_id, m.kf_kp, pnp.inliers, cfg.lk)
                trace.note(lk_tracked=int(n_tracked.sum()), lk_attempted=int(pnp.inliers.sum()))
            with trace.stage("refine"):
                inl = pnp.inliers
                T = refine_weighted(T, x2d[inl], m.x3d[inl], sigma[inl], intrinsics)

        with trace.stage("covariance"):
            offset = None
            if local.excluded is not None:
                ex = local.excluded
                offset = other_session_offset(feats.keypoints_px[ex.q_idx], ex.x3d, ex.q_idx, intrinsics, T,
                                              q.pnp_max_reproj_px, acc.min_inliers)
            cov = covariance(T, x2d[keep], m.x3d[keep], intrinsics, None if sigma is None else sigma[keep], q,
                             offset)
        if offset is not None:
            trace.note(other_session_offset_m=float(np.linalg.norm(offset[:3])),
                       other_session_offset_deg=float(np.degrees(np.linalg.norm(offset[3:]))))

        spread = inlier_spread(x2d[keep], intrinsics)
        ratio = n_inl / max(m.num_query_keypoints, 1)
        confidence = pnp_confidence(n_inl, ratio, spread, acc)
        verdict = judge(n_inl, confidence, cov.covariance, acc, choice.reason)
        inl_sigma = np.ones(n_inl) if sigma is None else sigma[keep]
        trace.note(correspondences=Correspondences(camera.distort_px(x2d[keep]), m.x3d[keep] + state.map.origin, inl_sigma,
                                                   _observations(m, keep, pnp.inliers, state.map.origin)),
                   num_inliers=n_inl, inlier_ratio=ratio, inlier_spread=spread, reproj_rms_px=cov.reproj_rms_px,
                   covariance_inflation=cov.inflation, ransac_iterations=pnp.iterations,
                   inliers_per_keyframe={int(k): int(np.sum(keep & (m.kf_id == k))) for k in retrieved},
                   method="pnp")
        return trace.result(verdict.status, T, cov.covariance, confidence, n_inl, verdict.reason)

    def _choose_place(self, state: "_Snapshot", trace: StageTrace, matches: Any, keypoints_px: np.ndarray,
                      intrinsics: Intrinsics, first: Place, T_prior: np.ndarray | None,
                      prior_cov: np.ndarray | None) -> tuple[Place, PlaceChoice]:
        """The place the answer is in: ``first`` unless keyframes far from it fit elsewhere
        (``places``, ``judge.choose_place``); the places found go into the diagnostics in world
        coordinates (``places``: pose, inliers, keyframes; ``place_chosen``)."""
        q, acc = self.config.query, self.config.acceptance
        radius = acc.place_radius * state.spacing
        others = other_places(state.map.entries, matches, keypoints_px, intrinsics, first, radius,
                              q.pnp_max_reproj_px, acc.min_inliers)
        if not others:
            return first, PlaceChoice(0, [0], "")
        places = [first, *others]
        choice = self._pick(state, trace, [p.pnp.T_world_cam for p in places], [p.num_inliers for p in places],
                            [p.keyframes for p in places], T_prior, prior_cov)
        return places[choice.index], choice

    def _pick(self, state: "_Snapshot", trace: StageTrace, poses: list[np.ndarray], inliers: list[int],
              keyframes: list[list[int]], T_prior: np.ndarray | None, prior_cov: np.ndarray | None
              ) -> PlaceChoice:
        """``judge.choose_place`` over the places' (local) poses, noted in world coordinates."""
        acc, origin = self.config.acceptance, state.map.origin
        radius = acc.place_radius * state.spacing
        choice = choose_place(inliers, [T[:3, 3] + origin for T in poses], radius, acc,
                              None if T_prior is None else T_prior[:3, 3] + origin, prior_cov)
        trace.note(places=[{"T_world_cam": shift_T(T, origin).tolist(), "num_inliers": n, "keyframes": k}
                           for T, n, k in zip(poses, inliers, keyframes)],
                   place_chosen=choice.index, place_rivals=choice.rivals, place_radius_m=radius)
        return choice

    def _fallback(self, trace: StageTrace, state: "_Snapshot", feats: Any, intrinsics: Intrinsics,
                  retrieved: list[int], T_prior: np.ndarray | None, prior_cov: np.ndarray | None
                  ) -> RelocResult:
        """Relative poses to the retrieved keyframes instead of PnP (too few map points), one
        answer per look-alike place they lie in (``places.group_by_place``), chosen like PnP's."""
        cfg, acc, gmap = self.config, self.config.acceptance, state.map
        groups = group_by_place(gmap.entries, retrieved, acc.place_radius * state.spacing)
        with trace.stage("relative"):
            answers = [relative_fallback(gmap.entries, feats, intrinsics, g, cfg.query,
                                         cfg.map.triangulation.max_epipolar_px) for g in groups]
        found = [r for r in answers if r.T_world_cam is not None]
        choice = PlaceChoice(0, [0], "")
        if len(found) > 1:
            choice = self._pick(state, trace, [r.T_world_cam for r in found], [r.num_inliers for r in found],
                                [r.diagnostics["relative_keyframes"] for r in found], T_prior, prior_cov)
        rel = found[choice.index] if found else answers[0]
        trace.note(**rel.diagnostics)
        if rel.T_world_cam is None:
            return trace.result(RelocStatus.NO_MATCH, reason=rel.reason)
        confidence = relative_confidence(rel.num_inliers, acc)
        verdict = judge(rel.num_inliers, confidence, rel.covariance, acc, choice.reason)
        return trace.result(verdict.status, rel.T_world_cam, rel.covariance, confidence, rel.num_inliers,
                            verdict.reason)


@dataclass(frozen=True)
class _Snapshot:
    """The map plus its retriever, replaced as a whole on refresh."""

    map: GeometricMap
    retriever: VLADRetriever
    spacing: float               # median keyframe spacing (``places.keyframe_spacing``), 0 if none

    @classmethod
    def of(cls, gmap: GeometricMap) -> "_Snapshot":
        spacing = keyframe_spacing(gmap.poses_local[:, :3, 3]) if len(gmap.entries) else 0.0
        return cls(gmap, gmap.retriever(), spacing)


def _observations(m: Any, keep: np.ndarray, inliers: np.ndarray, origin: np.ndarray) -> KeyframeObservations:
    """The inlier matches of ``m`` as keyframe observations of the unique inliers ``keep`` (same query keypoint)."""
    rows = np.flatnonzero(inliers)
    point = np.full(int(m.q_idx.max()) + 1, -1)
    point[m.q_idx[keep]] = np.arange(int(keep.sum()))
    rows = rows[point[m.q_idx[rows]] >= 0]
    return KeyframeObservations(point[m.q_idx[rows]], m.x3d[rows] + origin, m.kf_id[rows], m.kf_kp[rows])


def _check_input(image: np.ndarray, intr: Intrinsics) -> str:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        return "image must be a uint8 [H,W] or [H,W,3] array"
    h, w = image.shape[:2]
    if (w, h) != (intr.width, intr.height):
        return f"image is {w}x{h} but the intrinsics are for {intr.width}x{intr.height}"
    return ""
