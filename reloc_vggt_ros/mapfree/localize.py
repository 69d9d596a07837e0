"""Run a map-free backend over a dataset in the challenge layout and write its submission.

Which frames: the evaluated ones (``mapfree.json``'s ``eval_offset`` / ``eval_step``, else the
official track's, ``evaluate.TRACK_FRAMES``). Track 2 (``--track 2``, or a converted Track 2 set)
hands each evaluated frame to :meth:`MapFreeLocalizer.localize_sequence` with the ``step - 1``
frames before it and their device poses (``poses_device.txt``), and keeps the last result.

A frame without a pose (no match, invalid input) gets no line and its reason is logged; a pose
that is not OK (e.g. unknown scale) is written with its confidence x ``NOT_OK_CONFIDENCE_FACTOR``
so that it ranks below every OK one in the confidence-ranked AUCs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import DataError
from ..localizer.base import RelocResult
from .base import MapFreeLocalizer, QueryFrame, Reference
from .dataset import MapfreeFrame, MapfreeScene, load_depth, read_dataset, read_info
from .evaluate import TRACK_FRAMES
from .registry import DEFAULT_MAPFREE_BACKEND, make_mapfree_localizer
from .submission import Estimate, write_submission

__all__ = ["FrameOutcome", "NOT_OK_CONFIDENCE_FACTOR", "localize_scene", "localize_dataset", "dataset_track"]

logger = logging.getLogger(__name__)

NOT_OK_CONFIDENCE_FACTOR = 0.01


@dataclass(frozen=True)
class FrameOutcome:
    """One evaluated frame: its result and the wall time of the call that produced it."""

    scene: str
    name: str
    result: RelocResult
    latency_s: float
    cpu_s: float = 0.0           # process CPU time of that call (all threads; load-independent)

    def estimate(self) -> Estimate | None:
        r = self.result
        if r.T_world_cam is None:
            return None
        return Estimate(self.name, r.T_world_cam, r.confidence * (1.0 if r.ok else NOT_OK_CONFIDENCE_FACTOR))


def _image(frame: MapfreeFrame) -> np.ndarray:
    img = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {frame.path}")
    return img


def dataset_track(dataset: Path | str, track: int | None = None) -> tuple[int, int, int]:
    """``(track, offset, step)``: a converted set's ``mapfree.json`` decides, else ``track`` (default 1)."""
    info = read_info(dataset)
    if "eval_step" in info:
        return int(info.get("track", track or 1)), int(info["eval_offset"]), int(info["eval_step"])
    track = track or 1
    if track not in TRACK_FRAMES:
        raise DataError(f"unknown track {track}; expected 1 or 2")
    return (track, *TRACK_FRAMES[track])


def localize_scene(localizer: MapFreeLocalizer, scene: MapfreeScene, track: int, offset: int, step: int,
                   depth_suffix: str | None = None) -> Iterator[FrameOutcome]:
    """The evaluated frames of one scene, one outcome each (reference errors raise DataError)."""
    depth = None
    if depth_suffix:
        try:
            depth = load_depth(scene.reference, depth_suffix)
        except DataError as err:
            logger.warning("%s: %s; no depth scale for this scene", scene.name, err)
    localizer.set_reference(Reference(_image(scene.reference), scene.reference.intrinsics,
                                      np.asarray(scene.reference.T_world_cam, float), depth, scene.reference.name))
    for i in range(offset, len(scene.queries), step):
        frame = scene.queries[i]
        if track == 2:
            window = scene.queries[max(0, i - step + 1):i + 1]
            frames = [QueryFrame(_image(f), f.intrinsics, T_odom_cam=scene.device_poses.get(f.name), name=f.name)
                      for f in window]
            t0, c0 = time.perf_counter(), time.process_time()
            result = localizer.localize_sequence(frames)[-1]
        else:
            query = QueryFrame(_image(frame), frame.intrinsics, name=frame.name)
            t0, c0 = time.perf_counter(), time.process_time()
            result = localizer.localize(query)
        yield FrameOutcome(scene.name, frame.name, result, time.perf_counter() - t0, time.process_time() - c0)


def localize_dataset(dataset: Path | str, out: Path | str | None, backend: str = DEFAULT_MAPFREE_BACKEND,
                     options: Mapping[str, Any] | None = None, depth_suffix: str | None = None,
                     track: int | None = None) -> list[FrameOutcome]:
    """Every scene of ``dataset``; writes the submission to ``out`` (folder or .zip) when given.
    A scene whose reference cannot be used is skipped with its reason logged."""
    track, offset, step = dataset_track(dataset, track)
    localizer = make_mapfree_localizer(backend, options)
    outcomes: list[FrameOutcome] = []
    estimates: dict[str, list[Estimate]] = {}
    for scene in read_dataset(dataset):
        try:
            done = list(localize_scene(localizer, scene, track, offset, step, depth_suffix))
        except DataError as err:
            logger.warning("%s: skipped: %s", scene.name, err)
            continue
        for o in done:
            if o.result.T_world_cam is None:
                logger.info("%s %s: no pose: %s", scene.name, o.name, o.result.reason)
            elif not o.result.ok:
                logger.info("%s %s: %s (written, confidence x %g)", scene.name, o.name, o.result.reason,
                            NOT_OK_CONFIDENCE_FACTOR)
        outcomes += done
        est = [e for e in (o.estimate() for o in done) if e is not None]
        if est:
            estimates[scene.name] = est
        else:
            logger.warning("%s: no frame localized; the scene gets no line", scene.name)
    if out is not None:
        write_submission(out, estimates)
    return outcomes
