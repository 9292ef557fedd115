"""RenderMesh construction and the backend factory."""

import sys

import numpy as np
import pytest
import torch
import trimesh

from pose_refiner_ros.mesh.registry import ObjectModel
from pose_refiner_ros.render.base import RenderMesh, make_renderer, vertex_normals


def test_from_object_matches_the_model():
    model = ObjectModel.from_trimesh("ball", trimesh.creation.icosphere(2, radius=0.05),
                                     color=(0.1, 0.2, 0.3))
    mesh = RenderMesh.from_object(model)
    assert mesh.verts_m.dtype == torch.float32 and mesh.faces.dtype == torch.int64
    np.testing.assert_array_equal(mesh.verts_m.numpy(), model.verts_m)
    np.testing.assert_array_equal(mesh.faces.numpy(), model.faces)
    np.testing.assert_allclose(mesh.vert_colors.numpy(), model.vert_colors)
    np.testing.assert_allclose(mesh.vert_normals.numpy(), model.vert_normals)


def test_vertex_normals_of_a_sphere_are_radial():
    s = trimesh.creation.icosphere(3, radius=0.1)
    v = torch.as_tensor(np.array(s.vertices), dtype=torch.float32)
    n = vertex_normals(v, torch.as_tensor(np.array(s.faces)))
    cos = (n * torch.nn.functional.normalize(v, dim=1)).sum(1)
    assert cos.min() > 0.999


def test_render_mesh_checks_shapes():
    with pytest.raises(ValueError, match="vert_colors"):
        RenderMesh.from_arrays(np.zeros((3, 3)), [[0, 1, 2]], vert_colors=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="faces"):
        RenderMesh.from_arrays(np.zeros((3, 3)), [[0, 1, 3]])


def test_pytorch3d_backend_explains_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch3d", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "pose_refiner_ros.render.pytorch3d_raster", raising=False)
    with pytest.raises(ImportError, match="pytorch3d.*INSTALL|make_renderer\\('torch'\\)"):
        make_renderer("pytorch3d")
    assert make_renderer("auto", device="cuda").name == "torch"
