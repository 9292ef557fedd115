"""What ``pose-refiner demo`` prints and writes once the node has answered: per object the
coarse and the refined pose's errors against the ground truth (:func:`frame_rows`,
:func:`print_table`), an overlay PNG per frame (:func:`save_overlay`) and the closing
summary (:func:`summarize`). No rclpy: it reads the received messages' fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .demo_scene import DemoFrame, object_errors

__all__ = ["published_poses", "frame_rows", "print_table", "save_overlay", "summarize"]


def _cell(before: float, after: float | None, fmt: str) -> str:
    after_s = "--" if after is None else format(after, fmt)
    return f"{format(before, fmt):>8} -> {after_s:<7}"


def print_table(rows: list) -> None:
    """Per object: coarse -> refined rotation error, translation error, ADD(-S)/diameter."""
    print(f"    {'object':<12}{'rotation deg':<19}{'translation mm':<19}{'ADD(-S)/diam':<19}score")
    for r in rows:
        b, a = r["before"], r["after"] or {}
        cells = [
            _cell(b[k], a.get(k), f)
            for k, f in (("rot_deg", ".2f"), ("trans_mm", ".1f"), ("add_d", ".3f"))
        ]
        tail = f"{r['score']:.2f}" if r["after"] is not None else f"not published ({r['why']})"
        print(f"    {r['name']:<12}" + " ".join(cells) + f" {tail}")


def published_poses(res: dict) -> dict:
    """TF name -> (T_cam_obj, score) of the objects the node published for a frame."""
    from . import conversions as conv

    return {det.id: (conv.pose_to_matrix(det.results[0].pose.pose),
                     det.results[0].hypothesis.score)
            for det in res["detections"].detections}


def frame_rows(registry, frame: DemoFrame, res: dict) -> list:
    """Per object of a frame: errors of the coarse and (when published) refined pose."""
    from .publish_rules import tf_frame_name

    published = published_poses(res)
    counts, rows = {}, []
    for cid, T_gt, T_init in frame.objects:
        k = counts.get(cid, 0)
        counts[cid] = k + 1
        name = tf_frame_name("refined_", cid, k)
        model = registry[cid]
        row = {
            "name": f"{cid}_{k}",
            "before": object_errors(model, T_init, T_gt),
            "after": None,
            "why": "low confidence",
            "score": float("nan"),
        }
        if name in published:
            T, score = published[name]
            row.update(after=object_errors(model, T, T_gt), score=score)
        rows.append(row)
    return rows


def save_overlay(path: Path, registry, frame: DemoFrame, res: dict) -> None:
    """The frame with, per object, the ground truth (under the rest), the coarse pose,
    and the refined pose the node published with its score, or "withheld"."""
    import cv2

    from ..render.base import RenderMesh, make_renderer
    from ..render.overlay import OverlayObject, draw_overlay
    from .publish_rules import tf_frame_name

    published = published_poses(res)
    meshes: dict = {}
    counts: dict = {}
    objects = []
    for cid, T_gt, T_init in frame.objects:
        k = counts.get(cid, 0)
        counts[cid] = k + 1
        T, score = published.get(tf_frame_name("refined_", cid, k), (None, None))
        objects.append(OverlayObject(cid, T_coarse=T_init, T_refined=T, T_gt=T_gt, score=score,
                                     note="" if T is not None else "withheld"))
    image = draw_overlay(frame.image_rgb, make_renderer("torch"),
                         lambda c: meshes.setdefault(c, RenderMesh.from_object(registry[c], "cpu")),
                         frame.K, objects)
    cv2.imwrite(str(path), image[..., ::-1])


def summarize(rows: list, latencies: list, out_dir: Path, wall_s: float, diagnostics) -> None:
    """The closing summary: accuracy of the published objects, latency, where things are."""
    pub = [r for r in rows if r["after"] is not None]
    print("\nsummary")
    print(
        f"  published: {len(pub)} of {len(rows)} objects "
        f"({len(rows) - len(pub)} withheld as low confidence)"
    )
    if pub:
        for label, key, unit, fmt in (
            ("rotation error", "rot_deg", "deg", ".2f"),
            ("translation error", "trans_mm", "mm", ".1f"),
            ("ADD(-S) / diameter", "add_d", "", ".3f"),
        ):
            b = np.median([r["before"][key] for r in pub])
            a = np.median([r["after"][key] for r in pub])
            print(f"  median {label + ':':<21}{format(b, fmt):>7} -> {format(a, fmt):<7}{unit}")
        ok_b = sum(r["before"]["add_d"] < 0.1 for r in pub)
        ok_a = sum(r["after"]["add_d"] < 0.1 for r in pub)
        better = sum(r["after"]["add_d"] < r["before"]["add_d"] for r in pub)
        print(
            f"  ADD(-S) < 0.1 diameter:  {ok_b} -> {ok_a} of {len(pub)}; "
            f"{better} of {len(pub)} closer to the ground truth than their coarse pose"
        )
    lat = np.array(latencies)
    print(
        f"  latency (frame published -> refined_detections received): median "
        f"{np.median(lat):.0f} ms per frame, first {lat[0]:.0f} ms (warm-up), "
        f"max {lat.max():.0f} ms"
    )
    if diagnostics is not None:
        print(
            f"  node: device {diagnostics.get('device', '?')}, refinement "
            f"{diagnostics.get('refine_ms_per_object.mean', '?')} ms per object (its own timing)"
        )
    print(f"  overlays: {out_dir}/frame_*.png (node log: {out_dir / 'node.log'})")
    print(f"  wall time: {wall_s:.1f} s")
