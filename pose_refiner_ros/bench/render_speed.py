"""Renderer speed: time per render for several mesh sizes, crop sizes and batch sizes.

Run ``python -m pose_refiner_ros.bench.render_speed`` (``--help`` for options). It prints
the machine, then a Markdown table of the median time per ``Renderer.render`` call over
``--repeats`` calls after ``--warmup`` calls, with the 10th and 90th percentiles.

The scene: a torus (major radius 6 cm, minor 2.5 cm: 17 cm across, non-convex, so there
is self-occlusion) at 0.5 m, tilted 60 degrees, with the focal length chosen so that it
spans about 80% of the crop, as in refinement crops. Its face count is set by its
sections (1k = 32 x 16, 5k = 64 x 40, 10k = 100 x 50, 100k = 316 x 158). Batches use
the same mesh at different poses.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import time

import numpy as np
import torch
import trimesh

from pose_refiner_ros.render.base import RenderMesh, make_renderer

#: torus sections (major, minor) giving about 1k, 5k, 10k, 100k faces
SECTIONS = {"1k": (32, 16), "5k": (64, 40), "10k": (100, 50), "100k": (316, 158)}
DISTANCE_M = 0.5
FILL = 0.8  # fraction of the crop spanned by the object


def make_scene(faces: str, size: int, batch: int, device: str, seed: int = 0):
    """The mesh, ``mesh_idx``, ``K`` and ``T_cam_obj`` of one benchmark case."""
    major, minor = SECTIONS[faces]
    mesh = trimesh.creation.torus(major_radius=0.06, minor_radius=0.025,
                                  major_sections=major, minor_sections=minor)
    diameter = float(np.linalg.norm(mesh.extents[:2]))
    f = FILL * size * DISTANCE_M / diameter
    K = torch.tensor([[f, 0.0, (size - 1) / 2], [0.0, f, (size - 1) / 2], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(seed)
    T = np.tile(np.eye(4), (batch, 1, 1))
    for b in range(batch):
        axis = rng.normal(size=3)
        angle = np.radians(60.0) if b == 0 else rng.uniform(0, np.pi)
        T[b, :3, :3] = trimesh.transformations.rotation_matrix(
            angle, [1, 0, 0] if b == 0 else axis)[:3, :3]
        T[b, :3, 3] = [0.0, 0.0, DISTANCE_M]
    return (
        [RenderMesh.from_trimesh(mesh, device=device)],
        torch.zeros(batch, dtype=torch.int64, device=device),
        K.expand(batch, 3, 3).contiguous().to(device),
        torch.as_tensor(T, dtype=torch.float32, device=device),
        len(mesh.faces),
    )


def time_render(renderer, args, size: int, repeats: int, warmup: int, device: str,
                clock=time.perf_counter):
    """Median, 10th and 90th percentile of the time per render call, in ms."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        renderer.render(*args, size, size)
    sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        renderer.render(*args, size, size)
        sync()
        times.append((clock() - t0) * 1e3)
    return np.percentile(times, [50, 10, 90])


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                   if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    import os

    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, {platform.system()} "
            f"{platform.release()}, {datetime.date.today().isoformat()}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch", help="torch | pytorch3d | auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--quick", action="store_true", help="only the 5k-face cases")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="wall: elapsed time (default). thread: CPU time of the calling "
                             "thread with torch on 1 thread (CPU only): what one core "
                             "spends, insensitive to other processes on a shared machine")
    args = parser.parse_args(argv)
    clock = time.perf_counter
    if args.clock == "thread":
        if args.device != "cpu":
            parser.error("--clock thread measures CPU work: use it with --device cpu")
        torch.set_num_threads(1)
        clock = time.thread_time
    elif args.threads:
        torch.set_num_threads(args.threads)
    renderer = make_renderer(args.backend, device=args.device)

    cases = [("5k", 128, 1), ("5k", 128, 8)]
    if not args.quick:
        cases += [(f, 128, b) for f in ("1k", "10k", "100k") for b in (1, 8)]
        cases += [("5k", s, b) for s in (64, 192, 256) for b in (1, 8)]

    print(f"machine: {machine()}")
    what = "elapsed time" if args.clock == "wall" else "CPU time of the calling thread"
    print(f"renderer: {renderer.name} on {args.device}; {what}, median of {args.repeats} "
          f"after {args.warmup} warm-up calls\n")
    print("| faces | crop | batch | ms / render (median) | p10 - p90 | ms / image |")
    print("|---:|---:|---:|---:|---:|---:|")
    for faces, size, batch in cases:
        scene = make_scene(faces, size, batch, args.device)
        med, p10, p90 = time_render(renderer, scene[:4], size, args.repeats, args.warmup,
                                    args.device, clock)
        print(f"| {scene[4]} | {size}x{size} | {batch} | {med:.2f} | {p10:.2f} - {p90:.2f} "
              f"| {med / batch:.2f} |", flush=True)


if __name__ == "__main__":
    main()
