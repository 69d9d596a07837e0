"""Frame-to-frame tracking: the last fix's inliers followed by pyramidal LK, then PnP on them.

A :class:`Track` holds the previous frame (grayscale) and the 2D positions of 3D map points in
it (the inliers of the last fix, ``geometric.pnp.Correspondences``). :func:`track_frame` moves
the points into the new frame with LK, starting where the predicted pose projects them (the
motion prior), keeps those whose backward track returns within ``max_fb_px``, refines them once
more from the fix's frame (no drift accumulates), and solves the pose with the geometric
backend's PnP stages (``refine_weighted`` from the prediction, ``solve_pnp`` RANSAC only when
the prediction fits poorly, ``covariance``) in a local frame (``geometry.local_origin``: map points of any magnitude keep
their precision). The health checks (inliers, RMS reprojection error, position sigma) say why
a step failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ...geometry import Intrinsics, apply_T, invert_T, local_origin, shift_T
from ..geometric.config import QuerySettings
from ..geometric.pnp import (Correspondences, KeyframeObservations, covariance, refine_weighted, solve_pnp,
                             unique_inliers)
from .config import TrackerSettings

__all__ = ["Track", "TrackStep", "to_gray", "start_track", "track_frame"]

_QUERY = QuerySettings()      # max_independent_inliers of the covariance, as a fix's
# the refinement stops once a step moves the points by less than this RMS (px): ~1e-6 m at 1 m
# depth and 1000 px focal length, where running to 1e-4 sigma took ~8 iterations instead of ~4
_RMS_STEP_PX = 1e-3

# ``GeometricLocalizer.track_from_keyframes``: (image, camera, T_world_cam, ideal x2d, world x3d, sigma,
# kf_id, kf_kp) -> (x2d, sigma, kept mask)
KeyframeTracking = Callable[[np.ndarray, Intrinsics, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                             np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Track:
    """What the next frame is tracked from (points in a local frame, see the module doc)."""

    gray: np.ndarray             # previous frame, uint8 [H,W]
    x2d: np.ndarray              # [N,2] float32 pixels in it
    x3d_local: np.ndarray        # [N,3] map points minus ``origin``
    origin: np.ndarray           # [3] whole-metre offset of the map points
    n_fix: int                   # points the track started with (at the fix)
    anchor_gray: np.ndarray      # the frame of the fix
    anchor_x2d: np.ndarray       # [N,2] float32 the same points in it
    sigma_px: np.ndarray         # [N] each point's localisation error at the fix
    centre_fix: np.ndarray       # [3] camera centre at the fix (local frame)
    # the fix's inlier matches behind the points (``Correspondences.observations``), points re-indexed
    obs: KeyframeObservations | None = None
    R_fix: np.ndarray | None = None   # [3,3] camera orientation (world) at the fix

    def subset(self, gray: np.ndarray, x2d: np.ndarray, keep: np.ndarray, obs_rows: np.ndarray | None) -> "Track":
        """The points ``keep`` (indices), at ``x2d`` in ``gray``, with the observations ``obs_rows`` (of kept points)."""
        obs = None
        if self.obs is not None and obs_rows is not None:
            new = np.full(len(self.x2d), -1)
            new[keep] = np.arange(len(keep))
            o = self.obs
            obs = KeyframeObservations(new[o.point[obs_rows]], o.x3d[obs_rows], o.kf_id[obs_rows], o.kf_kp[obs_rows])
        return Track(gray, np.asarray(x2d, np.float32), self.x3d_local[keep], self.origin, self.n_fix,
                     self.anchor_gray, self.anchor_x2d[keep], self.sigma_px[keep], self.centre_fix, obs, self.R_fix)


@dataclass(frozen=True)
class TrackStep:
    """One tracked frame: the pose (world) and covariance if healthy, else the reason."""

    T_world_cam: np.ndarray | None
    covariance: np.ndarray | None
    num_inliers: int
    reproj_rms_px: float
    reason: str                  # '' when healthy
    track: Track | None          # what the next frame tracks from (None: nothing left)
    view_change_deg: float = 0.0  # angle at the tracked points' centroid between the fix's and this view
    keyframe_tracks: int | None = None  # points re-tracked from their keyframes (None: not tried)

    @property
    def ok(self) -> bool:
        return not self.reason


def to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def start_track(gray: np.ndarray, corr: Correspondences, T_world_cam: np.ndarray) -> Track:
    """A track from a fix's inliers in the frame they were found in (at pose ``T_world_cam``)."""
    origin = local_origin(corr.x3d)
    x2d = np.asarray(corr.x2d, np.float32)
    return Track(gray, x2d, corr.x3d - origin, origin, len(corr.x2d), gray, x2d, np.asarray(corr.sigma_px, float),
                 T_world_cam[:3, 3] - origin, corr.observations, T_world_cam[:3, :3].copy())


def _lk(a: np.ndarray, b: np.ndarray, pa: np.ndarray, pb: np.ndarray, s: TrackerSettings, levels: int | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    lk = dict(winSize=(s.window_px, s.window_px), maxLevel=s.pyramid_levels if levels is None else levels,
              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.03), flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    out, st, _ = cv2.calcOpticalFlowPyrLK(a, b, pa, pb.copy(), **lk)
    return out, st.ravel().astype(bool) & np.all(np.isfinite(out), axis=1)


def _anchor_refine(track: Track, gray: np.ndarray, fwd: np.ndarray, ok: np.ndarray, s: TrackerSettings,
                   intr: Intrinsics, R_pred: np.ndarray) -> np.ndarray:
    """Frame-to-frame LK drifts a little every frame; each point is tracked once more from the fix's
    frame (the anchor), starting where frame-to-frame LK put it, on the finest level only. A point
    keeps the anchored position where that converged within ``max_fb_px`` x 4 of the frame-to-frame one
    (drift is sub-pixel per frame; more is the anchor's view being too different)."""
    if track.anchor_gray is track.gray or not ok.any():
        return fwd
    idx = np.flatnonzero(ok)
    anchor, pts = track.anchor_gray, track.anchor_x2d[idx]
    if track.R_fix is not None and intr.distortion is None:
        # the anchor seen from the predicted orientation (the homography of the rotation since the
        # fix): LK moves an unwarped window, so a turned view biases it; parallax is left to LK
        H = intr.K @ (R_pred.T @ track.R_fix) @ np.linalg.inv(intr.K)
        anchor = cv2.warpPerspective(anchor, H, (gray.shape[1], gray.shape[0]), flags=cv2.INTER_LINEAR)
        pts = cv2.perspectiveTransform(pts.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2).astype(np.float32)
    out, good = _lk(anchor, gray, pts, fwd[idx], s, levels=0)
    good &= np.linalg.norm(out - fwd[idx], axis=1) <= 4 * s.max_fb_px
    refined = fwd.copy()
    refined[idx[good]] = out[good]
    return refined


def _solve(T_pred: np.ndarray, x2d: np.ndarray, x3d: np.ndarray, sigma: np.ndarray, intr: Intrinsics,
           s: TrackerSettings) -> tuple[np.ndarray | None, np.ndarray]:
    """Pose and inliers of the tracked points: a robust (Cauchy) refinement from the prediction,
    the points within ``max_reproj_px`` refined again; RANSAC (``solve_pnp``) only when fewer than
    90 % of the points fit (a poor prediction), so a frame costs two small least-squares solves. The
    first only selects the inliers (residuals against a 2 px threshold): three iterations from the
    prediction, where converging on every point (outliers included) took ten."""
    T = refine_weighted(T_pred, x2d, x3d, sigma, intr, iterations=3, rms_step_px=_RMS_STEP_PX)
    inl = _residual_px(T, x2d, x3d, intr) <= s.max_reproj_px
    if inl.sum() < 0.9 * len(inl):
        pnp = solve_pnp(x2d, x3d, intr, s.max_reproj_px)
        if pnp is None:
            return None, np.zeros(len(x2d), bool)
        T, inl = pnp.T_world_cam, pnp.inliers
    if inl.sum() < s.min_inliers:
        return None, inl
    return refine_weighted(T, x2d[inl], x3d[inl], sigma[inl], intr, rms_step_px=_RMS_STEP_PX), inl


def _residual_px(T_world_cam: np.ndarray, x2d: np.ndarray, x3d: np.ndarray, intr: Intrinsics) -> np.ndarray:
    Xc = apply_T(invert_T(T_world_cam), x3d)
    r = np.full(len(x2d), np.inf)
    front = Xc[:, 2] > 1e-9
    r[front] = np.linalg.norm(intr.project(Xc[front]) - x2d[front], axis=1)
    return r


def track_frame(track: Track, gray: np.ndarray, intr: Intrinsics, T_pred_world_cam: np.ndarray,
                settings: TrackerSettings, from_keyframes: KeyframeTracking | None = None) -> TrackStep:
    """The pose of ``gray`` from ``track`` (see the module doc); never raises on bad geometry."""
    T_pred = shift_T(T_pred_world_cam, -track.origin)
    Xc = apply_T(invert_T(T_pred), track.x3d_local)
    front = Xc[:, 2] > 1e-6
    guess = track.x2d.copy()
    guess[front] = intr.project(Xc[front]).astype(np.float32)
    guess = np.clip(guess, -1e4, 1e4)
    fwd, ok = _lk(track.gray, gray, track.x2d, guess, settings)
    # the backward check starts where the point came from, on the finest level only: a right forward
    # track returns within max_fb_px of it, a wrong one does not (the forward search needs the pyramid)
    back, ok_b = _lk(gray, track.gray, fwd, track.x2d, settings, levels=0)
    ok &= ok_b & (np.linalg.norm(back - track.x2d, axis=1) <= settings.max_fb_px)
    inside = (fwd[:, 0] >= 0) & (fwd[:, 1] >= 0) & (fwd[:, 0] <= intr.width - 1) & (fwd[:, 1] <= intr.height - 1)
    ok &= inside
    fwd = _anchor_refine(track, gray, fwd, ok, settings, intr, T_pred[:3, :3])
    raw, x3d, sig_fix = fwd[ok].astype(np.float64), track.x3d_local[ok], track.sigma_px[ok]
    camera, x2d, intr = intr, intr.undistort_px(raw), intr.pinhole   # LK in the raw image, geometry on ideal pixels
    n = int(ok.sum())
    if n < settings.min_inliers:
        return TrackStep(None, None, n, float("nan"), f"tracking lost: {n} of {len(ok)} points tracked "
                         f"(< {settings.min_inliers})", None)
    # a point is as good as it was at the fix (its keypoint size, or its LK track into the keyframe)
    # plus what frame-to-frame tracking adds
    sigma_all = np.sqrt(sig_fix**2 + settings.sigma_px**2)
    idx = np.flatnonzero(ok)
    # the rows solved on: a point's keyframe observations, each tracked into this frame from where
    # frame-to-frame LK put the point (the map's images, not the fix's frame, say where it is), as
    # the fix did; where a keyframe's track fails, the point itself, with its sigma from the fix: as
    # the fix weighted it, so a frame tracked from the fix's own image reproduces the fix
    rows, point, n_kf = None, np.arange(n), None
    x2d_r, x3d_r, sigma_r = x2d, x3d, sigma_all
    if from_keyframes is not None and track.obs is not None:
        o = track.obs
        pos = np.full(len(ok), -1)
        pos[idx] = np.arange(n)
        rows = np.flatnonzero(pos[o.point] >= 0)
        point = pos[o.point[rows]]
        x2d_r, sigma_r, by_kf = from_keyframes(gray, camera, T_pred_world_cam, x2d[point], o.x3d[rows],
                                               sigma_all[point], o.kf_id[rows], o.kf_kp[rows])
        n_kf = int(np.unique(point[by_kf]).size)
        x3d_r = o.x3d[rows] - track.origin
    T, inl = _solve(T_pred, x2d_r, x3d_r, sigma_r, intr, settings)
    uniq = unique_inliers(point, inl, _residual_px(T, x2d_r[inl], x3d_r[inl], intr)) if T is not None else inl
    n_inl = int(uniq.sum())
    if T is None or n_inl < settings.min_inliers:
        return TrackStep(None, None, n_inl, float("nan"), f"tracking lost: PnP on {n} tracked points kept {n_inl} "
                         f"(< {settings.min_inliers})", None)
    cov = covariance(T, x2d_r[uniq], x3d_r[uniq], intr, sigma_r[uniq], _QUERY, None)
    kept = np.unique(point[inl])                      # points (of the ok ones) with an inlier row
    nxt = track.subset(gray, raw[kept], idx[kept], None if rows is None else rows[inl])
    pos_sigma = float(np.sqrt(max(np.linalg.eigvalsh(cov.covariance[:3, :3]).max(), 0.0)))
    reason = ""
    if cov.reproj_rms_px > settings.max_reproj_rms_px:
        reason = f"tracking degraded: reprojection RMS {cov.reproj_rms_px:.2f} px > {settings.max_reproj_rms_px}"
    elif not np.all(np.isfinite(cov.covariance)) or pos_sigma > settings.max_position_sigma_m:
        reason = f"tracking degraded: position sigma {pos_sigma:.3g} m > {settings.max_position_sigma_m}"
    return TrackStep(shift_T(T, track.origin), cov.covariance, n_inl, cov.reproj_rms_px, reason, nxt,
                     _view_change_deg(x3d[kept].mean(axis=0), track.centre_fix, T[:3, 3]), n_kf)


def _view_change_deg(X: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> float:
    """Angle (deg) under which point ``X`` sees the two camera centres: LK's appearance bias grows with it."""
    a, b = c0 - X, c1 - X
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
