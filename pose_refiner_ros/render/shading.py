"""Shading of rasterized fragments: ambient + Lambert + Blinn-Phong specular.

Used to make synthetic images. One directional white light, given in the camera frame;
the surface colour is the mesh's vertex colours interpolated with the fragments'
barycentrics, or one flat colour. Per covered pixel::

    n   = the fragment's camera-frame normal, flipped to face the viewer (two-sided)
    l   = unit direction from the surface towards the light
    v   = unit direction from the surface towards the camera
    h   = normalize(l + v)
    rgb = albedo * (ambient + diffuse * max(n.l, 0)) + specular * max(n.h, 0) ** shininess

clamped to ``[0, 1]``; background pixels are black.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pose_refiner_ros.render.base import Fragments, PackedMeshes, RenderMesh, interpolate

__all__ = ["ShadingParams", "shade"]


@dataclass(frozen=True)
class ShadingParams:
    """Settings of :func:`shade`.

    Attributes:
        light_dir_cam: direction from the surface towards the light, camera frame (x
            right, y down, z forward), normalised internally. The default puts the light
            above, left of and behind the camera.
        ambient: weight of the ambient term.
        diffuse: weight of the Lambert term.
        specular: weight of the (white) Blinn-Phong highlight; 0 turns it off.
        shininess: Blinn-Phong exponent; larger is a smaller, sharper highlight.
        flat_color: RGB in ``[0, 1]`` used instead of the meshes' vertex colours.
        two_sided: flip normals that point away from the camera before lighting, so that
            inside-out or open meshes are lit like their visible side.
    """

    light_dir_cam: tuple[float, float, float] = (-0.3, -0.5, -1.0)
    ambient: float = 0.3
    diffuse: float = 0.7
    specular: float = 0.2
    shininess: float = 32.0
    flat_color: tuple[float, float, float] | None = None
    two_sided: bool = True


def shade(
    fragments: Fragments,
    meshes: Sequence[RenderMesh],
    mesh_idx: torch.Tensor,
    params: ShadingParams = ShadingParams(),
    K: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shade rendered fragments into an RGB image.

    Args:
        fragments: the result of ``Renderer.render(meshes, mesh_idx, K, ...)``.
        meshes, mesh_idx: the same meshes ``(M)`` and ``(B,)`` int64 indices as rendered
            (for the vertex colours).
        params: light and material settings.
        K: ``(B, 3, 3)`` intrinsics used for rendering; gives the exact view direction of
            every pixel for the specular term. Without it the viewer is taken as far away
            along the optical axis (view direction ``(0, 0, -1)``), which is close for
            the narrow fields of view of object crops.

    Returns:
        ``(B, H, W, 3)`` float32 RGB in ``[0, 1]`` on the fragments' device; background
        pixels are 0 (black).
    """
    batch, height, width = fragments.shape
    device = fragments.mask.device
    rgb = torch.zeros(batch, height, width, 3, dtype=torch.float32, device=device)
    pix = fragments.mask.view(-1).nonzero().squeeze(1)
    if pix.numel() == 0:
        return rgb
    n = fragments.normal_cam.view(-1, 3).index_select(0, pix)

    # view direction: from the surface point towards the camera centre
    if K is None:
        view = torch.tensor([0.0, 0.0, -1.0], device=device).expand_as(n)
    else:
        if K.shape != (batch, 3, 3):
            raise ValueError(f"K: expected shape ({batch}, 3, 3), got {tuple(K.shape)}")
        b = torch.div(pix, height * width, rounding_mode="floor")
        rem = pix - b * height * width
        v = torch.div(rem, width, rounding_mode="floor")
        u = rem - v * width
        uv1 = torch.stack((u, v, torch.ones_like(u)), dim=1).to(torch.float32)
        K_inv = torch.linalg.inv(K.to(device=device, dtype=torch.float32))
        ray = torch.bmm(K_inv.index_select(0, b), uv1.unsqueeze(2)).squeeze(2)
        view = -torch.nn.functional.normalize(ray, dim=1)
    if params.two_sided:
        flip = (n * view).sum(dim=1, keepdim=True) < 0
        n = torch.where(flip, -n, n)

    light = torch.nn.functional.normalize(
        torch.tensor(params.light_dir_cam, dtype=torch.float32, device=device), dim=0
    )
    lambert = (n @ light).clamp_min(0.0).unsqueeze(1)
    half = torch.nn.functional.normalize(view + light, dim=1)
    highlight = (n * half).sum(dim=1).clamp_min(0.0).pow(params.shininess).unsqueeze(1)

    if params.flat_color is not None:
        albedo = torch.tensor(params.flat_color, dtype=torch.float32, device=device)
        albedo = albedo.expand(pix.shape[0], 3)
    else:
        packed = PackedMeshes.from_meshes(meshes)
        b = torch.div(pix, height * width, rounding_mode="floor")
        mesh_of_pix = mesh_idx.to(device=device, dtype=torch.int64).index_select(0, b)
        face = fragments.face_id.view(-1).index_select(0, pix)
        bary = fragments.bary.view(-1, 3).index_select(0, pix)
        albedo = interpolate(packed.vert_colors, packed.face_vertices(mesh_of_pix, face), bary)

    color = albedo * (params.ambient + params.diffuse * lambert) + params.specular * highlight
    rgb.view(-1, 3).index_copy_(0, pix, color.clamp(0.0, 1.0))
    return rgb
