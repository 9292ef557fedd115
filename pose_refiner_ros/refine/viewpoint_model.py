"""Sparse viewpoint models: an object's contour, precomputed from many directions.

The region modality needs, at the current pose, points on the object's silhouette with
their outward normals. Rendering the mesh for every measurement costs a rasterization;
the region-based trackers (RBGT / SRT3D / ICG, Stoiber et al.) instead render the mesh
once from a few thousand directions on a sphere around it and keep, per direction, a
sparse set of contour points. At run time the direction nearest to where the camera
looks from picks the set, and the points are moved with the pose: no rendering, no
network, a fraction of a millisecond per object.

Per view ``k`` (direction ``dirs[k]`` from the object's centre towards the camera,
object frame), up to ``points`` contour samples hold:

- ``pts``: the 3D point on the silhouette's edge (object frame, metres): the rendered
  surface point at the boundary pixel, moved to the sub-pixel edge along the normal;
- ``normals``: the edge's outward normal as a 3D direction (object frame) in the plane
  perpendicular to the view's optical axis;
- ``fg_m`` / ``bg_m``: how far the silhouette stays unbroken inside the edge, and free
  outside it, along the normal (metres at the point's depth): a line measurement must
  not run beyond, or it would find another part of the object's outline (ICG's
  "continuous distances");

and up to ``surface_points`` visible surface points with their normals (object frame),
for the depth modality (point-to-plane against a depth image).

Views are the vertices of an icosphere (``trimesh.creation.icosphere``): subdivision 3
gives 642 directions about 8 deg apart; the contour of a direction between them
differs from its nearest view's by the small out-of-plane rotation, which the solver's
next measurement, from the next nearest view, corrects.

Written here: no installable library builds sparse contour models for region-based
pose tracking (DLR's 3DObjectTracking is a C++ application; its ideas are used).
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
import uuid

import numpy as np
import torch
import torch.nn.functional as F

from ..render.base import RenderMesh
from .region import contour_samples

__all__ = ["ViewpointModel", "build_viewpoint_model", "load_or_build", "default_cache_dir",
           "nearest_views", "gather_views"]

#: bump when the model's content changes (cache files of older versions are rebuilt)
_VERSION = 2


@dataclass(frozen=True)
class ViewpointModel:
    """Contour samples of one mesh from ``V`` directions (module docstring).

    Attributes:
        dirs: (V, 3) unit directions from ``centre`` towards the camera, object frame.
        centre: (3,) the point the views look at (bounding-box centre), object frame, m.
        pts: (V, N, 3) edge points, object frame, metres.
        normals: (V, N, 3) unit outward normals, object frame.
        fg_m, bg_m: (V, N) unbroken silhouette inside / free space outside the edge along
            the normal, metres at the point's depth.
        valid: (V, N) bool; False for padding.
        surf_pts, surf_normals: (V, Ns, 3) visible surface points and their unit
            normals, object frame.
        surf_valid: (V, Ns) bool; False for padding.
    """

    dirs: torch.Tensor
    centre: torch.Tensor
    pts: torch.Tensor
    normals: torch.Tensor
    fg_m: torch.Tensor
    bg_m: torch.Tensor
    valid: torch.Tensor
    surf_pts: torch.Tensor
    surf_normals: torch.Tensor
    surf_valid: torch.Tensor

    def to(self, device) -> ViewpointModel:
        return ViewpointModel(*(getattr(self, k).to(device) for k in _FIELDS))

    def nearest_view(self, T_cam_obj: torch.Tensor) -> torch.Tensor:
        """(B,) index of the view nearest to where the camera of ``T_cam_obj`` (B, 4, 4)
        sees the object from."""
        R, t = T_cam_obj[:, :3, :3], T_cam_obj[:, :3, 3]
        cam = -(R.transpose(1, 2) @ t[..., None])[..., 0]  # camera centre, object frame
        d = cam - self.centre
        return (d @ self.dirs.T).argmax(-1)


def nearest_views(models, model_idx: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(B,) each object's nearest view: object ``b`` uses ``models[model_idx[b]]`` at the
    pose ``T[b]`` (B, 4, 4)."""
    view = torch.zeros(T.shape[0], dtype=torch.long, device=T.device)
    for k, m in enumerate(models):
        sel = (model_idx == k).nonzero()[:, 0]
        if len(sel):
            view[sel] = m.nearest_view(T[sel])
    return view


def gather_views(models, model_idx: torch.Tensor, view: torch.Tensor, name: str,
                 dtype=None) -> torch.Tensor:
    """(B, ...) the field ``name`` of each object's view ``view`` (B,), in ``dtype``."""
    first = getattr(models[0], name)
    out = torch.zeros((len(view), *first.shape[1:]), dtype=dtype or first.dtype,
                      device=view.device)
    for k, m in enumerate(models):
        sel = (model_idx == k).nonzero()[:, 0]
        if len(sel):
            out[sel] = getattr(m, name)[view[sel]].to(out.dtype)
    return out


_FIELDS = ("dirs", "centre", "pts", "normals", "fg_m", "bg_m", "valid", "surf_pts",
           "surf_normals", "surf_valid")


def _look_at(dirs: np.ndarray, centre: np.ndarray, dist: float) -> np.ndarray:
    """(V, 4, 4) ``T_cam_obj`` of cameras at ``centre + dist * dirs`` looking at ``centre``."""
    z = -dirs
    up = np.where(np.abs(z[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]])
    x = np.cross(up, z)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(z, x)
    R = np.stack([x, y, z], 1)  # rows: camera axes in the object frame
    T = np.tile(np.eye(4), (len(dirs), 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = -(R @ (centre + dist * dirs)[..., None])[..., 0]
    return T


def _free_length(mask: torch.Tensor, start: torch.Tensor, step: torch.Tensor, want: bool,
                 max_px: int) -> torch.Tensor:
    """(B, N) pixels walked from ``start`` (B, N, 2) along ``step`` (B, N, 2) while the
    mask (B, S, S) keeps the value ``want``, at most ``max_px``."""
    S = mask.shape[-1]
    k = torch.arange(1, max_px + 1, dtype=start.dtype)
    pos = start[:, :, None] + k[None, None, :, None] * step[:, :, None]  # (B, N, L, 2)
    grid = (pos + 0.5) / S * 2.0 - 1.0
    m = F.grid_sample(mask[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                      align_corners=False)[:, 0] > 0.5
    same = (m == want).float()
    return torch.cumprod(same, -1).sum(-1)


def build_viewpoint_model(renderer, mesh: RenderMesh, diameter_m: float, points: int = 200,
                          subdivisions: int = 3, size_px: int = 256, batch: int = 32,
                          max_dist_px: int = 64, surface_points: int = 200) -> ViewpointModel:
    """Render ``mesh`` from the icosphere's directions and keep its contour (CPU tensors).

    Args:
        renderer: a ``render.Renderer``.
        mesh: the object's render mesh.
        diameter_m: the object's diameter (sets the views' distance and zoom).
        points: contour samples per view at most.
        subdivisions: icosphere subdivisions (3: 642 views, 4: 2562).
        size_px: side of the square view renderings; the object spans ~80 % of it.
        batch: views rendered at once.
        max_dist_px: the continuous distances are measured up to this many pixels.
        surface_points: visible surface samples per view at most.
    """
    import trimesh

    device = mesh.device
    dirs = np.asarray(trimesh.creation.icosphere(subdivisions=subdivisions).vertices, np.float64)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    verts = mesh.verts_m.detach().double().cpu().numpy()
    centre = 0.5 * (verts.min(0) + verts.max(0))
    dist = 3.0 * diameter_m
    f = 0.8 * size_px * dist / diameter_m
    K = torch.tensor([[f, 0, size_px / 2 - 0.5], [0, f, size_px / 2 - 0.5], [0, 0, 1]],
                     dtype=torch.float32, device=device)
    T_all = torch.as_tensor(_look_at(dirs, centre, dist), dtype=torch.float32, device=device)
    out = {k: [] for k in _FIELDS[2:]}
    prio = torch.rand(size_px * size_px, generator=torch.Generator().manual_seed(0)).to(device)
    for b0 in range(0, len(dirs), batch):
        T = T_all[b0:b0 + batch]
        n = T.shape[0]
        idx = torch.zeros(n, dtype=torch.long, device=device)
        frags = renderer.render([mesh], idx, K[None].expand(n, 3, 3), T, size_px, size_px)
        c = contour_samples(frags.mask, frags.xyz_obj, frags.depth_m, points)
        z = c.depth_m.clamp_min(1e-6)
        m_per_px = z / f  # (n, N)
        R = T[:, :3, :3]
        n_cam = torch.cat([c.normal, torch.zeros_like(c.normal[..., :1])], -1)  # (n, N, 3)
        n_obj = n_cam @ R  # R^T n for row vectors
        pts = c.pts_obj + (c.offset * m_per_px)[..., None] * n_obj
        edge = c.uv + c.offset[..., None] * c.normal
        # Walk from half a pixel either side of the edge.
        fg = _free_length(frags.mask, edge - 0.5 * c.normal, -c.normal, True, max_dist_px) + 0.5
        bg = _free_length(frags.mask, edge + 0.5 * c.normal, c.normal, False, max_dist_px) + 0.5
        out["pts"].append(pts.cpu())
        out["normals"].append(n_obj.cpu())
        out["fg_m"].append((fg * m_per_px * c.valid).cpu())
        out["bg_m"].append((bg * m_per_px * c.valid).cpu())
        out["valid"].append(c.valid.cpu())
        # Surface samples: a fixed pseudo-random choice among the rendered pixels.
        score = torch.where(frags.mask.reshape(n, -1), prio + 1.0, torch.zeros_like(prio))
        top, pix = score.topk(surface_points, dim=-1)
        bidx = torch.arange(n, device=device)[:, None]
        sp = frags.xyz_obj.reshape(n, -1, 3)[bidx, pix]
        sn = frags.normal_cam.reshape(n, -1, 3)[bidx, pix] @ R  # to the object frame
        sn = sn / sn.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        out["surf_pts"].append(sp.cpu())
        out["surf_normals"].append(sn.cpu())
        out["surf_valid"].append((top > 0).cpu())
    cat = {k: torch.cat(v) for k, v in out.items()}
    return ViewpointModel(dirs=torch.as_tensor(dirs, dtype=torch.float32),
                          centre=torch.as_tensor(centre, dtype=torch.float32), **cat)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pose_refiner_ros/viewpoints`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "pose_refiner_ros" / "viewpoints"


def _key(mesh: RenderMesh, diameter_m: float, settings: dict) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(mesh.verts_m.detach().cpu().numpy(), np.float32).tobytes())
    h.update(np.ascontiguousarray(mesh.faces.detach().cpu().numpy(), np.int64).tobytes())
    h.update(repr((_VERSION, round(float(diameter_m), 6), sorted(settings.items()))).encode())
    return h.hexdigest()[:24]


def load_or_build(renderer, mesh: RenderMesh, diameter_m: float,
                  cache_dir: str | os.PathLike | None = None, **settings) -> ViewpointModel:
    """The viewpoint model of ``mesh``, from ``cache_dir`` when a file built from the same
    mesh and settings is there, else built and saved there (None: not cached).

    The file name is a hash of the mesh's vertices and faces and of the settings, so a
    changed mesh gets a new model; a cache that cannot be read or written is ignored.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_key(mesh, diameter_m, settings)}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    return ViewpointModel(*(torch.from_numpy(z[k]) for k in _FIELDS))
            except (OSError, ValueError, KeyError):
                pass  # unreadable: rebuild
    model = build_viewpoint_model(renderer, mesh, diameter_m, **settings)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.npz")
            np.savez(tmp, **{k: getattr(model, k).numpy() for k in _FIELDS})
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs the rebuild
    return model
