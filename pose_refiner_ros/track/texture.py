"""The tracker's texture modality: the object's surface followed from frame to frame.

The silhouette (``track.measure``) fixes where the object's outline is, but a small or
far object's distance and its rotation about the viewing ray are weak in it, and an
object coloured like its surroundings gives it little to hold on to. Whatever texture
the object shows inside its outline is a second cue (M3T, Stoiber et al. 2022, adds a
texture modality to ICG for the same reason): corners inside the object's projected
surface in the previous frame (OpenCV's ``goodFeaturesToTrack``) are followed into this
frame by pyramidal Lucas-Kanade optical flow, kept when the flow run backwards returns
them to where they started, and lifted onto the surface at the previous frame's pose
(the pixel's ray meets the tangent plane of the nearest visible surface point of the
viewpoint model); each becomes a 2D-3D correspondence for this frame's solve
(``track.solve.PointResiduals``). Measured on 8 synthetic 120-frame sequences (RGB, the
object reset to the truth when lost): 46.8 -> 49.5 % ADD(-S)@0.1d, no sequence worse by
more than a point, +0.4 ms per object and frame.

It ties each frame to the previous one, so it carries whatever error the previous pose
had; the silhouette, measured afresh in every frame, is what pulls the pose back.
Untextured surfaces give no corners.

Units: pixels of the full image (centre of the top-left pixel at (0, 0)); points in the
object frame, metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .measure import ViewArrays

__all__ = ["TextureConfig", "follow_surface"]


@dataclass(frozen=True)
class TextureConfig:
    """Settings of the texture modality.

    Attributes:
        weight: weight of a followed point relative to a contour line; 0 (default) turns
            it off. Measured on 8 tracking sequences of 300 frames (RGB, one thread): off,
            58.4% / 23.5% ADD(-S)@0.1d on sequences 0-3 / 4-7 at 4.3 ms per object and
            frame; at 0.3, 54.1% / 18.4% at 5.5 ms. The points are lifted at the previous
            pose, so they carry its error forward instead of correcting it.
        huber_px: Huber threshold of its residual, crop pixels.
        max_points: surface points followed per object at most.
        window_px: Lucas-Kanade window side, image pixels (odd).
        levels: pyramid levels above the image.
        max_fb_px: a point must come back within this of where it started (image pixels).
        min_eig: OpenCV's minimum eigenvalue of the window's gradient matrix (texture).
    """

    weight: float = 0.0
    huber_px: float = 0.5
    max_points: int = 100
    window_px: int = 11
    levels: int = 1
    max_fb_px: float = 0.5
    min_eig: float = 1e-3

    def __post_init__(self):
        if self.weight < 0 or self.huber_px <= 0 or self.max_points < 1:
            raise ValueError("texture: expected weight >= 0, huber_px > 0, max_points >= 1; "
                             f"got {self.weight}, {self.huber_px}, {self.max_points}")
        if self.window_px < 3 or self.window_px % 2 == 0 or self.levels < 0:
            raise ValueError("texture: expected an odd window_px >= 3 and levels >= 0; got "
                             f"{self.window_px}, {self.levels}")


def follow_surface(va: ViewArrays, T_prev: np.ndarray, K: np.ndarray, grey_prev: np.ndarray,
                   grey: np.ndarray, cfg: TextureConfig):
    """Follow the visible surface points from the previous frame into this one.

    Args:
        va: the object's viewpoint model; T_prev: (4, 4) its pose in the previous frame.
        K: (3, 3) intrinsics of both frames; grey_prev, grey: (H, W) uint8 frames.
        cfg: settings.

    Returns:
        ``(pts_obj (n, 3), uv (n, 2))``: the followed points (object frame, metres) and
        where they are in this frame (image pixels); empty when none could be followed.
    """
    view = va.nearest_view(T_prev)
    pts = va.surf_pts[view][va.surf_valid[view]]
    nrm = va.surf_normals[view][va.surf_valid[view]]
    R, t = T_prev[:3, :3], T_prev[:3, 3]
    pc = pts @ R.T + t
    H, W = grey.shape
    f, c = np.array([K[0, 0], K[1, 1]]), K[:2, 2]
    front = pc[:, 2] > 1e-3
    pts, nrm, pc = pts[front], nrm[front], pc[front]
    empty = np.zeros((0, 3)), np.zeros((0, 2))
    if len(pts) < 3:
        return empty
    uv_s = pc[:, :2] / pc[:, 2:] * f + c
    # Only the window around the object is read (both frames, the same window, grown by
    # the flow's reach): corners worth following inside the hull of the projected
    # surface, eroded so that a window does not straddle the outline, where the
    # background moves differently.
    reach = cfg.window_px * 2 ** cfg.levels
    lo = np.maximum(np.floor(uv_s.min(0)) - reach, 0).astype(int)
    hi = np.minimum(np.ceil(uv_s.max(0)) + reach + 1, [W, H]).astype(int)
    if np.any(hi - lo < cfg.window_px):
        return empty
    g0, g1 = (g[lo[1]:hi[1], lo[0]:hi[0]] for g in (grey_prev, grey))
    hull = cv2.convexHull((uv_s - lo).astype(np.float32))
    mask = np.zeros(g0.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull[:, 0]).astype(np.int32), 255)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
    corners = cv2.goodFeaturesToTrack(g0, cfg.max_points, 0.01, 3, mask=mask)
    if corners is None:
        return empty
    uv0 = corners.astype(np.float32)
    lk = dict(winSize=(cfg.window_px, cfg.window_px), maxLevel=cfg.levels,
              minEigThreshold=cfg.min_eig,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03))
    uv1, st1, _ = cv2.calcOpticalFlowPyrLK(g0, g1, uv0, None, **lk)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, uv1, None, **lk)
    ok = ((st1[:, 0] == 1) & (st2[:, 0] == 1)
          & (np.linalg.norm(back[:, 0] - uv0[:, 0], axis=1) < cfg.max_fb_px))
    if not ok.any():
        return empty
    q0, q1 = uv0[ok, 0].astype(np.float64) + lo, uv1[ok, 0].astype(np.float64) + lo
    # Lift each corner to 3D: its ray meets the tangent plane of the nearest projected
    # surface point (exact on flat faces, first order elsewhere).
    near = np.argmin(((q0[:, None] - uv_s[None]) ** 2).sum(-1), 1)
    ray = np.concatenate([(q0 - c) / f, np.ones((len(q0), 1))], 1)
    n_cam = nrm[near] @ R.T
    den = (ray * n_cam).sum(1)
    lam = (pc[near] * n_cam).sum(1) / np.where(np.abs(den) > 1e-6, den, 1e-6)
    good = (np.abs(den) > 0.2) & (lam > 1e-3)
    X = ray[good] * lam[good, None]
    return (X - t) @ R, q1[good]
