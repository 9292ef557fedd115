"""The mesh a renderer draws: vertices, faces, colours and normals on a torch device
(:class:`RenderMesh`), built from arrays, a ``trimesh.Trimesh`` or a registered object,
with the input checks the renderers share.

Frames and units as in ``render.base``: object frame, metres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    import trimesh

    from pose_refiner_ros.mesh.registry import ObjectModel

__all__ = ["RenderMesh", "vertex_normals"]

Device = str | torch.device


def _check_shape(name: str, x: torch.Tensor, shape: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``x`` has ``len(shape)`` dims matching ``shape``.

    ``None`` in ``shape`` matches any size.
    """
    ok = x.dim() == len(shape) and all(
        s is None or s == d for s, d in zip(shape, x.shape, strict=True)
    )
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")


def _check_face_indices(faces: torch.Tensor, n_verts: int) -> None:
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= n_verts):
        raise ValueError(f"faces: vertex indices must lie in [0, {n_verts}), got "
                         f"[{int(faces.min())}, {int(faces.max())}]")


def _as_tensor(x, dtype: torch.dtype, device: Device) -> torch.Tensor:
    """A tensor copy of an array-like (numpy arrays may be read-only, e.g. trimesh's)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.tensor(np.asarray(x), dtype=dtype, device=device)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals of a triangle mesh.

    Args:
        verts: ``(V, 3)`` float vertex positions.
        faces: ``(F, 3)`` int64 vertex indices, counter-clockwise seen from outside.

    Returns:
        ``(V, 3)`` unit normals, same frame as ``verts``; a vertex used by no face (or by
        degenerate faces only) gets ``(0, 0, 0)``.
    """
    tri = verts[faces]  # (F, 3, 3)
    n_face = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # 2 * area
    n = torch.zeros_like(verts)
    for k in range(3):
        n.index_add_(0, faces[:, k], n_face)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12)


@dataclass(frozen=True, eq=False)
class RenderMesh:
    """A triangle mesh on a torch device, ready to be rendered.

    Attributes:
        verts_m: ``(V, 3)`` float32 vertex positions, object frame, metres.
        faces: ``(F, 3)`` int64 vertex indices into ``verts_m``.
        vert_colors: ``(V, 3)`` float32 RGB in ``[0, 1]``.
        vert_normals: ``(V, 3)`` float32 unit vertex normals, object frame.
    """

    verts_m: torch.Tensor
    faces: torch.Tensor
    vert_colors: torch.Tensor
    vert_normals: torch.Tensor

    def __post_init__(self) -> None:
        _check_shape("verts_m", self.verts_m, (None, 3))
        _check_shape("faces", self.faces, (None, 3))
        n_v = self.verts_m.shape[0]
        _check_shape("vert_colors", self.vert_colors, (n_v, 3))
        _check_shape("vert_normals", self.vert_normals, (n_v, 3))
        if self.faces.dtype != torch.int64:
            raise ValueError(f"faces: expected dtype torch.int64, got {self.faces.dtype}")
        _check_face_indices(self.faces, n_v)

    @property
    def device(self) -> torch.device:
        return self.verts_m.device

    @property
    def num_verts(self) -> int:
        return int(self.verts_m.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @classmethod
    def from_arrays(
        cls,
        verts_m,
        faces,
        vert_colors=None,
        vert_normals=None,
        device: Device = "cpu",
    ) -> RenderMesh:
        """Build from array-likes (numpy or torch).

        Args:
            verts_m: ``(V, 3)`` vertex positions, object frame, metres.
            faces: ``(F, 3)`` vertex indices.
            vert_colors: ``(V, 3)`` RGB in ``[0, 1]``, or ``(3,)`` for a flat colour;
                default mid grey.
            vert_normals: ``(V, 3)``; default: area-weighted normals of the faces.
            device: where the tensors live.
        """
        verts = _as_tensor(verts_m, torch.float32, device)
        faces_t = _as_tensor(faces, torch.int64, device)
        if vert_colors is None:
            vert_colors = (0.7, 0.7, 0.7)
        colors = _as_tensor(vert_colors, torch.float32, device)
        if colors.shape == (3,):
            colors = colors.expand(verts.shape[0], 3)
        colors = colors.contiguous()
        if vert_normals is None:
            _check_shape("faces", faces_t, (None, 3))
            _check_face_indices(faces_t, verts.shape[0])
            normals = vertex_normals(verts, faces_t)
        else:
            normals = _as_tensor(vert_normals, torch.float32, device)
        return cls(verts, faces_t, colors, normals)

    @classmethod
    def from_trimesh(
        cls, mesh: trimesh.Trimesh, device: Device = "cpu", color=None
    ) -> RenderMesh:
        """Build from a ``trimesh.Trimesh`` already in metres.

        Vertex colours come from ``color`` (a flat RGB in ``[0, 1]``) when given, else
        from the mesh's vertex colours when it has some, else mid grey.
        """
        if color is None and mesh.visual.kind == "vertex":
            color = mesh.visual.vertex_colors[:, :3] / 255.0
        return cls.from_arrays(mesh.vertices, mesh.faces, color,
                               mesh.vertex_normals, device=device)

    @classmethod
    def from_object(cls, model: ObjectModel, device: Device = "cpu") -> RenderMesh:
        """The render mesh of a registry :class:`~pose_refiner_ros.mesh.registry.ObjectModel`."""
        return cls.from_arrays(model.verts_m, model.faces, model.vert_colors,
                               model.vert_normals, device=device)

    def to(self, device: Device) -> RenderMesh:
        return RenderMesh(self.verts_m.to(device), self.faces.to(device),
                          self.vert_colors.to(device), self.vert_normals.to(device))
