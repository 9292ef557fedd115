"""Snapping a region measurement to the photo's edge.

The region modality (``refine.region``, ``refine.sparse_region``) finds where along each
contour line the pixels stop looking like the object's colours and start looking like
its surroundings'. On real photos that point lies inside the true boundary: the rim of
an object (shaded, blurred into the background, mixed colours) matches neither colour
model well and is counted as surroundings. Measured on real LM-O frames at the
ground-truth pose: the object probability crosses 0.5 about 0.3 to 0.5 crop pixels
inside the model's edge for every object, while the strongest colour change along the
same lines lies 0.25 to 1.25 image pixels *outside* it. Region-only solves started at the
truth shrank the silhouette: the objects drifted 1.2 % of their distance away (about
1.2 cm at 1 m), which alone fails ADD(-S)@0.1d for the small objects.

The colour change locates the boundary; the region posterior says which boundary (it
is robust to texture and clutter edges, which a pure edge search is not). So each line's
estimate is moved to the strongest colour change within a Gaussian window around the
posterior's mean (sub-pixel by a parabola through the peak), where that change is
strong enough to be an edge at all. Edge-based trackers (RAPiD and its successors)
search along the same normals for the strongest gradient; here the search is confined
to where the region model put the edge. Written here: no installable library measures
edges along given image lines.
"""

from __future__ import annotations

import torch

__all__ = ["snap_to_edge"]


def snap_to_edge(rgb: torch.Tensor, ok: torch.Tensor, s: torch.Tensor, mean: torch.Tensor,
                 window_px: float, min_change: float) -> torch.Tensor:
    """Move each line's edge estimate to the strongest nearby colour change.

    Args:
        rgb: (B, 3, N, M) the image's colours at the line samples, RGB in [0, 1].
        ok: (B, N, M) bool: the sample may be used.
        s: (M,) the samples' offsets along the line (pixels, evenly spaced, increasing).
        mean: (B, N) the region posterior's edge offset, pixels.
        window_px: standard deviation of the Gaussian window around ``mean``, pixels.
        min_change: a line keeps ``mean`` unless its strongest colour change (norm of
            the RGB difference across two samples), times the window, exceeds this.

    Returns:
        (B, N) the edge offsets, pixels.
    """
    if rgb.shape[-1] < 5:
        return mean
    step = s[1] - s[0]
    diff = rgb[..., 2:] - rgb[..., :-2]
    # (B, N, M-2), centred at s[1:-1]; the norm over channels written out (torch's norm
    # over a strided dimension cost several times more here).
    change = (diff[:, 0] ** 2 + diff[:, 1] ** 2 + diff[:, 2] ** 2).sqrt()
    sc = s[1:-1]
    usable = ok[..., 2:] & ok[..., :-2]
    win = torch.exp(-0.5 * ((sc - mean[..., None]) / window_px) ** 2)
    score = torch.where(usable, change * win, torch.zeros_like(change))
    j = score.argmax(-1).clamp(1, score.shape[-1] - 2)  # a neighbour on each side
    g0, g1, g2 = (score.gather(-1, (j + k)[..., None])[..., 0] for k in (-1, 0, 1))
    curv = g0 - 2.0 * g1 + g2
    frac = torch.where(curv < -1e-9, 0.5 * (g0 - g2) / curv.clamp_max(-1e-9),
                       torch.zeros_like(curv)).clamp(-0.5, 0.5)
    snapped = sc[j] + frac * step
    strong = g1 > min_change
    return torch.where(strong, snapped, mean)
