"""Datasets on disk: the BOP format, read and written (Pix3D: :mod:`.pix3d`).

BOP layout (https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md),
as read and written here::

    <root>/models/models_info.json       {obj_id: {diameter, min_x.., size_x..,
                                          symmetries_discrete, symmetries_continuous}}
    <root>/models/obj_000001.ply         mesh in millimetres
    <root>/<split_dir>/000000/scene_gt.json       {im_id: [{cam_R_m2c, cam_t_m2c, obj_id}]}
    <root>/<split_dir>/000000/scene_camera.json   {im_id: {cam_K, depth_scale}}
    <root>/<split_dir>/000000/scene_gt_info.json  {im_id: [{visib_fract, bbox_obj, ..}]}
    <root>/<split_dir>/000000/rgb/000000.png      (or .jpg; gray/ for grey images)
    <root>/<split_dir>/000000/depth/000000.png    uint16, depth_mm = value * depth_scale

BOP stores translations and model coordinates in millimetres; this module converts to
metres on reading and back on writing. ``cam_R_m2c`` / ``cam_t_m2c`` are exactly this
package's ``T_cam_obj`` (OpenCV camera axes). Files this module writes beyond BOP's:
``scene_init.json`` (the initial poses of the synthetic scenes, same format as
``scene_gt.json``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
import json
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "BopFrame",
    "BopDataset",
    "registry_from_bop_models",
    "write_bop",
    "read_models_info",
]

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class BopFrame:
    """One annotated image.

    Attributes:
        scene_id: BOP scene id (int), or the Pix3D category (str).
        im_id: BOP image id (int), or the index in ``pix3d.json`` (int).
        image_rgb: (H, W, 3) uint8 RGB.
        depth_m: (H, W) float32 metres, 0 = no return; None when the dataset has none.
        K: (3, 3) float64 pinhole intrinsics, pixels.
        objects: ``[(obj_id, T_cam_obj)]``: BOP integer object ids (Pix3D: the model's
            path relative to the dataset root, str) and (4, 4) float64 poses in metres.
        visib_fract: per object, the visible fraction from ``scene_gt_info.json``
            (None when unknown).
        image_path: the image file.
    """

    scene_id: int | str
    im_id: int
    image_rgb: np.ndarray
    depth_m: np.ndarray | None
    K: np.ndarray
    objects: list[tuple[int | str, np.ndarray]]
    visib_fract: list[float] | None = None
    image_path: str = ""


def load_json(path: Path) -> dict | list:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; is this a BOP dataset directory?") from None


def _find_image(folder: Path, im_id: int) -> Path | None:
    for ext in _IMAGE_EXTS:
        p = folder / f"{im_id:06d}{ext}"
        if p.exists():
            return p
    return None


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"{path}: cannot be read as an image")
    if img.dtype == np.uint16:
        img = (img / 257).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _pose_from_bop(gt: dict) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(gt["cam_R_m2c"], dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(gt["cam_t_m2c"], dtype=np.float64).reshape(3) / 1000.0
    return T


class BopDataset:
    """The images of one split of a BOP dataset, in scene and image order.

    Args:
        root: the dataset directory (contains ``models/`` and the split directories).
        split_dir: the split's directory name, e.g. ``"test"``, ``"train_pbr"``,
            ``"test_primesense"``.
        obj_ids: keep only these objects in ``frame.objects`` (None: all).
        scene_ids: read only these scenes (None: all).
        load_depth: read ``depth/`` (``frame.depth_m`` is None when False or absent).
        min_visib_fract: drop objects less visible than this (needs scene_gt_info.json;
            without it nothing is dropped).

    ``len(ds)`` images; ``ds[i]`` or iteration gives :class:`BopFrame` s.
    """

    def __init__(self, root: str | Path, split_dir: str = "test",
                 obj_ids: Sequence[int] | None = None, scene_ids: Sequence[int] | None = None,
                 load_depth: bool = True, min_visib_fract: float = 0.0):
        self.root = Path(root)
        self.split_path = self.root / split_dir
        if not self.split_path.is_dir():
            have = (sorted(p.name for p in self.root.iterdir()
                           if p.is_dir() and p.name != "models") if self.root.is_dir() else [])
            hint = (f"; this dataset has {', '.join(have)} (choose one with --split)" if have
                    else "")
            raise FileNotFoundError(
                f"{self.split_path}: no such split directory; expected <root>/<split_dir> "
                f"with scene folders like 000001/{hint}"
            )
        self.obj_ids = None if obj_ids is None else {int(o) for o in obj_ids}
        self.load_depth = load_depth
        self.min_visib_fract = float(min_visib_fract)
        scenes = sorted(p for p in self.split_path.iterdir()
                        if p.is_dir() and p.name.isdigit())
        if scene_ids is not None:
            keep = {int(s) for s in scene_ids}
            scenes = [p for p in scenes if int(p.name) in keep]
        self._scenes: dict[int, dict] = {}
        self._index: list[tuple[int, int]] = []
        for sp in scenes:
            sid = int(sp.name)
            gt = load_json(sp / "scene_gt.json")
            cam = load_json(sp / "scene_camera.json")
            info_p = sp / "scene_gt_info.json"
            info = load_json(info_p) if info_p.exists() else None
            self._scenes[sid] = {"path": sp, "gt": gt, "camera": cam, "info": info}
            self._index += [(sid, int(i)) for i in sorted(gt, key=int)]

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[BopFrame]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> BopFrame:
        sid, im_id = self._index[i]
        sc = self._scenes[sid]
        key = str(im_id)
        cam = sc["camera"][key]
        K = np.asarray(cam["cam_K"], dtype=np.float64).reshape(3, 3)

        rgb_path = None
        for folder in ("rgb", "gray"):
            rgb_path = _find_image(sc["path"] / folder, im_id)
            if rgb_path is not None:
                break
        if rgb_path is None:
            raise FileNotFoundError(f"{sc['path']}/rgb/{im_id:06d}.png (or .jpg): not found")
        image = read_rgb(rgb_path)

        depth = None
        if self.load_depth:
            dp = _find_image(sc["path"] / "depth", im_id)
            if dp is not None:
                raw = cv2.imread(str(dp), cv2.IMREAD_UNCHANGED)
                if raw is None:
                    raise OSError(f"{dp}: cannot be read as a depth image")
                scale = float(cam.get("depth_scale", 1.0))
                depth = (raw.astype(np.float32) * scale / 1000.0).astype(np.float32)

        objects, visib = [], []
        infos = sc["info"][key] if sc["info"] is not None else None
        for k, g in enumerate(sc["gt"][key]):
            oid = int(g["obj_id"])
            if self.obj_ids is not None and oid not in self.obj_ids:
                continue
            vf = float(infos[k]["visib_fract"]) if infos is not None else None
            if vf is not None and vf < self.min_visib_fract:
                continue
            objects.append((oid, _pose_from_bop(g)))
            visib.append(vf)
        return BopFrame(
            scene_id=sid,
            im_id=im_id,
            image_rgb=image,
            depth_m=depth,
            K=K,
            objects=objects,
            visib_fract=visib if infos is not None else None,
            image_path=str(rgb_path),
        )


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------


def read_models_info(models_dir: str | Path) -> dict[int, dict]:
    """``models_info.json`` with integer keys (units as in the file: millimetres)."""
    info = load_json(Path(models_dir) / "models_info.json")
    return {int(k): v for k, v in info.items()}


def _bop_symmetries_m(info: dict, n_continuous: int = 36) -> np.ndarray:
    """Object-frame symmetry transforms (S, 4, 4) in metres, identity first.

    Discrete symmetries are taken as they are; every continuous one (``axis``,
    ``offset`` in mm) is discretised into ``n_continuous`` rotations about the axis
    through the offset point; with both, all their products are formed (as BOP does).
    """
    from scipy.spatial.transform import Rotation

    disc = [np.eye(4)]
    for s in info.get("symmetries_discrete", []) or []:
        T = np.asarray(s, dtype=np.float64).reshape(4, 4).copy()
        T[:3, 3] /= 1000.0
        disc.append(T)
    cont = [np.eye(4)]
    for s in info.get("symmetries_continuous", []) or []:
        axis = np.asarray(s["axis"], dtype=np.float64)
        axis = axis / np.linalg.norm(axis)
        offset = np.asarray(s.get("offset", [0, 0, 0]), dtype=np.float64) / 1000.0
        for k in range(1, n_continuous):
            R = Rotation.from_rotvec(axis * 2 * np.pi * k / n_continuous).as_matrix()
            T = np.eye(4)
            T[:3, :3] = R
            T[:3, 3] = offset - R @ offset
            cont.append(T)
    out = [c @ d for c in cont for d in disc]
    return np.stack(out)


def registry_from_bop_models(models_dir: str | Path, obj_ids: Sequence[int] | None = None):
    """An ``ObjectRegistry`` of the BOP models in ``models_dir`` (meshes in mm, scaled to m).

    Class ids are ``f"obj_{obj_id:06d}"``; symmetries come from ``models_info.json``
    (continuous ones discretised, see :func:`_bop_symmetries_m`).
    """
    import trimesh

    from pose_refiner_ros.mesh.registry import ObjectModel, ObjectRegistry

    models_dir = Path(models_dir)
    infos = read_models_info(models_dir)
    models = []
    for oid in sorted(infos):
        if obj_ids is not None and oid not in set(obj_ids):
            continue
        path = models_dir / f"obj_{oid:06d}.ply"
        if not path.exists():
            raise FileNotFoundError(f"{path}: listed in models_info.json but missing")
        mesh = trimesh.load(path, force="mesh", process=False)
        models.append(_object_model(ObjectModel, mesh, f"obj_{oid:06d}", path,
                                    _bop_symmetries_m(infos[oid])))
    return ObjectRegistry(models)


def _object_model(cls, mesh_mm, class_id: str, path: Path, symmetries: np.ndarray):
    return cls.from_trimesh(class_id, mesh_mm, scale=0.001, mesh_path=path,
                            symmetries=list(symmetries))


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------


def _write_json(path: Path, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def _models_info_entry(model) -> dict:
    lo = np.asarray(model.bbox_min_m, dtype=np.float64) * 1000
    hi = np.asarray(model.bbox_max_m, dtype=np.float64) * 1000
    entry = {
        "diameter": float(model.diameter_m) * 1000,
        "min_x": lo[0], "min_y": lo[1], "min_z": lo[2],
        "size_x": hi[0] - lo[0], "size_y": hi[1] - lo[1], "size_z": hi[2] - lo[2],
    }
    syms = np.asarray(model.symmetries, dtype=np.float64).reshape(-1, 4, 4)
    disc = []
    for T in syms:
        if np.allclose(T, np.eye(4), atol=1e-9):
            continue
        Tm = T.copy()
        Tm[:3, 3] *= 1000
        disc.append([float(x) for x in Tm.reshape(-1)])
    if disc:
        entry["symmetries_discrete"] = disc
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in entry.items()}


def write_bop(scenes: Sequence, out_dir: str | Path, models: Sequence,
              split_dir: str = "test", scene_id: int = 0, depth_scale: float = 0.1,
              write_models: bool = True, image_ext: str = ".png") -> Path:
    """Write synthetic :class:`~pose_refiner_ros.data.synthetic.Scene` s in BOP layout.

    Args:
        scenes: the scenes; image ``k`` of the BOP scene is ``scenes[k]``.
        out_dir: the dataset root (created).
        models: the ``ObjectModel`` s; ``obj_id`` of ``models[i]`` is ``i + 1``.
        split_dir: split directory name (default ``test``, the split ``pose-refiner eval``
            reads by default).
        scene_id: the BOP scene id the images are written under.
        depth_scale: ``depth_mm = png_value * depth_scale`` (0.1: 0.1 mm steps, up to
            6.5 m).
        write_models: also write ``models/`` (PLY in mm with vertex colours, and
            ``models_info.json``; symmetries as ``symmetries_discrete``).
        image_ext: ``".png"`` (lossless) or ``".jpg"``.

    Returns:
        the scene directory.
    """
    out = Path(out_dir)
    obj_id_of = {m.class_id: i + 1 for i, m in enumerate(models)}
    if write_models:
        mdir = out / "models"
        mdir.mkdir(parents=True, exist_ok=True)
        info = {}
        for i, m in enumerate(models):
            mesh = m.full_mesh.copy()
            mesh.apply_scale(1000.0)
            mesh.export(mdir / f"obj_{i + 1:06d}.ply")
            info[str(i + 1)] = _models_info_entry(m)
        _write_json(mdir / "models_info.json", info)

    sdir = out / split_dir / f"{scene_id:06d}"
    (sdir / "rgb").mkdir(parents=True, exist_ok=True)
    (sdir / "depth").mkdir(parents=True, exist_ok=True)
    scene_gt, scene_init, scene_cam, scene_info = {}, {}, {}, {}
    for k, sc in enumerate(scenes):
        key = str(k)
        bgr = cv2.cvtColor(np.ascontiguousarray(sc.image_rgb), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(sdir / "rgb" / f"{k:06d}{image_ext}"), bgr):
            raise OSError(f"{sdir / 'rgb'}: cannot write image {k}")
        d = np.round(np.asarray(sc.depth_m, dtype=np.float64) * 1000.0 / depth_scale)
        cv2.imwrite(str(sdir / "depth" / f"{k:06d}.png"), np.clip(d, 0, 65535).astype(np.uint16))
        scene_cam[key] = {"cam_K": [float(x) for x in np.asarray(sc.K).reshape(-1)],
                          "depth_scale": float(depth_scale)}
        gts, inits, infos = [], [], []
        for j, o in enumerate(sc.objects):
            if o.class_id not in obj_id_of:
                raise ValueError(f"scene {k}: object class_id {o.class_id!r} is not in "
                                 f"models; pass the models the scenes were generated from")
            oid = obj_id_of[o.class_id]
            for T, lst in ((o.T_cam_obj_gt, gts), (o.T_cam_obj_init, inits)):
                T = np.asarray(T, dtype=np.float64)
                lst.append({"cam_R_m2c": [float(x) for x in T[:3, :3].reshape(-1)],
                            "cam_t_m2c": [float(x) for x in T[:3, 3] * 1000.0],
                            "obj_id": oid})
            entry = {"visib_fract": float(o.visib_fract)}
            inst = getattr(sc, "instance_map", None)
            if inst is not None:
                entry["bbox_visib"] = _bbox(inst == j)
                entry["px_count_visib"] = int((inst == j).sum())
            full = getattr(sc, "mask_full", None)
            if full is not None:
                entry["bbox_obj"] = _bbox(full[j])
                entry["px_count_all"] = int(full[j].sum())
            infos.append(entry)
        scene_gt[key], scene_init[key], scene_info[key] = gts, inits, infos
    _write_json(sdir / "scene_gt.json", scene_gt)
    _write_json(sdir / "scene_init.json", scene_init)
    _write_json(sdir / "scene_camera.json", scene_cam)
    _write_json(sdir / "scene_gt_info.json", scene_info)
    return sdir


def _bbox(mask: np.ndarray) -> list[int]:
    """BOP bbox ``[x, y, w, h]`` of a mask; ``[-1, -1, -1, -1]`` when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [-1, -1, -1, -1]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]
