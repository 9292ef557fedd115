"""``pose-refiner demo``: the real node, over the real middleware, on a demo recording.

What it does, step by step:

1. loads the bundled demo objects (``models/demo/objects.yaml``: four procedural meshes
   of the ``val`` split, never trained on; :mod:`.demo_scene`);
2. renders a short recording deterministically (:func:`.demo_scene.make_recording`): a
   few 640x480 frames with three objects each, their ground truth, and coarse poses
   drawn by the protocol's standard perturbation (``data.perturb``);
3. starts ``refiner_node`` as a separate process, exactly as the launch file does
   (``--params-file config/refiner.yaml``), in a namespace and a ROS domain of its own;
4. this process, a separate ROS node, publishes each frame (``camera_info``, ``image``,
   ``detections``) and receives ``refined_detections``, ``refined_pose``, ``/tf`` and
   ``debug_image``;
5. prints per object the rotation / translation / ADD(-S) error of the coarse and the
   refined pose against the ground truth and the latency, writes the overlays (coarse in
   orange, refined in green, ground truth in blue) as PNGs, and a summary
   (:mod:`.demo_report`).

The node runs in mode ``learned`` with ``models/refiner.pt`` when that file exists, else
in the training-free mode ``region`` (said so in the output). The node process itself:
:mod:`.node_process`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import tempfile
import threading
import time
import uuid

from .demo_report import frame_rows, print_table, save_overlay, summarize
from .demo_scene import SEED, DemoFrame, make_recording
from .node_process import ENV_KEYS, ros_env, start_node, stop_node

FRAME_ID = "demo_camera_optical_frame"


class ResultCollector:
    """The demo's own ROS node: publishes frames and collects the node's outputs by stamp."""

    def __init__(self, context, namespace: str):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage
        from vision_msgs.msg import Detection3DArray

        self.node = rclpy.create_node(f"pose_refiner_demo_{uuid.uuid4().hex[:6]}", context=context)
        self.ns = ns = f"/{namespace}"
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.topics = {
            "image": f"{ns}/image",
            "camera_info": f"{ns}/camera_info",
            "detections": f"{ns}/detections",
        }
        self.pub_image = self.node.create_publisher(Image, self.topics["image"], reliable)
        self.pub_info = self.node.create_publisher(CameraInfo, self.topics["camera_info"], reliable)
        self.pub_dets = self.node.create_publisher(
            Detection3DArray, self.topics["detections"], reliable
        )
        self.lock = threading.Lock()
        self.results: dict = {}  # stamp -> {"detections": msg, "t": time, "pose": msg, "tf": [...]}
        self.diagnostics = None

        def keep(kind):
            def cb(msg):
                stamp = getattr(msg, "header", None)
                with self.lock:
                    if kind == "tf":
                        for t in msg.transforms:
                            key = (t.header.stamp.sec, t.header.stamp.nanosec)
                            self.results.setdefault(key, {}).setdefault("tf", []).append(t)
                        return
                    key = (stamp.stamp.sec, stamp.stamp.nanosec)
                    entry = self.results.setdefault(key, {})
                    entry[kind] = msg
                    entry[f"t_{kind}"] = time.monotonic()

            return cb

        self.node.create_subscription(
            Detection3DArray, f"{ns}/refined_detections", keep("detections"), reliable
        )
        self.node.create_subscription(PoseStamped, f"{ns}/refined_pose", keep("pose"), reliable)
        self.node.create_subscription(Image, f"{ns}/debug_image", keep("debug"), reliable)
        self.node.create_subscription(TFMessage, "/tf", keep("tf"), QoSProfile(depth=100))

        def on_diagnostics(msg):
            for status in msg.status:
                if status.name == f"pose_refiner: {ns}/pose_refiner":
                    self.diagnostics = {kv.key: kv.value for kv in status.values}

        self.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable)

    def connected(self) -> bool:
        n = self.node
        return (
            self.pub_image.get_subscription_count() > 0
            and self.pub_dets.get_subscription_count() > 0
            and self.pub_info.get_subscription_count() > 0
            and n.count_publishers(f"{self.ns}/refined_detections") > 0
            and n.count_publishers(f"{self.ns}/debug_image") > 0
        )

    def publish_frame(self, frame: DemoFrame) -> None:
        from std_msgs.msg import Header

        from . import conversions as conv

        header = Header(frame_id=FRAME_ID)
        header.stamp.sec, header.stamp.nanosec = frame.stamp
        H, W = frame.image_rgb.shape[:2]
        self.pub_info.publish(conv.make_camera_info(frame.K, W, H, header))
        self.pub_image.publish(conv.rgb_to_image(frame.image_rgb, header))
        self.pub_dets.publish(
            conv.make_coarse_detections(
                header, [(cid, T_init, 1.0) for cid, _, T_init in frame.objects]
            )
        )

    def result(self, stamp, need=("detections", "debug")):
        with self.lock:
            entry = self.results.get(stamp, {})
            return dict(entry) if all(k in entry for k in need) else None

    def received(self, stamp) -> list:
        """The kinds of output received so far for ``stamp`` (``detections``, ``pose``,
        ``debug``, ``tf``)."""
        with self.lock:
            return sorted(k for k in self.results.get(stamp, {}) if not k.startswith("t_"))


def run_demo(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    from ..mesh.registry import ObjectRegistry
    from .availability import ros_missing_message
    from .startup import resolve_path

    missing = ros_missing_message()
    if missing:  # before anything is rendered or started
        print(f"pose-refiner demo: cannot run: {missing}", file=sys.stderr)
        return 1
    print("pose-refiner demo: the refiner node on a synthetic recording, over ROS 2\n")
    objects_yaml = resolve_path(args.objects, "objects")
    params_file = resolve_path(args.params_file, "params_file")
    registry = ObjectRegistry.from_yaml(objects_yaml)
    try:
        model = resolve_path(args.model, "model")
    except FileNotFoundError:
        model = None
    # As the node's mode auto (ros.params): the network when there is one, else the
    # training-free silhouette.
    mode = args.mode if args.mode != "auto" else ("learned" if model else "region")
    if mode == "learned" and model is None:
        print(
            f"error: no trained model at {args.model}; train one or run with --mode region",
            file=sys.stderr,
        )
        return 2
    print(f"[1/4] objects: {', '.join(registry.class_ids)} (from {objects_yaml})")
    if mode == "learned":
        why = f"model {model}"
    elif args.mode == "auto":
        why = "no trained model found: the training-free silhouette alignment"
    else:
        why = "training-free, as asked"
    print(f"      mode: {mode} ({why})")

    t0 = time.monotonic()
    frames = make_recording(registry, args.frames, args.seed)
    n_obj = sum(len(f.objects) for f in frames)
    print(
        f"[2/4] recording: {len(frames)} frames, {n_obj} objects, 640x480, coarse poses by the "
        f"standard perturbation (made in {time.monotonic() - t0:.1f} s)"
    )

    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("frame_*.png"):
        old.unlink()
    env = ros_env()
    os.environ.update({k: env[k] for k in ENV_KEYS if k in env})
    namespace = f"pose_refiner_demo_{uuid.uuid4().hex[:8]}"
    log_path = out_dir / "node.log"
    overrides = {"mode": mode, "objects_yaml": str(objects_yaml), "device": args.device}
    if model is not None:
        overrides["model_path"] = str(model)
    proc, cmd = start_node(params_file, namespace, overrides, env, log_path)
    shown = " ".join([Path(cmd[0]).name] + cmd[1:])
    print(f"[3/4] node: started `{shown}`")
    print(f"      (pid {proc.pid}, ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}, log {log_path})")

    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    from rclpy.executors import SingleThreadedExecutor

    collector = ResultCollector(context, namespace)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(collector.node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    status = 0
    try:
        deadline = time.monotonic() + args.timeout
        while not collector.connected():
            if proc.poll() is not None:
                print(
                    f"error: the node exited (code {proc.returncode}) before it was ready; "
                    "its log:\n" + log_path.read_text(),
                    file=sys.stderr,
                )
                return 1
            if time.monotonic() > deadline:
                print(
                    "error: the node did not come up in time; its log:\n" + log_path.read_text(),
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.1)
        print(f"      ready after {time.monotonic() - t_start:.1f} s since the demo started")
        print("[4/4] refining (orange: coarse, green: refined, blue: ground truth in the overlays)")
        rows_all, latencies = [], []
        for i, frame in enumerate(frames):
            t_pub = time.monotonic()
            collector.publish_frame(frame)
            res = None
            t_retry = t_pub + 10.0
            while res is None:
                res = collector.result(frame.stamp)
                if res is not None:
                    break
                if proc.poll() is not None:
                    print(
                        f"error: the node died (code {proc.returncode}); its log:\n"
                        + log_path.read_text(),
                        file=sys.stderr,
                    )
                    return 1
                if time.monotonic() > t_pub + args.timeout:
                    print(
                        f"error: no result for frame {i} within {args.timeout:.0f} s",
                        file=sys.stderr,
                    )
                    return 1
                if time.monotonic() > t_retry:
                    have = collector.received(frame.stamp)
                    print(f"      frame {i + 1}: no result after {time.monotonic() - t_pub:.0f} s "
                          f"(received: {', '.join(have) or 'nothing'})", flush=True)
                    if "detections" not in have:
                        # A lost best-effort image: send it again. (Once refined, a
                        # stamp is never refined twice: the node skips duplicates.)
                        collector.publish_frame(frame)
                    t_retry = time.monotonic() + 10.0
                time.sleep(0.005)
            latency_ms = 1e3 * (res["t_detections"] - t_pub)
            latencies.append(latency_ms)
            rows = frame_rows(registry, frame, res)
            rows_all += rows
            png = out_dir / f"frame_{i:03d}.png"
            save_overlay(png, registry, frame, res)
            print(
                f"\n  frame {i + 1}/{len(frames)}: {len(frame.objects)} objects, "
                f"latency {latency_ms:.0f} ms "
                f"({latency_ms / len(frame.objects):.0f} ms per object) -> {png.name}"
            )
            print_table(rows)
        deadline = time.monotonic() + 3.0  # the node's diagnostics after the last frame
        while time.monotonic() < deadline:
            if float((collector.diagnostics or {}).get("frames.refined", 0)) >= len(frames):
                break
            time.sleep(0.05)
        summarize(rows_all, latencies, out_dir, time.monotonic() - t_start, collector.diagnostics)
    finally:
        executor.shutdown(timeout_sec=5.0)  # bounded: a stuck callback must not hang the exit
        collector.node.destroy_node()
        rclpy.try_shutdown(context=context)
        stop_node(proc)
    return status


def add_subcommand(subparsers, name: str, help: str) -> None:
    """Register ``pose-refiner demo`` (see ``cli.py``)."""
    p = subparsers.add_parser(
        name,
        help=help,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        default=str(Path(tempfile.gettempdir()) / "pose_refiner_demo"),
        help="folder for the overlay PNGs and the node's log",
    )
    p.add_argument("--frames", type=int, default=4, help="frames in the recording")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the recording")
    p.add_argument(
        "--mode",
        choices=["auto", "learned", "region", "flow"],
        default="auto",
        help="auto: learned when the model file exists, else region",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--model", default="models/refiner.pt", help="refiner checkpoint")
    p.add_argument("--objects", default="models/demo/objects.yaml", help="objects YAML")
    p.add_argument("--params-file", default="config/refiner.yaml", help="node parameters")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the node / a frame"
    )
    p.set_defaults(handler=run_demo)
