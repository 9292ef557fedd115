"""The sample input of ``pose-refiner refine`` shipped in ``examples/refine/``.

One synthetic 320x240 scene of three of the demo objects (``models/demo``), JPEG at
quality 92 (about 12 KB), with its ``camera.json``, the coarse poses ``initial.json``
(the protocol's perturbation of the truth) and the true poses ``ground_truth.json`` (the
same format), and an ``objects.yaml`` that registers the demo meshes where they are.
Regenerate with ``python -m pose_refiner_ros.image_files.sample examples/refine``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import sys

import numpy as np

SEED = 3
SIZE = (320, 240)


def _pose_json(class_id: str, T: np.ndarray) -> dict:
    return {"class_id": class_id, "T_cam_obj": np.asarray(T).round(6).tolist()}


def write_sample(out_dir: str | os.PathLike, seed: int = SEED) -> Path:
    """Write the sample into ``out_dir`` (created); returns it."""
    import cv2

    from ..data.synthetic import SyntheticConfig, generate_scene
    from ..mesh.registry import ObjectRegistry
    from ..render.base import make_renderer
    from ..resources import share_dir

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demo_yaml = share_dir() / "models" / "demo" / "objects.yaml"
    registry = ObjectRegistry.from_yaml(demo_yaml)
    cfg = SyntheticConfig(image_width=SIZE[0], image_height=SIZE[1], objects_per_scene=(3, 3),
                          distractors_per_scene=(0, 0))
    scene = generate_scene(list(registry.models), np.random.default_rng(seed), cfg,
                           make_renderer("torch"))
    cv2.imwrite(str(out / "rgb.jpg"), cv2.cvtColor(scene.image_rgb, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    (out / "camera.json").write_text(json.dumps({"K": np.round(scene.K, 6).tolist()}) + "\n")
    for name, attr in (("initial.json", "T_cam_obj_init"), ("ground_truth.json", "T_cam_obj_gt")):
        poses = [_pose_json(o.class_id, getattr(o, attr)) for o in scene.objects]
        (out / name).write_text(json.dumps(poses, indent=1) + "\n")
    rel = Path(os.path.relpath(demo_yaml.parent, out.resolve()))
    lines = ["# The demo meshes (models/demo), registered from here for the refine sample.",
             "objects:"]
    for c in dict.fromkeys(o.class_id for o in scene.objects):
        lines += [f"- class_id: {c}", f"  mesh: {(rel / f'{c}.ply').as_posix()}",
                  "  scale: 1.0"]
    (out / "objects.yaml").write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(write_sample(sys.argv[1] if len(sys.argv) > 1 else "examples/refine"))
