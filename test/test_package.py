"""The package as ROS 2 and pip see it: imports, package.xml, setup.py, setup.cfg."""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.metadata
from pathlib import Path
import pkgutil
import xml.etree.ElementTree as ET

import pytest

import pose_refiner_ros

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "pose_refiner_ros"

# Top-level modules the ROS-free core must never import (only pose_refiner_ros.ros may),
# besides every *_msgs / *_interfaces package. Pure-Python helpers such as
# ament_index_python and rosbags are not ROS runtime dependencies and are allowed.
ROS_MODULES = {
    "rclpy",
    "rosidl_runtime_py",
    "tf2_ros",
    "launch",
    "launch_ros",
    "cv_bridge",
    "message_filters",
}


def _package_xml() -> ET.Element:
    return ET.parse(ROOT / "package.xml").getroot()


def _setup_py_call() -> ast.Call:
    tree = ast.parse((ROOT / "setup.py").read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup"
    ]
    assert len(calls) == 1, "setup.py should call setup() exactly once"
    return calls[0]


def _setup_kwarg(name: str):
    """The literal value of setup(name=...); module-level constants are resolved."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    constants = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for kw in _setup_py_call().keywords:
        if kw.arg == name:
            value = kw.value
            if isinstance(value, ast.Name) and value.id in constants:
                value = constants[value.id]
            return ast.literal_eval(value)
    raise AssertionError(f"setup.py does not pass {name}= to setup()")


def test_package_and_subpackages_import() -> None:
    names = [m.name for m in pkgutil.iter_modules(pose_refiner_ros.__path__) if m.ispkg]
    assert {"geometry", "mesh", "render", "net", "solver", "refine", "ros"} <= set(names)
    for name in names:
        importlib.import_module(f"pose_refiner_ros.{name}")


def test_core_does_not_import_ros() -> None:
    """Only pose_refiner_ros/ros/ may import rclpy or message packages."""
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        if rel.parts[0] == "ros":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in ROS_MODULES or top.endswith("_msgs") or top.endswith("_interfaces"):
                    offenders.append(f"{rel}:{node.lineno} imports {module}")
    assert not offenders, "ROS imports outside pose_refiner_ros/ros/:\n" + "\n".join(offenders)


def test_package_xml() -> None:
    root = _package_xml()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "pose_refiner_ros"
    assert root.findtext("version") == pose_refiner_ros.__version__
    assert root.findtext("license") == "Apache-2.0"
    maintainer = root.find("maintainer")
    assert maintainer is not None and "@" in maintainer.get("email", "")
    assert root.findtext("export/build_type") == "ament_python"

    exec_depends = {e.text for e in root.findall("exec_depend")}
    required = {
        "rclpy",
        "sensor_msgs",
        "geometry_msgs",
        "vision_msgs",
        "tf2_msgs",
        "tf2_ros_py",
        "std_msgs",
        "python3-numpy",
        "python3-opencv",
        "python3-yaml",
        "python3-torch",
        "python3-trimesh-pip",
    }
    assert required <= exec_depends, f"missing exec_depend: {sorted(required - exec_depends)}"
    test_depends = {e.text for e in root.findall("test_depend")}
    assert "python3-pytest" in test_depends


def test_every_ros_package_the_code_imports_is_declared() -> None:
    # rosdep installs what package.xml declares: an undeclared import fails only at run
    # time, in a colcon workspace (ament_index_python went unnoticed that way).
    import ast

    exec_depends = {e.text for e in _package_xml().findall("exec_depend")}
    ros_like = ("rclpy", "ament_index_python", "launch", "launch_ros", "tf2_ros",
                "message_filters", "rosbag2_py")
    files = list((ROOT / "launch").glob("*.py")) + list((ROOT / "pose_refiner_ros").rglob("*.py"))
    used = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top in ros_like or top.endswith("_msgs"):
                    used.add("tf2_ros_py" if top == "tf2_ros" else top)
    assert used, "no ROS imports found: the scan is broken"
    assert used <= exec_depends, f"imported but not in package.xml: {sorted(used - exec_depends)}"


def test_setup_py_matches_package_xml() -> None:
    assert _setup_kwarg("name") == _package_xml().findtext("name")
    assert _setup_kwarg("version") == pose_refiner_ros.__version__


def test_console_scripts_declared() -> None:
    entry_points = _setup_kwarg("entry_points")
    scripts = dict(s.replace(" ", "").split("=") for s in entry_points["console_scripts"])
    assert scripts == {
        "refiner_node": "pose_refiner_ros.ros.node_main:main",
        "refiner_lifecycle_node": "pose_refiner_ros.ros.node_main:main_managed",
        "pose-refiner": "pose_refiner_ros.cli:main",
    }


def test_ament_resource_and_script_dirs() -> None:
    assert (ROOT / "resource" / "pose_refiner_ros").is_file()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/pose_refiner_ros"
    assert cfg["install"]["install_scripts"] == "$base/lib/pose_refiner_ros"


def test_installed_cli_entry_point() -> None:
    """Where the package is installed (pip install -e .), pose-refiner resolves."""
    try:
        dist = importlib.metadata.distribution("pose_refiner_ros")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pose_refiner_ros is not pip-installed")
    scripts = {ep.name: ep for ep in dist.entry_points if ep.group == "console_scripts"}
    assert {"pose-refiner", "refiner_node"} <= set(scripts)
    from pose_refiner_ros import cli

    assert scripts["pose-refiner"].load() is cli.main


def test_cli_help_lists_demo(capsys: pytest.CaptureFixture[str]) -> None:
    from pose_refiner_ros import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["demo", "eval", "eval-bag", "train", "refine",
                                     "make-bag", "bench"])
def test_subcommand_help_reads_as_plain_text(command, capsys) -> None:
    # Docstrings are reST; a terminal shows ``x`` literally. An unset option has no
    # default to show ("(default: None)" said nothing).
    from pose_refiner_ros import cli

    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:`" not in out and ":class:`" not in out
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "usage: pose-refiner " + command in out


def test_plain_text_drops_rest_roles() -> None:
    from pose_refiner_ros.cli import plain_text

    assert plain_text("see :func:`~a.b.fn` and :class:`a.B`, ``x=1``") == "see fn and a.B, x=1"


def test_rviz_config_is_installed_and_shows_the_nodes_topics() -> None:
    import yaml

    # colcon and pip install only what setup.py's data_files name
    globs = [n.args[0].value for n in ast.walk(_setup_py_call())
             if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "glob"]
    assert any(Path("rviz/refiner.rviz").match(g) for g in globs), globs
    cfg = yaml.safe_load((ROOT / "rviz" / "refiner.rviz").read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    shown = {(d["Class"], d.get("Topic", {}).get("Value")) for d in displays}
    assert {("rviz_default_plugins/Image", "/image"),
            ("rviz_default_plugins/Image", "/debug_image"),
            ("rviz_default_plugins/TF", None),
            ("rviz_default_plugins/MarkerArray", "/markers")} <= shown, shown
    camera = next(d for d in displays if d.get("Topic", {}).get("Value") == "/image")
    assert camera["Topic"]["Reliability Policy"] == "Best Effort"  # as cameras publish
    # the names are the node's (in the root namespace)
    node_src = (PACKAGE_DIR / "ros" / "node.py").read_text()
    for topic in ("debug_image", "markers"):
        assert f'"{topic}", OUTPUT_QOS' in node_src, topic
    assert 'create_subscription(Image, "image"' in node_src
