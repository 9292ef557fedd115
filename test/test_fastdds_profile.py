"""The Fast DDS large-data profile shipped in config/ and set by ``ros_env``."""

import ast
from pathlib import Path
import xml.etree.ElementTree as ET

from pose_refiner_ros.ros.node_process import large_data_profile, ros_env

ROOT = Path(__file__).resolve().parents[1]
NS = {"dds": "http://www.eprosima.com"}


def test_profile_segment_holds_a_vga_rgb8_image():
    root = ET.parse(large_data_profile()).getroot()
    sizes = [int(e.text) for e in root.iterfind(".//dds:segment_size", NS)]
    assert sizes and min(sizes) >= 640 * 480 * 3
    default = root.find(".//dds:participant[@is_default_profile='true']", NS)
    assert default is not None, "the profile must apply without naming it in code"


def test_ros_env_sets_the_installed_profile_but_keeps_the_users():
    env = ros_env(base={"ROS_DISTRO": "jazzy"})
    assert Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]) == large_data_profile()
    env = ros_env(base={})
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]) == large_data_profile()
    mine = {"FASTDDS_DEFAULT_PROFILES_FILE": "/my/profile.xml"}
    assert ros_env(base=mine)["FASTDDS_DEFAULT_PROFILES_FILE"] == "/my/profile.xml"
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in ros_env(base=mine)


def test_setup_installs_the_profile():
    # colcon and pip install only what setup.py's data_files name
    source = (ROOT / "setup.py").read_text()
    globs = [n.args[0].value for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "glob"]
    assert any(Path("config/fastdds_large_data.xml").match(g) for g in globs), globs
