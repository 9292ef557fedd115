"""The shipped model: loadable without code execution, small, described by its card."""

import hashlib
from pathlib import Path

from pose_refiner_ros.resources import default_model_path
from pose_refiner_ros.train.checkpoint import load_checkpoint, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CARD = ROOT / "models" / "README.md"


def test_shipped_model_loads_weights_only_and_is_small():
    path = default_model_path()
    assert path.is_file(), f"{path} must ship with the package"
    assert path.stat().st_size <= 50 * 2**20
    blob = read_checkpoint(path)  # torch.load(weights_only=True)
    assert "optimizer" not in blob, "ship the weights only"
    net = load_checkpoint(path)
    assert sum(p.numel() for p in net.parameters()) > 0


def test_model_card_matches_the_weights_and_says_how_they_were_trained():
    blob = read_checkpoint(default_model_path())
    stages = blob["meta"]["stages"]
    assert stages and all(s["steps"] > 0 and "config" in s for s in stages)
    # trained on the procedural "train" split alone (no objects YAML of anyone's)
    assert all(s["config"].get("objects_yaml") is None for s in stages)
    card = CARD.read_text()
    digest = hashlib.sha256(default_model_path().read_bytes()).hexdigest()
    assert digest[:12] in card, "the model card must name the SHA-256 of the weights it describes"
    for word in ("## Data", "## Training", "wall time", "CPU", "Validation", "ADD(-S)@0.1d"):
        assert word in card
