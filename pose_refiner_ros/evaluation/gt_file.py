"""Ground truth beside a recording: the JSON sidecar file of ``eval-bag --gt-file``,
written by ``make-bag``.

Layout::

    {"frames": [{"stamp_ns": 1700000000000000000,
                 "objects": [{"class_id": "mug", "T_cam_obj": [[...], [...], [...], [...]]}]}]}

``T_cam_obj``: 4x4, row-major, metres, in the image's camera frame; ``stamp_ns``: the
image's header stamp (``"stamp": {"sec": .., "nanosec": ..}`` is accepted instead).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["read_ground_truth_file", "write_ground_truth_file"]


def read_ground_truth_file(path: str | os.PathLike) -> dict[int, list[tuple[str, np.ndarray]]]:
    """The sidecar ground truth (module docstring): image stamp (ns) -> ``[(class_id, T)]``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        out: dict[int, list] = {}
        for fr in data["frames"]:
            if "stamp_ns" in fr:
                stamp = int(fr["stamp_ns"])
            else:
                stamp = int(fr["stamp"]["sec"]) * 1_000_000_000 + int(fr["stamp"]["nanosec"])
            objs = []
            for o in fr["objects"]:
                T = np.asarray(o["T_cam_obj"], dtype=np.float64)
                if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                    raise ValueError(f"T_cam_obj of {o.get('class_id')!r} at stamp {stamp}: "
                                     f"expected a finite 4x4 matrix, got shape {T.shape}")
                objs.append((str(o["class_id"]), T))
            out.setdefault(stamp, []).extend(objs)
        return out
    except FileNotFoundError:
        raise FileNotFoundError(f"--gt-file {path}: no such file") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"--gt-file {path}: not a ground-truth file ({type(e).__name__}: {e}); expected JSON "
            '{"frames": [{"stamp_ns": int, "objects": [{"class_id": str, "T_cam_obj": 4x4}]}]}'
        ) from None


def write_ground_truth_file(path: str | os.PathLike,
                            frames: list[tuple[int, list[tuple[str, np.ndarray]]]]) -> None:
    """Write a sidecar ground-truth file: ``[(stamp_ns, [(class_id, T_cam_obj)])]``."""
    data = {"frames": [{"stamp_ns": int(s), "objects": [
        {"class_id": c, "T_cam_obj": np.asarray(T, dtype=np.float64).round(12).tolist()}
        for c, T in objs]} for s, objs in frames]}
    tmp = Path(path).with_name(Path(path).name + ".partial")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
