"""Overlays: mesh contours at given poses drawn on an image, readable at a glance
(the node's ``debug_image``, ``pose-refiner demo`` and ``refine --overlay``).

:func:`draw_overlay` draws, per :class:`OverlayObject`, the contour of its mesh at the
ground-truth pose (a wide light-blue band, drawn first so that it shows around a refined
contour lying on it), at the coarse pose (orange) and at the refined pose: green when the
result is trusted, dashed magenta when it is not (diverged, or below the confidence
threshold). Every line has a dark outline under it, so that it stands out on any
background, green clutter included. Each object gets a label (class, score, and "NOT
TRUSTED" or a note) on a dark box, and a legend names the kinds of line shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

#: RGB colours: coarse pose orange, trusted refined pose green, a refined pose that is not
#: trusted magenta (dashed), ground truth light blue (wide, under the others).
COARSE_RGB = (255, 150, 0)
REFINED_RGB = (40, 255, 40)
UNTRUSTED_RGB = (255, 40, 255)
GT_RGB = (90, 190, 255)
OUTLINE_RGB = (0, 0, 0)

#: kind -> (colour, line width in pixels, dashed, legend text); drawn in this order.
STYLES = {
    "gt": (GT_RGB, 8, False, "ground truth"),
    "coarse": (COARSE_RGB, 2, False, "coarse"),
    "refined": (REFINED_RGB, 2, False, "refined, trusted"),
    "untrusted": (UNTRUSTED_RGB, 2, True, "refined, NOT trusted"),
}


@dataclass(frozen=True)
class OverlayObject:
    """One object to draw; any pose may be None (not drawn).

    Attributes:
        class_id: the registered class (its mesh is drawn).
        T_coarse, T_refined, T_gt: (4, 4) ``T_cam_obj``, metres.
        score: the refiner's confidence in [0, 1], shown in the label; None: no score.
        trusted: False draws the refined pose dashed magenta and says so in the label.
        note: a few words added to the label (e.g. ``withheld``).
    """

    class_id: str
    T_coarse: np.ndarray | None = None
    T_refined: np.ndarray | None = None
    T_gt: np.ndarray | None = None
    score: float | None = None
    trusted: bool = True
    note: str = ""


def label_text(obj: OverlayObject) -> str:
    """The label of an object: ``mug 0.91``, ``box 0.12 NOT TRUSTED``, plus its note."""
    parts = [obj.class_id]
    if obj.score is not None:
        parts.append(f"{obj.score:.2f}")
    if obj.T_refined is not None and not obj.trusted:
        parts.append("NOT TRUSTED")
    if obj.note:
        parts.append(obj.note)
    return " ".join(parts)


def _kinds(obj: OverlayObject):
    """``(kind, T)`` of an object's poses, in drawing order."""
    out = [("gt", obj.T_gt), ("coarse", obj.T_coarse),
           ("refined" if obj.trusted else "untrusted", obj.T_refined)]
    return [(k, T) for k, T in out if T is not None]


def _polyline(img, pts, colour, width, dashed, dash_px=6, line=cv2.LINE_AA):
    if not dashed:
        cv2.polylines(img, [pts], True, colour, width, line)
        return
    closed = np.concatenate([pts, pts[:1]])
    for start in range(0, len(closed) - 1, 2 * dash_px):
        seg = closed[start:start + dash_px + 1]
        if len(seg) > 1:
            cv2.polylines(img, [seg], False, colour, width, line)


def _draw_contour(img, mask, kind) -> None:
    colour, width, dashed, _ = STYLES[kind]
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for c in contours:
        _polyline(img, c, OUTLINE_RGB, width + 2, dashed, line=cv2.LINE_8)  # solid pixels
    for c in contours:
        _polyline(img, c, colour, width, dashed)


def _font_scale(width: int) -> float:
    return float(np.clip(width / 900.0, 0.35, 0.8))


def _text_box(img, text, org, colour, scale) -> None:
    """``text`` at ``org`` (bottom-left) in ``colour`` on a dark box, kept inside the image."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    H, W = img.shape[:2]
    x = int(np.clip(org[0], 0, max(W - w - 4, 0)))
    y = int(np.clip(org[1], h + 3, H - base - 2))
    sub = img[y - h - 3:y + base + 2, x:x + w + 4]
    sub[:] = (sub * 0.25).astype(img.dtype)  # a dark box: readable on any background
    cv2.putText(img, text, (x + 2, y), font, scale, colour, 1, cv2.LINE_AA)


def _legend(img, kinds: Sequence[str], scale: float) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, h), _ = cv2.getTextSize("Ag", font, scale, 1)
    row = h + 8
    texts = [STYLES[k][3] for k in kinds]
    w = max(cv2.getTextSize(t, font, scale, 1)[0][0] for t in texts) + 36
    H, W = img.shape[:2]
    x0, y0 = W - w - 4, H - row * len(kinds) - 6
    if x0 < 0 or y0 < 0:
        return  # no room on a tiny image
    box = img[y0:H - 2, x0:W - 2]
    box[:] = (box * 0.25).astype(img.dtype)
    for i, k in enumerate(kinds):
        colour, width, dashed, text = STYLES[k]
        y = y0 + 4 + row * i + row // 2
        seg = np.array([[x0 + 6, y], [x0 + 26, y]], dtype=np.int32)[:, None]
        _polyline(img, seg, OUTLINE_RGB, min(width, 3) + 2, False)
        _polyline(img, seg, colour, min(width, 3), False)
        cv2.putText(img, text, (x0 + 32, y + h // 2), font, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)


def draw_overlay(image_rgb: np.ndarray, renderer, mesh_of: Callable, K: np.ndarray,
                 objects: Sequence[OverlayObject], legend: bool = True) -> np.ndarray:
    """A copy of ``image_rgb`` with every object's contours, labels and a legend.

    Args:
        image_rgb: (H, W, 3) uint8 RGB, undistorted.
        renderer: a ``render.Renderer`` (silhouettes of all poses in one call).
        mesh_of: ``class_id -> RenderMesh`` (e.g. ``Refiner.render_mesh``).
        K: (3, 3) intrinsics of the image, pixels.
        objects: what to draw (module docstring).
        legend: draw the legend (bottom right) of the kinds of line shown.
    """
    out = np.ascontiguousarray(image_rgb).copy()
    todo = [(i, k, T) for i, o in enumerate(objects) for k, T in _kinds(o)]
    if not todo:
        return out
    H, W = out.shape[:2]
    ids = list(dict.fromkeys(o.class_id for o in objects))
    meshes = [mesh_of(c) for c in ids]
    dev = meshes[0].verts_m.device
    T = torch.as_tensor(np.stack([t for _, _, t in todo]), dtype=torch.float32, device=dev)
    Kt = torch.as_tensor(np.array(K, dtype=np.float32), device=dev)[None].expand(len(todo), 3, 3)
    idx = torch.as_tensor([ids.index(objects[i].class_id) for i, _, _ in todo], device=dev)
    masks = renderer.render(meshes, idx, Kt, T, H, W).mask.cpu().numpy().astype(np.uint8)
    order = list(STYLES)
    drawn = sorted(range(len(todo)), key=lambda j: order.index(todo[j][1]))
    for j in drawn:
        _draw_contour(out, masks[j], todo[j][1])
    scale = _font_scale(W)
    for i, o in enumerate(objects):  # the label above the object's top-most drawn contour
        mine = [j for j in range(len(todo)) if todo[j][0] == i and masks[j].any()]
        if not mine:
            continue
        j = next((j for j in mine if todo[j][1] in ("refined", "untrusted")), mine[0])
        ys, xs = np.nonzero(masks[j])
        colour = STYLES[todo[j][1]][0] if todo[j][1] != "gt" else (255, 255, 255)
        _text_box(out, label_text(o), (int(xs.min()), int(ys.min()) - 4), colour, scale)
    if legend:
        _legend(out, [k for k in order if any(t[1] == k for t in todo)], scale)
    return out


def draw_contours(image_rgb: np.ndarray, renderer, meshes: Sequence, mesh_idx: Sequence[int],
                  K: np.ndarray, poses: Sequence[np.ndarray], color=REFINED_RGB,
                  thickness: int = 2) -> np.ndarray:
    """A copy of ``image_rgb`` (H, W, 3) uint8 with the silhouette contour of each mesh at
    each pose (``T_cam_obj`` (4, 4), metres) in ``color`` over a dark outline; no labels.

    Args:
        renderer: a ``render.Renderer``; meshes: ``RenderMesh`` list; mesh_idx: per pose.
        K: (3, 3) intrinsics of the image.
    """
    out = np.ascontiguousarray(image_rgb).copy()
    if len(poses) == 0:
        return out
    H, W = out.shape[:2]
    dev = meshes[0].verts_m.device
    T = torch.as_tensor(np.stack(poses), dtype=torch.float32, device=dev)
    Kt = torch.as_tensor(np.array(K, dtype=np.float32), device=dev)[None].expand(len(poses), 3, 3)
    idx = torch.as_tensor(list(mesh_idx), device=dev)
    masks = renderer.render(meshes, idx, Kt, T, H, W).mask.cpu().numpy().astype(np.uint8)
    for m in masks:
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness + 2, cv2.LINE_AA)
        cv2.drawContours(out, contours, -1, color, thickness, cv2.LINE_AA)
    return out
