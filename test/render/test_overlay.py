"""Overlays (``render.overlay``): labels, trusted vs not, outlines, legend, ground truth
under the refined contour; drawn on plain backgrounds with a demo mesh."""

import numpy as np
import pytest

from pose_refiner_ros.mesh.registry import ObjectRegistry
from pose_refiner_ros.render.base import RenderMesh, make_renderer
from pose_refiner_ros.render.overlay import (
    GT_RGB,
    REFINED_RGB,
    UNTRUSTED_RGB,
    OverlayObject,
    draw_overlay,
    label_text,
)
from pose_refiner_ros.resources import share_dir

W, H = 320, 240
K = np.array([[300.0, 0, W / 2], [0, 300.0, H / 2], [0, 0, 1]])


@pytest.fixture(scope="module")
def draw():
    registry = ObjectRegistry.from_yaml(share_dir() / "models" / "demo" / "objects.yaml")
    renderer = make_renderer("torch")
    meshes = {}

    def mesh_of(cid):
        return meshes.setdefault(cid, RenderMesh.from_object(registry[cid], "cpu"))

    def run(objects, background=(0, 200, 0), legend=True):
        img = np.empty((H, W, 3), np.uint8)
        img[:] = background
        return draw_overlay(img, renderer, mesh_of, K, objects, legend=legend)

    return run


def _pose(x=0.0, z=0.6):
    T = np.eye(4)
    T[:3, 3] = (x, 0.0, z)
    return T


def _count(img, rgb, tol=10):
    return int((np.abs(img.astype(int) - rgb).max(-1) <= tol).sum())


def test_labels_say_class_score_and_trust():
    assert label_text(OverlayObject("mug", T_refined=_pose(), score=0.912)) == "mug 0.91"
    assert label_text(OverlayObject("box", T_refined=_pose(), score=0.1, trusted=False,
                                    note="withheld")) == "box 0.10 NOT TRUSTED withheld"
    assert label_text(OverlayObject("box", T_coarse=_pose())) == "box"


@pytest.mark.parametrize("background", [(0, 200, 0), (40, 255, 40), (0, 0, 0), (255, 255, 255)])
def test_a_trusted_contour_shows_on_any_background(draw, background):
    img = draw([OverlayObject("mug", T_refined=_pose(), score=0.9)], background, legend=False)
    line = _count(img, REFINED_RGB, 30)
    dark = int((img[H // 2:].max(-1) < 90).sum())  # the outline (the label is further up)
    assert line > 100  # the green line
    if max(background) > 60:
        assert dark > 50  # with its dark outline, even on green
    changed = (img != np.array(background, np.uint8)).any(-1).sum()
    assert changed > 300


def test_a_diverged_object_is_drawn_differently(draw):
    ok = draw([OverlayObject("mug", T_refined=_pose(), score=0.9)], legend=False)
    bad = draw([OverlayObject("mug", T_refined=_pose(), score=0.1, trusted=False)], legend=False)
    assert _count(ok, UNTRUSTED_RGB, 30) == 0 and _count(ok, REFINED_RGB, 30) > 100
    assert _count(bad, REFINED_RGB, 30) == 0 and _count(bad, UNTRUSTED_RGB, 30) > 50
    assert _count(bad, UNTRUSTED_RGB, 30) < 0.8 * _count(ok, REFINED_RGB, 30)  # dashed


def test_ground_truth_stays_visible_under_a_refined_contour_on_it(draw):
    both = draw([OverlayObject("mug", T_refined=_pose(), T_gt=_pose(), score=0.9)],
                (80, 80, 80), legend=False)
    assert _count(both, GT_RGB, 30) > 100 and _count(both, REFINED_RGB, 30) > 100


def test_label_and_legend_are_drawn(draw):
    obj = OverlayObject("mug", T_coarse=_pose(0.05), T_refined=_pose(), score=0.9)
    plain = draw([obj], (128, 128, 128), legend=False)
    with_legend = draw([obj], (128, 128, 128), legend=True)
    corner = (slice(H - 60, H), slice(W - 150, W))
    assert (plain[corner] == 128).all()
    assert (with_legend[corner] != 128).any(-1).sum() > 500  # the legend, bottom right
    # The label sits above the refined contour: text in the label's colour there.
    rows = np.nonzero((np.abs(plain.astype(int) - REFINED_RGB).max(-1) < 30).any(1))[0]
    top = rows.min()
    assert _count(plain[: top + 2], REFINED_RGB, 60) > 10


def test_nothing_to_draw_returns_a_copy(draw):
    img = draw([], legend=True)
    assert (img == np.array((0, 200, 0), np.uint8)).all()
