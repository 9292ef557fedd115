"""Overlays: mesh contours at given poses drawn on an image (debug images, demo, reports)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

#: BGR-free RGB colours: coarse pose in orange, refined pose in green.
COARSE_RGB = (255, 140, 0)
REFINED_RGB = (0, 220, 0)


def draw_contours(
    image_rgb: np.ndarray,
    renderer,
    meshes: Sequence,
    mesh_idx: Sequence[int],
    K: np.ndarray,
    poses: Sequence[np.ndarray],
    color=REFINED_RGB,
    thickness: int = 2,
) -> np.ndarray:
    """Return a copy of ``image_rgb`` (H, W, 3) uint8 with the silhouette contour of each
    mesh at each pose (``T_cam_obj`` (4, 4), metres) drawn in ``color``.

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
    Kt = torch.as_tensor(np.array(K, dtype=np.float32), device=dev)[None].expand(
        len(poses), 3, 3
    )
    idx = torch.as_tensor(list(mesh_idx), device=dev)
    masks = renderer.render(meshes, idx, Kt, T, H, W).mask.cpu().numpy().astype(np.uint8)
    for m in masks:
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, thickness)
    return out
