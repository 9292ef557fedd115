#!/usr/bin/env python3
"""How many camera frames the node publishes a pose for while tracking, over ROS 2.

Starts ``refiner_node`` as the launch file does (``tracking:=true``), publishes one frame
with detections (the ground truth of a synthetic motion sequence, ``data.sequences``),
then the sequence's next frames at ``--rate`` Hz with no detections, as a camera would,
and counts the frames that got a ``refined_detections`` message, with the share of
poses within ADD(-S) 0.1 diameter of the ground truth.

    .venv/bin/python scripts/node_rate.py --objects 1 --frames 150 --rate 30

Prints one line per run. Needs the project environment (``make setup``); no ROS
installation, no GPU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import threading
import time
import uuid

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=1, help="tracked objects (1)")
    ap.add_argument("--frames", type=int, default=150, help="frames after the first (150)")
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz (30)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--refine-every", type=int, default=0,
                    help="the node's tracking_refine_every (0, its default)")
    ap.add_argument("--reregister-below", type=float, default=None,
                    help="the node's tracking_reregister_below (default: its default)")
    ap.add_argument("--timeout", type=float, default=240.0, help="node start-up, s")
    args = ap.parse_args()

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Header

    from pose_refiner_ros.data.sequences import MotionConfig, generate_sequence
    from pose_refiner_ros.evaluation import metrics as M
    from pose_refiner_ros.mesh.registry import ObjectRegistry
    from pose_refiner_ros.ros import conversions as conv
    from pose_refiner_ros.ros.demo import FRAME_ID, ResultCollector
    from pose_refiner_ros.ros.node_process import ENV_KEYS, ros_env, start_node, stop_node

    objects_yaml = ROOT / "models" / "demo" / "objects.yaml"
    registry = ObjectRegistry.from_yaml(objects_yaml)
    models = [registry[c] for c in registry.class_ids]
    motion = MotionConfig(n_frames=args.frames + 1, objects=args.objects, occluder=False)
    frames = list(generate_sequence(models, np.random.default_rng(args.seed), motion))

    env = ros_env()
    os.environ.update({k: env[k] for k in ENV_KEYS if k in env})
    ns = f"node_rate_{uuid.uuid4().hex[:8]}"
    log = Path(f"/tmp/{ns}.log")
    overrides = {"objects_yaml": str(objects_yaml), "tracking": "true",
                 "tracking_max_age_s": 0.0, "low_confidence_action": "publish_coarse",
                 "tracking_refine_every": args.refine_every}
    if args.reregister_below is not None:
        overrides["tracking_reregister_below"] = args.reregister_below
    proc, _ = start_node(ROOT / "config" / "refiner.yaml", ns, overrides, env, log)
    context = rclpy.Context()
    rclpy.init(context=context)
    col = ResultCollector(context, ns)
    # No debug_image subscriber: the node draws overlays only while someone listens,
    # and a camera-rate client would not.
    for sub in list(col.node.subscriptions):
        if sub.topic_name.endswith("/debug_image"):
            col.node.destroy_subscription(sub)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(col.node)
    threading.Thread(target=_spin, args=(ex,), daemon=True).start()
    try:
        deadline = time.monotonic() + args.timeout
        # The tracker's contour models built and the background re-registration process
        # started, as in a node that has run for a while.
        while not col.connected() or (col.diagnostics or {}).get("tracker") != "ready" or (
                col.diagnostics or {}).get("reregistration") not in ("ready", "busy"):
            if proc.poll() is not None or time.monotonic() > deadline:
                print("node did not come up; log:\n" + log.read_text(), file=sys.stderr)
                return 1
            time.sleep(0.2)

        def header(i):
            h = Header(frame_id=FRAME_ID)
            h.stamp.sec, h.stamp.nanosec = 1_900_000_000 + i // 1000, (i % 1000) * 1_000_000
            return h, (h.stamp.sec, h.stamp.nanosec)

        f0 = frames[0]
        h, key0 = header(0)
        H, W = f0.image_rgb.shape[:2]
        col.pub_info.publish(conv.make_camera_info(f0.K, W, H, h))
        col.pub_image.publish(conv.rgb_to_image(f0.image_rgb, h))
        col.pub_dets.publish(conv.make_coarse_detections(
            h, [(cid, T, 1.0) for cid, T, _ in f0.objects]))
        while col.result(key0, need=("detections",)) is None:
            if time.monotonic() > deadline:
                print("no result for the detection frame", file=sys.stderr)
                return 1
            time.sleep(0.05)
        # The camera: frames at the rate, no detections.
        msgs = []
        for i, f in enumerate(frames[1:], 1):
            h, key = header(i * 1000 // int(args.rate))  # stamps 1/rate apart (ms)
            msgs.append((key, conv.make_camera_info(f.K, W, H, h),
                         conv.rgb_to_image(f.image_rgb, h)))
        t0 = time.monotonic()
        for k, (_, info, img) in enumerate(msgs):
            while time.monotonic() < t0 + k / args.rate:
                time.sleep(0.001)
            col.pub_info.publish(info)
            col.pub_image.publish(img)
        sent_s = time.monotonic() - t0
        time.sleep(2.0)
        got, ok = 0, []
        for (key, _, _), f in zip(msgs, frames[1:], strict=True):
            res = col.result(key, need=("detections",))
            if res is None:
                continue
            got += 1
            by_name = {d.id: d for d in res["detections"].detections}
            for j, (cid, T_gt, _) in enumerate(f.objects):
                k = sum(o[0] == cid for o in f.objects[:j])  # instance number, as TF names
                d = by_name.get(f"refined_{cid}_{k}")
                if d is None:
                    continue
                m = registry[cid]
                e = M.evaluate_pose(conv.pose_to_matrix(d.results[0].pose.pose, "pose"), T_gt,
                                    pts_obj=m.points_m, K=f.K, image_size=(W, H),
                                    diameter_m=m.diameter_m, symmetries=m.symmetries)
                ok.append((e.adds_m if e.symmetric else e.add_m) < 0.1 * m.diameter_m)
        diag = col.diagnostics or {}
        print(f"objects {args.objects}, tracking_refine_every {args.refine_every}: "
              f"sent {len(msgs)} frames at {len(msgs) / sent_s:.1f} Hz; "
              f"published a result for {got} ({100 * got / len(msgs):.0f}%, "
              f"{got / sent_s:.1f} Hz); ADD(-S)@0.1d {100 * np.mean(ok) if ok else 0:.0f}% of "
              f"published poses; frames.tracked {diag.get('frames.tracked')}, "
              f"dropped.busy_track {diag.get('dropped.busy_track')}, "
              f"re-registered {diag.get('tracks.reregistered')}, lost {diag.get('tracks.lost')}, "
              f"refine ms/object (mean) {diag.get('refine_ms_per_object.mean')}")
        return 0
    finally:
        stop_node(proc)
        col.node.destroy_node()
        rclpy.shutdown(context=context)


def _spin(executor) -> None:
    """Spin until the context shuts down (the end of the run, not an error)."""
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except ExternalShutdownException:
        pass


if __name__ == "__main__":
    sys.exit(main())
