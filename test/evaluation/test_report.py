"""The evaluation report (``evaluation.report`` and its header): what ran and with which
settings, readable sources, on made-up results (no refiner, no bag)."""

import json
import re

import numpy as np

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
