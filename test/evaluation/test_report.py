"""The evaluation report (``evaluation.report`` and its header): what ran and with which
settings, readable sources, on made-up results (no refiner, no bag)."""

import json
import re

import numpy as np
import pytest

from pose_refiner_ros.evaluation.report import Evaluation, ObjectResult
from pose_refiner_ros.evaluation.report_header import (
    header_lines,
    settings,
    source_text,
    stamp_text,
)
from pose_refiner_ros.refine.config import RefinerConfig
from pose_refiner_ros.ros.params import NodeParams

STAMP0 = 1_700_000_000_123_456_789  # 2023-11-14 22:13:20.123 UTC


def _result(frame: int, stamp_ns: int, score: float = 0.8, diverged: bool = False):
    return ObjectResult(frame=frame, key={"stamp_ns": stamp_ns}, class_id="mug", score=score,
                        diverged=diverged, reason="jumped" if diverged else "",
                        T_init=np.eye(4), T_refined=np.eye(4), timing_ms={"total": 12.0})


def _meta():
    from dataclasses import fields

    params = NodeParams.defaults()
    return {"command": "eval-bag", "bag": "demo_bag", "mode": "region", "model": None,
            "topics_not_copied": ["/a (x/A)", "/b (x/B)"],
            "params": {f.name: getattr(params, f.name) for f in fields(params)},
            "refiner": settings(RefinerConfig(mode="region"))}


def test_stamps_read_as_times():
    assert stamp_text(STAMP0).startswith("2023-11-14 22:13:20.123 UTC")
    assert str(STAMP0) in stamp_text(STAMP0)  # the exact stamp is still there to find
    assert stamp_text(12_500_000_000).startswith("12.500 s (simulated clock)")
    assert source_text({"stamp_ns": STAMP0 + 1_500_000_000}, STAMP0) == "+1.500 s"
    assert source_text({"scene_id": 2, "im_id": 7}, None) == "2/7"


def test_header_names_mode_and_model_first_and_every_setting():
    meta = _meta()
    lines = header_lines("eval-bag: demo_bag", meta, STAMP0)
    text = "\n".join(lines)
    bullets = [ln for ln in lines if ln.startswith("- **")]
    assert bullets[:3] == ["- **command**: `eval-bag`", "- **mode**: `region`",
                           "- **model**: `(none)`"]
    assert "- **topics_not_copied**: /a (x/A), /b (x/B)" in lines
    assert "2023-11-14 22:13:20.123 UTC" in text
    for name, value in meta["params"].items():
        row = [ln for ln in lines if ln.startswith(f"| {name} |")]
        assert row, name
        assert str(value) in row[0] or value == ""
    # Nested settings are spelled out, one row each, not as a dataclass repr.
    cfg = RefinerConfig(mode="region")
    assert f"| region.agree_px | `{cfg.region.agree_px}` |" in lines
    assert f"| solver.iterations | `{cfg.solver.iterations}` |" in lines
    assert "RegionConfig(" not in text


def test_report_md_has_the_settings_and_readable_sources(tmp_path):
    ev = Evaluation(tmp_path, "eval-bag: demo_bag")
    for i in range(3):
        ev.add(_result(i, STAMP0 + i * 250_000_000))
    ev.write(_meta(), elapsed_s=1.0, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "- **mode**: `region`" in md and "| confidence_threshold | `0.3` |" in md
    rows = [ln for ln in md.splitlines() if re.match(r"\| \d+ \|", ln)]
    assert [ln.split("|")[2].strip() for ln in rows] == ["+0.000 s", "+0.250 s", "+0.500 s"]
    assert not re.search(r"\| \d{19} \|", md)  # no raw nanosecond stamps in the table
    meta = json.loads((tmp_path / "report.json").read_text())["meta"]
    assert meta["refiner"]["region"]["agree_px"] == RefinerConfig().region.agree_px  # a number


def _scored(i: int, score: float, err_deg: float, diverged: bool = False, published=None):
    from scipy.spatial.transform import Rotation

    from pose_refiner_ros.evaluation import metrics as M

    T_gt = np.eye(4)
    T_gt[2, 3] = 0.5
    T_init, T_ref = T_gt.copy(), T_gt.copy()
    T_init[:3, :3] = Rotation.from_rotvec([0, 0, np.radians(20.0)]).as_matrix()
    T_ref[:3, :3] = Rotation.from_rotvec([0, 0, np.radians(err_deg)]).as_matrix()
    r = _result(i, STAMP0 + i, score, diverged)
    r.T_init, r.T_refined, r.T_gt, r.published = T_init, T_ref, T_gt, published
    pts = np.random.default_rng(0).normal(size=(50, 3)) * 0.03
    kw = dict(pts_obj=pts, K=np.array([[500.0, 0, 160], [0, 500, 120], [0, 0, 1]]),
              image_size=(320, 240), diameter_m=0.1)
    r.metrics_init = M.evaluate_pose(T_init, T_gt, **kw)
    r.metrics_refined = M.evaluate_pose(T_ref, T_gt, **kw)
    return r


def test_metrics_as_published_leave_out_withheld_objects(tmp_path):
    ev = Evaluation(tmp_path, "eval-bag: x", confidence_threshold=0.3)
    ev.add(_scored(0, 0.9, 1.0, published="refined"))
    ev.add(_scored(1, 0.8, 2.0, published="refined"))
    ev.add(_scored(2, 0.1, 60.0, published=""))  # withheld: its big error is not seen
    ev.add(_scored(3, 0.5, 45.0, diverged=True, published="coarse"))  # coarse pose published
    summary = ev.write(_meta(), plots=False)
    assert summary["metrics"]["n"] == 4
    ap = summary["as_published"]
    assert (ap["objects"], ap["published"], ap["withheld"], ap["published_coarse"]) == (4, 3, 1, 1)
    m = ap["metrics"]
    assert m["n"] == 3
    assert m["refined"]["median_e_R_deg"] == pytest.approx(2.0, abs=1e-6)  # 1, 2 and 20
    assert summary["metrics"]["refined"]["median_e_R_deg"] > 20
    md = (tmp_path / "report.md").read_text()
    assert "## As published" in md and "3 of 4 objects (1 withheld, 1 with their coarse pose)" in md


def test_without_a_node_rule_there_is_no_published_split(tmp_path):
    ev = Evaluation(tmp_path, "eval: x")
    ev.add(_scored(0, 0.9, 1.0))
    assert ev.write(_meta(), plots=False)["as_published"] is None
    assert "As published" not in (tmp_path / "report.md").read_text()


def test_confidence_plot_calls_low_scores_withheld_and_draws_the_threshold(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = Evaluation(tmp_path, "eval-bag: x", confidence_threshold=0.3)
    for i, (s, e, d) in enumerate([(0.9, 1, False), (0.7, 3, False), (0.2, 30, False),
                                   (0.1, 50, False), (0.5, 40, True)]):
        ev.add(_scored(i, s, e, d, published="refined" if s >= 0.3 and not d else ""))
    ev.summary()
    figures = []
    real_close = plt.close
    plt.close = lambda fig=None: figures.append(fig)  # keep the figures to look at
    try:
        ev._plots()
    finally:
        plt.close = real_close
    fig = next(f for f in figures if f._suptitle.get_text() == "Confidence against error")
    left, right = fig.axes[:2]
    for ax in (left, right):
        labels = ax.get_legend_handles_labels()[1]
        assert "accepted" not in labels
        assert {"published", "below threshold: withheld", "diverged",
                "confidence_threshold 0.3"} <= set(labels)
        published = ax.collections[labels.index("published")].get_offsets()[:, 0]
        assert (np.asarray(published) >= 0.3).all()
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    # the right panel's y label stays clear of the left panel
    assert right.yaxis.label.get_window_extent(r).x0 > left.get_tightbbox(r).x1
    for f in figures:
        real_close(f)


def test_covariances_are_kept_and_checked_against_the_truth(tmp_path):
    ev = Evaluation(tmp_path, "eval: x")
    for i in range(4):
        r = _scored(i, 0.8, 2.0)
        r.T_refined = r.T_refined.copy()
        r.T_refined[2, 3] += 0.01 * (i + 1)  # 1 to 4 cm along the ray
        r.covariance = np.diag([1e-6, 1e-6, 0.025**2, 1e-4, 1e-4, 1e-4])
        ev.add(r)
    ev.add(_scored(4, 0.8, 2.0))  # no covariance: left out
    summary = ev.write(_meta(), plots=False)
    z = summary["covariance_calibration"]["axes"]["z"]
    assert summary["covariance_calibration"]["n"] == 4
    assert (z["within_1sigma"], z["within_2sigma"]) == (0.5, 1.0)  # 1, 2 | 3, 4 cm vs 2.5
    md = (tmp_path / "report.md").read_text()
    assert "Pose covariance against the truth (4 refined poses)" in md
    objs = json.loads((tmp_path / "report.json").read_text())["objects"]
    assert np.allclose(objs[0]["covariance"], np.diag([1e-6, 1e-6, 0.025**2, 1e-4, 1e-4, 1e-4]))
    assert objs[4]["covariance"] is None
