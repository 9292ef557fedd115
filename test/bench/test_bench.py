"""``pose-refiner bench`` runs end to end and its record holds every section.

The figures themselves are not asserted (an untrained network; see docs/benchmarks.md
for measured ones): these tests check the layout of the JSON record, the Markdown and
the PNG, on a tiny run.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
import signal

import pytest
import torch

from pose_refiner_ros.bench import scaling
from pose_refiner_ros.bench.bench import METHODS, BenchConfig, run_benchmark, write_outputs
from pose_refiner_ros.bench.calibration import spearman
from pose_refiner_ros.bench.checks import metric_verdicts
from pose_refiner_ros.evaluation.metrics import ERROR_KEYS
from pose_refiner_ros.net.model import CorrespondenceNet, NetConfig
from pose_refiner_ros.train.checkpoint import save_checkpoint

SUMMARY_KEYS = {"n", *(f"median_{k}" for k in ERROR_KEYS), "acc_pi_6", "acc_pi_18",
                "acc_5deg5cm", "acc_add_or_adds_0.1d", "ar_mssd", "ar_mspd"}
TIMING_KEYS = {"crop", "render", "network", "solve", "other", "total"}


@pytest.fixture(scope="module")
def record_and_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    ckpt = tmp / "untrained.pt"
    save_checkpoint(ckpt, CorrespondenceNet(NetConfig(gru_iters=1)))
    cfg = BenchConfig(samples=2, gcf_samples=1, gcf_steps=3, n_models=3, device="cpu",
                      objects_per_frame=(1, 2), mesh_faces=("1k", "21k"), crop_sizes=(32,),
                      scaling_repeats=1, refiner_overrides={"crop_size": 64, "iterations": 2})
    mp = pytest.MonkeyPatch()
    # a mesh just above the registry's default cap of 20000 faces: decimated by default
    mp.setitem(scaling.TORUS_SECTIONS, "21k", (150, 70))
    stderr = io.StringIO()  # the progress bars and messages
    try:
        with contextlib.redirect_stderr(stderr):
            record = run_benchmark(cfg, ckpt, progress=True, command="test")
    finally:
        mp.undo()
    paths = tmp / "out.json", tmp / "out.md", tmp / "plots" / "out.png"
    write_outputs(record, *paths)
    return record, paths, stderr.getvalue()


def test_record_has_every_section(record_and_files):
    record, (json_path, _, _), _ = record_and_files
    assert json.loads(json_path.read_text()) == record  # plain JSON, no NaN
    assert set(record) == {"meta", "machine", "benchmark", "methods", "calibration",
                           "covariance_calibration", "scaling", "acceptance"}
    for key in ("date", "platform", "cpu_model", "logical_cpus", "torch", "torch_threads",
                "device", "git_commit"):
        assert key in record["machine"]
    assert record["meta"]["model"]["sha256"]
    for cc in record["covariance_calibration"].values():  # None: no refined pose with one
        assert cc is None or (set(cc["axes"]) == {"x", "y", "z"} and cc["n"] >= 1)
    b = record["benchmark"]
    assert b["split"] == "bench" and b["n_samples"] == 2 and len(b["samples"]) == 2


def test_every_method_has_every_metric(record_and_files):
    methods = record_and_files[0]["methods"]
    assert list(methods) == list(METHODS)
    for name, rec in methods.items():
        assert set(rec["metrics"]) == SUMMARY_KEYS, name
        assert set(rec["share_worse"]) == set(ERROR_KEYS), name
        assert len(rec["per_sample"]) == rec["n"]
        if name == "initial":
            assert "timing_ms_per_object" not in rec
            continue
        assert set(rec["timing_ms_per_object"]) == TIMING_KEYS, name
        assert set(rec["timing_ms_per_object"]["total"]) == {"median", "p95", "mean"}
        assert rec["timing_ms_per_object"]["total"]["median"] > 0
        assert {"peak_rss_mb", "peak_rss_increase_mb", "method"} <= set(rec["memory"])
    gcf = methods["gcf-adam"]
    assert gcf["n"] == 1 and gcf["subset"]["n"] == 1 and gcf["config"]["adam_steps"] == 3
    assert set(gcf["ours_same_samples"]) == SUMMARY_KEYS
    assert methods["gcf-adam-matched"]["matched"]["steps"] >= 1
    assert methods["ours-rgbd"]["use_depth"] and not methods["ours"]["use_depth"]


def test_scaling_calibration_and_acceptance(record_and_files):
    record = record_and_files[0]
    sc = record["scaling"]
    assert [r["objects"] for r in sc["objects_per_frame"]] == [1, 2]
    assert [r["crop_size"] for r in sc["crop_size"]] == [32]
    small, big = sc["mesh_faces"]
    assert small["raw_faces"] == small["registered_faces_raw"] == 1024
    assert not small["decimated_by_default"] and "default_cap" not in small
    assert big["raw_faces"] == big["registered_faces_raw"] == 21000
    assert big["decimated_by_default"] and big["registered_faces_default_cap"] <= 20000
    assert big["default_cap"]["per_object_ms"]["median"] > 0
    for name in ("ours", "ours-rgbd"):
        cal = record["calibration"][name]
        assert sum(b["n"] for b in cal["bins"]) == 2
        assert {"spearman_score_vs_add_rel", "accuracy_rises_with_score", "accepted",
                "flagged_diverged"} <= set(cal)
    acc = record["acceptance"]
    assert set(acc) == {"ours_better_than_initial_on_every_metric",
                        "ours_better_than_flow_baseline_on_every_metric",
                        "ours_at_least_as_accurate_as_gcf_adam_same_samples",
                        "ours_20x_faster_than_gcf_adam", "ours_under_250ms_per_object"}
    assert all(isinstance(c["passed"], bool) for c in acc.values())


def test_markdown_and_plot_written(record_and_files):
    _, (_, md_path, png_path), _ = record_and_files
    md = md_path.read_text()
    for heading in ("## Accuracy", "## Time and memory per object", "## Scaling of `ours`",
                    "## Confidence calibration (`ours`)", "## Acceptance criteria"):
        assert heading in md
    assert "![benchmark](plots/out.png)" in md
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metric_verdicts_directions():
    a = {"n": 3, "median_e_R_deg": 1.0, "acc_pi_6": 1.0, "ar_mssd": 0.5, "median_e_t": None}
    b = {"n": 3, "median_e_R_deg": 2.0, "acc_pi_6": 1.0, "ar_mssd": 0.6, "median_e_t": 0.1}
    assert metric_verdicts(a, b) == {"median_e_R_deg": "better", "acc_pi_6": "saturated",
                                     "ar_mssd": "worse", "median_e_t": "worse"}


def test_spearman_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    a = [0.1, 0.5, 0.5, 0.9, 0.3, 0.7]
    b = [3.0, 1.0, 2.0, 0.5, float("inf"), 1.0]
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [2, 1]) is None


def test_cli_without_network(tmp_path, capsys):
    """The training-free methods need no checkpoint; the subcommand is registered."""
    from pose_refiner_ros import cli

    out = tmp_path / "b.json"
    rc = cli.main(["bench", "--json", str(out), "--samples", "1", "--methods",
                   "initial,flow-baseline", "--no-scaling", "--no-progress", "--device", "cpu"])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert list(rec["methods"]) == ["initial", "flow-baseline"] and rec["scaling"] is None
    assert (tmp_path / "b.md").is_file() and (tmp_path / "b.png").is_file()
    assert "flow-baseline" in capsys.readouterr().out


BENCH_TINY = ["--samples", "1", "--methods", "initial", "--no-scaling", "--no-progress",
              "--device", "cpu"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_signalled_before_complete_writes_nothing(run_paused, tmp_path, sig):
    """All or nothing (issue 15, item 2): JSON, Markdown (here in another folder) and PNG
    complete but not moved in; a signal then leaves none of them, nor partials."""
    (tmp_path / "md").mkdir()
    code, _, err = run_paused(["bench", "--json", tmp_path / "out" / "b.json", "--markdown",
                               tmp_path / "md" / "b.md", *BENCH_TINY], "report_written", sig)
    assert code == 130 and "nothing was written" in err, err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["md"]


@pytest.mark.timeout(300)
def test_cli_signalled_while_moving_in_completes_and_stale_partials_go(run_paused, tmp_path):
    (tmp_path / ".b.json.partial").write_text("{")  # left by a run killed hard
    (tmp_path / ".bench.partial").mkdir()
    code, _, err = run_paused(["bench", "--json", tmp_path / "b.json", *BENCH_TINY], "commit",
                              signal.SIGINT, pause_s=2)
    assert code == 130 and "output was complete" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.md", "b.png"]
    assert list(json.loads((tmp_path / "b.json").read_text())["methods"]) == ["initial"]


def test_latency_bar_labels_stay_clear_of_the_method_names(record_and_files, tmp_path,
                                                           monkeypatch):
    import matplotlib.pyplot as plt

    from pose_refiner_ros.bench import report

    record = record_and_files[0]
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    report.write_plot(record, tmp_path / "p.png")
    fig = figures[0]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[4]  # second row, first panel: time per object
    assert ax.get_xlabel().startswith("ms per object")
    names_x1 = max(t.get_window_extent(r).x1 for t in ax.get_yticklabels())
    labels = [t for t in ax.texts if t.get_text().endswith(("ms", "s"))]
    assert labels
    for t in labels:
        assert t.get_window_extent(r).x0 > names_x1, t.get_text()


def test_every_method_shows_its_progress(record_and_files):
    """A bar per method (gcf-adam's counts its network passes, one per update, so that
    it moves within an object) and the expected duration said first."""
    record, _, stderr = record_and_files
    assert stderr.lstrip().startswith("bench: expect ")
    for name in record["methods"]:
        if name != "initial":  # no refinement, nothing to wait for
            assert f"{name:>18}: 100%" in stderr, name
    assert "gcf-adam: 100%" in stderr and "3/3 [" in stderr  # 1 object x 3 updates


def test_the_stated_duration_comes_from_the_recorded_times():
    """``--quick``: about 3 min on an idle 2-core CPU (docs/bench/*.json's times), most of
    it gcf-adam; the help and the README say the same."""
    from pose_refiner_ros import cli
    from pose_refiner_ros.bench.budget import expectation, expected_seconds, minutes

    quick = expected_seconds(BenchConfig.quick())
    assert 150 < quick["total"] < 240 and quick["gcf-adam"] > 0.5 * quick["total"]
    more_gcf = expected_seconds(BenchConfig.quick(gcf_samples=12))
    assert more_gcf["gcf-adam"] == pytest.approx(2 * quick["gcf-adam"], rel=0.01)
    assert expected_seconds(BenchConfig(samples=2, methods=("initial",), objects_per_frame=(),
                                        mesh_faces=(), crop_sizes=()))["total"] < 45
    stated = minutes(quick["total"])
    assert stated in expectation(BenchConfig.quick())
    parser = cli.build_parser("bench")
    help_text = parser._subparsers._group_actions[0].choices["bench"].format_help()
    assert stated in " ".join(help_text.split())
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("pose-refiner bench --quick"))
    assert stated in line, line
    line = next(ln for ln in readme.splitlines() if ln.startswith("pose-refiner bench --json"))
    assert minutes(expected_seconds(BenchConfig())["total"]) in line, line


@pytest.mark.parametrize(("cores", "given", "threads"),
                         [(2, None, 1), (4, None, 1), (2, "2", 2), (16, None, 7)])
def test_one_thread_by_default_on_small_machines(tmp_path, monkeypatch, cores, given,
                                                 threads):
    """Up to 4 cores the benchmark runs one torch thread; above, torch's default (here
    7, set before the run); ``--threads`` overrides."""
    from pose_refiner_ros import cli
    from pose_refiner_ros.bench.budget import default_threads

    before = torch.get_num_threads()
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert default_threads() == (1 if cores <= 4 else None)
    torch.set_num_threads(7)
    try:
        argv = ["bench", "--json", str(tmp_path / "b.json"), *BENCH_TINY]
        assert cli.main(argv + (["--threads", given] if given else [])) == 0
    finally:
        torch.set_num_threads(before)
    record = json.loads((tmp_path / "b.json").read_text())
    assert record["machine"]["torch_threads"] == threads
