"""Shading of fragments: range, background, light direction and colours."""

import numpy as np
import pytest
import torch
import trimesh

from pose_refiner_ros.render.base import RenderMesh
from pose_refiner_ros.render.shading import ShadingParams, shade
from pose_refiner_ros.render.torch_raster import TorchRasterizer

S = 64
K = torch.tensor([[[120.0, 0.0, 31.5], [0.0, 120.0, 31.5], [0.0, 0.0, 1.0]]])


def _render(mesh: RenderMesh, T: np.ndarray):
    return TorchRasterizer().render([mesh], torch.zeros(1, dtype=torch.int64), K,
                                    torch.as_tensor(T, dtype=torch.float32)[None], S, S)


def _facing_quad(tilt_deg: float) -> np.ndarray:
    """Pose of a z-up square rotated by tilt about y, 0.5 m in front of the camera."""
    T = np.eye(4)
    T[:3, :3] = trimesh.transformations.rotation_matrix(np.radians(tilt_deg), [0, 1, 0])[:3, :3]
    T[:3, :3] = T[:3, :3] @ np.diag([1.0, -1.0, -1.0])  # normal +z of the quad -> -z (camera)
    T[2, 3] = 0.5
    return T


QUAD = RenderMesh.from_arrays(
    [[-0.05, -0.05, 0], [0.05, -0.05, 0], [0.05, 0.05, 0], [-0.05, 0.05, 0]],
    [[0, 1, 2], [0, 2, 3]], vert_colors=(0.8, 0.6, 0.4))


def test_range_and_black_background():
    sphere = RenderMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=3, radius=0.1))
    T = np.eye(4)
    T[2, 3] = 0.5
    frag = _render(sphere, T)
    rgb = shade(frag, [sphere], torch.zeros(1, dtype=torch.int64), K=K)
    assert rgb.shape == (1, S, S, 3) and rgb.dtype == torch.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert torch.all(rgb[~frag.mask] == 0)
    assert torch.all(rgb[frag.mask].sum(-1) > 0)  # ambient light everywhere on the object


def test_surface_facing_the_light_is_brighter():
    params = ShadingParams(light_dir_cam=(0.0, 0.0, -1.0), specular=0.0)
    idx = torch.zeros(1, dtype=torch.int64)
    facing = shade(_render(QUAD, _facing_quad(0)), [QUAD], idx, params)
    tilted_frag = _render(QUAD, _facing_quad(60))
    tilted = shade(tilted_frag, [QUAD], idx, params)
    c = facing[0, S // 2, S // 2]
    assert torch.allclose(c, torch.tensor([0.8, 0.6, 0.4]), atol=1e-5)  # ambient + diffuse = 1
    # Lambert: ambient + diffuse * cos(60 deg)
    expected = torch.tensor([0.8, 0.6, 0.4]) * (0.3 + 0.7 * 0.5)
    assert torch.allclose(tilted[0, S // 2, S // 2], expected, atol=1e-4)
    # light from the side instead: the facing quad gets darker
    side = shade(_render(QUAD, _facing_quad(0)), [QUAD], idx,
                 ShadingParams(light_dir_cam=(1.0, 0.0, -0.2), specular=0.0))
    assert torch.all(side[0, S // 2, S // 2] < c)


def test_two_sided_and_specular():
    idx = torch.zeros(1, dtype=torch.int64)
    back = _facing_quad(0) @ np.diag([1.0, -1.0, -1.0, 1.0])  # seen from behind
    params = ShadingParams(light_dir_cam=(0.0, 0.0, -1.0), specular=0.0)
    front_rgb = shade(_render(QUAD, _facing_quad(0)), [QUAD], idx, params)
    back_rgb = shade(_render(QUAD, back), [QUAD], idx, params)
    assert torch.allclose(back_rgb, front_rgb, atol=1e-5)
    one_sided = shade(_render(QUAD, back), [QUAD], idx,
                      ShadingParams(light_dir_cam=(0.0, 0.0, -1.0), specular=0.0,
                                    two_sided=False))
    assert torch.allclose(one_sided[0, S // 2, S // 2], 0.3 * torch.tensor([0.8, 0.6, 0.4]))
    shiny = shade(_render(QUAD, _facing_quad(0)), [QUAD], idx,
                  ShadingParams(light_dir_cam=(0.0, 0.0, -1.0), specular=0.7), K=K)
    assert torch.all(shiny[0, S // 2, S // 2] == 1.0)  # highlight saturates at the centre


def test_vertex_colors_are_interpolated_and_flat_color_overrides():
    colors = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]
    quad = RenderMesh.from_arrays(QUAD.verts_m, QUAD.faces, vert_colors=colors)
    idx = torch.zeros(1, dtype=torch.int64)
    frag = _render(quad, _facing_quad(0))
    params = ShadingParams(light_dir_cam=(0.0, 0.0, -1.0), specular=0.0)
    rgb = shade(frag, [quad], idx, params)
    m = frag.mask[0]
    face = frag.face_id[0][m]
    bary = frag.bary[0][m]
    expected = torch.einsum("nk,nkc->nc", bary,
                            torch.tensor(colors, dtype=torch.float32)[quad.faces[face]])
    assert torch.allclose(rgb[0][m], expected, atol=1e-5)
    flat = shade(frag, [quad], idx, ShadingParams(light_dir_cam=(0.0, 0.0, -1.0),
                                                  specular=0.0, flat_color=(0.2, 0.4, 0.6)))
    assert torch.allclose(flat[0][m], torch.tensor([0.2, 0.4, 0.6]).expand(int(m.sum()), 3))


def test_shading_params_is_frozen():
    with pytest.raises(AttributeError):
        ShadingParams().ambient = 1.0
