"""Camera-rate tracking through a distorted lens: the stream's frames seen through a plumb_bob lens
(its CameraInfo coefficients given), tracked in the raw images, solved on undistorted points."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reloc_vggt_ros.data.distort import distort_image
from reloc_vggt_ros.geometry import Distortion, pose_error
from reloc_vggt_ros.localizer.tracking import TrackingConfig, TrackingLocalizer

LENS = Distortion("plumb_bob", (-0.28, 0.09, 0.0008, -0.0005, -0.012))


def _run(frames, realtime, lens):  # type: ignore[no-untyped-def]
    loc = TrackingLocalizer(realtime, TrackingConfig(enabled=True))
    rows = []
    for f, img, intr in frames:
        cam = dataclasses.replace(intr, distortion=LENS)
        told = dataclasses.replace(intr, distortion=lens)
        res = loc.localize(distort_image(img, cam), told, f.stamp_ns, T_odom_cam=f.T_odom_cam)
        rows.append((res, pose_error(res.T_world_cam, f.T_world_cam) if res.ok else None))
    return rows


@pytest.mark.slow
def test_tracks_a_distorted_stream_as_accurately(stream, realtime) -> None:
    """20 frames of the temple stream through the lens (the map is pinhole): every frame answered,
    most by tracking, errors as in the pinhole stream (median < 2 mm, ring radius 0.56 m); the
    same frames taken for pinhole (coefficients ignored) are several times worse."""
    frames = stream(20)
    rows = _run(frames, realtime, LENS)
    assert all(res.ok for res, _ in rows), [res.reason for res, _ in rows if not res.ok]
    served = [res.diagnostics["served_by"] for res, _ in rows]
    assert served.count("tracking") >= 0.8 * len(rows), served
    t_err = np.array([e[0] for _, e in rows])
    assert np.median(t_err) < 2e-3 and t_err.max() < 5e-3, t_err
    ignored = [e[0] if e else np.inf for _, e in _run(frames, realtime, None)]
    assert np.median(ignored) > 3 * np.median(t_err), (np.median(ignored), np.median(t_err))
