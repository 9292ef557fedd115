"""The launch file, the params file and the node's declared parameters agree.

``launch`` / ``launch_ros`` are on no registry this project installs from, so the launch
file is evaluated by stand-ins of the launch API (``launch_standin``, following
upstream's semantics): its arguments, and the node command it describes (executable,
name, namespace, params files, typed parameter overrides, remappings). The node is then
started with exactly that command over the real middleware. Where ``launch_ros`` is
importable (a ROS distribution) the file is also loaded with the real one. Start-up
failures (model, objects YAML, mesh) are checked to name the file and the fix.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
from pathlib import Path
import re

import launched
import pytest
import yaml

from pose_refiner_ros.ros.params import PARAMS, SPECS, NodeParams, validate

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "refiner.launch.py"
CONFIG = ROOT / "config" / "refiner.yaml"
NODE_SRC = ROOT / "pose_refiner_ros" / "ros" / "node.py"

INPUTS = ("image", "camera_info", "detections", "depth", "coarse_pose")
EXPECTED_ARGUMENTS = {"params_file", "namespace", "tf_prefix", "lifecycle", "device",
                      "use_sim_time", *INPUTS}


def _one_node(arguments=None, tmp_path=None):
    nodes, context = launched.launch("refiner.launch.py", arguments, tmp_path)
    assert len(nodes) == 1, nodes
    assert not context.warnings, context.warnings
    return nodes[0]


def test_launch_file_declares_its_arguments():
    from launch_standin import declared_arguments, load_launch_description, standin_modules

    with standin_modules():
        declared = declared_arguments(load_launch_description(LAUNCH))
    assert set(declared) == EXPECTED_ARGUMENTS
    assert all(a.description for a in declared.values())


def test_launch_file_starts_our_executable_with_the_installed_params_file(tmp_path):
    node = _one_node(tmp_path=tmp_path)
    assert (node.package, node.executable, node.name) == (
        "pose_refiner_ros", "refiner_node", "pose_refiner")
    assert node.namespace == "/" and node.fqn == "/pose_refiner"
    assert "refiner_node = pose_refiner_ros.ros.node_main:main" in (ROOT / "setup.py").read_text()
    # first the installed params file (share/pose_refiner_ros/config/refiner.yaml, which
    # setup.py installs from config/), then the launch arguments' overrides
    params_file, overrides = node.params_files
    assert Path(params_file).resolve() == CONFIG.resolve()
    setup_src = (ROOT / "setup.py").read_text()
    assert 'glob("config/*.yaml")' in setup_src and 'glob("launch/*.py")' in setup_src
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    # where ros2 launch looks
    assert cfg["install"]["install_scripts"] == "$base/lib/pose_refiner_ros"
    assert yaml.safe_load(Path(overrides).read_text()) == {
        "/pose_refiner": {"ros__parameters": {"device": "auto", "use_sim_time": False}}}
    assert node.remappings == [(t, t) for t in INPUTS]


def _check_overrides(parameters: dict) -> None:
    """Every override is one of the node's parameters (or use_sim_time), of its type and
    valid."""
    for name, value in parameters.items():
        if name == "use_sim_time":
            assert type(value) is bool, (name, value)
            continue
        assert name in SPECS, f"the launch file sets {name!r}, which the node does not declare"
        assert type(value) is type(SPECS[name].default), (name, value)
        assert validate(name, value) is None, (name, value, validate(name, value))


def test_launch_arguments_reach_the_node_typed(tmp_path):
    node = _one_node({
        "namespace": "robot/cam", "device": "cuda:1", "use_sim_time": "True",
        "image": "/cam/color/image_raw", "detections": "/det"}, tmp_path)
    assert node.namespace == "/robot/cam" and node.fqn == "/robot/cam/pose_refiner"
    assert node.parameters == {"device": "cuda:1", "use_sim_time": True}
    _check_overrides(node.parameters)
    assert dict(node.remappings) == {
        "image": "/cam/color/image_raw", "camera_info": "camera_info", "detections": "/det",
        "depth": "depth", "coarse_pose": "coarse_pose"}
    assert node.ros_args[:5] == ["--ros-args", "-r", "__node:=pose_refiner", "-r",
                                 "__ns:=/robot/cam"]


def test_launch_refuses_what_launch_would_refuse(tmp_path):
    with pytest.raises(ValueError, match="maybe"):
        _one_node({"use_sim_time": "maybe"}, tmp_path)
    with pytest.raises(RuntimeError, match="declares no argument"):
        _one_node({"imgae": "/cam"}, tmp_path)


def test_remapped_topics_are_the_nodes_inputs():
    from launch_standin import declared_arguments, load_launch_description, standin_modules

    with standin_modules():
        declared = set(declared_arguments(load_launch_description(LAUNCH)))
    remapped = {a for a, _ in _one_node().remappings}
    assert remapped <= declared
    calls = _calls(ast.parse(NODE_SRC.read_text()), "create_subscription")
    subscribed = {ast.literal_eval(c.args[1]) for c in calls if isinstance(c.args[1], ast.Constant)}
    assert remapped == subscribed == set(INPUTS)
    # the one name that is not a literal: image_transport's '<image>/compressed', built
    # from the remapped 'image' (so the launch file's image argument moves it too)
    others = [ast.unparse(c.args[1]) for c in calls if not isinstance(c.args[1], ast.Constant)]
    assert others == ["self._image_topic"], others
    assert "self._image_topic = compressed_topic(self)" in NODE_SRC.read_text()


def _calls(tree: ast.AST, func_name: str) -> list:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", getattr(n.func, "attr", None)) == func_name
    ]


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
def test_launch_description_evaluates_with_the_real_launch():
    spec = importlib.util.spec_from_file_location("refiner_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    assert {a.name for a in ld.get_launch_arguments()} == EXPECTED_ARGUMENTS
    spec = importlib.util.spec_from_file_location("cameras_launch", LAUNCH.with_name(
        "cameras.launch.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = {a.name for a in mod.generate_launch_description().get_launch_arguments()}
    assert {"cameras", "params_file", "image_pattern"} <= names


# -- start-up as launched, and start-up failures -------------------------------------------------
def _run_node(args: list, timeout: float = 60.0, until: str | None = None):
    """Start the node like the launch file (see ``node_harness.run_node``)."""
    import node_harness as nh

    return nh.run_node(args, timeout, until)


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_node_starts_as_launched_and_shuts_down_cleanly(tmp_path):
    import node_harness as nh

    node = _one_node({"image": "/cam/image_raw", "detections": "/det"}, tmp_path)
    code, code_after, text = nh.run_command(launched.command(node), until="ready:")
    assert code is None and "ready:" in text, text
    assert "image /cam/image_raw (raw)" in text, text  # the remapping reached the node
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
