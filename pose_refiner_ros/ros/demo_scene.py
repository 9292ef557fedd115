"""The demo's scene, without ROS: the bundled demo objects (``models/demo/``) and a
deterministic synthetic recording of them with ground truth and coarse poses, and the
errors of an estimate. ``pose-refiner demo`` (:mod:`.demo`) plays it to the node; the node
tests use it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DEMO_OBJECTS", "SEED", "write_demo_objects", "DemoFrame", "make_recording",
           "object_errors"]

#: The demo objects: class id -> (procedural split, index). ``val`` meshes are held out
#: from training (``data.procedural``); these four are asymmetric, so every error is
#: well defined without symmetry handling.
DEMO_OBJECTS = {"mug": ("val", 2), "compound": ("val", 3), "lshape": ("val", 6), "box": ("val", 7)}
SEED = 2024


def write_demo_objects(out_dir: str | Path) -> Path:
    """Export the demo meshes (PLY, metres, vertex colours) and their objects YAML to
    ``out_dir``; returns the YAML's path. This is how ``models/demo/`` was made."""
    import yaml

    from ..data.procedural import procedural_mesh

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for class_id, (split, index) in DEMO_OBJECTS.items():
        mesh, info = procedural_mesh(split, index)
        mesh.export(out / f"{class_id}.ply")
        entry = {"class_id": class_id, "mesh": f"{class_id}.ply", "scale": 1.0}
        if info["symmetry"] == "axis_z":
            entry["symmetries"] = {"continuous_axis": {"axis": [0.0, 0.0, 1.0]}}
        elif info["symmetry"] == "box":
            entry["symmetries"] = {
                "discrete": [
                    np.diag(d).tolist()
                    for d in ([1.0, -1, -1, 1], [-1.0, 1, -1, 1], [-1.0, -1, 1, 1])
                ]
            }
        entries.append(entry)
    path = out / "objects.yaml"
    header = (
        "# Demo objects of `pose-refiner demo` and the node's default objects_yaml:\n"
        "# procedural meshes of the held-out 'val' split, written by\n"
        "# pose_refiner_ros.ros.demo_scene.write_demo_objects (metres, vertex colours).\n"
    )
    path.write_text(header + yaml.safe_dump({"objects": entries}, sort_keys=False))
    return path


@dataclass(frozen=True)
class DemoFrame:
    """One frame of the recording: stamp ``(sec, nanosec)``, ``(H, W, 3)`` uint8 RGB,
    ``K`` (3, 3), per object ``(class_id, T_gt (4, 4), T_coarse (4, 4))``, and the
    simulated sensor depth ``(H, W)`` float32 metres (0: no return)."""

    stamp: tuple
    image_rgb: np.ndarray
    K: np.ndarray
    objects: list
    depth_m: np.ndarray


def make_recording(
    registry,
    n_frames: int,
    seed: int = SEED,
    objects_per_frame: int = 3,
    sigma_r_deg: float = 15.0,
    sigma_t_m=(0.01, 0.01, 0.05),
) -> list:
    """A deterministic recording of ``n_frames`` synthetic frames of the registry's objects
    with ground truth and coarse poses drawn by the perturbation of ``data.perturb``
    (by default the protocol's standard one)."""
    from ..data.synthetic import SyntheticConfig, generate_scene
    from ..render.base import make_renderer

    cfg = SyntheticConfig(
        objects_per_scene=(objects_per_frame, objects_per_frame),
        distractors_per_scene=(0, 1),
        occluders_per_scene=(0, 0),
        occluder2d_prob=0.0,
        apparent_size_px=(130.0, 220.0),
        sigma_r_deg=sigma_r_deg,
        sigma_t_m=tuple(sigma_t_m),
        texture_prob=0.0,
        noise_std_range=(0.0, 0.01),
        blur_prob=0.0,
        motion_blur_prob=0.0,
        jpeg_prob=0.0,
    )
    renderer = make_renderer("torch")
    rng = np.random.default_rng(seed)
    models = [registry[c] for c in registry.class_ids]
    frames = []
    for i in range(n_frames):
        scene = generate_scene(models, rng, cfg, renderer)
        frames.append(
            DemoFrame(
                stamp=(1_700_000_000 + i, 0),
                image_rgb=scene.image_rgb,
                K=scene.K,
                objects=[(o.class_id, o.T_cam_obj_gt, o.T_cam_obj_init) for o in scene.objects],
                depth_m=scene.depth_m,
            )
        )
    return frames


def object_errors(model, T_est: np.ndarray, T_gt: np.ndarray) -> dict:
    """Rotation (deg), translation (mm) and ADD(-S) over the diameter of one estimate."""
    from ..evaluation import metrics

    sym = model.symmetries if model.symmetric else None
    add = (
        metrics.adds(T_est, T_gt, model.points_m)
        if model.symmetric
        else metrics.add(T_est, T_gt, model.points_m)
    )
    return {
        "rot_deg": metrics.rotation_error_deg(T_est, T_gt, sym),
        "trans_mm": 1e3 * metrics.translation_error_m(T_est, T_gt, sym),
        "add_d": add / model.diameter_m,
    }
