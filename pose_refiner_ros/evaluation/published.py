"""Metrics as the node publishes, beside those of every refined object.

The node publishes an object's refined pose only when the refinement is confident: not
diverged and ``score >= confidence_threshold`` (``ros.params``). Below it, the object is
withheld (``low_confidence_action: drop``, the default) or published with its coarse pose
(``publish_coarse``). ``eval-bag`` reports both: the metrics of every refined object,
which include poses nobody would see, and those of what a subscriber receives.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import metrics as M

__all__ = ["as_published", "published_lines"]


def as_published(init: Sequence, ref: Sequence, published: Sequence[str | None]) -> dict | None:
    """The coarse-vs-published comparison of the objects a subscriber receives.

    Args:
        init, ref: ``PoseMetrics`` of the coarse and refined pose of each object with
            ground truth.
        published: ``ros.publish_rules.publish_decision`` of each, or None (no node
            rule: returns None).

    Returns:
        ``{"objects", "published", "withheld", "published_coarse", "metrics"}``;
        ``metrics`` is :func:`metrics.compare` of the coarse poses and the poses
        published (refined, or coarse under ``publish_coarse``), None when none is.
    """
    if not published or any(p is None for p in published):
        return None
    idx = [i for i, p in enumerate(published) if p]
    chosen = [ref[i] if published[i] == "refined" else init[i] for i in idx]
    return {"objects": len(published), "published": len(idx),
            "withheld": len(published) - len(idx),
            "published_coarse": sum(p == "coarse" for p in published),
            "metrics": M.compare([init[i] for i in idx], chosen) if idx else None}


def published_lines(ap: dict | None, threshold: float | None) -> list[str]:
    """A few lines on what is published: counts, and the main metrics coarse vs published."""
    if not ap:
        return []
    t = "" if threshold is None else f" (confidence_threshold {threshold:g})"
    lines = [f"as published{t}: {ap['published']} of {ap['objects']} objects "
             f"({ap['withheld']} withheld, {ap['published_coarse']} with their coarse pose)"]
    m = ap["metrics"]
    if m:
        a, b = m["initial"], m["refined"]
        lines.append(f"  of those, ADD(-S)@0.1d {100 * a['acc_add_or_adds_0.1d']:.1f}% -> "
                     f"{100 * b['acc_add_or_adds_0.1d']:.1f}%, median e_R "
                     f"{a['median_e_R_deg']:.1f} -> {b['median_e_R_deg']:.1f} deg, made worse "
                     f"{m['n_worse']['add_or_adds_m']} of {m['n']}")
    return lines
