"""What the node publishes of a refinement, and the TF frame it names each object by.

The rules that the node (``ros.processing``) and ``eval-bag`` share, so that a recording
replayed offline is published as the node would publish it. No ROS imports: ``eval-bag``
runs without ROS.
"""

from __future__ import annotations

import re

__all__ = ["publish_decision", "tf_frame_name"]


def publish_decision(r, confidence_threshold: float, low_confidence_action: str) -> str:
    """What the node publishes of a ``RefineResult``: ``"refined"`` (not diverged and
    ``score >= confidence_threshold``), else ``"coarse"`` under ``low_confidence_action:
    publish_coarse`` or ``""`` (withheld, ``drop``)."""
    if not r.diverged and r.score >= confidence_threshold:
        return "refined"
    return "coarse" if low_confidence_action == "publish_coarse" else ""


def tf_frame_name(prefix: str, class_id: str, k: int) -> str:
    """The TF child frame of instance ``k`` of ``class_id`` in a frame (see ``ros.node``):
    ``prefix`` + the class id with every character outside ``[A-Za-z0-9_]`` as ``_`` +
    ``_k``."""
    return f"{prefix}{re.sub(r'[^A-Za-z0-9_]', '_', class_id)}_{k}"
