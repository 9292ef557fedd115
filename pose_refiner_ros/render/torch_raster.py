"""The default rasterizer: batched triangle rasterization in pure PyTorch (CPU and CUDA).

The same code runs on any device; every step is a vectorised tensor operation over the
whole batch (no per-pixel or per-face Python loop). The steps:

1. Vertices are moved into each item's camera frame and projected with its ``K``.
2. Per face: drop it if any vertex has ``z <= near`` or its projection has no area; else
   set up the affine screen-space barycentric functions, the affine ``1/z`` (which is
   what makes depth and barycentrics perspective-correct) and the integer bounding box of
   the pixel centres it may cover, clipped to the image.
3. Candidate (face, pixel) pairs are enumerated inside each face's bounding box only
   (``repeat_interleave`` over the box areas), tested with the barycentric (edge)
   functions, and given a key ``(float32 bits of depth) << 32 | face index``. Positive
   float32 numbers order like their bit patterns, so one ``scatter_reduce(amin)`` over
   the pixel indices of the whole batch is the z-buffer: it leaves the nearest face of
   every pixel (ties: the lower face index).
4. Barycentrics, depth and attributes are then computed for the winning pixels only.

Faces are processed in chunks of at most ``max_candidates`` pairs so that memory stays
bounded for large images and meshes. See :mod:`pose_refiner_ros.render.base` for the
conventions (pixel centres, near plane, no backface culling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pose_refiner_ros.render.base import (
    Fragments,
    Renderer,
    RenderMesh,
    empty_fragments,
    fragments_from_hits,
)

__all__ = ["TorchRasterizer"]

_INT64_MAX = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


class TorchRasterizer(Renderer):
    """Z-buffer triangle rasterizer in PyTorch.

    Args:
        near: triangles with any vertex at camera ``z <= near`` (metres) are dropped.
        max_candidates: upper bound on the (face, pixel) pairs tested at once; larger
            is faster up to memory (each pair costs about 150 bytes of temporaries;
            the default 2M pairs about 300 MB).
        eps: tolerance of the inside test on the barycentrics, so that a pixel centre
            exactly on an edge shared by two faces is never lost between them.
    """

    name = "torch"

    def __init__(self, near: float = 1e-3, max_candidates: int = 1 << 21, eps: float = 1e-6):
        if near <= 0:
            raise ValueError(f"near: expected a positive distance in metres, got {near}")
        self.near = float(near)
        self.max_candidates = int(max_candidates)
        self.eps = float(eps)

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

        packed = _project(meshes, mesh_idx.tolist(), K, T_cam_obj)
        faces = _setup_faces(packed, height, width, self.near)
        if faces is None:
            return empty_fragments(batch, height, width, device)

        # z-buffer over the candidate (face, pixel) pairs, chunk by chunk
        zbuf = torch.full((batch * height * width,), _INT64_MAX, dtype=torch.int64,
                          device=device)
        for lo, hi in _chunks(faces["count"], self.max_candidates):
            _scatter_nearest(zbuf, faces, lo, hi, width, self.eps)

        # barycentrics and depth of the winning pixels only
        pix = (zbuf != _INT64_MAX).nonzero().squeeze(1)
        f = zbuf.index_select(0, pix) & _LOW32  # index into the kept faces
        b = torch.div(pix, height * width, rounding_mode="floor")
        rem = pix - b * (height * width)
        py = torch.div(rem, width, rounding_mode="floor")
        px = rem - py * width
        dx = px.to(torch.float32) - _take(faces["x0"], f)
        dy = py.to(torch.float32) - _take(faces["y0"], f)
        l1 = _take(faces["a1"], f) * dx + _take(faces["b1"], f) * dy
        l2 = _take(faces["a2"], f) * dx + _take(faces["b2"], f) * dy
        w = torch.stack((1.0 - l1 - l2, l1, l2), dim=1) * faces["inv_z"].index_select(0, f)
        inv_depth = w.sum(dim=1)
        bary = w / inv_depth.unsqueeze(1)  # perspective-correct
        face_id = faces["face_local"].index_select(0, f)
        return fragments_from_hits(meshes, mesh_idx, T_cam_obj, height, width,
                                   pix, face_id, bary, 1.0 / inv_depth)


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` along dim 0 (``index_select`` is several times faster on CPU)."""
    return x.index_select(0, idx)


class _Projected:
    """The faces of every batch item, projected; items are grouped by mesh.

    The packed face order is: group (one per distinct mesh), then item in the group,
    then face in the mesh. Per packed face ``(Ft,)``: ``u``, ``v`` ``(3, Ft)`` pixel
    coordinates and ``z`` ``(3, Ft)`` camera depth of its three vertices. Per group:
    ``group_start`` ``(G,)`` first packed face, ``group_faces`` ``(G,)`` faces per item,
    ``group_item_offset`` ``(G,)`` start of its items in ``items`` ``(B,)``.
    """

    __slots__ = ("u", "v", "z", "group_start", "group_faces", "group_item_offset", "items")

    def face_origin(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch item and index in its mesh of packed faces ``index`` ``(N,)``."""
        g = torch.searchsorted(self.group_start, index, right=True) - 1
        rel = index - self.group_start.index_select(0, g)
        n_f = self.group_faces.index_select(0, g)
        j = torch.div(rel, n_f, rounding_mode="floor")
        item = self.items.index_select(0, self.group_item_offset.index_select(0, g) + j)
        return item, rel - j * n_f


def _project(meshes: Sequence[RenderMesh], mesh_idx: list[int], K: torch.Tensor,
             T_cam_obj: torch.Tensor) -> _Projected:
    """Project the vertices of every batch item and gather them per face."""
    device = meshes[0].device
    groups: dict = {}
    for b, m in enumerate(mesh_idx):
        groups.setdefault(m, []).append(b)
    u, v, z, starts, n_faces, item_offsets, items = [], [], [], [], [], [], []
    n_packed = 0
    for m, group in groups.items():
        mesh = meshes[m]
        k = len(group)
        bs = torch.tensor(group, dtype=torch.int64, device=device)
        # rows 3j, 3j+1, 3j+2: homogeneous pixels of item j, K (R v + t) = (K R) v + K t
        KT = torch.bmm(K.index_select(0, bs), T_cam_obj.index_select(0, bs)[:, :3, :])
        p = torch.addmm(KT[:, :, 3].reshape(3 * k, 1), KT[:, :, :3].reshape(3 * k, 3),
                        mesh.verts_m.t()).view(k, 3, -1)
        inv_w = 1.0 / p[:, 2]
        faces_t = mesh.faces.t()
        for out, val in ((u, p[:, 0] * inv_w), (v, p[:, 1] * inv_w), (z, p[:, 2])):
            # (3, k, F) -> (3, k*F): vertex c of face f of item j
            out.append(torch.stack([val.index_select(1, faces_t[c]) for c in range(3)])
                       .reshape(3, -1))
        starts.append(n_packed)
        n_faces.append(mesh.num_faces)
        item_offsets.append(len(items))
        items.extend(group)
        n_packed += k * mesh.num_faces
    out = _Projected()
    out.u, out.v, out.z = _cat(u, dim=1), _cat(v, dim=1), _cat(z, dim=1)
    out.group_start = torch.tensor(starts, dtype=torch.int64, device=device)
    out.group_faces = torch.tensor(n_faces, dtype=torch.int64, device=device)
    out.group_item_offset = torch.tensor(item_offsets, dtype=torch.int64, device=device)
    out.items = torch.tensor(items, dtype=torch.int64, device=device)
    return out


def _cat(xs: list, dim: int = 0) -> torch.Tensor:
    return xs[0] if len(xs) == 1 else torch.cat(xs, dim=dim)


def _setup_faces(packed: _Projected, height: int, width: int, near: float):
    """Per-face rasterization set-up for the faces that can cover a pixel centre.

    Returns None when no face can, else a dict of tensors over the kept faces ``Fk``
    (1-D tensors of length ``Fk`` unless said otherwise):

    - ``index`` int64: index into the packed faces; ``item``, ``face_local`` int64: its
      batch item and its index in its mesh.
    - ``x0, y0``: vertex 0 in pixels; ``a1, b1, a2, b2``: the screen-space barycentrics
      of vertices 1 and 2 are ``l1 = a1 (u - x0) + b1 (v - y0)``, ``l2 = a2 (u - x0) +
      b2 (v - y0)``.
    - ``iz0, diz1, diz2``: ``1/z0, 1/z1 - 1/z0, 1/z2 - 1/z0`` (``1/z`` is affine in
      screen space, which makes depth and barycentrics perspective-correct).
    - ``inv_z`` ``(Fk, 3)``: ``1/z`` at the three vertices.
    - ``ox, oy``: ``xlo - x0, ylo - y0`` with ``(xlo, ylo)`` the top-left pixel of the
      face's bounding box of pixel centres.
    - ``nx`` int64: box width; ``base`` int64: flat index of the box's top-left pixel in
      the batch (``b*H*W + ylo*W + xlo``); ``count`` int64: pixels in the box.
    """
    u0, u1, u2 = packed.u
    v0, v1, v2 = packed.v
    z0, z1, z2 = packed.z
    # cheap culling first: behind the near plane, or no pixel centre in the bounding box
    umin = torch.minimum(torch.minimum(u0, u1), u2).ceil_().clamp_(0, width)
    umax = torch.maximum(torch.maximum(u0, u1), u2).floor_().clamp_(-1, width - 1)
    vmin = torch.minimum(torch.minimum(v0, v1), v2).ceil_().clamp_(0, height)
    vmax = torch.maximum(torch.maximum(v0, v1), v2).floor_().clamp_(-1, height - 1)
    nx = umax.sub_(umin).add_(1).clamp_(min=0)
    count = vmax.sub_(vmin).add_(1).clamp_(min=0).mul_(nx)
    keep = (count > 0) & (torch.minimum(torch.minimum(z0, z1), z2) > near)
    index = keep.nonzero().squeeze(1)

    def k(x: torch.Tensor) -> torch.Tensor:
        return _take(x, index)

    x0, y0 = k(u0), k(v0)
    e1x, e1y, e2x, e2y = k(u1) - x0, k(v1) - y0, k(u2) - x0, k(v2) - y0
    area2 = e1x * e2y - e1y * e2x  # twice the signed area, px^2
    ok = (area2.abs() > 1e-12).nonzero().squeeze(1)  # drop degenerate projections
    if ok.numel() == 0:
        return None
    if ok.numel() < index.numel():
        index = index.index_select(0, ok)
        x0, y0, e1x, e1y, e2x, e2y, area2 = (
            _take(t, ok) for t in (x0, y0, e1x, e1y, e2x, e2y, area2))
    inv_a = 1.0 / area2
    inv_z = 1.0 / torch.stack((k(z0), k(z1), k(z2)), dim=1)
    xlo, ylo = k(umin), k(vmin)
    item, face_local = packed.face_origin(index)
    return {
        "index": index,
        "item": item,
        "face_local": face_local,
        "x0": x0,
        "y0": y0,
        "a1": e2y * inv_a,
        "b1": -e2x * inv_a,
        "a2": -e1y * inv_a,
        "b2": e1x * inv_a,
        "iz0": inv_z[:, 0].contiguous(),
        "diz1": inv_z[:, 1] - inv_z[:, 0],
        "diz2": inv_z[:, 2] - inv_z[:, 0],
        "inv_z": inv_z,
        "ox": xlo - x0,
        "oy": ylo - y0,
        "nx": k(nx).long(),
        "base": (item * height + ylo.long()) * width + xlo.long(),
        "count": k(count).long(),
    }


def _chunks(count: torch.Tensor, max_candidates: int) -> list[tuple]:
    """Split faces into consecutive ranges of at most ``max_candidates`` box pixels each
    (a single face with a larger box is a range of its own)."""
    csum = torch.cumsum(count, 0).cpu()
    n = int(count.shape[0])
    if int(csum[-1]) <= max_candidates:
        return [(0, n)]
    ranges = []
    lo = 0
    while lo < n:
        start = int(csum[lo - 1]) if lo > 0 else 0
        hi = int(torch.searchsorted(csum, start + max_candidates, right=True))
        hi = min(max(hi, lo + 1), n)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def _scatter_nearest(zbuf: torch.Tensor, faces: dict, lo: int, hi: int, width: int,
                     eps: float) -> None:
    """Test the candidate pixels of kept faces ``lo:hi``; fold the hits into ``zbuf``."""
    count = faces["count"][lo:hi]
    total = int(count.sum())
    if total == 0:
        return
    device = count.device
    fid = torch.repeat_interleave(torch.arange(lo, hi, device=device), count,
                                  output_size=total)
    start = torch.cumsum(count, 0) - count
    local = torch.arange(total, device=device) - _take(start, fid - lo)
    nx = _take(faces["nx"], fid)
    ly = torch.div(local, nx, rounding_mode="floor")
    lx = local - ly * nx
    pix = _take(faces["base"], fid) + ly * width + lx

    dx = _take(faces["ox"], fid) + lx.to(torch.float32)
    dy = _take(faces["oy"], fid) + ly.to(torch.float32)
    l1 = _take(faces["a1"], fid) * dx + _take(faces["b1"], fid) * dy
    l2 = _take(faces["a2"], fid) * dx + _take(faces["b2"], fid) * dy
    inside = (l1 >= -eps) & (l2 >= -eps) & (l1 + l2 <= 1.0 + eps)
    inv_z = _take(faces["iz0"], fid) + l1 * _take(faces["diz1"], fid) \
        + l2 * _take(faces["diz2"], fid)
    depth = 1.0 / inv_z
    key = (depth.view(torch.int32).to(torch.int64) << 32) | fid
    key.masked_fill_(~inside, _INT64_MAX)
    zbuf.scatter_reduce_(0, pix, key, reduce="amin")
