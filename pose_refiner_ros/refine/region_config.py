"""Settings of the region (silhouette) modality (``refine.region``), apart from its
measurements: which lines, bands, colour bins and weights, and their checks.

Lengths are crop pixels of the refiner's zoom-in crop (the render-free steps' scaled
pixels, ``refine.sparse_region``), unless named otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RegionConfig"]


@dataclass(frozen=True)
class RegionConfig:
    """Settings of the region modality (defaults chosen on real images, see README).

    Attributes:
        weight: scale of the contour residuals relative to the learned field's pixel
            residuals; 0 turns the modality off.
        with_depth: also run when a depth image is given (RGB-D); off by default: the
            RGB-D path (depth residuals and polish) was measured without it.
        points: contour points per object at most.
        half_len_px: half length of the lines, crop pixels, per outer iteration; the
            last value repeats for later iterations.
        samples: samples per line (odd).
        bins: histogram bins per colour channel.
        band_px: width of the bands inside and outside the silhouette whose colours
            build the colour model, crop pixels.
        band_samples: the render-free lines (``track.measure``, ``refine.sparse_region``)
            read each band at this many offsets at most, spread evenly from ``gap_px`` to
            ``band_px`` (:meth:`band_offsets`): a wide band's colours without the cost of
            reading every pixel of it.
        gap_px: pixels this close to the rendered edge are in neither band.
        eps: ``p_f`` is kept within ``[eps, 1 - eps]`` (robustness to colour-model errors).
        min_std_px: floor of a line's standard deviation, crop pixels.
        std_fraction: the residual weights floor the standard deviation at this share
            of the line's half length as well (:meth:`line_weights`).
        huber_px: Huber threshold of the contour residuals, crop pixels.
        sigma_px: blur of the rendered mask for normals and the sub-pixel edge.
        agree_px: the region score counts a contour point whose edge is found within
            this distance.
        edge_snap_px: each line's edge estimate moves to the strongest colour change
            within a Gaussian window of this standard deviation around it
            (``refine.edge_snap``); 0 turns it off. On real images (lmo-dev) the region
            posterior alone put the edge inside the photo's boundary and drew objects
            away by 1.2 % of their distance.
        edge_min_change: the colour change (RGB norm across two samples, times the
            window) below which a line keeps the posterior's estimate.
        outlier_px: on lines no longer than ``outlier_max_half_px`` (the fine steps), a
            line whose edge is found further than this from the model's edge (crop
            pixels) counts less: its weight is divided by ``1 + ((|offset| -
            outlier_px) / outlier_scale_px)^2`` (:meth:`outlier_factor`), a Cauchy
            weight beyond a dead zone. Under the Huber loss alone an edge far off pulls
            with a constant force, and a stretch of them (an occluder the refiner does
            not know, clutter of the object's colours) moves the pose. 0 turns it off
            (the tracker's default; the refiner's is 2, see ``RefinerConfig.region``).
        outlier_scale_px, outlier_max_half_px: see ``outlier_px``.
    """

    weight: float = 1.0
    with_depth: bool = False
    points: int = 200
    half_len_px: tuple = (24.0, 16.0, 8.0, 6.0)
    samples: int = 25
    bins: int = 16
    band_px: int = 12
    gap_px: int = 2
    band_samples: int = 12
    eps: float = 0.1
    min_std_px: float = 0.5
    std_fraction: float = 0.0
    huber_px: float = 2.0
    sigma_px: float = 1.0
    agree_px: float = 1.5
    edge_snap_px: float = 2.0
    edge_min_change: float = 0.05
    outlier_px: float = 0.0
    outlier_scale_px: float = 1.5
    outlier_max_half_px: float = 8.0

    def line_weights(self, mean_px, var_px2, seen, half_len_px: float):
        """``(weights, huber)`` of the contour residuals of lines of half length
        ``half_len_px``, for every user of the lines (the loop's rendered lines, the
        render-free steps, the tracker): ``floor^2 / max(variance, floor^2)`` for the
        ``seen`` lines (0 for the others), with the standard deviation floor ``max(min_std_px,
        std_fraction * half_len_px)``, times :meth:`outlier_factor`; the Huber threshold is
        ``huber_px``, at least the floor. ``mean_px``, ``var_px2``, ``seen``: NumPy arrays
        or torch tensors of one shape; the weights come back as the same kind, before
        ``weight`` scales them."""
        floor = max(self.min_std_px, self.std_fraction * half_len_px)
        f2 = floor**2
        var = var_px2.clamp_min(f2) if hasattr(var_px2, "clamp_min") else np.maximum(var_px2, f2)
        w = seen * (f2 / var)
        return w * self.outlier_factor(mean_px, half_len_px), max(self.huber_px, floor)

    def outlier_factor(self, mean_px, half_len_px: float):
        """The factor (1, or an array shaped as ``mean_px``) by which ``outlier_px``
        scales the lines' weights: ``mean_px`` the edges' offsets from the model's edge
        (a NumPy array or a torch tensor), ``half_len_px`` the lines' half length."""
        if self.outlier_px <= 0 or half_len_px > self.outlier_max_half_px:
            return 1.0
        e = (abs(mean_px) - self.outlier_px) / self.outlier_scale_px
        e = e * (e > 0)
        return 1.0 / (1.0 + e * e)

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"region.weight: expected >= 0, got {self.weight}")
        if self.points < 8:
            raise ValueError(f"region.points: expected >= 8, got {self.points}")
        hl = tuple(float(x) for x in (self.half_len_px if isinstance(self.half_len_px,
                                                                     (list, tuple))
                                      else [self.half_len_px]))
        if not hl or min(hl) <= 0:
            raise ValueError(f"region.half_len_px: expected positive lengths, got {hl}")
        object.__setattr__(self, "half_len_px", hl)
        if self.samples < 5 or self.samples % 2 == 0:
            raise ValueError(f"region.samples: expected an odd number >= 5, got {self.samples}")
        if not 2 <= self.bins <= 64:
            raise ValueError(f"region.bins: expected 2 to 64, got {self.bins}")
        if self.band_px < 1:
            raise ValueError(f"region.band_px: expected >= 1, got {self.band_px}")
        if not 0 <= self.gap_px < self.band_px:
            raise ValueError(f"region.gap_px: expected 0 <= gap_px < band_px, got {self.gap_px}")
        if self.band_samples < 1:
            raise ValueError(f"region.band_samples: expected >= 1, got {self.band_samples}")
        if not 0 < self.eps < 0.5:
            raise ValueError(f"region.eps: expected in (0, 0.5), got {self.eps}")
        if self.edge_snap_px < 0 or self.edge_min_change < 0:
            raise ValueError("region.edge_snap_px, region.edge_min_change: expected >= 0, got "
                             f"{self.edge_snap_px}, {self.edge_min_change}")
        if self.outlier_px < 0 or self.outlier_scale_px <= 0:
            raise ValueError("region.outlier_px, region.outlier_scale_px: expected >= 0 and "
                             f"> 0, got {self.outlier_px}, {self.outlier_scale_px}")
        for name in ("min_std_px", "huber_px", "sigma_px", "agree_px"):
            if getattr(self, name) <= 0:
                raise ValueError(f"region.{name}: expected > 0, got {getattr(self, name)}")

    def half_len(self, iteration: int) -> float:
        """The line half length of outer iteration ``iteration`` (0-based)."""
        return self.half_len_px[min(iteration, len(self.half_len_px) - 1)]

    def band_offsets(self) -> np.ndarray:
        """(A,) float64 distances from the edge (pixels, positive) at which the
        render-free lines read the colour bands, on both sides: every pixel from
        ``gap_px`` to ``band_px`` (pixel centres), or ``band_samples`` of them spread
        evenly when the band is wider."""
        if self.band_px - self.gap_px <= self.band_samples:
            return np.arange(self.gap_px, self.band_px, dtype=np.float64) + 0.5
        return np.linspace(self.gap_px + 0.5, self.band_px - 0.5, self.band_samples)
