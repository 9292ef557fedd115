"""Checkpoints: the network's weights together with the config that builds it.

A checkpoint is a plain dict of tensors and primitives, loadable with
``torch.load(..., weights_only=True)`` (no pickled code, nothing fetched):

    {"format": "pose_refiner_ros/net/1", "net_config": {...}, "state_dict": {...},
     "meta": {...}, ["optimizer": ..., "step": int]}
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..net.model import CorrespondenceNet, NetConfig

FORMAT = "pose_refiner_ros/net/1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing or not one of ours; the message says which and why."""


def save_checkpoint(
    path: str | Path, net: CorrespondenceNet, meta: dict | None = None, **extra
) -> None:
    """Write atomically (temporary name, then rename): an interrupted save leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    blob = {
        "format": FORMAT,
        "net_config": net.cfg.to_dict(),
        "state_dict": state,
        "meta": dict(meta or {}),
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (``weights_only=True``), validated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"model checkpoint {path} not found: point the 'model_path' parameter (or --model) "
            "at a .pt file, e.g. the shipped models/refiner.pt"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files
        raise CheckpointError(
            f"model checkpoint {path} could not be read ({e}); "
            "restore it from the repository or re-train it"
        ) from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a pose_refiner_ros checkpoint (expected format {FORMAT!r})"
        )
    return blob


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> CorrespondenceNet:
    """Build the network from a checkpoint's config and load its weights."""
    blob = read_checkpoint(path)
    try:
        net = CorrespondenceNet(NetConfig(**blob["net_config"]))
        net.load_state_dict(blob["state_dict"])
    except (TypeError, RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{path}: weights do not match the network they describe ({e})"
        ) from e
    return net.to(device).eval()
