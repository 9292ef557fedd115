"""RViz markers (ros.markers): mesh resources, decimated triangle lists, labels, and the
deletion of objects that disappear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ros_helpers import require_ros

from pose_refiner_ros.ros import markers as mk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry():
    from pose_refiner_ros.mesh.registry import ObjectRegistry

    return ObjectRegistry.from_yaml(ROOT / "models" / "demo" / "objects.yaml")


@pytest.fixture(scope="module")
def in_memory():
    """Objects whose meshes were built in code (no file)."""
    from pose_refiner_ros.data.procedural import procedural_models
    from pose_refiner_ros.mesh.registry import ObjectRegistry

    return ObjectRegistry(procedural_models("val", 2, seed=0))


def _header(stamp_ns=5 * 10**9 + 7, frame_id="cam"):
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(stamp_ns, 10**9)
    return h


def _T(x=0.05, y=0.02, z=0.6, deg=30.0):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = [x, y, z]
    return T


def _pose(marker):
    from pose_refiner_ros.ros import conversions as conv

    return conv.pose_to_matrix(marker.pose)


def test_a_mesh_with_a_file_is_a_mesh_resource(registry):
    require_ros()
    from visualization_msgs.msg import Marker

    cid = registry.class_ids[0]
    model = registry[cid]
    T = _T()
    msg = mk.MarkerState(registry.__getitem__).update(_header(), [(f"refined_{cid}_0", cid, T,
                                                                  0.873)])
    deleteall, mesh, label = msg.markers
    assert deleteall.action == Marker.DELETEALL
    assert mesh.type == Marker.MESH_RESOURCE and mesh.action == Marker.ADD
    assert (mesh.ns, mesh.id) == (f"refined_{cid}_0", 0)
    assert mesh.mesh_resource == "file://" + str(model.mesh_path.resolve())
    assert mesh.mesh_resource.startswith("file:///") and Path(model.mesh_path).is_file()
    assert (mesh.scale.x, mesh.scale.y, mesh.scale.z) == (model.scale,) * 3
    assert mesh.header.frame_id == "cam" and mesh.header.stamp.nanosec == 7
    np.testing.assert_allclose(_pose(mesh), T, atol=1e-9)
    assert mesh.color.a > 0
    assert label.type == Marker.TEXT_VIEW_FACING and (label.ns, label.id) == (mesh.ns, 1)
    assert label.text == f"{cid} 0.87"
    p = label.pose.position
    assert p.y < T[1, 3] and (p.x, p.z) == pytest.approx((T[0, 3], T[2, 3]))  # above it
    assert 0.01 <= label.scale.z <= 0.05


def test_a_mesh_without_a_file_is_a_small_triangle_list(in_memory):
    require_ros()
    from rclpy.serialization import serialize_message
    from visualization_msgs.msg import Marker

    state = mk.MarkerState(in_memory.__getitem__)
    objects = [(f"refined_{c}_0", c, _T(x=0.1 * k), 0.5) for k, c in enumerate(in_memory.class_ids)]
    assert any(len(in_memory[c].faces) > mk.MAX_TRIANGLES for c in in_memory.class_ids)
    msg = state.update(_header(), objects)
    meshes = [m for m in msg.markers if m.id == 0 and m.action == Marker.ADD]
    assert len(meshes) == len(objects)
    for m, (_, cid, T, _) in zip(meshes, objects, strict=True):
        model = in_memory[cid]
        assert m.type == Marker.TRIANGLE_LIST and m.mesh_resource == ""
        assert len(m.points) % 3 == 0 and 0 < len(m.points) <= 3 * mk.MAX_TRIANGLES
        pts = np.array([[q.x, q.y, q.z] for q in m.points])  # object frame, metres
        margin = 0.05 * model.diameter_m
        assert (pts >= model.bbox_min_m - margin).all() and (pts <= model.bbox_max_m + margin).all()
        assert np.ptp(pts, axis=0).max() > 0.5 * model.diameter_m  # the object, not a speck
        np.testing.assert_allclose(_pose(m), T, atol=1e-9)
        assert len(serialize_message(m)) < 40_000
    again = state.update(_header(), objects)  # the triangles are built once per class
    assert [m.points for m in again.markers if m.id == 0][0] is meshes[0].points


def test_objects_that_disappear_are_deleted(registry):
    require_ros()
    from visualization_msgs.msg import Marker

    a, b = registry.class_ids[:2]
    state = mk.MarkerState(registry.__getitem__)
    first = state.update(_header(), [("refined_a_0", a, _T(), 0.9), ("refined_b_0", b, _T(), 0.8)])
    assert [m.action for m in first.markers] == [Marker.DELETEALL] + [Marker.ADD] * 4
    second = state.update(_header(), [("refined_b_0", b, _T(), 0.8)])
    deletes = [(m.ns, m.id) for m in second.markers if m.action == Marker.DELETE]
    assert deletes == [("refined_a_0", 0), ("refined_a_0", 1)]
    assert [m.ns for m in second.markers if m.action == Marker.ADD] == ["refined_b_0"] * 2
    third = state.update(_header(), [])
    assert {(m.ns, m.action) for m in third.markers} == {("refined_b_0", Marker.DELETE)}
    assert state.update(_header(), []) is None  # nothing shown, nothing to say
    state.reset()  # e.g. nobody listened for a while
    assert [m.action for m in state.update(_header(), []).markers] == [Marker.DELETEALL]


def test_mesh_uri_is_none_without_a_file(in_memory, registry):
    assert mk.mesh_uri(in_memory[in_memory.class_ids[0]]) is None
    assert mk.mesh_uri(registry[registry.class_ids[0]]).startswith("file:///")
