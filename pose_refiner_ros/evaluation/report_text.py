"""The evaluation report as text (``evaluation.report``): ``report.md`` and the lines
printed to the terminal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .published import published_lines
from .report_header import header_lines, source_text

__all__ = ["report_markdown", "format_summary", "per_class_lines", "fmt"]


def report_markdown(title: str, meta: dict, summary: dict, plots: dict[str, str],
                    first_stamp_ns: int | None, threshold: float | None, jsonl_path: Path,
                    n_objects: int) -> str:
    """``report.md``: the header (what ran, with which settings), the summary, metrics,
    per class, as published, the confidence and covariance calibrations, timing, plots,
    and the first 200 objects (read from the records at ``jsonl_path``)."""
    lines = header_lines(title, meta, first_stamp_ns)
    lines += ["", "## Summary", "",
              f"- frames refined: {summary['frames']}",
              f"- objects refined: {summary['objects']} (with ground truth: "
              f"{summary['objects_with_ground_truth']}, flagged diverged: "
              f"{summary['diverged']})"]
    for k, v in summary["counters"].items():
        lines.append(f"- {k.replace('_', ' ')}: {v}")
    t = summary["timing"]
    if t.get("frames_per_s") is not None:
        lines.append(f"- throughput: {t['frames_per_s']:.2f} frames/s "
                     f"({t['elapsed_s']:.1f} s in all)")
    m = summary.get("metrics")
    if m:
        lines += ["", "## Metrics (coarse vs refined)", "",
                  "Definitions: `docs/protocol.md`, "
                  "`pose_refiner_ros/evaluation/pose_errors.py`.",
                  "", "| metric | coarse | refined |", "|---|---:|---:|"]
        for k in m["refined"]:
            if k == "n":
                continue
            a, b = m["initial"][k], m["refined"][k]
            lines.append(f"| {k} | {fmt(a)} | {fmt(b)} |")
        lines += ["", f"Samples: {m['n']}. Worse after refinement than before "
                  "(counts of samples whose error grew):", "",
                  "| error | worse | better |", "|---|---:|---:|"]
        for k in m["n_worse"]:
            lines.append(f"| {k} | {m['n_worse'][k]} | {m['n_better'][k]} |")
        lines += ["", "### Per class", "", *per_class_lines(summary.get("per_class") or {})]
    ap = summary.get("as_published")
    if ap:
        lines += ["", "## As published", "", "The metrics above are of every refined "
                  "object; the node publishes only confident ones (not diverged, score at "
                  "or above confidence_threshold).", ""]
        lines += [f"- {ln.strip()}" for ln in published_lines(ap, threshold)]
        if ap["metrics"]:
            lines += ["", "| metric | coarse | as published |", "|---|---:|---:|"]
            for k in ap["metrics"]["refined"]:
                if k != "n":
                    lines.append(f"| {k} | {fmt(ap['metrics']['initial'][k])} | "
                                 f"{fmt(ap['metrics']['refined'][k])} |")
    if summary.get("calibration"):
        lines += ["", "### Confidence calibration (refined poses by score quartile)", "",
                  "| quartile | score range | n | median e_R (deg) | ADD(-S)@0.1d |",
                  "|---:|---|---:|---:|---:|"]
        for c in summary["calibration"]:
            lines.append(f"| {c['quartile']} | {c['score_min']:.2f} to {c['score_max']:.2f} "
                         f"| {c['n']} | {c['median_e_R_deg']:.1f} | "
                         f"{100 * c['add01']:.1f}% |")
    cc = summary.get("covariance_calibration")
    if cc:
        lines += ["", f"### Pose covariance against the truth ({cc['n']} refined poses)", "",
                  "Position error along the camera axis in units of the refiner's claimed "
                  "standard deviation (calibrated: 68% within 1 sigma, 95% within 2).", "",
                  "| axis | within 1 sigma | within 2 sigma | median error (mm) | "
                  "median sigma (mm) | rank correlation |", "|---|---:|---:|---:|---:|---:|"]
        for name, a in cc["axes"].items():
            rho = "-" if a["spearman"] is None else f"{a['spearman']:.2f}"
            lines.append(f"| {name} | {100 * a['within_1sigma']:.0f}% | "
                         f"{100 * a['within_2sigma']:.0f}% | "
                         f"{1e3 * a['median_abs_error_m']:.1f} | "
                         f"{1e3 * a['median_sigma_m']:.1f} | {rho} |")
    lines += ["", "## Timing", "", "| stage | median | p95 |", "|---|---:|---:|"]
    for k, v in t.items():
        if isinstance(v, dict):
            lines.append(f"| {k} | {fmt(v['median'])} | {fmt(v['p95'])} |")
    titles = {"errors.png": "Error distributions", "iterations.png": "Error per iteration",
              "confidence.png": "Confidence against error"}
    if plots:
        lines += ["", "## Plots", ""]
        for name, rel in plots.items():
            lines += [f"### {titles.get(name, name)}", "", f"![{name}]({rel})", ""]
    lines += ["", "## Per-object results", ""]
    lines += ["| frame | source | class | score | diverged | e_R coarse | e_R refined | "
              "ADD(-S) coarse (mm) | ADD(-S) refined (mm) | ms |",
              "|---:|---|---|---:|---|---:|---:|---:|---:|---:|"]
    limit = 200
    with open(jsonl_path) as f:
        for i, line in enumerate(f):
            if i == limit:
                lines.append(f"\n(first {limit} of {n_objects}; every object is in "
                             "report.json)")
                break
            r = json.loads(line)
            src = source_text(r, first_stamp_ns)
            mi, mr = r["metrics_init"], r["metrics_refined"]
            lines.append(
                f"| {r['frame']} | {src} | {r['class_id']} | {r['score']:.2f} | "
                f"{'yes: ' + r['reason'] if r['diverged'] else 'no'} | "
                f"{fmt(mi and mi['e_R_deg'])} | {fmt(mr and mr['e_R_deg'])} | "
                f"{fmt(mi and mi['add_or_adds_m'] and 1e3 * mi['add_or_adds_m'])} | "
                f"{fmt(mr and mr['add_or_adds_m'] and 1e3 * mr['add_or_adds_m'])} | "
                f"{fmt(r['timing_ms'].get('total'))} |")
    return "\n".join(lines) + "\n"


def per_class_lines(per_class: dict) -> list[str]:
    """A Markdown table of ``Evaluation.summary()["per_class"]``."""
    lines = ["| class | n | ADD(-S)@0.1d coarse | refined | median e_R coarse | refined "
             "| made worse |", "|---|---:|---:|---:|---:|---:|---:|"]
    for cid, c in per_class.items():
        lines.append(f"| {cid} | {c['n']} | {100 * c['add01_initial']:.1f}% | "
                     f"{100 * c['add01_refined']:.1f}% | {c['median_e_R_initial']:.1f} | "
                     f"{c['median_e_R_refined']:.1f} | {100 * c['worse_share']:.0f}% |")
    return lines


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf"
        return f"{v:.4g}"
    return str(v)


def format_summary(summary: dict, out_dir: Path) -> str:
    """A few lines for the terminal: counts, throughput, the main metrics side by side."""
    t = summary["timing"]
    lines = [f"refined {summary['objects']} objects in {summary['frames']} frames"
             + (f" at {t['frames_per_s']:.2f} frames/s" if t.get("frames_per_s") else "")]
    m = summary.get("metrics")
    if m:
        a, b = m["initial"], m["refined"]
        lines.append(f"{'metric (' + str(m['n']) + ' samples)':26s}{'coarse':>11s}{'refined':>11s}")
        for k in b:
            if k != "n":
                lines.append(f"{k:26s}{fmt(a[k]):>11s}{fmt(b[k]):>11s}")
        w = m["n_worse"]
        lines.append(f"made worse by refinement: ADD(-S) {w['add_or_adds_m']} of {m['n']} "
                     f"({100 * w['add_or_adds_m'] / max(m['n'], 1):.1f}%), "
                     f"e_R {w['e_R_deg']} of {m['n']} "
                     f"({100 * w['e_R_deg'] / max(m['n'], 1):.1f}%)")
        if summary.get("per_class"):
            lines += per_class_lines(summary["per_class"])
        lines += published_lines(summary.get("as_published"), summary.get("threshold"))
    lines.append(f"report: {out_dir / 'report.md'}")
    return "\n".join(lines)
