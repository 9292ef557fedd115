"""The renderer interface: meshes in, per-pixel fragments out.

A renderer rasterizes a batch of triangle meshes, each item with its own mesh, intrinsics
``K`` and pose ``T_cam_obj``, into ``height x width`` images, and returns
:class:`Fragments`: for every pixel the nearest visible surface point (mask, depth, the
object-frame point, the camera-frame normal, the face and its barycentrics).

Conventions (those of the package, see ``pose_refiner_ros/__init__.py``):

- OpenCV camera axes (x right, y down, z forward); ``T_cam_obj`` maps object points into
  the camera frame; metres.
- Pixel ``(u, v)`` = (column, row) has its centre at the continuous image coordinate
  ``(u, v)``; a pixel is covered by a triangle when its centre is inside the triangle's
  projection (pixels on a shared edge go to the nearer face).
- Triangles with any vertex at ``z <= near`` (``near = 1e-3`` m by default) are dropped,
  not clipped: a mesh must be entirely in front of the camera to render whole.
- Both sides of every triangle are rendered (no backface culling): meshes need not be
  watertight or consistently wound. The nearest surface wins.
- Fragments are not differentiable: backends compute them under ``torch.no_grad()``.

Backends are chosen by :func:`make_renderer` and imported lazily, so that an optional
backend's dependency (pytorch3d) is never needed to import this package.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .render_mesh import Device, RenderMesh, _check_shape, vertex_normals

__all__ = [
    "BackendUnavailableError",
    "Fragments",
    "PackedMeshes",
    "RenderMesh",
    "Renderer",
    "check_render_inputs",
    "empty_fragments",
    "fragments_from_hits",
    "interpolate",
    "make_renderer",
    "vertex_normals",
]

class BackendUnavailableError(ImportError):
    """A renderer backend was asked for but its dependency cannot be imported."""


@dataclass(frozen=True, eq=False)
class Fragments:
    """Per-pixel result of rasterization; the nearest surface point of every pixel.

    Background pixels (no triangle covers the pixel centre) hold the values in brackets.

    Attributes:
        mask: ``(B, H, W)`` bool, True where a triangle covers the pixel [False].
        depth_m: ``(B, H, W)`` float32, camera-frame z of the surface point, metres [0].
        xyz_obj: ``(B, H, W, 3)`` float32, the surface point in the object frame, metres
            (the location field) [0].
        normal_cam: ``(B, H, W, 3)`` float32, the mesh's vertex normals interpolated with
            the perspective-correct barycentrics, rotated into the camera frame and
            normalised; as stored in the mesh, it may point away from the camera [0].
        face_id: ``(B, H, W)`` int64, index of the visible face in
            ``meshes[mesh_idx[b]].faces`` [-1].
        bary: ``(B, H, W, 3)`` float32, perspective-correct barycentric coordinates of
            the surface point in that face (they sum to 1; the point is
            ``sum_k bary[..., k] * verts_m[faces[face_id, k]]``) [0].
    """

    mask: torch.Tensor
    depth_m: torch.Tensor
    xyz_obj: torch.Tensor
    normal_cam: torch.Tensor
    face_id: torch.Tensor
    bary: torch.Tensor

    @property
    def shape(self) -> tuple:
        """``(B, H, W)``."""
        return tuple(self.mask.shape)


def check_render_inputs(
    meshes: Sequence[RenderMesh],
    mesh_idx: torch.Tensor,
    K: torch.Tensor,
    T_cam_obj: torch.Tensor,
    height: int,
    width: int,
) -> int:
    """Validate the arguments of :meth:`Renderer.render`; return the batch size ``B``."""
    if len(meshes) == 0:
        raise ValueError("meshes: expected at least one RenderMesh, got none")
    devices = {m.device for m in meshes}
    if len(devices) > 1:
        raise ValueError(f"meshes: expected all on one device, got {sorted(map(str, devices))}")
    _check_shape("mesh_idx", mesh_idx, (None,))
    batch = int(mesh_idx.shape[0])
    _check_shape("K", K, (batch, 3, 3))
    _check_shape("T_cam_obj", T_cam_obj, (batch, 4, 4))
    if mesh_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"mesh_idx: expected an integer dtype, got {mesh_idx.dtype}")
    if batch and (int(mesh_idx.min()) < 0 or int(mesh_idx.max()) >= len(meshes)):
        raise ValueError(f"mesh_idx: values must lie in [0, {len(meshes)}), got "
                         f"[{int(mesh_idx.min())}, {int(mesh_idx.max())}]")
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"height, width: expected positive sizes, got {height}x{width}")
    return batch


def empty_fragments(batch: int, height: int, width: int, device: Device) -> Fragments:
    """Fragments with every pixel set to the background values."""
    shape = (batch, height, width)
    return Fragments(
        mask=torch.zeros(shape, dtype=torch.bool, device=device),
        depth_m=torch.zeros(shape, dtype=torch.float32, device=device),
        xyz_obj=torch.zeros(shape + (3,), dtype=torch.float32, device=device),
        normal_cam=torch.zeros(shape + (3,), dtype=torch.float32, device=device),
        face_id=torch.full(shape, -1, dtype=torch.int64, device=device),
        bary=torch.zeros(shape + (3,), dtype=torch.float32, device=device),
    )


@dataclass(frozen=True, eq=False)
class PackedMeshes:
    """Several meshes concatenated, so that per-pixel lookups are single gathers.

    Attributes:
        verts_m, vert_normals, vert_colors: ``(sum V, 3)`` float32, in mesh order.
        faces: ``(sum F, 3)`` int64, indices into the concatenated vertices.
        face_offset: ``(M,)`` int64, index of each mesh's first face in ``faces``.
    """

    verts_m: torch.Tensor
    vert_normals: torch.Tensor
    vert_colors: torch.Tensor
    faces: torch.Tensor
    face_offset: torch.Tensor

    @classmethod
    def from_meshes(cls, meshes: Sequence[RenderMesh]) -> PackedMeshes:
        device = meshes[0].device
        n_v = torch.tensor([m.num_verts for m in meshes], device=device)
        n_f = torch.tensor([m.num_faces for m in meshes], device=device)
        v_off = torch.cumsum(n_v, 0) - n_v
        faces = torch.cat([m.faces + v_off[i] for i, m in enumerate(meshes)])
        return cls(
            verts_m=torch.cat([m.verts_m for m in meshes]),
            vert_normals=torch.cat([m.vert_normals for m in meshes]),
            vert_colors=torch.cat([m.vert_colors for m in meshes]),
            faces=faces,
            face_offset=torch.cumsum(n_f, 0) - n_f,
        )

    def face_vertices(self, mesh_of_hit: torch.Tensor, face_id: torch.Tensor) -> torch.Tensor:
        """``(N, 3)`` indices into the concatenated vertices of face ``face_id`` (``(N,)``,
        index within its mesh) of mesh ``mesh_of_hit`` (``(N,)``)."""
        return self.faces.index_select(0, self.face_offset.index_select(0, mesh_of_hit) + face_id)


def interpolate(attr: torch.Tensor, vidx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation ``sum_k bary[:, k] * attr[vidx[:, k]]``.

    Args:
        attr: ``(V, C)`` per-vertex attribute.
        vidx: ``(N, 3)`` int64 vertex indices of the face of each point.
        bary: ``(N, 3)`` barycentric coordinates.

    Returns:
        ``(N, C)``.
    """
    out = attr.index_select(0, vidx[:, 0]) * bary[:, 0:1]
    out += attr.index_select(0, vidx[:, 1]) * bary[:, 1:2]
    out += attr.index_select(0, vidx[:, 2]) * bary[:, 2:3]
    return out


def fragments_from_hits(
    meshes: Sequence[RenderMesh],
    mesh_idx: torch.Tensor,
    T_cam_obj: torch.Tensor,
    height: int,
    width: int,
    pix: torch.Tensor,
    face_id: torch.Tensor,
    bary: torch.Tensor,
    depth_m: torch.Tensor,
) -> Fragments:
    """Assemble :class:`Fragments` from the visible surface point of the covered pixels.

    Shared by the backends: they find, for every covered pixel, its face and
    perspective-correct barycentrics; this computes the rest.

    Args:
        meshes, mesh_idx, T_cam_obj, height, width: as in :meth:`Renderer.render`
            (``mesh_idx`` and ``T_cam_obj`` on the meshes' device, ``T_cam_obj`` float32).
        pix: ``(N,)`` int64 flat pixel index ``b*H*W + v*W + u`` of each covered pixel,
            each at most once.
        face_id: ``(N,)`` int64 face index within mesh ``meshes[mesh_idx[b]]``.
        bary: ``(N, 3)`` float32 perspective-correct barycentrics.
        depth_m: ``(N,)`` float32 camera-frame depth, metres.
    """
    batch = int(mesh_idx.shape[0])
    out = empty_fragments(batch, height, width, pix.device)
    if pix.numel() == 0:
        return out
    b = torch.div(pix, height * width, rounding_mode="floor")
    packed = PackedMeshes.from_meshes(meshes)
    vidx = packed.face_vertices(mesh_idx.to(torch.int64).index_select(0, b), face_id)
    xyz_n = interpolate(torch.cat((packed.verts_m, packed.vert_normals), dim=1), vidx, bary)
    xyz = xyz_n[:, :3]
    R = T_cam_obj[:, :3, :3].index_select(0, b)
    n_cam = torch.nn.functional.normalize(
        torch.bmm(R, xyz_n[:, 3:].unsqueeze(2)).squeeze(2), dim=1, eps=1e-12
    )
    out.mask.view(-1).index_fill_(0, pix, True)
    out.depth_m.view(-1).index_copy_(0, pix, depth_m)
    out.xyz_obj.view(-1, 3).index_copy_(0, pix, xyz)
    out.normal_cam.view(-1, 3).index_copy_(0, pix, n_cam)
    out.face_id.view(-1).index_copy_(0, pix, face_id)
    out.bary.view(-1, 3).index_copy_(0, pix, bary)
    return out


class Renderer(abc.ABC):
    """Rasterizes a batch of meshes into :class:`Fragments` (see the module docstring)."""

    #: the backend's name, as given to :func:`make_renderer`.
    name: str = ""

    @torch.no_grad()
    def render(
        self,
        meshes: Sequence[RenderMesh],
        mesh_idx: torch.Tensor,
        K: torch.Tensor,
        T_cam_obj: torch.Tensor,
        height: int,
        width: int,
    ) -> Fragments:
        """Rasterize item ``b`` = mesh ``meshes[mesh_idx[b]]`` seen with ``K[b]``, ``T_cam_obj[b]``.

        Args:
            meshes: the distinct meshes of the batch, all on the same device.
            mesh_idx: ``(B,)`` int64, which mesh each batch item shows.
            K: ``(B, 3, 3)`` float pinhole intrinsics, pixels (third row ``0 0 1``).
            T_cam_obj: ``(B, 4, 4)`` float poses, object frame -> camera frame, metres.
            height, width: image size in pixels.

        Returns:
            :class:`Fragments` of shape ``(B, height, width)`` on the meshes' device.
        """
        batch = check_render_inputs(meshes, mesh_idx, K, T_cam_obj, height, width)
        height, width = int(height), int(width)
        device = meshes[0].device
        if batch == 0:
            return empty_fragments(batch, height, width, device)
        return self._rasterize(
            meshes,
            mesh_idx.to(device=device, dtype=torch.int64),
            K.to(device=device, dtype=torch.float32),
            T_cam_obj.to(device=device, dtype=torch.float32),
            height,
            width,
        )

    @abc.abstractmethod
    def _rasterize(
        self,
        meshes: Sequence[RenderMesh],
        mesh_idx: torch.Tensor,
        K: torch.Tensor,
        T_cam_obj: torch.Tensor,
        height: int,
        width: int,
    ) -> Fragments:
        """The backend's work, on inputs :meth:`render` has checked: ``B > 0``, ``mesh_idx``
        int64 and ``K``, ``T_cam_obj`` float32, all on the meshes' device; ``height`` and
        ``width`` ints."""


def make_renderer(backend: str = "auto", device: Device | None = None, **options) -> Renderer:
    """Create a renderer; backends are imported only when asked for.

    Args:
        backend: ``"torch"`` (the built-in PyTorch rasterizer, CPU and CUDA),
            ``"pytorch3d"`` (needs pytorch3d), or ``"auto"``: pytorch3d when it is
            importable and ``device`` is a CUDA device, else torch.
        device: the device the renderer will be used on, only consulted by ``"auto"``;
            default: CUDA when available, else CPU.
        options: keyword arguments of the backend's constructor (e.g. ``near``).

    Raises:
        BackendUnavailableError: (an ``ImportError``) ``"pytorch3d"`` was asked for and
            pytorch3d cannot be imported.
        ValueError: unknown backend name.
    """
    if backend == "auto":
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if torch.device(device).type == "cuda" and _pytorch3d_importable():
            backend = "pytorch3d"
        else:
            backend = "torch"
    if backend == "torch":
        from pose_refiner_ros.render.torch_raster import TorchRasterizer

        return TorchRasterizer(**options)
    if backend == "pytorch3d":
        from pose_refiner_ros.render.pytorch3d_raster import Pytorch3dRasterizer

        return Pytorch3dRasterizer(**options)
    raise ValueError(f"backend: expected 'auto', 'torch' or 'pytorch3d', got {backend!r}")


def _pytorch3d_importable() -> bool:
    """Whether the pytorch3d backend can be imported (pytorch3d installed and loadable)."""
    try:
        import pose_refiner_ros.render.pytorch3d_raster  # noqa: F401
    except ImportError:
        return False
    return True
