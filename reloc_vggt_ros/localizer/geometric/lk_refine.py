"""Sub-pixel 2D-3D correspondences: keyframe observations tracked into the query by Lucas-Kanade.

A coarse query keypoint (octave 0 of a pyramid at most 1.1-1.25x the input) is localised to ~0.07 x its size, worse
than the keyframe keypoint its 3D point was triangulated from (2x pyramid). After the first PnP,
each inlier's 3D point, at its pixel in the keyframe it was matched through, is tracked into
the query image with LK (keyframe -> query, one level: it starts at the matched query keypoint,
within ~1 px); a track is kept when LK converged,
it lands within ``max_shift_px`` of the keypoint and tracking it back lands within ``max_fb_px``
of where it started. The kept tracks replace the keypoints' positions (with their own sigma) in
the weighted refinement.

LK runs on mosaics of small tiles, one per track (cost ~3 ms for ~1000 tracks, whatever the
image size). Keyframe grayscale images are decoded from the store on first use and kept in a bounded
LRU (:class:`KeyframeImages`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ...errors import KeyframeDBError
from ...geometry import apply_T, invert_T
from .config import LKRefineSettings

if TYPE_CHECKING:
    from ...geometry import Intrinsics
    from ...keyframes import Keyframe, KeyframeStore
    from .indexing import KeyframeEntry

__all__ = ["KeyframeImages", "track_inliers", "track_into_query"]

logger = logging.getLogger(__name__)


class KeyframeImages:
    """Grayscale keyframe images by id, decoded on first use; the most recently used are kept
    while they fit in ``capacity_bytes`` (uint8, one byte per pixel: 0.3 MB for 640x480, 6.3 MB
    for 3072x2048).

    ``get`` returns None (and logs once) for a keyframe whose image does not decode or that
    is gone from the store: its correspondences keep their keypoints.
    """

    def __init__(self, store: "KeyframeStore", capacity_bytes: int) -> None:
        self.store = store
        self.capacity_bytes = capacity_bytes
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._failed: set[int] = set()
        self._lock = threading.Lock()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._images)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def get(self, kf_id: int) -> np.ndarray | None:
        with self._lock:
            img = self._images.get(kf_id)
            if img is not None:
                self._images.move_to_end(kf_id)
                return img
            if kf_id in self._failed:
                return None
        try:
            img = _decode_gray(self.store.get_keyframe(kf_id))
        except KeyframeDBError as err:
            logger.warning("keyframe %d: no image for sub-pixel tracking (%s); its matches keep their "
                           "keypoints", kf_id, err)
            with self._lock:
                self._failed.add(kf_id)
            return None
        with self._lock:
            if kf_id not in self._images:
                self._images[kf_id] = img
                self._nbytes += img.nbytes
            while self._nbytes > self.capacity_bytes and len(self._images) > 1:
                self._nbytes -= self._images.popitem(last=False)[1].nbytes
                self.evictions += 1
        return img

    def warm(self, kf_ids: list[int]) -> int:
        """Decode ahead, in order, until the next image would not fit, so that no query pays a
        first-use decode (5.6 ms per 1536x1024 JPEG); returns how many images are held. (It
        stops at the first eviction: a capacity that is no multiple of the image size must not
        decode every keyframe of the map, each pushing out the one before.)"""
        before = self.evictions
        for kf_id in kf_ids:
            if self._nbytes >= self.capacity_bytes or self.evictions > before:
                break
            self.get(kf_id)
        return len(self._images)

    def forget(self, keep: set[int]) -> None:
        """Drop every image (and failure) not of a keyframe in ``keep`` (changed or removed ones)."""
        with self._lock:
            for kf_id in [k for k in self._images if k not in keep]:
                self._nbytes -= self._images.pop(kf_id).nbytes
            self._failed &= keep


def _decode_gray(kf: "Keyframe") -> np.ndarray:
    """The keyframe's image as uint8 gray [H,W] (a JPEG decodes only its luma: ~2x faster than
    colour then conversion)."""
    img = cv2.imdecode(np.frombuffer(kf.image_jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise KeyframeDBError(f"keyframe {kf.kf_id} ({kf.name}): image bytes do not decode")
    return img


def _gather(img: np.ndarray, centres: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """[N,T,T] grayscale patches (T = 2 half + 1) of a gray or BGR ``img`` around integer
    ``centres`` [N,2] (x, y), moved inside the image where they would cross its border; returns
    the patches and the centres used. Only the patches are converted to gray."""
    h, w = img.shape[:2]
    used = np.stack([np.clip(centres[:, 0], half, w - 1 - half), np.clip(centres[:, 1], half, h - 1 - half)], 1)
    windows = np.lib.stride_tricks.sliding_window_view(img, (2 * half + 1, 2 * half + 1), axis=(0, 1))
    tiles = windows[used[:, 1] - half, used[:, 0] - half]          # [N,(3,)T,T]
    if img.ndim == 3:
        n, c, t = tiles.shape[:3]
        bgr = np.ascontiguousarray(tiles.transpose(0, 2, 3, 1)).reshape(n * t, t, c)
        tiles = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).reshape(n, t, t)
    return tiles, used


def _mosaic(tiles: np.ndarray, cols: int) -> np.ndarray:
    """[N,T,T] tiles laid out row-major, ``cols`` per row, as one image."""
    n, t = tiles.shape[0], tiles.shape[1]
    rows = -(-n // cols)
    full = np.zeros((rows * cols, t, t), tiles.dtype)
    full[:n] = tiles
    return np.ascontiguousarray(full.reshape(rows, cols, t, t).transpose(0, 2, 1, 3).reshape(rows * t, cols * t))


def track_into_query(query_image: np.ndarray, kf_grays: list[np.ndarray], kf_index: np.ndarray,
                     kf_pts: np.ndarray, q_pts: np.ndarray, settings: LKRefineSettings
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe pixels ``kf_pts`` [N,2] (of image ``kf_grays[kf_index[i]]``) tracked into the
    query image (gray or BGR uint8), starting at ``q_pts`` [N,2].

    Returns ``(tracked [N,2], ok [N])``; rows not ok hold ``q_pts``. Pixels in the OpenCV
    convention of each image. LK runs once forward and once backward on two mosaics of small
    tiles, one per point (keyframe tile around the keyframe pixel, query tile around the start),
    so its cost is that of ~N small patches whatever the images' size; a tile holds the window
    plus the allowed shift, so a track that stays inside ``max_shift_px`` never reads a
    neighbouring tile.
    """
    tracked = q_pts.astype(np.float64).copy()
    n = len(kf_pts)
    if n == 0:
        return tracked, np.zeros(0, bool)
    half = settings.window_px // 2 + int(np.ceil(settings.max_shift_px)) + 2
    t = 2 * half + 1
    if min(query_image.shape[:2] + tuple(s for g in kf_grays for s in g.shape[:2])) < t:
        return tracked, np.zeros(n, bool)
    ck = np.empty((n, 2), np.int64)
    kf_tiles = np.empty((n, t, t), np.uint8)
    for j, img in enumerate(kf_grays):
        rows = np.flatnonzero(kf_index == j)
        if len(rows):
            kf_tiles[rows], ck[rows] = _gather(img, np.rint(kf_pts[rows]).astype(np.int64), half)
    q_tiles, cq = _gather(query_image, np.rint(q_pts).astype(np.int64), half)
    cols = int(np.ceil(np.sqrt(n)))
    a, b = _mosaic(kf_tiles, cols), _mosaic(q_tiles, cols)
    origin = np.stack([np.arange(n) % cols, np.arange(n) // cols], axis=1) * t + half   # tile centres
    pa = (kf_pts - ck + origin).astype(np.float32)
    pb = (q_pts - cq + origin).astype(np.float32)
    lk = dict(winSize=(settings.window_px, settings.window_px), maxLevel=0,
              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01),
              flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    fwd, ok, _ = cv2.calcOpticalFlowPyrLK(a, b, pa, pb.copy(), **lk)
    ok = ok.ravel().astype(bool) & np.all(np.isfinite(fwd), axis=1)
    ok &= np.linalg.norm(fwd - pb, axis=1) <= settings.max_shift_px
    back, ok_b, _ = cv2.calcOpticalFlowPyrLK(b, a, fwd, pa.copy(), **lk)
    ok &= ok_b.ravel().astype(bool) & (np.linalg.norm(back - pa, axis=1) <= settings.max_fb_px)
    tracked[ok] = fwd[ok].astype(np.float64) - origin[ok] + cq[ok]
    return tracked, ok


def track_inliers(entries: dict[int, "KeyframeEntry"], images: KeyframeImages, image_bgr: np.ndarray,
                  camera: "Intrinsics", T_local_cam: np.ndarray, x2d: np.ndarray, sigma: np.ndarray,
                  kf_of: np.ndarray, kf_kp: np.ndarray, inliers: np.ndarray, settings: LKRefineSettings
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D points [M,2] and sigmas [M] of the matches with the PnP inliers' tracks put in.

    Match ``i`` is keypoint ``kf_kp[i]`` of keyframe ``kf_of[i]`` (whose 3D point it carries),
    ``x2d[i]`` its query keypoint, ``inliers`` [M] bool. Tracked: the inliers whose 3D point is
    seen from the keyframe and from the query centre (``T_local_cam``, the map's local frame) within
    ``max_angle_deg``; a kept track replaces ``x2d[i]`` with ``sigma_px``. The rest (views
    farther apart, keyframe image missing, LK failed or disagreed) keep point and sigma.
    ``x2d`` are ideal pixels of the query ``camera``'s pinhole: tracking runs in the raw images
    (each keyframe's and the query's camera model) and its result is undistorted back.
    Returns ``(x2d, sigma, kept [M] bool: the matches whose track was put in)``; the inputs are not modified.
    """
    x2d, sigma = x2d.copy(), sigma.copy()
    inl_idx = np.flatnonzero(inliers)
    cos_max = math.cos(math.radians(settings.max_angle_deg))
    grays: list[np.ndarray] = []
    rows_l, which_l, pts_l = [], [], []
    for kf_id in np.unique(kf_of[inl_idx]):
        rows = inl_idx[kf_of[inl_idx] == kf_id]
        e = entries[int(kf_id)]
        X = e.points_local[kf_kp[rows]]
        rays_kf, rays_q = X - e.T_local_cam[:3, 3], X - T_local_cam[:3, 3]
        cos = np.sum(rays_kf * rays_q, axis=1) / (np.linalg.norm(rays_kf, axis=1) * np.linalg.norm(rays_q, axis=1))
        rows, X = rows[cos >= cos_max], X[cos >= cos_max]
        gray = images.get(int(kf_id)) if len(rows) else None     # never decoded if nothing to track
        if gray is None:
            continue
        # the keyframe pixel of the 3D point, not its keypoint: the point is the map's estimate
        # from all its observations, the keypoint one noisy observation of it
        pts_l.append(e.image_camera.project(apply_T(invert_T(e.T_local_cam), X)))
        rows_l.append(rows)
        which_l.append(np.full(len(rows), len(grays)))
        grays.append(gray)
    kept = np.zeros(len(x2d), bool)
    if not grays:
        return x2d, sigma, kept
    rows = np.concatenate(rows_l)
    tracked, ok = track_into_query(image_bgr, grays, np.concatenate(which_l), np.concatenate(pts_l),
                                   camera.distort_px(x2d[rows]), settings)
    x2d[rows[ok]] = camera.undistort_px(tracked[ok])
    sigma[rows[ok]] = settings.sigma_px * camera.undistortion_scale(tracked[ok])    # raw -> ideal pixels
    kept[rows[ok]] = True
    return x2d, sigma, kept
