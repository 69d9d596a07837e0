"""Camera-rate localization: tracking between relocalizations, a consistency gate, a cascade.

:class:`TrackingLocalizer` wraps a backend (the geometric one: tracking follows the 2D-3D
inliers it exposes) and answers every frame through these stages (each its own module):

1. input checks: a stamp older than the last one resets tracking (time went back: the frame is
   relocalized from scratch); a repeated stamp or an image identical to the last one (a frozen
   camera) gets no pose; a jump of the mean brightness (exposure change) drops the track;
2. motion prior (``motion.predict``): the last published pose moved by odometry between the two
   stamps, else by its constant velocity; the reference expires after ``gate.reference_timeout_s``;
3. tracking (``tracker.track_frame``): LK of the last inliers from the previous frame, PnP on
   them, health checks; the tracked pose must also pass the gate against the prediction;
4. relocalization (``cascade.Cascade``: cheap query, fuller pass when weak) when there is no
   healthy track, on schedule (``relocalize_every_s``), or when too few tracked points are left;
   the prediction is its pose prior (retrieval nearby, look-alike places resolved). While the
   track is healthy it runs in the background (``relocalize_in_background``: a worker process,
   ``background.ProcessRelocalizer``, or a thread) and the frames keep being answered by tracking; its fix, for the frame it was started on, is gated
   against the pose tracked for that frame and, if adopted, the track restarts from the fix's
   inliers in that frame (LK spans the frames since, from the predicted positions);
5. gating (``geometry.gating``): a fix is accepted when within the chi-square gate of the tracked
   pose (or of the prediction); otherwise it is held back until ``gate.confirm_fixes`` fixes in a
   row agree with each other (kidnap recovery), meanwhile the healthy track is published, or
   nothing.

States in ``diagnostics["tracking_state"]``: ``tracking`` (a tracked pose, or a fix while the
track is healthy), ``relocalizing`` (a fix answered without a healthy track), ``lost`` (no pose
for this frame). ``diagnostics["served_by"]`` is ``tracking``, ``relocalization`` or ``none``;
``diagnostics["tracking_notes"]`` lists why tracking stopped, a fix was held back, etc. The
result is OK iff a pose is to be published: this localizer is the judge of what it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...geometry import Intrinsics
from ...geometry.gating import chi2_gate, mahalanobis2
from ..base import Localizer, PosePrior, RelocResult, RelocStatus
from ..geometric.pnp import Correspondences
from .background import ProcessRelocalizer, recipe_of
from .cascade import Cascade, full_pass
from .config import TrackingConfig
from .motion import Prediction, Reference, predict
from .tracker import Track, TrackStep, start_track, to_gray, track_frame

__all__ = ["TrackingLocalizer", "Odometry"]

Odometry = np.ndarray | Callable[[], np.ndarray] | None

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Background:
    """A relocalization running in the background (worker process or thread), and the frame it was started on."""

    future: Future
    stamp_ns: int
    gray: np.ndarray
    odom: np.ndarray | None
    T_tracked: np.ndarray            # the pose tracking gave that frame
    P_tracked: np.ndarray


class TrackingLocalizer:
    """A :class:`Localizer` with tracking state (module doc); one frame at a time, in stamp order."""

    def __init__(self, base: Localizer, config: TrackingConfig) -> None:
        self.base, self.config = base, config
        self.name = base.name
        self.relocalizer = Cascade(base, full_pass(base, config.cascade), config.cascade)
        self._gate = chi2_gate(config.gate.probability)
        self._floor = np.diag([config.gate.min_sigma_m**2] * 3 + [config.gate.min_sigma_rad**2] * 3)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tracking-reloc")
        self._future: Future | None = None         # the background relocalization, until it finished
        self._future_in_process = False
        recipe = recipe_of(base) if config.relocalize_in_background and config.background_process else None
        self._process: ProcessRelocalizer | None = None
        if recipe is not None:
            try:
                self._process = ProcessRelocalizer(recipe, config.cascade)
            except OSError as err:          # no process (limits): the thread does the work
                logger.warning("tracking: no background relocalization process (%r): using a thread", err)
        self.state = "lost"
        self._last_stamp: int | None = None
        self._last_gray: np.ndarray | None = None
        self._frozen = 0
        self.reset()

    def reset(self) -> None:
        """Forget the pose, the track and any held fixes (the next OK fix is taken as is)."""
        self._ref: Reference | None = None
        self._prev_ref: Reference | None = None
        self._track: Track | None = None
        self._fix_confidence = 0.0
        self._last_attempt: int | None = None
        self._chain: list[Reference] = []
        self._background: _Background | None = None     # its result is for this state only

    @property
    def has_track(self) -> bool:
        """The next frame will be tracked (a few ms), not relocalized."""
        return self._track is not None

    def relocalize_next(self) -> None:
        """Drop the track: the next frame is relocalized (and still gated against the prediction)."""
        with self._lock:
            self._track = None

    def refresh(self) -> None:
        self.relocalizer.refresh()
        if self._process is not None:
            self._process.refresh()

    def close(self) -> None:
        """End the background worker process, if any (the thread pool's thread ends with it)."""
        if self._process is not None:
            self._process.close()
        self._pool.shutdown(wait=False)

    def _submit_background(self, image: np.ndarray, intr: Intrinsics, stamp: int, prior: PosePrior | None,
                           notes: list[str]) -> Future:
        """The worker process once it is ready (the thread until then, or after it died)."""
        proc = self._process
        if proc is not None and proc.dead:
            notes.append(f"{proc.dead}: background relocalizations on a thread from now on")
            self._process = proc = None
        self._future_in_process = proc is not None and proc.ready.is_set()
        if self._future_in_process:
            return proc.submit(image, intr, stamp, prior)
        return self._pool.submit(self.relocalizer.localize, image, intr, stamp, prior)

    # ------------------------------------------------------------------ one frame
    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None, T_odom_cam: Odometry = None) -> RelocResult:
        """The pose of this frame, or why there is none (``T_odom_cam``: odometry at ``stamp_ns``,
        an array or a callable raising LookupError, as ``Session.localize`` takes it)."""
        with self._lock:
            t0 = time.perf_counter()
            res = self._frame(image_bgr, intrinsics, stamp_ns, prior, T_odom_cam)
            res.diagnostics["tracking_ms"] = 1e3 * (time.perf_counter() - t0)
            return res

    def _frame(self, image: np.ndarray, intr: Intrinsics, stamp: int, prior: PosePrior | None,
               T_odom_cam: Odometry) -> RelocResult:
        notes: list[str] = []
        odom = self._odometry(T_odom_cam, notes)
        gray = to_gray(image)
        bad = self._check_input(gray, stamp, notes)
        if bad:
            self.state = "lost"
            return self._answer(None, RelocStatus.INVALID_INPUT, bad, notes)
        pred = self._predict(stamp, odom, notes)
        if self._collect_background(notes):
            pred = self._predict(stamp, odom, notes)        # from the adopted fix
        step = self._track_step(gray, intr, pred, notes)
        fix = None
        due = self._relocalize_due(step, stamp)
        if due:
            self._last_attempt = stamp
            fix_prior = prior if prior is not None else (
                PosePrior(pred.T_world_cam, pred.covariance) if pred is not None else None)
            if step is not None and step.ok and self.config.relocalize_in_background:
                if self._future is None or self._future.done():
                    notes.append(due + " (in the background)")
                    self._future = self._submit_background(image, intr, stamp, fix_prior, notes)
                    self._background = _Background(self._future, stamp, gray, odom, step.T_world_cam,
                                                   step.covariance)
            else:
                notes.append(due)
                self._wait_background()
                fix = self.relocalizer.localize(image, intr, stamp, fix_prior)
        return self._decide(gray, stamp, odom, pred, step, fix, notes)

    def _wait_background(self) -> None:
        """Drop the background relocalization's answer: this frame relocalizes itself. One on the
        thread is let finish first (the localizer runs one query at a time); one in the worker
        process is not waited for (it keeps ``_future`` until done: one request at a time)."""
        if self._future is not None and not self._future_in_process:
            try:
                self._future.result()
            except Exception:  # noqa: BLE001 - its failure is no concern of this frame
                pass
            self._future = None
        self._background = None

    def _collect_background(self, notes: list[str]) -> bool:
        """Take in a finished background fix: adopted (True: new reference and track) when it agrees
        with the pose tracked for its frame or is the last of ``confirm_fixes`` that agree."""
        bg = self._background
        if bg is None or not bg.future.done():
            return False
        self._background = None
        try:
            fix = bg.future.result()
        except Exception as err:  # noqa: BLE001 - one failed query must not stop tracking
            notes.append(f"background relocalization failed: {err}")
            return False
        if not fix.ok:
            notes.append(f"background relocalization {fix.status.value}: {fix.reason}")
            return False
        d2 = self._d2(bg.T_tracked, bg.P_tracked, fix.T_world_cam, fix.covariance)
        if d2 > self._gate:
            n = self._hold(bg.stamp_ns, bg.odom, fix)
            if n < self.config.gate.confirm_fixes:
                notes.append(f"background fix held back: d^2 {d2:.1f} > gate {self._gate:.1f} "
                             f"({n}/{self.config.gate.confirm_fixes} consistent fixes)")
                return False
            notes.append(f"{n} consistent fixes in a row overrule the track (d^2 {d2:.1f})")
        else:
            notes.append(f"background fix adopted (d^2 {d2:.1f} within the gate)")
        self._chain = []
        self._ref, self._prev_ref = Reference(fix.T_world_cam, fix.covariance, bg.stamp_ns, bg.odom), None
        corr = fix.diagnostics.get("correspondences")
        self._track = start_track(bg.gray, corr, fix.T_world_cam) if isinstance(corr, Correspondences) else None
        self._fix_confidence = fix.confidence
        return True

    # ------------------------------------------------------------------ stages
    @staticmethod
    def _odometry(T_odom_cam: Odometry, notes: list[str]) -> np.ndarray | None:
        if T_odom_cam is None:
            return None
        try:
            T = T_odom_cam() if callable(T_odom_cam) else T_odom_cam
        except LookupError as err:
            notes.append(f"no odometry at this stamp ({err}): constant velocity")
            return None
        T = np.asarray(T, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            notes.append("odometry is not a finite 4x4 transform: constant velocity")
            return None
        return T

    def _check_input(self, gray: np.ndarray, stamp: int, notes: list[str]) -> str:
        """Why this frame gets no pose ('' if it is usable); resets or drops the track where needed."""
        last, prev = self._last_stamp, self._last_gray
        if last is not None and stamp == last:
            return f"stamp {stamp} repeats the last frame's: not used"
        if last is not None and stamp < last:
            notes.append(f"stamp went back {(last - stamp) * 1e-9:.3f} s: tracking reset, relocalizing")
            self.reset()
        elif prev is not None and prev.shape == gray.shape and np.array_equal(prev, gray):
            self._frozen += 1
            self._last_stamp = stamp
            return (f"camera frozen: image identical to the previous frame ({self._frozen} in a row); "
                    "no pose for a repeated image")
        self._frozen = 0
        if self._track is not None and prev is not None:
            m0, m1 = float(prev.mean()), float(gray.mean())
            if abs(m1 - m0) > self.config.tracker.max_brightness_change * max(m0, 1.0):
                notes.append(f"exposure changed (mean gray {m0:.0f} -> {m1:.0f}): track dropped, relocalizing")
                self._track = None
        self._last_stamp, self._last_gray = stamp, gray
        return ""

    def _predict(self, stamp: int, odom: np.ndarray | None, notes: list[str]) -> Prediction | None:
        ref = self._ref
        if ref is None:
            return None
        age = (stamp - ref.stamp_ns) * 1e-9
        if age > self.config.gate.reference_timeout_s:
            notes.append(f"last pose {age:.2f} s old (> reference_timeout_s {self.config.gate.reference_timeout_s}): "
                         "no prediction")
            self.reset()
            return None
        pred = predict(ref, self._prev_ref, stamp, odom, self.config.motion)
        if pred.note:
            notes.append(pred.note)
        return pred

    def _track_step(self, gray: np.ndarray, intr: Intrinsics, pred: Prediction | None, notes: list[str]
                    ) -> TrackStep | None:
        if self._track is None or pred is None:
            self._track = None
            return None
        if self._track.gray.shape != gray.shape:
            notes.append("image size changed: track dropped")
            self._track = None
            return None
        step = track_frame(self._track, gray, intr, pred.T_world_cam, self.config.tracker,
                           getattr(self.base, "track_from_keyframes", None))
        if step.ok:
            d2 = self._d2(pred.T_world_cam, pred.covariance, step.T_world_cam, step.covariance)
            if d2 > self._gate:
                step = TrackStep(step.T_world_cam, step.covariance, step.num_inliers, step.reproj_rms_px,
                                 f"tracked pose disagrees with the {pred.source} prediction (d^2 {d2:.1f} > gate "
                                 f"{self._gate:.1f})", None)
        if not step.ok:
            notes.append(step.reason)
        self._track = step.track if step.ok else None
        return step

    def _relocalize_due(self, step: TrackStep | None, stamp: int) -> str:
        if step is None:
            return "no track: relocalizing"
        if not step.ok:
            return "relocalizing"
        since = None if self._last_attempt is None else (stamp - self._last_attempt) * 1e-9
        every = self.config.relocalize_every_s
        if every > 0 and (since is None or since >= every):
            return "scheduled relocalization"
        if since is not None and since < every / 4:
            return ""
        track, max_view = step.track, self.config.tracker.max_view_change_deg
        if track is not None and len(track.x2d) < self.config.tracker.refresh_fraction * track.n_fix:
            return f"{len(track.x2d)} of {track.n_fix} points left: relocalizing for new map points"
        if step.keyframe_tracks is not None and step.keyframe_tracks < self.config.tracker.min_inliers:
            return (f"{step.keyframe_tracks} points re-tracked from their keyframes (< min_inliers "
                    f"{self.config.tracker.min_inliers}): relocalizing for points the map's images confirm")
        if max_view and step.view_change_deg > max_view:
            return f"view changed {step.view_change_deg:.1f} deg since the fix: relocalizing"
        return ""

    def _d2(self, T_a: np.ndarray, P_a: np.ndarray, T_b: np.ndarray, P_b: np.ndarray) -> float:
        return mahalanobis2(T_a, P_a + self._floor, T_b, P_b + self._floor)

    # ------------------------------------------------------------------ decision
    def _decide(self, gray: np.ndarray, stamp: int, odom: np.ndarray | None, pred: Prediction | None,
                step: TrackStep | None, fix: RelocResult | None, notes: list[str]) -> RelocResult:
        tracked = step is not None and step.ok
        if fix is not None and fix.ok:
            ref_T, ref_P = ((step.T_world_cam, step.covariance) if tracked else
                            (pred.T_world_cam, pred.covariance) if pred is not None else (None, None))
            if ref_T is None:
                return self._accept_fix(gray, stamp, odom, fix, notes, "relocalized (no pose to gate against)")
            d2 = self._d2(ref_T, ref_P, fix.T_world_cam, fix.covariance)
            if d2 <= self._gate:
                self._chain = []
                return self._accept_fix(gray, stamp, odom, fix, notes, f"relocalized (d^2 {d2:.1f} within the gate)",
                                        tracked)
            n = self._hold(stamp, odom, fix)
            if n >= self.config.gate.confirm_fixes:
                return self._accept_fix(gray, stamp, odom, fix, notes, f"{n} consistent fixes in a row overrule "
                                        f"the prediction (d^2 {d2:.1f} > gate {self._gate:.1f})")
            notes.append(f"fix held back: d^2 {d2:.1f} > gate {self._gate:.1f} "
                         f"({n}/{self.config.gate.confirm_fixes} consistent fixes)")
        elif fix is not None:
            notes.append(f"relocalization {fix.status.value}: {fix.reason}")
        if tracked:
            return self._publish_track(stamp, odom, step, fix, notes)
        self.state = "lost"
        held = fix is not None and fix.ok
        status = RelocStatus.LOW_CONFIDENCE if held else RelocStatus.NO_MATCH
        return self._answer(None, status, "lost: " + "; ".join(notes), notes, fix)

    def _hold(self, stamp: int, odom: np.ndarray | None, fix: RelocResult) -> int:
        """Add ``fix`` to the chain of held fixes (restarted unless it agrees with the chain's last,
        moved to this stamp); the chain's length."""
        new = Reference(fix.T_world_cam, fix.covariance, stamp, odom)
        if self._chain:
            last = self._chain[-1]
            p = predict(last, self._chain[-2] if len(self._chain) > 1 else None, stamp, odom, self.config.motion)
            if self._d2(p.T_world_cam, p.covariance, new.T_world_cam, new.covariance) > self._gate:
                self._chain = []
        self._chain.append(new)
        return len(self._chain)

    def _accept_fix(self, gray: np.ndarray, stamp: int, odom: np.ndarray | None, fix: RelocResult,
                    notes: list[str], why: str, tracked: bool = False) -> RelocResult:
        self._chain = []
        self._set_ref(Reference(fix.T_world_cam, fix.covariance, stamp, odom))
        corr = fix.diagnostics.get("correspondences")
        self._track = start_track(gray, corr, fix.T_world_cam) if isinstance(corr, Correspondences) else None
        self._fix_confidence = fix.confidence
        self.state = "tracking" if tracked else "relocalizing"
        notes.append(why)
        return self._answer(fix, RelocStatus.OK, "", notes, fix, served_by="relocalization")

    def _publish_track(self, stamp: int, odom: np.ndarray | None, step: TrackStep, fix: RelocResult | None,
                       notes: list[str]) -> RelocResult:
        self._set_ref(Reference(step.T_world_cam, step.covariance, stamp, odom))
        self.state = "tracking"
        n_fix = step.track.n_fix if step.track is not None else step.num_inliers
        confidence = self._fix_confidence * min(1.0, step.num_inliers / max(n_fix, 1))
        tracked = RelocResult(RelocStatus.OK, step.T_world_cam, step.covariance, confidence, step.num_inliers,
                              "", {"reproj_rms_px": step.reproj_rms_px})
        return self._answer(tracked, RelocStatus.OK, "", notes, fix, served_by="tracking")

    def _set_ref(self, ref: Reference) -> None:
        self._prev_ref, self._ref = self._ref, ref

    def _answer(self, pose: RelocResult | None, status: RelocStatus, reason: str, notes: list[str],
                fix: RelocResult | None = None, served_by: str = "none") -> RelocResult:
        diagnostics: dict[str, Any] = dict(fix.diagnostics) if fix is not None else {}
        if pose is not None and pose is not fix:
            diagnostics.update(pose.diagnostics)
        diagnostics.update(tracking_state=self.state, served_by=served_by, tracking_notes=list(notes),
                           relocalized=fix is not None)
        if pose is None:
            return RelocResult(status, None, None, 0.0, 0, reason, diagnostics)
        return RelocResult(RelocStatus.OK, pose.T_world_cam, pose.covariance, pose.confidence, pose.num_inliers,
                           "", diagnostics)
