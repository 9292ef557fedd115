"""The renderer benchmark runs (its figures are in docs/renderer.md, not asserted)."""

from pose_refiner_ros.bench import render_speed


def test_benchmark_runs(capsys):
    render_speed.main(["--quick", "--repeats", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "machine:" in out and "| 5120 | 128x128 | 8 |" in out
