"""What the node's ``debug_image`` shows of each object (``render.overlay`` draws it).

Every refined object of the frame is shown, published or not: its coarse pose, and its
refined pose green when the node published it as confident, dashed magenta when not
(diverged, or scored below ``confidence_threshold``), with a note saying what the node
did with it. Tracked objects show the pose the tracker published.
"""

from __future__ import annotations

from ..render.overlay import OverlayObject


def debug_object(r, confident: bool, low_confidence_action: str) -> OverlayObject:
    """A refinement result (``RefineResult``) as the node decided on it."""
    note = ""
    T = r.T_cam_obj
    if not confident:
        note = "withheld" if low_confidence_action == "drop" else "coarse published"
        if r.kept_coarse and len(r.iterates):
            T = r.iterates[-1]  # the pose that was refused, rather than the coarse again
    return OverlayObject(r.class_id, T_coarse=r.T_cam_obj_init, T_refined=T, score=r.score,
                         trusted=confident, note=note)


def tracked_object(class_id: str, T_start, T, quality: float, lost: bool) -> OverlayObject:
    """A tracked object: the pose it started the frame at, the one tracked, its quality."""
    return OverlayObject(class_id, T_coarse=T_start, T_refined=T, score=quality,
                         trusted=not lost, note="tracking lost" if lost else "tracked")
