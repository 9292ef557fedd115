"""Start refiner_node with config/refiner.yaml.

    ros2 launch pose_refiner_ros refiner.launch.py
    ros2 launch pose_refiner_ros refiner.launch.py image:=/camera/color/image_raw \\
        camera_info:=/camera/color/camera_info detections:=/detector/detections device:=cuda

One node per camera: give each its own namespace (its outputs, relative names, follow
it: /<namespace>/refined_pose ...) and TF prefix, and remap its inputs to that camera's
topics; launch/cameras.launch.py includes this file once per camera.

Arguments: params_file, namespace, tf_prefix, lifecycle, the input topics (image,
camera_info, detections, depth, coarse_pose), device and use_sim_time. The node's other parameters
are set in the params file (see README, "ROS interface").
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

#: Input topics of the node and their defaults (each one a launch argument).
INPUT_TOPICS = {
    "image": "image",
    "camera_info": "camera_info",
    "detections": "detections",
    "depth": "depth",
    "coarse_pose": "coarse_pose",
}


def _node(context):
    """The node (the managed one with lifecycle:=true); tf_prefix overrides the params
    file only when it is given."""
    overrides = {
        "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
    }
    if LaunchConfiguration("tf_prefix").perform(context):
        overrides["tf_prefix"] = ParameterValue(LaunchConfiguration("tf_prefix"), value_type=str)
    managed = LaunchConfiguration("lifecycle").perform(context) == "true"
    kind, executable = (LifecycleNode, "refiner_lifecycle_node") if managed else (
        Node, "refiner_node")
    return [
        kind(
            package="pose_refiner_ros",
            executable=executable,
            name="pose_refiner",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[(name, LaunchConfiguration(name)) for name in INPUT_TOPICS],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory("pose_refiner_ros"), "config", "refiner.yaml"
    )
    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="parameters of refiner_node (YAML)",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="namespace of the node and its relative topics (one per camera)",
        ),
        DeclareLaunchArgument(
            "tf_prefix",
            default_value="",
            description="prefix of the TF frames of the refined objects; empty: the params "
            "file's (give each camera its own, e.g. cam_left/refined_)",
        ),
        DeclareLaunchArgument(
            "lifecycle",
            default_value="false",
            choices=["true", "false"],
            description="true: the managed node (refiner_lifecycle_node), which loads on "
            "configure and subscribes on activate",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="auto",
            description="auto | cpu | cuda | cuda:N (overrides the params file)",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="false",
            description="use /clock (e.g. when playing a rosbag with --clock)",
        ),
    ] + [
        DeclareLaunchArgument(
            name, default_value=default, description=f"topic remapped to '{name}'"
        )
        for name, default in INPUT_TOPICS.items()
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
