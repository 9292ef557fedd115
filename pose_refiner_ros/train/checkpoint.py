"""Checkpoints: the network's weights together with the config that builds it.

A checkpoint is a plain dict of tensors and primitives, loadable with
``torch.load(..., weights_only=True)`` (no pickled code, nothing fetched):

    {"format": "pose_refiner_ros/net/1", "net_config": {...}, "state_dict": {...},
     "meta": {...}, ["optimizer": ..., "step": int]}
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import warnings

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
        with warnings.catch_warnings():  # torch warns about pickle protocols of other files
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for files that are not ours
        raise CheckpointError(_not_ours(path, _load_failure(path, e))) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(_not_ours(path, f"it does not carry the format {FORMAT!r}"))
    return blob


def _not_ours(path: Path, why: str) -> str:
    return (
        f"{path} is not a checkpoint this project wrote ({why}); point the 'model_path' "
        "parameter (or --model) at one written by `pose-refiner train`, e.g. the shipped "
        "models/refiner.pt (restore that one from the repository if it was changed)"
    )


def _load_failure(path: Path, error: Exception) -> str:
    """What torch's refusal means, in a few words. Its own message is not repeated: it
    advises loading the file with ``weights_only=False``, which would run any code the
    file carries."""
    text = str(error)
    if path.stat().st_size == 0:
        return "the file is empty"
    found = re.search(r"unsupported GLOBAL (\S+)", text)
    if found:
        return (f"it holds Python objects, such as {found.group(1)}, that a checkpoint of "
                "this project never contains; they were not loaded")
    if "Weights only load failed" in text:
        return "it is not a PyTorch file of tensors and plain values"
    if "zip archive" in text or "central directory" in text:
        return "it is not a complete PyTorch file: truncated or damaged"
    return "it is not a PyTorch file"


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
