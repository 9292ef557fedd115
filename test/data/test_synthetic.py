"""Synthetic scenes and training crops: determinism, shapes, and exact geometry."""

import dataclasses

import numpy as np
import pytest
import torch

from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.data.synthetic import SyntheticConfig, generate_scene
from pose_refiner_ros.data.training_batch import draw_targets, make_training_batch

S = 64
SMALL = SyntheticConfig(image_width=160, image_height=120, focal_range_px=(150.0, 260.0),
                        apparent_size_px=(30.0, 90.0), objects_per_scene=(2, 3))
CLEAN = dataclasses.replace(  # no sensor effects, no occluders: exact geometry checks
    SMALL, noise_std_range=(0.0, 0.0), mult_noise_std=0.0, blur_prob=0.0,
    motion_blur_prob=0.0, jpeg_prob=0.0, depth_noise_m=(0.0, 0.0), depth_dropout_max=0.0,
    depth_hole_prob=0.0, depth_edge_drop_prob=0.0, depth_missing_prob=0.0,
    occluder_prob=0.0, occluder2d_prob=0.0, distractor_prob=0.0, occluders_per_scene=(0, 0),
    distractors_per_scene=(0, 0), crop_jitter_scale=0.0, crop_jitter_shift=0.0,
    simulate_resolution=False,
)


@pytest.fixture(scope="module")
def models():
    return procedural_models("train", 6, seed=1)  # index 0 is a box


@pytest.fixture(scope="module")
def renderer():
    from pose_refiner_ros.render.base import make_renderer

    return make_renderer("torch")


def _box_sdf(pts, half):
    """Signed distance of (N, 3) points to the origin-centred box of half extents ``half``."""
    q = np.abs(pts) - half
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)


def _unproject(depth, K, mask):
    v, u = np.nonzero(mask)
    z = depth[v, u]
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)


def _to_obj(T, pts_cam):
    R, t = T[:3, :3], T[:3, 3]
    return (pts_cam - t) @ R


def test_batch_shapes_and_determinism(models, renderer):
    a = make_training_batch(models, np.random.default_rng(3), 5, S, SMALL, renderer)
    b = make_training_batch(models, np.random.default_rng(3), 5, S, SMALL, renderer)
    c = make_training_batch(models, np.random.default_rng(4), 5, S, SMALL, renderer)
    shapes = {"image": (5, 3, S, S), "depth_m": (5, 1, S, S), "K_crop": (5, 3, 3),
              "box_xyxy": (5, 4), "T_gt": (5, 4, 4), "T_init": (5, 4, 4), "mesh_idx": (5,),
              "visib_mask": (5, 1, S, S), "mask_gt": (5, 1, S, S), "depth_gt_m": (5, 1, S, S),
              "visib_fract": (5,), "K": (5, 3, 3)}
    for k, shape in shapes.items():
        assert tuple(a[k].shape) == shape, k
        assert torch.equal(a[k], b[k]), f"{k} differs between equal seeds"
    assert not torch.equal(a["image"], c["image"])
    assert a["image"].dtype == torch.float32 and 0 <= a["image"].min() <= a["image"].max() <= 1
    assert a["mesh_idx"].dtype == torch.int64 and a["visib_mask"].dtype == torch.bool
    assert int(a["mesh_idx"].max()) < len(models)
    assert (a["depth_m"] >= 0).all()
    assert (a["visib_mask"] <= a["mask_gt"]).all()


def test_batch_geometry_is_exact(models, renderer):
    from pose_refiner_ros.geometry.crop import Crop, compute_crops, crop_images

    box_model = models[0]
    assert "box" in box_model.class_id
    half = (np.asarray(box_model.bbox_max_m) - np.asarray(box_model.bbox_min_m)) / 2
    B = 6
    batch = make_training_batch([box_model], np.random.default_rng(0), B, S, CLEAN, renderer)
    K_crop, T_gt = batch["K_crop"].double().numpy(), batch["T_gt"].double().numpy()
    for b in range(B):
        # depth at the visible pixels, unprojected with K_crop and moved into the object
        # frame with T_gt^-1, lies on the box surface
        for key, tol in (("depth_gt_m", 2e-4), ("depth_m", 1.5e-3)):  # sensor: 1 mm steps
            d = batch[key][b, 0].double().numpy()
            m = batch["visib_mask"][b, 0].numpy() & (d > 0)
            assert m.sum() > 20
            pts = _to_obj(T_gt[b], _unproject(d, K_crop[b], m))
            err = np.abs(_box_sdf(pts, half))
            assert np.median(err) < tol and np.quantile(err, 0.98) < 5 * tol, key

    # the crop is the T_init window, and K_crop / box_xyxy agree with crop_images
    K = batch["K"]
    corners = torch.tensor(np.array(box_model.bbox_corners_m), dtype=torch.float32)
    crop = compute_crops(K, batch["T_init"], corners.expand(B, 8, 3), S, margin=CLEAN.crop_margin)
    torch.testing.assert_close(crop.box_xyxy, batch["box_xyxy"])
    torch.testing.assert_close(crop.K_crop, batch["K_crop"])
    from pose_refiner_ros.data.synthetic import _render_meshes

    full = renderer.render(_render_meshes([box_model]), torch.zeros(B, dtype=torch.int64), K,
                           batch["T_gt"], CLEAN.image_height, CLEAN.image_width)
    cut = crop_images(full.mask[:, None].float(), Crop(batch["box_xyxy"], batch["K_crop"], S),
                      mode="nearest") > 0.5
    for b in range(B):
        if float(batch["box_xyxy"][b, 2] - batch["box_xyxy"][b, 0]) < S:
            continue  # the full image is coarser than the crop: nearest sampling differs
        inter = (cut[b] & batch["mask_gt"][b]).sum()
        union = (cut[b] | batch["mask_gt"][b]).sum()
        assert inter / union > 0.9


def test_crop_jitter_keeps_labels_exact(models, renderer):
    cfg = dataclasses.replace(CLEAN, crop_jitter_scale=0.2, crop_jitter_shift=0.1)
    box_model = models[0]
    half = (np.asarray(box_model.bbox_max_m) - np.asarray(box_model.bbox_min_m)) / 2
    batch = make_training_batch([box_model], np.random.default_rng(1), 4, S, cfg, renderer)
    for b in range(4):
        d = batch["depth_gt_m"][b, 0].double().numpy()
        m = batch["visib_mask"][b, 0].numpy()
        pts = _to_obj(batch["T_gt"][b].double().numpy(),
                      _unproject(d, batch["K_crop"][b].double().numpy(), m))
        assert np.median(np.abs(_box_sdf(pts, half))) < 2e-4
        # K_crop maps the box's outer edges to the crop's outer edges
        M = batch["K_crop"][b].double() @ torch.linalg.inv(batch["K"][b].double())
        x0, y0, x1, y1 = batch["box_xyxy"][b].double().tolist()
        lo = M @ torch.tensor([x0, y0, 1.0], dtype=torch.float64)
        hi = M @ torch.tensor([x1, y1, 1.0], dtype=torch.float64)
        torch.testing.assert_close(lo[:2], torch.tensor([-0.5, -0.5], dtype=torch.float64),
                                   atol=1e-3, rtol=0)
        torch.testing.assert_close(hi[:2], torch.tensor([S - 0.5, S - 0.5],
                                                        dtype=torch.float64), atol=1e-3, rtol=0)


def test_scene(models, renderer):
    sc = generate_scene(models, np.random.default_rng(2), CLEAN, renderer)
    again = generate_scene(models, np.random.default_rng(2), CLEAN, renderer)
    H, W = CLEAN.image_height, CLEAN.image_width
    assert sc.image_rgb.shape == (H, W, 3) and sc.image_rgb.dtype == np.uint8
    assert sc.depth_m.shape == (H, W) and sc.depth_m.dtype == np.float32
    assert sc.instance_map.shape == (H, W)
    np.testing.assert_array_equal(sc.image_rgb, again.image_rgb)
    assert 2 <= len(sc.objects) <= 3
    for j, o in enumerate(sc.objects):
        assert 0.0 <= o.visib_fract <= 1.0
        assert o.T_cam_obj_gt.shape == (4, 4) and not np.allclose(o.T_cam_obj_gt,
                                                                    o.T_cam_obj_init)
        vis = sc.instance_map == j
        assert vis.sum() == pytest.approx(o.visib_fract * sc.mask_full[j].sum(), abs=1)
        # the silhouette's centroid lies near the projected origin (bbox centre)
        if o.visib_fract > 0.95:
            v, u = np.nonzero(sc.mask_full[j])
            p = sc.K @ o.T_cam_obj_gt[:3, 3]
            r = np.sqrt(sc.mask_full[j].sum() / np.pi)
            assert np.hypot(u.mean() - p[0] / p[2], v.mean() - p[1] / p[2]) < 0.35 * r

    # one scene of box objects: depth of visible pixels lies on the box
    box_model = models[0]
    half = (np.asarray(box_model.bbox_max_m) - np.asarray(box_model.bbox_min_m)) / 2
    sc = generate_scene([box_model], np.random.default_rng(5), CLEAN, renderer)
    for j, o in enumerate(sc.objects):
        m = (sc.instance_map == j) & (sc.depth_m > 0)
        pts = _to_obj(o.T_cam_obj_gt, _unproject(sc.depth_m.astype(np.float64), sc.K, m))
        assert np.median(np.abs(_box_sdf(pts, half))) < 1.5e-3


def test_photo_backgrounds_come_from_the_bundled_photographs():
    """photo_background_prob draws real photographs shipped in scikit-image's wheel."""
    from dataclasses import replace

    from pose_refiner_ros.data import backgrounds as bg
    from pose_refiner_ros.data import synthetic as syn

    rng = np.random.default_rng(0)
    cfg = replace(syn.SyntheticConfig(), photo_background_prob=1.0)
    imgs = [bg._background(rng, 48, 64, cfg) for _ in range(6)]
    for im in imgs:
        assert im.shape == (48, 64, 3) and im.dtype == np.uint8
    # Different photographs / crops, with texture (a photo is not a flat colour).
    assert len({im.tobytes() for im in imgs}) == 6
    assert all(im.std() > 3 for im in imgs)
    assert len(bg._photos()) == len(bg.PHOTO_NAMES)


def test_targets_follow_the_given_probabilities(models, renderer):
    """A batch's targets are drawn with ``target_probs`` (fine-tuning weights the user's
    meshes); without it, uniformly, as before."""
    rng = np.random.default_rng(0)
    counts = np.bincount(draw_targets(rng, 4, 4000, [0.7, 0.1, 0.1, 0.1]), minlength=4)
    assert abs(counts[0] / 4000 - 0.7) < 0.03 and counts[1:].min() > 300
    assert set(draw_targets(rng, 3, 200).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="target_probs: expected 3"):
        draw_targets(rng, 3, 5, [0.5, 0.5])
    batch = make_training_batch(models[:3], np.random.default_rng(1), 4, 16, CLEAN, renderer,
                                target_probs=[0.0, 1.0, 0.0])
    assert batch["mesh_idx"].tolist() == [1, 1, 1, 1]
