"""Node tests: make best-effort camera images deliverable in this process.

Fast DDS reads its XML profile once per process, when the first participant is created,
and a best-effort reader never gets a sample larger than the publisher's shared-memory
segment (512 KB by default; see ``config/fastdds_large_data.xml``).
The test process publishes 640x480 images, so the profile is set here, at collection,
before any test creates a participant. A profile the user set is kept.
"""

import os
from pathlib import Path

import pytest

from pose_refiner_ros.ros.node_process import ENV_KEYS, ros_env

_env = ros_env()
for _key in ENV_KEYS[3:]:  # the Fast DDS profile only; domain ids are set per test
    if _key in _env:
        os.environ[_key] = _env[_key]


@pytest.fixture(scope="session", autouse=True)
def demo_contour_models():
    """The nodes build the demo objects' contour models at start-up unless they are
    cached (~10 s per mesh here): build them once, before any node starts, so that
    nodes starting together do not each spend that time inside a start-up timeout."""
    from pose_refiner_ros.mesh.registry import ObjectRegistry
    from pose_refiner_ros.refine.refiner import Refiner, RefinerConfig

    root = Path(__file__).resolve().parents[2]
    demo = ObjectRegistry.from_yaml(root / "models" / "demo" / "objects.yaml")
    warm = Refiner(demo, RefinerConfig(mode="region", device="cpu"))
    for c in demo.class_ids:
        warm.viewpoint_model(c)
