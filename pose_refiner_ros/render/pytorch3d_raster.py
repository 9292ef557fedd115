"""Optional renderer backend on PyTorch3D's rasterizer (fast on CUDA).

Importing this module raises :class:`~pose_refiner_ros.render.base.BackendUnavailableError`
(an ``ImportError``) when pytorch3d cannot be imported; :func:`make_renderer` imports it
only when asked for ``"pytorch3d"`` (or for ``"auto"`` on CUDA with pytorch3d present).

Only PyTorch3D's low-level ``rasterize_meshes`` is used, on vertices we project
ourselves, so that no camera convention of PyTorch3D is involved. Its output pixel
``(row i, column j)`` samples the NDC point (PyTorch3D NDC: +x left, +y up, the shorter
image side spans [-1, 1])::

    x_ndc = ((W - 1) / 2 - j) / s,   y_ndc = ((H - 1) / 2 - i) / s,   s = min(H, W) / 2

so a vertex projecting to OpenCV pixel coordinates ``(u, v)`` is given the NDC position
``(((W - 1) / 2 - u) / s, ((H - 1) / 2 - v) / s)``, which puts pixel centres at integer
``(u, v)`` as everywhere in this package. Its z is the camera-frame depth, which is what
PyTorch3D's perspective correction expects. Faces with a vertex at ``z <= near`` are
removed before rasterization, as in the torch backend.

Not tested in this repository's CI (pytorch3d is not installed there); the torch backend
is the reference it should be checked against where pytorch3d is available.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pose_refiner_ros.render.base import (
    BackendUnavailableError,
    Fragments,
    Renderer,
    RenderMesh,
    empty_fragments,
    fragments_from_hits,
)

try:
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise BackendUnavailableError(
        "The 'pytorch3d' renderer backend needs pytorch3d, which cannot be imported "
        f"({exc}). Install it following "
        "https://github.com/facebookresearch/pytorch3d/blob/main/INSTALL.md "
        "(e.g. pip install 'git+https://github.com/facebookresearch/pytorch3d.git' "
        "with a CUDA toolkit matching your torch), or use make_renderer('torch')."
    ) from exc

__all__ = ["Pytorch3dRasterizer"]


class Pytorch3dRasterizer(Renderer):
    """Renderer on ``pytorch3d.renderer.mesh.rasterize_meshes``.

    Args:
        near: faces with any vertex at camera ``z <= near`` (metres) are dropped.
        bin_size, max_faces_per_bin: PyTorch3D's coarse-to-fine binning settings
            (None: PyTorch3D's heuristics; ``bin_size=0``: naive rasterization).
    """

    name = "pytorch3d"

    def __init__(self, near: float = 1e-3, bin_size: int | None = None,
                 max_faces_per_bin: int | None = None):
        if near <= 0:
            raise ValueError(f"near: expected a positive distance in metres, got {near}")
        self.near = float(near)
        self.bin_size = bin_size
        self.max_faces_per_bin = max_faces_per_bin

    def _rasterize(
        self,
        meshes: Sequence[RenderMesh],
        mesh_idx: torch.Tensor,
        K: torch.Tensor,
        T_cam_obj: torch.Tensor,
        height: int,
        width: int,
    ) -> Fragments:
        batch = mesh_idx.shape[0]
        device = meshes[0].device
        s = min(height, width) / 2.0

        verts_ndc, faces_kept, face_ids = [], [], []
        for b, m in enumerate(mesh_idx.tolist()):
            mesh = meshes[m]
            p_cam = mesh.verts_m @ T_cam_obj[b, :3, :3].T + T_cam_obj[b, :3, 3]
            z = p_cam[:, 2]
            uv = (p_cam @ K[b].T)[:, :2] / z.unsqueeze(1)
            x_ndc = ((width - 1) / 2.0 - uv[:, 0]) / s
            y_ndc = ((height - 1) / 2.0 - uv[:, 1]) / s
            # vertices at z ~ 0 (only in dropped faces) would be inf: keep them finite
            verts_ndc.append(torch.nan_to_num(torch.stack((x_ndc, y_ndc, z), dim=1),
                                              posinf=0.0, neginf=0.0))
            keep = (z[mesh.faces] > self.near).all(dim=1)
            ids = keep.nonzero().squeeze(1)
            faces_kept.append(mesh.faces[ids])
            face_ids.append(ids)
        if sum(int(f.shape[0]) for f in faces_kept) == 0:
            return empty_fragments(batch, height, width, device)

        pix_to_face, zbuf, bary, _ = rasterize_meshes(
            Meshes(verts=verts_ndc, faces=faces_kept),
            image_size=(height, width),
            blur_radius=0.0,
            faces_per_pixel=1,
            bin_size=self.bin_size,
            max_faces_per_bin=self.max_faces_per_bin,
            perspective_correct=True,
            cull_backfaces=False,
        )
        # pix_to_face indexes the packed kept faces of all items: map to mesh face ids
        pix_to_face = pix_to_face[..., 0].reshape(-1)
        pix = (pix_to_face >= 0).nonzero().squeeze(1)
        face_id = torch.cat(face_ids).index_select(0, pix_to_face.index_select(0, pix))
        bary = bary[..., 0, :].reshape(-1, 3).index_select(0, pix)
        depth = zbuf[..., 0].reshape(-1).index_select(0, pix)
        return fragments_from_hits(meshes, mesh_idx, T_cam_obj, height, width,
                                   pix, face_id, bary.float(), depth.float())
