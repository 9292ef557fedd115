"""Pseudo-poses: the refiner's own confident results on an unlabeled recording.

Self-supervised adaptation (``pose-refiner adapt``) learns the user's scene without
ground truth. Its labels are the current refiner's refinements of the recording's coarse
detections, kept only when checks that need no labels pass:

- the refiner trusted its result (not ``diverged``, not ``kept_coarse``: the region score
  at the refined pose is above the coarse pose's and the region-only solve restarted
  around it comes back to it, see ``refine.trust``);
- its confidence is at least ``min_score`` (on real LM-O frames the top quartile of the
  region score had a median rotation error of 5.6 deg against 25 deg for the bottom one).

A recording frame (:class:`AdaptFrame`) carries no ground truth at all, so none can leak
into the labels. Every refined pose of a frame is kept as well (``frame_poses``): the
objects of a frame occlude each other, and the training crops need to know where.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["AdaptFrame", "PseudoLabel", "PseudoLabels", "pseudo_label"]


@dataclass(frozen=True)
class AdaptFrame:
    """One frame of an unlabeled recording.

    Attributes:
        key: where it came from (e.g. ``"scene 2 image 14"`` or a bag stamp), for reports.
        image_rgb: (H, W, 3) uint8 RGB, undistorted.
        K: (3, 3) intrinsics, pixels.
        detections: ``(class_id, T_cam_obj_coarse (4, 4))`` pairs, metres.
        depth_m: optional (H, W) registered depth, metres, 0 = none.
    """

    key: str
    image_rgb: np.ndarray
    K: np.ndarray
    detections: list
    depth_m: np.ndarray | None = None


@dataclass(frozen=True)
class PseudoLabel:
    """An accepted refinement: object ``class_id`` of frame ``frame`` at ``T_cam_obj``
    (4, 4), with the refiner's confidence ``score``."""

    frame: int
    class_id: str
    T_cam_obj: np.ndarray
    score: float


@dataclass
class PseudoLabels:
    """The result of :func:`pseudo_label`.

    Attributes:
        labels: the accepted pseudo-poses.
        frame_poses: per frame, every ``(class_id, T_cam_obj)`` the refiner returned
            (accepted or not): the occluders of the training crops.
        counts: ``detections``, ``accepted``, ``not_trusted`` (diverged or kept coarse),
            ``low_score``.
        scores: the confidence of every refinement, accepted or not.
    """

    labels: list = field(default_factory=list)
    frame_poses: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    scores: list = field(default_factory=list)


def pseudo_label(refiner, frames: Sequence[AdaptFrame], min_score: float = 0.6,
                 progress: Callable[[int], None] | None = None) -> PseudoLabels:
    """Refine every detection of ``frames`` and keep the confident results.

    Args:
        refiner: a ``refine.Refiner`` (the model being adapted, or the one it starts from).
        frames: the recording.
        min_score: the least confidence an accepted pseudo-pose has.
        progress: called with 1 after each frame (e.g. a tqdm bar's ``update``).
    """
    out = PseudoLabels(counts={"detections": 0, "accepted": 0, "not_trusted": 0,
                               "low_score": 0})
    for i, fr in enumerate(frames):
        poses = []
        if fr.detections:
            results = refiner.refine(fr.image_rgb, fr.K, fr.detections, depth_m=fr.depth_m)
            for r in results:
                out.counts["detections"] += 1
                out.scores.append(float(r.score))
                poses.append((r.class_id, np.asarray(r.T_cam_obj, np.float64)))
                if r.diverged or r.kept_coarse:
                    out.counts["not_trusted"] += 1
                elif r.score < min_score:
                    out.counts["low_score"] += 1
                else:
                    out.counts["accepted"] += 1
                    out.labels.append(PseudoLabel(i, r.class_id, poses[-1][1], float(r.score)))
        out.frame_poses.append(poses)
        if progress is not None:
            progress(1)
    return out
