"""Which topic of a bag is which: the image, its camera info, the coarse detections,
the depth and the ground truth, found by message type and by what the topic's name says,
or named by the user and checked. ``eval-bag`` and ``adapt`` read recordings through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import os

from .bag_io import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    DETECTIONS,
    IMAGE,
    POSE_STAMPED,
    BagError,
    BagReader,
)

__all__ = ["find_topic", "BagTopics", "resolve_topics"]


_ROLE_HINTS = {
    # role: (name parts that point to the role, name parts that point away from it)
    "image": (("color", "colour", "rgb", "image"), ("depth", "debug", "overlay", "mask")),
    "depth": (("depth",), ("color", "colour", "rgb", "debug")),
    "camera_info": (("camera_info",), ("depth",)),
    "detections": (("detection",), ("refined", "ground_truth", "groundtruth", "/gt")),
    "ground_truth": (("ground_truth", "groundtruth", "/gt"), ("refined",)),
}


def _score(topic: str, role: str) -> int:
    good, bad = _ROLE_HINTS[role]
    name = topic.lower()
    return sum(g in name for g in good) - 2 * sum(b in name for b in bad)


def find_topic(bag: BagReader, msgtype: str | Sequence[str], role: str,
               override: str | None = None, required: bool = True,
               near: str | None = None) -> str | None:
    """The topic of ``msgtype`` that plays ``role`` in the bag.

    With ``override`` that topic is checked and returned. Otherwise, among the topics of
    that type, the one whose name fits the role best (``_ROLE_HINTS``; e.g. a depth image
    has "depth" in its name), preferring, with ``near``, topics in the same namespace as
    that topic (the ``camera_info`` beside an image), then the type named first in
    ``msgtype`` (a raw image before its ``/compressed`` twin). A tie is an error that
    lists the candidates and the option to choose.

    Args:
        bag: an open bag.
        msgtype: the type, or several accepted types.
        role: one of ``image``, ``depth``, ``camera_info``, ``detections``, ``ground_truth``.
        override: the topic the user named, or None.
        required: when False, None is returned instead of raising if nothing fits.
        near: a topic whose namespace is preferred.

    Raises:
        BagError: no topic, an ambiguous choice, or ``override`` missing or of another type.
    """
    types = (msgtype,) if isinstance(msgtype, str) else tuple(msgtype)
    topics = bag.topics
    option = f"--{role.replace('_', '-')}-topic"
    if role == "ground_truth":
        option = "--gt-topic"
    if override:
        if override not in topics:
            raise BagError(
                f"{bag.path}: {option} {override!r}: no such topic; the bag has: "
                + ", ".join(f"{t} ({m})" for t, m in sorted(topics.items()))
            )
        if topics[override] not in types:
            raise BagError(
                f"{bag.path}: {option} {override!r} carries {topics[override]}, expected "
                + " or ".join(types)
            )
        return override
    candidates = sorted(t for t, m in topics.items() if m in types)
    if role in ("depth", "ground_truth"):  # optional roles: only when the name says so
        candidates = [t for t in candidates if _score(t, role) > 0]
    elif role == "image":
        candidates = [t for t in candidates if _score(t, "depth") <= 0] or candidates
    if not candidates:
        if not required:
            return None
        raise BagError(
            f"{bag.path}: no {' or '.join(types)} topic for the {role.replace('_', ' ')}; "
            f"name it with {option}. The bag has: "
            + (", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "no topics")
        )

    def key(t: str) -> tuple:
        ns_match = 0
        if near:
            ns_match = len(os.path.commonprefix([t.rsplit("/", 1)[0] + "/",
                                                  near.rsplit("/", 1)[0] + "/"]))
        return (_score(t, role), ns_match, -types.index(topics[t]))

    ranked = sorted(candidates, key=key, reverse=True)
    if len(ranked) > 1 and key(ranked[0]) == key(ranked[1]):
        tied = [t for t in ranked if key(t) == key(ranked[0])]
        raise BagError(
            f"{bag.path}: several {' or '.join(types)} topics could be the "
            f"{role.replace('_', ' ')}: {', '.join(tied)}; choose one with {option}"
        )
    return ranked[0]


@dataclass(frozen=True)
class BagTopics:
    """The input topics of a bag (None: not used)."""

    image: str
    camera_info: str
    detections: str
    depth: str | None = None
    ground_truth: str | None = None
    ground_truth_type: str | None = None


def resolve_topics(bag: BagReader, image: str | None = None, camera_info: str | None = None,
                   detections: str | None = None, depth: str | None = None,
                   ground_truth: str | None = None, use_depth: bool = False,
                   find_ground_truth: bool = True) -> BagTopics:
    """Find the input topics by type (and name hints), or check the ones named.

    Raises:
        BagError: a topic is missing or ambiguous; the message lists the bag's topics and
            the option that names the topic.
    """
    img = find_topic(bag, (IMAGE, COMPRESSED_IMAGE), "image", image)
    info = find_topic(bag, CAMERA_INFO, "camera_info", camera_info, near=img)
    gt = None
    if ground_truth or find_ground_truth:
        gt = find_topic(bag, (DETECTIONS, POSE_STAMPED), "ground_truth", ground_truth,
                          required=bool(ground_truth))
    dets = find_topic(bag, DETECTIONS, "detections", detections)
    if dets == gt:
        raise BagError(f"{bag.path}: {dets} cannot be both the detections and the ground truth; "
                         "name them with --detections-topic and --gt-topic")
    dep = None
    if use_depth or depth:
        dep = find_topic(bag, IMAGE, "depth", depth, required=True)
        if dep == img:
            raise BagError(f"{bag.path}: {img} cannot be both the image and the depth; name them "
                             "with --image-topic and --depth-topic")
    return BagTopics(img, info, dets, dep, gt, bag.topics[gt] if gt else None)
