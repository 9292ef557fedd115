"""``pose-refiner bench``'s command line: the options, the tracking benchmark's run
(``--tracking``), and the exit status and line of each failure. The benchmark itself is
:func:`.bench.run_benchmark`; the outputs are written all or nothing (:mod:`.outputs`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
from pathlib import Path
import sys
import time

from ..evaluation.all_or_nothing import sigterm_as_interrupt
from ..evaluation.report import json_ready
from .bench import METHODS, BenchConfig, run_benchmark
from .outputs import _all_or_nothing, _terminal_summary, _write_atomic, write_outputs

__all__ = ["add_subcommand"]


def add_subcommand(subparsers, name: str, help: str) -> None:
    from .budget import BUSY, MEASURED_ON, SMALL_CPU_CORES, expected_seconds, minutes

    p = subparsers.add_parser(name, help=help, description=help + ". The JSON is the record; "
                              "a Markdown summary and a PNG plot are written beside it.")
    p.add_argument("--json", required=True, help="the record (JSON) to write")
    p.add_argument("--markdown", help="Markdown summary (default: the JSON path with .md)")
    p.add_argument("--plot", help="PNG plot (default: the JSON path with .png)")
    quick_s = expected_seconds(BenchConfig.quick())["total"]
    p.add_argument("--quick", action="store_true",
                   help=f"24 samples, gcf-adam on 6, 3 repeats per scaling case: "
                        f"{minutes(quick_s)} on {MEASURED_ON}; {BUSY}")
    p.add_argument("--model", help="network checkpoint (default: the shipped models/refiner.pt)")
    p.add_argument("--samples", type=int, help="benchmark objects (default 200, --quick 24)")
    p.add_argument("--gcf-samples", type=int, help="objects for gcf-adam (default 24, quick 6)")
    p.add_argument("--gcf-steps", type=int, default=1000,
                   help="gcf-adam's Adam updates (the paper's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the meshes and scenes")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling runs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int,
                   help=f"torch threads (default: 1 on a machine with {SMALL_CPU_CORES} cores "
                        f"or fewer, where one was fastest; above, as many as torch picks)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars nor stage messages")
    p.add_argument("--tracking", action="store_true",
                   help="run the tracking benchmark instead (synthetic motion sequences; "
                        "writes a 'tracking' section)")
    p.add_argument("--sequences", type=int, default=4,
                   help="--tracking: sequences")
    p.add_argument("--frames", type=int, default=300,
                   help="--tracking: frames per sequence")
    p.set_defaults(handler=_main)


def _main_tracking(args: argparse.Namespace, json_path: Path, md_path: Path) -> int:
    from ..data.procedural import procedural_models
    from ..mesh.registry import ObjectRegistry
    from ..refine.refiner import Refiner, RefinerConfig
    from ..resources import default_model_path
    from .machine import machine_info
    from .tracking import run_tracking_bench, tracking_markdown

    t0 = time.perf_counter()
    path = Path(args.model) if args.model else default_model_path()

    def run():
        registry = ObjectRegistry(procedural_models("bench", 20, seed=args.seed))
        cfg = RefinerConfig(device=args.device)
        refiner = (Refiner.from_checkpoint(path, registry, cfg) if path.is_file()
                   else Refiner(registry, replace(cfg, mode="region")))
        return refiner, run_tracking_bench(refiner, args.sequences, args.frames, args.seed,
                                           progress=not args.no_progress)

    out, rc = _guarded(run)
    if rc is not None:
        return rc
    refiner, section = out
    record = json_ready({
        "meta": {"command": "pose-refiner " + " ".join(sys.argv[1:]),
                 "model": str(path) if path.is_file() else None,
                 "refiner_mode": refiner.cfg.mode,
                 "threads": torch_threads(), "elapsed_s": time.perf_counter() - t0},
        "machine": machine_info(refiner.device),
        "tracking": section,
    })
    def write(where):
        _write_atomic(where(json_path), json.dumps(record, indent=1, allow_nan=False) + "\n")
        _write_atomic(where(md_path), tracking_markdown(section))

    rc = _all_or_nothing([json_path, md_path], write)
    if rc is not None:
        return rc
    print(tracking_markdown(section))
    print(f"bench: wrote {json_path}, {md_path}")
    return 0


def _guarded(run):
    """``(run(), None)``, or ``(None, exit code)`` after saying why it stopped."""
    try:
        return run(), None
    except KeyboardInterrupt:
        print("bench: interrupted; nothing was written", file=sys.stderr)
        return None, 130
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return None, 2


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _main(args: argparse.Namespace) -> int:
    import torch

    sigterm_as_interrupt()
    from .budget import default_threads

    threads = args.threads or default_threads()
    if threads:
        torch.set_num_threads(threads)
    over: dict = {"seed": args.seed, "gcf_steps": args.gcf_steps, "device": args.device}
    if args.samples is not None:
        over["samples"] = args.samples
    if args.gcf_samples is not None:
        over["gcf_samples"] = args.gcf_samples
    if args.methods:
        over["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.no_scaling:
        over.update(objects_per_frame=(), mesh_faces=(), crop_sizes=())
    json_path = Path(args.json)
    md = args.markdown or json_path.with_suffix(".md")
    png = args.plot or json_path.with_suffix(".png")
    if args.tracking:
        return _main_tracking(args, json_path, Path(md))
    def run():
        cfg = BenchConfig.quick(**over) if args.quick else BenchConfig(**over)
        return run_benchmark(cfg, args.model, progress=not args.no_progress,
                             command="pose-refiner " + " ".join(sys.argv[1:]))

    record, rc = _guarded(run)
    if rc is not None:
        return rc
    rc = _all_or_nothing([json_path, md, png],
                         lambda where: write_outputs(record, json_path, md, png, where))
    if rc is not None:
        return rc
    print(_terminal_summary(record))
    print(f"bench: wrote {json_path}, {md}, {png} in {record['meta']['elapsed_s']:.0f} s")
    return 0
