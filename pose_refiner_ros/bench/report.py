"""The benchmark's Markdown summary and PNG plot, made from its JSON record alone.

Both read only the record :func:`~.bench.run_benchmark` returns (or its JSON read back),
so they can be regenerated from a stored record::

    python -m pose_refiner_ros.bench.report bench.json   # rewrites bench.md, bench.png
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
import sys

import numpy as np

__all__ = ["markdown", "write_plot"]

_STAGES = ("crop", "render", "network", "solve", "other")


def _f(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf"
        return f"{v:.{digits}g}"
    return str(v)


def _table(header: list, rows: list, align: str | None = None) -> list:
    align = align or "|---" + "|---:" * (len(header) - 1) + "|"
    return ["| " + " | ".join(header) + " |", align] + [
        "| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]


def _metric_rows(cols: list) -> list:
    """Rows metric x methods from ``[(name, summary, share_worse)]``."""
    keys = [k for k in cols[0][1] if k != "n"]
    rows = [["n"] + [c[1]["n"] for c in cols]]
    rows += [[k] + [c[1].get(k) for c in cols] for k in keys]
    for err in ("add_or_adds_m", "e_R_deg"):
        rows.append([f"share worse than initial ({err})"]
                    + [None if c[2] is None else c[2].get(err) for c in cols])
    return rows


def markdown(record: dict, plot_relpath: str | None = None) -> str:
    """The Markdown summary of a benchmark record."""
    meta, mach, b = record["meta"], record["machine"], record["benchmark"]
    methods = record["methods"]
    lines = ["# Benchmark: pose refinement on the held-out synthetic set", ""]
    model = meta.get("model") or {}
    lines += [
        f"- **date**: {mach['date']}",
        f"- **machine**: {mach['cpu_model']}, {mach['logical_cpus']} logical CPUs, "
        f"{mach['platform']}; load average {mach['load_average_1_5_15']}",
        f"- **torch**: {mach['torch']}, {mach['torch_threads']} threads, device "
        f"`{mach['device']}`" + (f" ({mach['gpu']})" if mach.get("gpu") else ""),
        f"- **commit**: `{mach['git_commit']}`",
        f"- **model**: `{model.get('path')}` (sha256 `{str(model.get('sha256'))[:12]}`)",
        f"- **command**: `{meta['command']}` ({_f(meta['elapsed_s'], 3)} s)",
        f"- **samples**: {b['n_samples']} objects in {b['n_scenes']} scenes of "
        f"{b['image_size'][0]}x{b['image_size'][1]} px, {b['n_models']} `bench` meshes "
        f"(never used in training), seed {b['seed']}, visible fraction >= "
        f"{b['min_visib_fract']}; {b['initial_poses']}",
        f"- **timing**: {meta['timing_protocol']}",
        "",
        "## Accuracy",
        "",
        "Every metric of `docs/protocol.md` (medians are errors: lower is better; `acc_*` "
        "and `ar_*` are shares: higher is better).",
    ]
    gcf = methods.get("gcf-adam")
    if gcf and gcf.get("subset"):
        lines.append(f"`gcf-adam` (paper settings) ran on {gcf['subset']['note']}; it is "
                     "compared with `ours` on those samples below.")
    lines.append("")
    cols = [(n, r["metrics"], r.get("share_worse") if n != "initial" else None)
            for n, r in methods.items()]
    lines += _table(["metric"] + [f"`{c[0]}`" for c in cols], _metric_rows(cols))

    if gcf and gcf.get("ours_same_samples"):
        lines += ["", f"### `ours` and `gcf-adam` on the same {gcf['n']} samples", ""]
        cols2 = [("initial", gcf["initial_metrics_same_samples"], None),
                 ("ours", gcf["ours_same_samples"], None),
                 ("gcf-adam", gcf["metrics"], gcf["share_worse"])]
        rows = [r for r in _metric_rows(cols2) if not r[0].startswith("share")]
        lines += _table(["metric"] + [f"`{c[0]}`" for c in cols2], rows)

    lines += ["", "## Time and memory per object", "",
              "Milliseconds per object: median of the total, its 95th percentile, and the "
              "median of each stage; peak RSS increase over the method's start.", ""]
    rows = []
    for n, r in methods.items():
        t = r.get("timing_ms_per_object")
        if not t:
            continue
        mem = r.get("memory", {})
        rows.append([f"`{n}`", t["total"]["median"], t["total"]["p95"]]
                    + [t[s]["median"] for s in _STAGES]
                    + [r["iterations"]["median"], mem.get("peak_rss_increase_mb"),
                       mem.get("cuda_max_allocated_mb"), r["diverged"]["share"]])
    lines += _table(["method", "total", "p95", *_STAGES, "iterations", "peak RSS + MB",
                     "CUDA peak MB", "flagged diverged"], rows)
    mt = methods.get("gcf-adam-matched", {}).get("matched")
    if mt:
        lines += ["", f"`gcf-adam-matched`: {mt['steps']} Adam updates at "
                  f"{_f(mt['ms_per_update'], 3)} ms each (from {mt['ms_per_update_from']}) to "
                  f"match `ours`' {_f(mt['ours_median_ms'], 3)} ms per object."]

    sc = record.get("scaling")
    if sc:
        lines += ["", "## Scaling of `ours`", "", sc["note"] + ".", "",
                  "### Objects per frame (one batch)", ""]
        lines += _table(["objects", "ms / frame", "p95 ms / frame", "ms / object",
                         "render ms / object", "network ms / object"],
                        [[r["objects"], r["frame_ms"]["median"], r["frame_ms"]["p95"],
                          r["per_object_ms"]["median"], r["stages_ms_per_object"]["render"],
                          r["stages_ms_per_object"]["network"]] for r in sc["objects_per_frame"]])
        lines += ["", "### Mesh faces", ""]
        rows = []
        for r in sc["mesh_faces"]:
            d = r.get("default_cap")
            rows.append([r["label"], r["raw_faces"], r["raw"]["per_object_ms"]["median"],
                         r["raw"]["stages_ms_per_object"]["render"],
                         r["registered_faces_default_cap"],
                         d["per_object_ms"]["median"] if d else "same",
                         d["stages_ms_per_object"]["render"] if d else "same"])
        lines += _table(["mesh", "faces rendered (raw)", "ms / object", "render ms",
                         "faces rendered (default cap)", "ms / object", "render ms"], rows)
        lines += ["", "### Crop size", ""]
        lines += _table(["crop", "ms / object", "render ms", "network ms", "solve ms"],
                        [[f"{r['crop_size']}x{r['crop_size']}", r["per_object_ms"]["median"],
                          r["stages_ms_per_object"]["render"],
                          r["stages_ms_per_object"]["network"],
                          r["stages_ms_per_object"]["solve"]] for r in sc["crop_size"]])

    for name, cc in (record.get("covariance_calibration") or {}).items():
        if not cc:
            continue
        lines += ["", f"## Pose covariance against the truth (`{name}`, {cc['n']} refined "
                  "poses)", "", "Position error along each camera axis in units of the "
                  "claimed standard deviation (calibrated: 68% within 1 sigma, 95% within 2); "
                  "rank correlation of the claimed deviation with the error.", ""]
        lines += _table(["axis", "within 1 sigma", "within 2 sigma", "median error (mm)",
                         "median sigma (mm)", "rank correlation"],
                        [[ax, a["within_1sigma"], a["within_2sigma"],
                          1e3 * a["median_abs_error_m"], 1e3 * a["median_sigma_m"],
                          a["spearman"]] for ax, a in cc["axes"].items()])
    for name, cal in record.get("calibration", {}).items():
        lines += ["", f"## Confidence calibration (`{name}`)", "",
                  f"{cal['binning']}. Spearman rank correlation of score and ADD(-S) / "
                  f"diameter: {_f(cal['spearman_score_vs_add_rel'], 3)} (negative: higher "
                  f"score, lower error); accuracy rises with score: "
                  f"{_f(cal['accuracy_rises_with_score'])}.", ""]
        rows = [[str(k + 1), f"{b['score_min']:.3f} - {b['score_max']:.3f}", b["n"],
                 b["acc_add_or_adds_0.1d"], b["median_e_R_deg"], b["median_add_or_adds_rel"]]
                for k, b in enumerate(cal["bins"])]
        for label, g in (("accepted", cal["accepted"]),
                         ("flagged diverged", cal["flagged_diverged"])):
            if g["n"]:
                rows.append([label, f"{g['score_min']:.3f} - {g['score_max']:.3f}", g["n"],
                             g["acc_add_or_adds_0.1d"], g["median_e_R_deg"],
                             g["median_add_or_adds_rel"]])
        lines += _table(["bin", "score", "n", "ADD(-S)@0.1d", "median e_R (deg)",
                         "median ADD(-S) / d"], rows)

    acc = record.get("acceptance") or {}
    if acc:
        lines += ["", "## Acceptance criteria (issue 8)", ""]
        rows = []
        for k, c in acc.items():
            if c is None:
                rows.append([k, "not run", ""])
                continue
            if "per_metric" in c:
                ok = ("better", "saturated") + (("equal",) if "least" in k else ())
                bad = [m for m, v in c["per_metric"].items() if v not in ok]
                detail = "all metrics" if not bad else "not on: " + ", ".join(bad)
            elif "speedup" in c:
                detail = f"{c['speedup']:.1f}x"
            else:
                detail = f"median {c['median_ms']:.0f} ms, p95 {c['p95_ms']:.0f} ms"
            rows.append([k, "PASS" if c["passed"] else "FAIL", detail])
        lines += _table(["criterion", "result", "detail"], rows, "|---|---|---|")

    if plot_relpath:
        lines += ["", "## Plot", "", f"![benchmark]({plot_relpath})"]
    return "\n".join(lines) + "\n"


def _cdf(ax, values, label):
    v = np.sort(np.where(np.isfinite(values), values, np.inf))
    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label)


def write_plot(record: dict, path: Path) -> None:
    """Error CDFs per method, latency per method, the scaling sweeps and calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter, NullFormatter

    def plain_log(axis):  # 20, 30 rather than 2 x 10^1
        axis.set_major_formatter(LogFormatter())
        axis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.4)))

    methods = record["methods"]
    fig, axes = plt.subplots(2, 4, figsize=(19, 8.5))
    cdfs = [("e_R_deg", "rotation error e_R (deg)", 1.0),
            ("t_err_m", "translation error (cm)", 100.0),
            ("add_or_adds_rel", "ADD(-S) / diameter", 1.0)]
    for ax, (key, label, scale) in zip(axes[0, :3], cdfs, strict=True):
        for name, r in methods.items():
            v = np.array([np.nan if p[key] is None else p[key] for p in r["per_sample"]],
                         dtype=np.float64) * scale
            _cdf(ax, np.clip(v, 1e-4, None), f"{name} (n={r['n']})")
        if key == "add_or_adds_rel":
            ax.axvline(0.1, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        plain_log(ax.xaxis)
        ax.set_xlabel(label)
        ax.set_ylabel("share of samples below")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)

    ax = axes[0, 3]
    cal = record.get("calibration", {}).get("ours")
    if cal:
        x = np.arange(len(cal["bins"]))
        ax.bar(x, [b["acc_add_or_adds_0.1d"] for b in cal["bins"]])
        ax.set_xticks(x, [f"{b['score_min']:.3f}-\n{b['score_max']:.3f}" for b in cal["bins"]],
                      fontsize=8)
        ax.set_xlabel("score bin of ours (low to high)")
        ax.set_ylabel("ADD(-S)@0.1d accuracy (bars)")
        ax.set_ylim(0, 1)
        ax2 = ax.twinx()
        ax2.plot(x, [b["median_add_or_adds_rel"] for b in cal["bins"]], "ko-", ms=4)
        ax2.set_yscale("log")
        plain_log(ax2.yaxis)
        ax2.set_ylabel("median ADD(-S) / diameter (line)")
        ax.set_title(f"calibration, Spearman {_f(cal['spearman_score_vs_add_rel'], 2)}",
                     fontsize=9)
    else:
        ax.set_axis_off()

    ax = axes[1, 0]
    timed = [(n, r["timing_ms_per_object"]) for n, r in methods.items()
             if r.get("timing_ms_per_object")]
    if timed:
        # linear scale, limited to the methods of comparable cost: a bar running off the
        # axis (gcf-adam with 1000 updates) is labelled with its value
        y = np.arange(len(timed))
        totals = np.array([t["total"]["median"] for _, t in timed])
        p95 = np.array([t["total"]["p95"] for _, t in timed])
        xmax = 1.35 * max(p95[totals <= 5 * np.median(totals)].max(), 1e-3)
        left = np.zeros(len(timed))
        for st in _STAGES:
            w = np.array([t[st]["median"] for _, t in timed])
            ax.barh(y, w, left=left, label=st)
            left += w
        ax.plot(p95, y, "k|", ms=12, label="p95 total")
        # Labels right of the bar's end (inside, in white, only for a bar running off
        # the axis): a label ending at a short bar's end ran into the method names.
        for yi, tot in zip(y, totals, strict=True):
            text = f"{tot:.0f} ms" if tot < 1e4 else f"{tot / 1e3:.1f} s"
            if tot > xmax:
                ax.text(xmax * 0.98, yi, text, ha="right", va="center", fontsize=7,
                        color="white")
            else:
                ax.text(tot + 0.01 * xmax, yi, text, ha="left", va="center", fontsize=7)
        ax.set_xlim(0, xmax)
        ax.set_yticks(y, [n for n, _ in timed], fontsize=8)
        ax.set_xlabel("ms per object (median per stage)")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3, axis="x")

    sc = record.get("scaling") or {}
    panels = [("objects_per_frame", "objects", "objects per frame"),
              ("mesh_faces", "raw_faces", "mesh faces (rendered without decimation)"),
              ("crop_size", "crop_size", "crop size (px)")]
    for ax, (key, xkey, label) in zip(axes[1, 1:], panels, strict=True):
        rows = sc.get(key) or []
        if not rows:
            ax.set_axis_off()
            continue
        x = [r[xkey] for r in rows]
        t = (lambda r: r["raw"]) if key == "mesh_faces" else (lambda r: r)
        ax.plot(x, [t(r)["per_object_ms"]["median"] for r in rows], "o-", label="ms / object")
        if key == "objects_per_frame":
            ax.plot(x, [r["frame_ms"]["median"] for r in rows], "s--", label="ms / frame")
        if key == "mesh_faces":
            ax.plot(x, [t(r)["stages_ms_per_object"]["render"] for r in rows], "^:",
                    label="render ms / object")
            ax.set_xscale("log")
            ax.set_xticks(x, [f"{r['label']}\n({r['raw_faces']})" for r in rows], fontsize=8)
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    mach = record["machine"]
    fig.suptitle(f"pose-refiner bench: {record['benchmark']['n_samples']} held-out samples; "
                 f"{mach['cpu_model']}, {mach['torch_threads']} threads, {mach['device']}",
                 fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    """Rewrite ``X.md`` and ``X.png`` from ``X.json``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m pose_refiner_ros.bench.report RECORD.json", file=sys.stderr)
        return 2
    src = Path(argv[0])
    record = json.loads(src.read_text())
    png = src.with_suffix(".png")
    write_plot(record, png)
    src.with_suffix(".md").write_text(markdown(record, plot_relpath=png.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
