"""refiner_from_params: the one place the node and eval-bag build their refiner (no ROS)."""

from dataclasses import replace

import pytest

from pose_refiner_ros.mesh.registry import ObjectRegistry
from pose_refiner_ros.net.model import CorrespondenceNet, NetConfig
from pose_refiner_ros.resources import share_dir
from pose_refiner_ros.ros.params import NodeParams
from pose_refiner_ros.ros.startup import refiner_from_params
from pose_refiner_ros.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(share_dir() / "models" / "demo" / "objects.yaml")


def test_auto_falls_back_to_region_without_a_model(registry, tmp_path):
    p = replace(NodeParams.defaults(), mode="auto", model_path=str(tmp_path / "none.pt"))
    refiner, model, mode = refiner_from_params(p, registry)
    assert (model, mode, refiner.cfg.mode) == (None, "region", "region")


def test_auto_uses_the_model_when_it_exists(registry, tmp_path):
    ckpt = tmp_path / "net.pt"
    save_checkpoint(ckpt, CorrespondenceNet(NetConfig(width=32, feat_dim=16, hidden=16, ctx=16)))
    p = replace(NodeParams.defaults(), mode="auto", model_path=str(ckpt), cpu_threads=1,
                iterations=2)
    refiner, model, mode = refiner_from_params(p, registry)
    assert mode == "learned" and model == ckpt.resolve()
    assert refiner.net is not None and refiner.cfg.iterations == 2


def test_learned_without_a_model_names_the_parameter(registry, tmp_path):
    p = replace(NodeParams.defaults(), mode="learned", model_path=str(tmp_path / "none.pt"))
    with pytest.raises(FileNotFoundError, match="model_path"):
        refiner_from_params(p, registry)
