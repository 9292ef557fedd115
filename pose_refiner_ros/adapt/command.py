"""``pose-refiner adapt``: learn your own scene from an unlabeled recording.

Record a bag of the working scene with the detector running (image, camera info,
detections; depth when present), then

    pose-refiner adapt RECORDING.bag --objects my_objects.yaml --out runs/adapted

gives ``runs/adapted/model.pt``, a model adapted to that camera, lighting and those
objects (load it with ``--model`` / ``model_path:=``). No labels are needed and none are
read: each round the current model refines the recording's detections, its trusted,
confident results become pseudo-poses, and the network is fine-tuned on crops of the
recording at those poses mixed with synthetic data (``adapt.run``). A BOP folder works
too (``bop:PATH`` with ``--results``, a CSV of coarse poses); its ground truth is never
read. Ctrl-C (or SIGTERM) saves what it has. Writes ``model.pt``, ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

__all__ = ["add_subcommand", "run", "report_markdown"]


def report_markdown(rep: dict) -> str:
    """The Markdown summary of an adaptation report."""
    lines = [f"# adapt: {rep.get('recording', '')}", "",
             f"- model: `{rep['model']}` (from `{rep['init_model']}`)",
             f"- frames: {rep['frames']}; steps: {rep['steps']}; time: "
             f"{rep['elapsed_s'] / 60:.1f} min" + (" (interrupted)" if rep.get("interrupted")
                                                  else ""),
             "", "| round | detections | accepted | not trusted | low score | median score | "
             "loss real | loss synthetic | labelling s | training s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rep["rounds"]:
        c = r["pseudo"]
        mean = {k: (f"{sum(v) / len(v):.3f}" if v else "-") for k, v in r["losses"].items()}
        med = r.get("pseudo_score_median")
        lines.append(f"| {r['round'] + 1} | {c['detections']} | {c['accepted']} | "
                     f"{c['not_trusted']} | {c['low_score']} | "
                     f"{'-' if med is None else f'{med:.2f}'} | {mean['real']} | "
                     f"{mean['synthetic']} | {r['label_s']:.0f} | {r.get('train_s', 0):.0f} |")
    gt = rep.get("ground_truth")
    if gt and "before" in gt:
        lines += ["", "Ground truth of the recording (`--report-ground-truth`, after "
                  "adaptation; never used by it):", "",
                  "| model | objects | ADD(-S)@0.1d | median e_R | made worse |",
                  "|---|---:|---:|---:|---:|"]
        for name in ("before", "after"):
            g = gt[name]
            lines.append(f"| {name} | {g['objects']} | {100 * g['add_0.1d']:.1f}% | "
                         f"{g['median_e_R_deg']:.1f} deg | {100 * g['made_worse']:.1f}% |")
    elif gt:
        lines += ["", f"Ground truth: {gt['skipped']}"]
    counts = rep.get("recording_counts", {})
    if counts:
        lines += ["", "Recording: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    return "\n".join(lines) + "\n"


def ground_truth_report(args, init_model, adapted_model) -> dict:
    """After adaptation only, and only when asked (``--report-ground-truth``): the
    recording's own ground truth scores the model it started from and the adapted one,
    from the same coarse poses, on the frames adaptation used: ``pose-refiner eval`` with
    ``--results`` for a BOP recording, ``eval-bag`` (the bag's ground-truth topic, or
    ``--gt-file``) for a bag."""
    from ..evaluation import bag_io as B
    from ..evaluation.eval_bag import eval_bag
    from ..evaluation.eval_dataset import evaluate_dataset

    spec = str(args.recording)
    out = {}
    for name, model in (("before", init_model), ("after", adapted_model)):
        where = Path(args.out) / f"ground_truth_{name}"
        if spec.startswith("bop:"):
            summary = evaluate_dataset(spec, where, results=args.results,
                                       max_images=args.max_frames, model=str(model),
                                       use_depth=args.use_depth, progress=False, plots=False)
        else:
            try:
                summary = eval_bag(spec, args.objects, where, model=str(model),
                                   use_depth=args.use_depth, gt_file=args.gt_file,
                                   max_frames=args.max_frames, overwrite=True, progress=False,
                                   plots=False)
            except (B.BagError, FileNotFoundError, ValueError) as e:
                return {"skipped": f"the bag could not be scored: {e}"}
        m = summary.get("metrics")
        if not m or not m.get("n"):
            return {"skipped": "the recording has no ground truth for its objects (a bag: a "
                               "ground-truth topic, or --gt-file)"}
        out[name] = {"objects": m["n"],
                     "add_0.1d": m["refined"]["acc_add_or_adds_0.1d"],
                     "median_e_R_deg": m["refined"]["median_e_R_deg"],
                     "made_worse": m["n_worse"]["add_or_adds_m"] / max(m["n"], 1)}
    return out


def run(args: argparse.Namespace) -> int:
    from ..evaluation.all_or_nothing import sigterm_as_interrupt
    from ..mesh.registry import ObjectRegistry
    from ..resources import default_model_path
    from .recording import read_recording
    from .run import AdaptConfig, adapt

    try:
        cfg = AdaptConfig(rounds=args.rounds, steps_per_round=args.steps,
                          real_share=args.real_share, min_score=args.min_score,
                          batch_size=args.batch_size, crop_size=args.crop_size,
                          n_train_meshes=args.procedural_meshes, seed=args.seed)
        registry = ObjectRegistry.from_yaml(args.objects)
        frames, counts = read_recording(args.recording, registry.class_ids, args.results,
                                        args.use_depth, args.max_frames)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"adapt: {e}", file=sys.stderr)
        return 2
    if not frames:
        print(f"adapt: {args.recording}: no frame with detections of the registered objects "
              f"({counts})", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sigterm_as_interrupt()  # a kill saves what was learned, as Ctrl-C does
    init = args.init or str(default_model_path())
    print(f"adapt: {len(frames)} frames, {sum(len(f.detections) for f in frames)} detections; "
          f"{cfg.rounds} rounds of {cfg.steps_per_round} steps from {init}")
    rep = adapt(frames, args.objects, init, args.out, cfg, progress=not args.no_progress)
    rep["recording"] = str(args.recording)
    rep["recording_counts"] = counts
    if args.report_ground_truth and not rep.get("interrupted"):
        rep["ground_truth"] = ground_truth_report(args, init, Path(args.out) / "model.pt")
    out = Path(args.out)
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    (out / "report.md").write_text(report_markdown(rep))
    print(f"adapt: wrote {out / 'model.pt'}, {out / 'report.json'}, {out / 'report.md'}")
    return 130 if rep.get("interrupted") else 0


def add_subcommand(subparsers, name: str, help_text: str) -> None:
    from ..cli import HelpFormatter

    p = subparsers.add_parser(name, help=help_text, description=__doc__,
                              formatter_class=HelpFormatter)
    p.add_argument("recording", help="a ROS 2 bag, or bop:PATH (with --results)")
    p.add_argument("--objects", required=True, help="objects YAML of the recording's classes")
    p.add_argument("--out", required=True, help="output folder (model.pt, report)")
    p.add_argument("--init", help="checkpoint to start from (default: the shipped "
                                  "models/refiner.pt)")
    p.add_argument("--results", help="bop: recordings: BOP results CSV of coarse poses")
    p.add_argument("--rounds", type=int, default=2, help="pseudo-labelling + training rounds")
    p.add_argument("--steps", type=int, default=500, help="training steps per round")
    p.add_argument("--real-share", type=float, default=0.5,
                   help="share of training batches cut from the recording")
    p.add_argument("--min-score", type=float, default=0.6,
                   help="least confidence of an accepted pseudo-pose")
    p.add_argument("--batch-size", type=int, default=8, help="crops per training step")
    p.add_argument("--crop-size", type=int, default=128,
                   help="training crop side, pixels (the shipped model's)")
    p.add_argument("--procedural-meshes", type=int, default=100,
                   help="procedural meshes of the synthetic batches (against forgetting)")
    p.add_argument("--max-frames", type=int, help="use only the first N frames")
    p.add_argument("--use-depth", action="store_true", help="read depth too")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on "
                                                          "small CPUs)")
    p.add_argument("--report-ground-truth", action="store_true",
                   help="after adaptation, score the starting and the adapted model against "
                        "the recording's ground truth (a bag's ground-truth topic or "
                        "--gt-file; a BOP folder's own), on the frames adaptation used; "
                        "adaptation itself never reads it")
    p.add_argument("--gt-file", help="bags: ground truth for --report-ground-truth from an "
                                     "eval-bag sidecar JSON instead of a topic")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
