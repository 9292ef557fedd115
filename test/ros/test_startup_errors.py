"""What the real ``refiner_node`` (and ``pose-refiner demo``) say when they cannot start,
or when a parameter is set to a value of the wrong type while the node runs.

Each start-up mistake must end in exit code 1 and one line naming the input, never a
traceback: wrong-typed overrides however they are given, missing or broken params
files, a model file this project did not write, an objects YAML that is a directory,
and ROS 2's Python packages missing (simulated by modules that fail to import, put first
on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import node_harness as nh
import pytest

ROOT = nh.ROOT


def _lines(text: str) -> list:
    return [line for line in text.splitlines() if line.strip()]


def _one_line_failure(code, text: str) -> str:
    assert code == 1, text
    assert "Traceback" not in text, text
    lines = _lines(text)
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert "cannot start" in lines[0], text
    return lines[0]


# -- item 3: wrong-typed overrides, whichever way they are given -------------------------
@pytest.mark.ros
@pytest.mark.timeout(180)
@pytest.mark.parametrize("with_params_file", [True, False])
def test_wrong_typed_override_fails_whether_or_not_a_params_file_is_given(with_params_file):
    params_file = nh.PARAMS_FILE if with_params_file else None
    for rule, name, expected, given in (
        ("iterations:=four", "iterations", "expected an integer", "a string ('four')"),
        ("crop_size:=12.5", "crop_size", "expected an integer", "a floating-point number (12.5)"),
        ("publish_tf:=maybe", "publish_tf", "expected a boolean", "a string ('maybe')"),
    ):
        code, _, text = nh.run_node(["-p", rule], timeout=60, params_file=params_file)
        line = _one_line_failure(code, text)
        assert repr(name) in line and expected in line and given in line, line
        assert f"-p {rule}" in line, line


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_wrong_typed_value_in_a_second_params_file_fails(tmp_path):
    """The launch file's route: launch_ros writes overrides into a params file of its own."""
    extra = tmp_path / "overrides.yaml"
    extra.write_text("/**:\n  ros__parameters:\n    iterations: four\n")
    code, _, text = nh.run_node(["--params-file", str(extra)], timeout=60)
    line = _one_line_failure(code, text)
    assert "'iterations'" in line and str(extra) in line and "line 3" in line, line


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_an_integer_for_a_number_parameter_is_accepted_over_a_params_file():
    code, code_after, text = nh.run_node(
        ["-p", "mode:=flow", "-p", "confidence_threshold:=1"], timeout=90, until="ready:"
    )
    assert code is None and "ready:" in text, text
    assert code_after == 0, text


# -- item 4: missing or broken params files --------------------------------------------
@pytest.mark.ros
@pytest.mark.timeout(180)
def test_missing_or_broken_params_file_is_one_line_naming_it(tmp_path):
    cases = {
        "missing.yaml": (None, "not found"),
        "folder.yaml": ("dir", "is a directory"),
        "not_yaml.yaml": ("/**:\n  ros__parameters:\n    iterations: [4\n", "not valid YAML"),
        "no_node.yaml": ("iterations: 4\n", "neither a node name"),
        "no_values.yaml": ("/**:\n  ros__parameters:\n", "must hold"),
        "mixed_list.yaml": ("/**:\n  ros__parameters:\n    a: [1, x]\n", "mixes types"),
    }
    for name, (content, says) in cases.items():
        path = tmp_path / name
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_text(content)
        code, _, text = nh.run_node([], timeout=60, params_file=path)
        line = _one_line_failure(code, text)
        assert str(path) in line and says in line, line
    # what only rcl checks is reported in one line too (rcl's own log line held back)
    code, _, text = nh.run_node(["-r", "no_remap_rule"], timeout=60)
    line = _one_line_failure(code, text)
    assert "-r no_remap_rule" in line, line


# -- item 5: a model file this project did not write, an objects YAML that is a folder ----
class _Payload:
    """Pickles as a call of ``print``: a file carrying code, harmless if it ever ran."""

    def __reduce__(self):
        return (print, ("PAYLOAD RAN",))


@pytest.mark.ros
@pytest.mark.timeout(180)
def test_model_file_not_ours_is_refused_without_advice_to_unpickle(tmp_path):
    import torch

    code_file = tmp_path / "carries_code.pt"
    torch.save({"format": "pose_refiner_ros/net/1", "state_dict": _Payload()}, code_file)
    text_file = tmp_path / "notes.pt"
    text_file.write_text("not a checkpoint\n")
    for path in (code_file, text_file):
        code, _, text = nh.run_node(
            ["-p", "mode:=learned", "-p", f"model_path:={path}"], timeout=90
        )
        assert code == 1 and "Traceback" not in text, text
        assert str(path) in text and "not a checkpoint this project wrote" in text, text
        assert "weights_only" not in text and "will likely succeed" not in text, text
        assert "PAYLOAD RAN" not in text, text
        assert "model_path" in text and "pose-refiner train" in text, text


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_objects_yaml_that_is_a_directory_is_called_a_directory(tmp_path):
    code, _, text = nh.run_node(["-p", "mode:=flow", "-p", f"objects_yaml:={tmp_path}"])
    assert code == 1 and "Traceback" not in text, text
    assert f"{tmp_path} is a directory" in text and "objects_yaml" in text, text
    assert "not found" not in text, text


# -- item 6: type refusals while the node runs --------------------------------------------
@pytest.mark.ros
@pytest.mark.timeout(180)
def test_run_time_type_refusals_name_the_parameter_and_the_types(tmp_path):
    with nh.running_node("types", {"mode": "flow"}, tmp_path / "node.log") as (_, peer):
        refusals = {
            "iterations": ("four", "expected an integer, got a string ('four')"),
            "crop_size": (12.5, "expected an integer, got a floating-point number (12.5)"),
            "confidence_threshold": ("high", "expected a number, got a string ('high')"),
            "publish_tf": (1, "expected a boolean, got an integer (1)"),
            "target_class_id": (7, "expected a string, got an integer (7)"),
        }
        for name, (value, says) in refusals.items():
            peer.set_parameters(**{name: value})
            ((ok, reason),) = peer.last_set_results
            assert not ok and f"parameter {name!r}" in reason and says in reason, reason
        for name, value in (("iterations", 3), ("confidence_threshold", 1), ("iterations", 4)):
            peer.set_parameters(**{name: value})
            assert peer.last_set_results == [(True, "")], (name, peer.last_set_results)


# -- item 12: without ROS 2's Python packages --------------------------------------------
def _without(tmp_path: Path, *modules: str) -> dict:
    """An environment in which importing ``modules`` fails as if they were not installed."""
    shim = tmp_path / f"without_{'_'.join(modules)}"
    for m in modules:
        pkg = shim / m
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{m}'\", name='{m}')\n"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _executable(name: str, module: str) -> list:
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.is_file() else [sys.executable, "-m", module]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "command, missing",
    [
        ("refiner_node", ("diagnostic_msgs",)),
        ("refiner_node", ("rclpy", "diagnostic_msgs")),
        ("demo", ("rclpy",)),
    ],
)
def test_without_ros_packages_one_line_says_what_is_missing_and_how_to_get_it(
    tmp_path, command, missing
):
    if command == "demo":
        cmd = _executable("pose-refiner", "pose_refiner_ros.cli") + [
            "demo", "--out", str(tmp_path / "out")
        ]
    else:
        cmd = _executable("refiner_node", "pose_refiner_ros.ros.node_main") + [
            "--ros-args", "--params-file", str(nh.PARAMS_FILE)
        ]
    run = subprocess.run(cmd, env=_without(tmp_path, *missing), cwd=ROOT, capture_output=True,
                         text=True, timeout=150)
    text = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in text, text
    lines = _lines(text)
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert all(m in lines[0] for m in missing), text
    assert "make setup" in lines[0] and "ROS 2 distribution" in lines[0], text
    if command == "demo":
        assert not (tmp_path / "out").exists(), "the demo started before it checked"
