"""``pose-refiner demo`` end to end, and the bundled demo objects."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from ros_helpers import domain_id, require_ros

ROOT = Path(__file__).resolve().parents[2]


def test_bundled_demo_objects_are_the_procedural_meshes():
    """models/demo/ is what demo_scene.write_demo_objects writes (regenerate it with that
    function)."""
    import trimesh

    from pose_refiner_ros.data.procedural import procedural_mesh
    from pose_refiner_ros.mesh.registry import ObjectRegistry
    from pose_refiner_ros.ros.demo_scene import DEMO_OBJECTS

    registry = ObjectRegistry.from_yaml(ROOT / "models" / "demo" / "objects.yaml")
    assert set(registry.class_ids) == set(DEMO_OBJECTS)
    for class_id, (split, index) in DEMO_OBJECTS.items():
        mesh, info = procedural_mesh(split, index)
        ply = trimesh.load(ROOT / "models" / "demo" / f"{class_id}.ply", process=False)
        np.testing.assert_allclose(ply.vertices, mesh.vertices, atol=1e-6)
        np.testing.assert_array_equal(ply.faces, mesh.faces)
        np.testing.assert_array_equal(ply.visual.vertex_colors, mesh.visual.vertex_colors)
        assert registry[class_id].diameter_m == pytest.approx(info["diameter_m"], rel=1e-4)
    size = sum(f.stat().st_size for f in (ROOT / "models" / "demo").iterdir())
    assert size < 400_000


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_runs_the_node_and_reports(tmp_path):
    require_ros()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The demo isolates itself (localhost only) on the domain it is given, one no other
    # test process uses at the same time.
    env["ROS_DOMAIN_ID"] = str(domain_id(71, 20))
    # --timeout 60: the demo gives up on its own (and says where) well inside this test's
    # limit: 60 s for the node to come up, 60 s for each of the two frames.
    cmd = [sys.executable, "-m", "pose_refiner_ros.cli", "demo", "--frames", "2",
           "--timeout", "60", "--out", str(tmp_path)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=220)
    except subprocess.TimeoutExpired as exc:
        log = tmp_path / "node.log"
        pytest.fail(
            "the demo did not finish in 220 s; its output:\n"
            + _text(exc.stdout) + _text(exc.stderr)
            + "\nthe node's log:\n" + (log.read_text() if log.is_file() else "(none)")
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for text in ("[4/4] refining", "frame 2/2", "summary", "latency", "wall time"):
        assert text in out, out
    assert sorted(p.name for p in tmp_path.glob("frame_*.png")) == [
        "frame_000.png",
        "frame_001.png",
    ]
    assert "ready:" in (tmp_path / "node.log").read_text()


def _text(data) -> str:
    """Captured output as text (TimeoutExpired carries bytes)."""
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
