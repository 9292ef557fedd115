"""The tracking benchmark's section (``bench.tracking``) on a tiny run: one short RGB
sequence, the training-free refiner for re-registrations."""

import numpy as np

from pose_refiner_ros.bench.tracking import run_tracking_bench, tracking_markdown
from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.data.sequences import MotionConfig
from pose_refiner_ros.mesh.registry import ObjectRegistry
from pose_refiner_ros.refine.refiner import Refiner, RefinerConfig


def test_tiny_tracking_run_reports_accuracy_time_and_covariance():
    models = procedural_models("bench", 2, seed=0)
    refiner = Refiner(ObjectRegistry(models), RefinerConfig(mode="region", device="cpu"))
    motion = MotionConfig(occluder=False, width=320, height=240)
    sec = run_tracking_bench(refiner, n_sequences=1, n_frames=6, n_models=2, motion=motion,
                             modalities=("rgb",), progress=False, latency_frames=2)
    rgb = sec["rgb"]
    assert rgb["frames"] == 5 and len(rgb["add_0.1d_per_frame"]) == 5
    assert 0 <= rgb["add_0.1d"] <= 1 and rgb["ms_per_object_median"] > 0
    cc = rgb["covariance_calibration"]  # the tracked RGB poses carry covariances
    assert cc["n"] >= 1 and set(cc["axes"]) == {"x", "y", "z"}
    assert np.isfinite(cc["axes"]["z"]["median_sigma_m"])
    assert "Pose covariance of the tracked poses (rgb" in tracking_markdown(sec)
