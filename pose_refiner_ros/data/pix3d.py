"""Pix3D-style annotations (read), as :class:`~.bop.BopFrame` s.

Pix3D (``pix3d.json``, Sun et al. 2018): ``rot_mat``/``trans_mat`` map model points into
a camera frame whose x axis points *left* and y axis *up* (z forward), and
``focal_length`` is in millimetres for a sensor 32 mm wide (see the dataset's README and
its issue #2 on aligning models to images). So, in this package's conventions::

    T_cam_obj = diag(-1, -1, 1, 1) @ [[rot_mat, trans_mat], [0, 1]]
    f_px = focal_length / 32 * img_width,  c = ((w - 1) / 2, (h - 1) / 2)

(the principal point is the image centre in the pixel-centre convention; tools that
write ``w / 2`` differ by half a pixel). Pix3D models are in their own units (about
metres); ``model_scale`` converts them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .bop import BopFrame, load_json, read_rgb

__all__ = ["Pix3dDataset", "pix3d_pose_and_K"]

_PIX3D_TO_OPENCV = np.diag([-1.0, -1.0, 1.0, 1.0])


def pix3d_pose_and_K(entry: dict, model_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(T_cam_obj (4, 4) metres, K (3, 3))`` of one ``pix3d.json`` entry.

    See the module docstring for the conventions; ``model_scale`` multiplies the model
    units (and so ``trans_mat``) into metres.
    """
    w, h = (int(x) for x in entry["img_size"])
    T = np.eye(4)
    T[:3, :3] = np.asarray(entry["rot_mat"], dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(entry["trans_mat"], dtype=np.float64).reshape(3) * model_scale
    T = _PIX3D_TO_OPENCV @ T
    f = float(entry["focal_length"]) / 32.0 * w
    K = np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])
    return T, K


class Pix3dDataset:
    """Pix3D-style annotations (``pix3d.json``) as :class:`BopFrame` s.

    Args:
        root: dataset directory; ``img`` and ``model`` paths in the JSON are relative to it.
        json_path: the annotation file (relative to ``root`` unless absolute).
        categories: keep only these categories (None: all).
        clean_only: keep only samples marked neither ``truncated`` nor ``occluded`` (nor
            ``slightly_occluded``), as GCF evaluates.
        model_scale: model units to metres.

    ``frame.scene_id`` is the category, ``frame.im_id`` the entry's index in the JSON,
    ``frame.objects`` one ``(model path, T_cam_obj)``, ``frame.depth_m`` None.
    """

    def __init__(self, root: str | Path, json_path: str | Path = "pix3d.json",
                 categories: Sequence[str] | None = None, clean_only: bool = False,
                 model_scale: float = 1.0):
        self.root = Path(root)
        jp = Path(json_path)
        jp = jp if jp.is_absolute() else self.root / jp
        entries = load_json(jp)
        if not isinstance(entries, list):
            raise ValueError(f"{jp}: expected a JSON list of annotations, got "
                             f"{type(entries).__name__}")
        self.model_scale = float(model_scale)
        cats = None if categories is None else set(categories)
        self._entries = []
        for i, e in enumerate(entries):
            if cats is not None and e.get("category") not in cats:
                continue
            if clean_only and (e.get("truncated") or e.get("occluded")
                               or e.get("slightly_occluded")):
                continue
            self._entries.append((i, e))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[BopFrame]:
        for i in range(len(self)):
            yield self[i]

    def entry(self, i: int) -> dict:
        """The raw JSON entry of frame ``i``."""
        return self._entries[i][1]

    def __getitem__(self, i: int) -> BopFrame:
        idx, e = self._entries[i]
        path = self.root / e["img"]
        image = read_rgb(path)
        T, K = pix3d_pose_and_K(e, self.model_scale)
        if image.shape[1] != int(e["img_size"][0]) or image.shape[0] != int(e["img_size"][1]):
            raise ValueError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but "
                             f"img_size says {e['img_size'][0]}x{e['img_size'][1]}")
        return BopFrame(scene_id=str(e.get("category", "")), im_id=idx, image_rgb=image,
                        depth_m=None, K=K, objects=[(str(e["model"]), T)], visib_fract=None,
                        image_path=str(path))
