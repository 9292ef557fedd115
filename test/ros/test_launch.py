"""The launch file, the params file and the node's declared parameters agree.

``launch`` / ``launch_ros`` are not installable without a ROS distribution, so the
launch file is checked statically (parsed with ``ast``); where ``launch_ros`` is
importable it is also evaluated. The node is then started exactly as the launch file
starts it, and start-up failures (model, objects YAML, mesh) are checked to name the
file and the fix.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
from pathlib import Path
import re

import pytest
import yaml

from pose_refiner_ros.ros.params import PARAMS, SPECS, NodeParams, validate

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "refiner.launch.py"
CONFIG = ROOT / "config" / "refiner.yaml"
NODE_SRC = ROOT / "pose_refiner_ros" / "ros" / "node.py"

EXPECTED_ARGUMENTS = {
    "params_file",
    "namespace",
    "device",
    "use_sim_time",
    "image",
    "camera_info",
    "detections",
    "depth",
    "coarse_pose",
}


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), str(LAUNCH))


def _module_dict(tree: ast.Module, name: str) -> dict:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in {LAUNCH}")


def _calls(tree: ast.AST, func_name: str) -> list:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", getattr(n.func, "attr", None)) == func_name
    ]


def _launch_arguments(tree: ast.Module) -> set:
    names = set()
    topics = _module_dict(tree, "INPUT_TOPICS")
    for call in _calls(tree, "DeclareLaunchArgument"):
        first = call.args[0]
        if isinstance(first, ast.Constant):
            names.add(first.value)
        elif isinstance(first, ast.Name):  # the comprehension over INPUT_TOPICS
            names |= set(topics)
    return names


def test_launch_file_declares_its_arguments():
    tree = _launch_tree()
    assert _launch_arguments(tree) == EXPECTED_ARGUMENTS
    assert set(_module_dict(tree, "INPUT_TOPICS")) == {
        "image",
        "camera_info",
        "detections",
        "depth",
        "coarse_pose",
    }


def test_launch_file_starts_our_executable_with_the_installed_params_file():
    tree = _launch_tree()
    (node,) = _calls(tree, "Node")
    kw = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(kw["package"]) == "pose_refiner_ros"
    assert ast.literal_eval(kw["executable"]) == "refiner_node"
    # the params file default is share/pose_refiner_ros/config/refiner.yaml: it exists in
    # the source tree and setup.py installs config/*.yaml there
    joins = [
        c
        for c in _calls(tree, "join")
        if any(isinstance(a, ast.Constant) and a.value == "refiner.yaml" for a in c.args)
    ]
    assert joins, (
        "the default params file is not built with os.path.join(..., 'config', 'refiner.yaml')"
    )
    parts = [a.value for a in joins[0].args if isinstance(a, ast.Constant)]
    assert parts == ["config", "refiner.yaml"] and (ROOT / Path(*parts)).is_file()
    setup_src = (ROOT / "setup.py").read_text()
    assert 'glob("config/*.yaml")' in setup_src and 'glob("launch/*.py")' in setup_src
    assert "refiner_node = pose_refiner_ros.ros.node_main:main" in setup_src
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert (
        cfg["install"]["install_scripts"] == "$base/lib/pose_refiner_ros"
    )  # where ros2 launch looks


def test_remapped_topics_are_the_nodes_inputs():
    topics = set(_module_dict(_launch_tree(), "INPUT_TOPICS"))
    calls = _calls(ast.parse(NODE_SRC.read_text()), "create_subscription")
    subscribed = {ast.literal_eval(c.args[1]) for c in calls if isinstance(c.args[1], ast.Constant)}
    assert topics == subscribed
    # the one name that is not a literal: image_transport's '<image>/compressed', built
    # from the remapped 'image' (so the launch file's image argument moves it too)
    others = [ast.unparse(c.args[1]) for c in calls if not isinstance(c.args[1], ast.Constant)]
    assert others == ["self._image_topic"], others
    assert "self._image_topic = compressed_topic(self)" in NODE_SRC.read_text()


def test_params_file_and_declared_parameters_match():
    doc = yaml.safe_load(CONFIG.read_text())
    assert list(doc) == ["/**"]
    values = doc["/**"]["ros__parameters"]
    assert set(values) == set(SPECS), (
        f"only in config: {set(values) - set(SPECS)}; only declared: {set(SPECS) - set(values)}"
    )
    for name, value in values.items():
        spec = SPECS[name]
        assert type(value) is type(spec.default), (
            f"{name}: {value!r} is not a {type(spec.default).__name__}"
        )
        assert value == spec.default, (
            f"{name}: config says {value!r}, the node's default is {spec.default!r}"
        )
        assert validate(name, value) is None
    assert NodeParams(**values) == NodeParams.defaults()
    # every parameter is documented in the README's interface table
    readme = ROOT / "README.md"
    if readme.is_file():
        text = readme.read_text()
        missing = [p.name for p in PARAMS if f"`{p.name}`" not in text]
        assert not missing, f"README does not document {missing}"


def test_parameter_validation():
    assert validate("mode", "flow") is None
    assert validate("tf_prefix", "robot1/refined_") is None
    assert "must not start with '/'" in validate("tf_prefix", "/")
    assert "must not start with '/'" in validate("tf_prefix", "a//b_")
    assert "expected one of" in validate("mode", "magic")
    assert "expected an integer, got a floating-point number (2.5)" in validate("iterations", 2.5)
    assert validate("confidence_threshold", 1) is None  # an int where a float is declared
    assert "multiple of 8" in validate("crop_size", 100)
    assert "cuda:N" in validate("device", "gpu")
    assert "restart" in validate("objects_yaml", "x.yaml", running=True)
    assert validate("use_sim_time", True) is None  # not ours
    assert "expected" in validate("tracking_max_age_s", float("nan"))


@pytest.mark.skipif(
    importlib.util.find_spec("launch_ros") is None,
    reason="launch_ros not installed (no ROS distribution)",
)
def test_launch_description_evaluates():
    spec = importlib.util.spec_from_file_location("refiner_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    from launch.actions import DeclareLaunchArgument

    names = {a.name for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert names == EXPECTED_ARGUMENTS


# -- start-up as launched, and start-up failures -------------------------------------------------
def _run_node(args: list, timeout: float = 60.0, until: str | None = None):
    """Start the node like the launch file (see ``node_harness.run_node``)."""
    import node_harness as nh

    return nh.run_node(args, timeout, until)


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_node_starts_as_launched_and_shuts_down_cleanly():
    mode = [] if (ROOT / "models" / "refiner.pt").is_file() else ["-p", "mode:=flow"]
    code, code_after, text = _run_node(
        mode
        + [
            "-p",
            "device:=auto",
            "-p",
            "use_sim_time:=false",
            "-r",
            "image:=/cam/image_raw",
            "-r",
            "detections:=/det",
        ],
        until="ready:",
    )
    assert code is None and "ready:" in text, text
    assert code_after == 0, text  # SIGINT: clean shutdown


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_missing_model_fails_at_start_up_naming_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "nope.pt"
    code, _, text = _run_node(["-p", "mode:=learned", "-p", f"model_path:={missing}"])
    assert code == 1, text
    assert str(missing) in text and "mode:=region" in text and "model_path" in text, text


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_broken_objects_yaml_fails_at_start_up_naming_the_file_and_the_fix(tmp_path):
    cases = {
        "missing.yaml": None,
        "bad_mesh.yaml": "objects:\n  - class_id: mug\n    mesh: no_such_mesh.ply\n",
        "not_yaml.yaml": "objects: [unclosed\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        code, _, text = _run_node(["-p", "mode:=flow", "-p", f"objects_yaml:={path}"])
        assert code == 1, text
        assert "cannot start" in text and name in text, text
        if name == "bad_mesh.yaml":
            assert "no_such_mesh.ply" in text, text
        if name == "missing.yaml":
            assert "objects_yaml" in text, text
        assert not re.search(r"Traceback", text), text
