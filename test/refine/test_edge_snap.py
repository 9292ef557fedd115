"""Snapping region measurements to the photo's edge (refine.edge_snap)."""

import torch

from pose_refiner_ros.refine.edge_snap import snap_to_edge

S = torch.linspace(-6.0, 6.0, 25)  # 0.5 px apart


def _line(edges):
    """(1, 3, 1, 25) colours of one line with soft steps ``(offset_px, size)``: the colour
    changes by ``size`` over about one pixel at each offset."""
    v = torch.zeros(25)
    for at, size in edges:
        v = v + size * torch.sigmoid((S - at) / 0.3)
    return v[None, None, None].expand(1, 3, 1, 25).clone()


def _snap(rgb, mean, window=2.0, min_change=0.05):
    ok = torch.ones(1, 1, 25, dtype=torch.bool)
    return snap_to_edge(rgb, ok, S, torch.tensor([[mean]]), window, min_change)[0, 0].item()


def test_estimate_moves_to_the_colour_change_with_sub_pixel_precision():
    # The region posterior said 0.0; the photo's boundary is 1.2 px further out.
    assert abs(_snap(_line([(1.2, 0.5)]), 0.0) - 1.2) < 0.15
    assert abs(_snap(_line([(-0.8, 0.5)]), 0.0) + 0.8) < 0.15


def test_a_faint_change_leaves_the_estimate_alone():
    assert abs(_snap(_line([(1.2, 0.02)]), 0.3) - 0.3) < 1e-6


def test_a_stronger_edge_outside_the_window_does_not_capture_it():
    # A clutter edge 5 px out, three times stronger than the object's edge at 0.5 px.
    out = _snap(_line([(0.5, 0.3), (5.0, 0.9)]), 0.0)
    assert abs(out - 0.5) < 0.2


def test_unusable_samples_are_not_searched():
    rgb = _line([(2.0, 0.5)])
    ok = torch.ones(1, 1, 25, dtype=torch.bool)
    ok[..., 14:] = False  # beyond +1 px nothing may be used (another object, the image end)
    out = snap_to_edge(rgb, ok, S, torch.tensor([[0.0]]), 2.0, 0.05)[0, 0].item()
    assert out == 0.0
