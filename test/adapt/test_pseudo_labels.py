"""Self-supervised adaptation, its first two parts: pseudo-poses from the refiner's own
confident results (no ground truth anywhere in a recording frame), and training crops
cut from the real frames at those poses, in the trainer's batch format."""

from dataclasses import fields

import numpy as np
import pytest
import torch

from pose_refiner_ros.adapt.pseudo_labels import AdaptFrame, PseudoLabel, PseudoLabels, pseudo_label
from pose_refiner_ros.adapt.real_batch import real_training_batch
from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.data.synthetic import SyntheticConfig, generate_scene
from pose_refiner_ros.evaluation import metrics as M
from pose_refiner_ros.geometry.crop import Crop, crop_images
from pose_refiner_ros.mesh.registry import ObjectRegistry
from pose_refiner_ros.refine.refiner import Refiner, RefinerConfig
from pose_refiner_ros.render.base import RenderMesh, make_renderer

SYN = SyntheticConfig(image_width=320, image_height=240, distractor_prob=0.0,
                      occluder_prob=0.0)


@pytest.fixture(scope="module")
def recording():
    models = procedural_models("bench", 6, seed=3)
    rng = np.random.default_rng(11)
    scenes = [generate_scene(models, rng, SYN) for _ in range(3)]
    frames = [AdaptFrame(f"frame {i}", sc.image_rgb, sc.K,
                         [(o.class_id, o.T_cam_obj_init) for o in sc.objects])
              for i, sc in enumerate(scenes)]
    return models, scenes, frames


def test_a_recording_frame_has_no_place_for_ground_truth():
    names = {f.name for f in fields(AdaptFrame)}
    assert names == {"key", "image_rgb", "K", "detections", "depth_m"}


def test_pseudo_poses_are_the_confident_refinements(recording):
    models, scenes, frames = recording
    by_id = {m.class_id: m for m in models}
    refiner = Refiner(ObjectRegistry(models), RefinerConfig(mode="region"))
    out = pseudo_label(refiner, frames, min_score=0.5)
    c = out.counts
    assert c["detections"] == sum(len(f.detections) for f in frames) > 0
    assert c["accepted"] + c["not_trusted"] + c["low_score"] == c["detections"]
    assert c["accepted"] == len(out.labels) > 0
    assert [len(p) for p in out.frame_poses] == [len(f.detections) for f in frames]
    assert all(lab.score >= 0.5 for lab in out.labels)
    # Accepted pseudo-poses are closer to the truth than the detections they came from.
    err_coarse, err_label = [], []
    for lab in out.labels:
        obj = next(o for o in scenes[lab.frame].objects if o.class_id == lab.class_id)
        m = by_id[lab.class_id]
        kw = dict(pts_obj=m.points_m, K=scenes[lab.frame].K, image_size=(320, 240),
                  diameter_m=m.diameter_m, symmetries=m.symmetries)
        err_coarse.append(M.evaluate_pose(obj.T_cam_obj_init, obj.T_cam_obj_gt, **kw).add_m)
        err_label.append(M.evaluate_pose(lab.T_cam_obj, obj.T_cam_obj_gt, **kw).add_m)
    assert np.median(err_label) < 0.75 * np.median(err_coarse)
    # A stricter threshold accepts a subset.
    strict = pseudo_label(refiner, frames, min_score=0.99)
    assert len(strict.labels) <= len(out.labels)


def _cut(mask, crop):
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    return crop_images(m, crop, mode="nearest")[0, 0] > 0.5


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_training_crops_of_real_frames_at_pseudo_poses(recording):
    models, scenes, frames = recording
    # Pseudo-poses at the truth: the rendered silhouettes must lie on the objects.
    labels = [PseudoLabel(i, o.class_id, o.T_cam_obj_gt, 1.0)
              for i, sc in enumerate(scenes) for o in sc.objects]
    poses = [[(o.class_id, o.T_cam_obj_gt) for o in sc.objects] for sc in scenes]
    pseudo = PseudoLabels(labels=labels, frame_poses=poses)
    meshes = [RenderMesh.from_object(m) for m in models]
    index = {m.class_id: i for i, m in enumerate(models)}
    rng = np.random.default_rng(0)
    batch = real_training_batch(frames, pseudo, index, models, meshes, make_renderer("torch"),
                                rng, batch_size=6, crop_size=64, syn_cfg=SYN)
    B, S = 6, 64
    assert batch["image"].shape == (B, 3, S, S) and batch["visib_mask"].shape == (B, 1, S, S)
    assert batch["mesh_idx"].dtype == torch.int64 and batch["T_init"].shape == (B, 4, 4)
    assert not torch.allclose(batch["T_init"], batch["T_gt"])  # perturbed starts
    assert (batch["visib_mask"] <= batch["mask_gt"]).all()
    assert ((batch["depth_gt_m"] > 0) == batch["mask_gt"]).all()
    # Where the scene's own annotation says each object is (cut with the same windows).
    ious_full, ious_vis = [], []
    for b in range(B):
        T = batch["T_gt"][b].double().numpy()
        i, k = next((i, k) for i, sc in enumerate(scenes) for k, o in enumerate(sc.objects)
                    if np.allclose(o.T_cam_obj_gt, T, atol=1e-5))
        crop = Crop(box_xyxy=batch["box_xyxy"][b:b + 1], K_crop=batch["K_crop"][b:b + 1], size=S)
        ious_full.append(_iou(batch["mask_gt"][b, 0], _cut(scenes[i].mask_full[k], crop)))
        ious_vis.append(_iou(batch["visib_mask"][b, 0], _cut(scenes[i].instance_map == k, crop)))
    # (Small objects magnified into the crop: the nearest-pixel cut of the full-resolution
    # masks is blocky, so even exact silhouettes agree only to about 0.8 at the border.)
    assert min(ious_full) > 0.75 and np.mean(ious_full) > 0.85
    assert np.mean(ious_vis) > 0.8


def test_no_accepted_pseudo_pose_is_an_error(recording):
    models, _, frames = recording
    with pytest.raises(ValueError, match="no accepted pseudo-pose"):
        real_training_batch(frames, PseudoLabels(frame_poses=[[]] * 3), {}, models, [],
                            make_renderer("torch"), np.random.default_rng(0), 2, 32)
