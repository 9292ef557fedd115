"""One refiner_node per camera: refiner.launch.py included once for each.

    ros2 launch pose_refiner_ros cameras.launch.py cameras:=cam_left,cam_right

Camera ``<c>`` gets the namespace ``<c>`` (outputs /<c>/refined_pose, /<c>/refined_detections
..., node /<c>/pose_refiner), the TF prefix ``<c>/refined_`` (frames cam_left/refined_mug_0
...), and its inputs from the topic patterns below, ``{camera}`` replaced by its name.
The defaults fit a RealSense-style driver per camera namespace and a detector publishing
/<c>/detections; change them to your layout, e.g.
``image_pattern:=/{camera}/camera/color/image_raw``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

#: Input topic patterns ({camera}: the camera's name), one launch argument each.
PATTERNS = {
    "image": "/{camera}/color/image_raw",
    "camera_info": "/{camera}/color/camera_info",
    "detections": "/{camera}/detections",
    "depth": "/{camera}/aligned_depth_to_color/image_raw",
    "coarse_pose": "/{camera}/coarse_pose",
}
#: Arguments passed on unchanged to every camera's refiner.launch.py.
SHARED = ("params_file", "lifecycle", "device", "use_sim_time")
REFINER_LAUNCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "refiner.launch.py")


def camera_names(text: str) -> list:
    """``cam_left,cam_right`` -> ``["cam_left", "cam_right"]``; refuses an empty list,
    repeats, and names that are not one ROS name token (letters, digits, ``_``, not
    starting with a digit)."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ValueError("cameras: expected camera names separated by commas, e.g. "
                         "cameras:=cam_left,cam_right; got nothing")
    for c in names:
        if not c.replace("_", "a").isalnum() or not c.isascii() or c[0].isdigit():
            raise ValueError(f"cameras: {c!r} is not a valid namespace name (letters, digits "
                             "and _, not starting with a digit)")
    if len(set(names)) != len(names):
        raise ValueError(f"cameras: a camera is named twice in {text!r}")
    return names


def _cameras(context):
    shared = {k: LaunchConfiguration(k).perform(context) for k in SHARED}
    groups = []
    for camera in camera_names(LaunchConfiguration("cameras").perform(context)):
        topics = {
            name: LaunchConfiguration(f"{name}_pattern").perform(context).format(camera=camera)
            for name in PATTERNS
        }
        arguments = {"namespace": camera, "tf_prefix": f"{camera}/refined_", **topics, **shared}
        groups.append(GroupAction([IncludeLaunchDescription(
            PythonLaunchDescriptionSource(REFINER_LAUNCH),
            launch_arguments=arguments.items(),
        )]))
    return groups


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument(
            "cameras", description="camera names separated by commas, e.g. cam_left,cam_right"
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(
                get_package_share_directory("pose_refiner_ros"), "config", "refiner.yaml"),
            description="parameters of every node (YAML)",
        ),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="true: managed nodes (refiner_lifecycle_node)"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="auto | cpu | cuda | cuda:N, for every node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock, for every node"),
    ] + [
        DeclareLaunchArgument(f"{name}_pattern", default_value=pattern,
                              description=f"topic remapped to '{name}'; {{camera}}: the camera")
        for name, pattern in PATTERNS.items()
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_cameras)])
