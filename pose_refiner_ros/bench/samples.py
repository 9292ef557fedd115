"""The held-out benchmark samples: synthetic scenes of the ``bench`` procedural meshes.

Every method of the benchmark refines exactly these samples. They are a deterministic
function of ``(seed, n_models, n_samples)``:

- the models are ``procedural_models("bench", n_models, seed)``, a split never used in
  training (see :mod:`pose_refiner_ros.data.procedural`);
- scenes are drawn by :func:`~pose_refiner_ros.data.synthetic.generate_scene` with the
  default :class:`~pose_refiner_ros.data.synthetic.SyntheticConfig` (640 x 480, 1-4
  annotated objects, distractors, occluders, sensor noise, depth) from
  ``np.random.default_rng(seed)``;
- each annotated object whose visible fraction is at least ``min_visib_fract`` (BOP's
  0.1 by default) becomes one sample, scene after scene, until there are ``n_samples``;
  its initial pose is the scene's, i.e. the protocol's standard perturbation of the
  ground truth (``docs/protocol.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BenchScene", "BenchSample", "BenchSet", "make_bench_set"]

#: Scenes drawn per requested sample at most, before giving up (all objects occluded).
_MAX_SCENES_PER_SAMPLE = 20


@dataclass(frozen=True)
class BenchScene:
    """One rendered image.

    Attributes:
        image_rgb: (H, W, 3) uint8 RGB.
        depth_m: (H, W) float32 depth, metres; 0 = no return.
        K: (3, 3) float64 intrinsics, pixels.
        objects: ``(class_id, T_cam_obj_init (4, 4))`` of every annotated object, in the
            scene's order (a realistic multi-object frame for the scaling runs).
    """

    image_rgb: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
    objects: tuple


@dataclass(frozen=True)
class BenchSample:
    """One object to refine.

    Attributes:
        scene: index into :attr:`BenchSet.scenes`.
        class_id: the registered class.
        T_cam_obj_gt: (4, 4) float64 ground truth, metres.
        T_cam_obj_init: (4, 4) float64 initial pose (standard perturbation), metres.
        visib_fract: visible share of the object's silhouette.
    """

    scene: int
    class_id: str
    T_cam_obj_gt: np.ndarray
    T_cam_obj_init: np.ndarray
    visib_fract: float


@dataclass(frozen=True)
class BenchSet:
    """The benchmark's models, scenes and samples.

    Attributes:
        models: the ``ObjectModel`` s of the ``bench`` split.
        scenes: the rendered scenes the samples come from.
        samples: the objects to refine, in order.
        seed, min_visib_fract: how they were drawn.
    """

    models: tuple
    scenes: tuple
    samples: tuple
    seed: int
    min_visib_fract: float

    def describe(self) -> dict:
        """What the set is, for the JSON record (no images)."""
        by_id = {m.class_id: m for m in self.models}
        s0 = self.scenes[0]
        return {
            "split": "bench",
            "seed": self.seed,
            "n_models": len(self.models),
            "n_scenes": len(self.scenes),
            "n_samples": len(self.samples),
            "image_size": [int(s0.image_rgb.shape[1]), int(s0.image_rgb.shape[0])],
            "min_visib_fract": self.min_visib_fract,
            "initial_poses": "standard perturbation of docs/protocol.md: rotation vector "
                             "N(0, 15 deg) per axis, translation N(0, (1, 1, 5) cm), camera "
                             "frame (SyntheticConfig defaults)",
            "samples": [
                {"scene": s.scene, "class_id": s.class_id, "visib_fract": round(s.visib_fract, 4),
                 "diameter_m": round(by_id[s.class_id].diameter_m, 5),
                 "symmetric": bool(by_id[s.class_id].symmetric),
                 "distance_m": round(float(s.T_cam_obj_gt[2, 3]), 4)}
                for s in self.samples
            ],
        }


def make_bench_set(n_samples: int, seed: int = 0, n_models: int = 20,
                   min_visib_fract: float = 0.1, scene_cfg=None, renderer=None) -> BenchSet:
    """Draw the benchmark (module docstring).

    Args:
        n_samples: objects wanted.
        seed: seed of the meshes and the scenes.
        n_models: ``bench`` meshes to draw (kinds cycle, so 10 or more cover every kind).
        min_visib_fract: objects less visible than this are not samples.
        scene_cfg: a ``SyntheticConfig`` (default: the training defaults).
        renderer: the renderer that draws the scenes (default: ``make_renderer("torch")``).

    Raises:
        ValueError: ``n_samples`` or ``n_models`` below 1.
        RuntimeError: too few visible objects after many scenes.
    """
    from ..data.procedural import procedural_models
    from ..data.synthetic import SyntheticConfig, generate_scene
    from ..render.base import make_renderer

    if n_samples < 1 or n_models < 1:
        raise ValueError(f"n_samples and n_models: expected >= 1, got {n_samples} and {n_models}")
    models = procedural_models("bench", n_models, seed=seed)
    cfg = scene_cfg or SyntheticConfig()
    renderer = renderer or make_renderer("torch")
    rng = np.random.default_rng(seed)
    scenes: list[BenchScene] = []
    samples: list[BenchSample] = []
    for _ in range(_MAX_SCENES_PER_SAMPLE * n_samples):
        if len(samples) >= n_samples:
            break
        sc = generate_scene(models, rng, cfg, renderer)
        keep = [o for o in sc.objects if o.visib_fract >= min_visib_fract]
        if not keep:
            continue
        idx = len(scenes)
        scenes.append(BenchScene(sc.image_rgb, sc.depth_m, np.asarray(sc.K, dtype=np.float64),
                                 tuple((o.class_id, o.T_cam_obj_init) for o in sc.objects)))
        for o in keep[: n_samples - len(samples)]:
            samples.append(BenchSample(idx, o.class_id, np.asarray(o.T_cam_obj_gt, np.float64),
                                       np.asarray(o.T_cam_obj_init, np.float64),
                                       float(o.visib_fract)))
    if len(samples) < n_samples:
        raise RuntimeError(f"only {len(samples)} of {n_samples} objects were visible enough "
                           f"(visib_fract >= {min_visib_fract}); lower min_visib_fract")
    return BenchSet(tuple(models), tuple(scenes), tuple(samples), seed, min_visib_fract)
