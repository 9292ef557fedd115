"""Tests of the bag tools (evaluation.bag_io, bag_topics, bag_writer, make_bag, eval_bag):
no ROS needed.

Small bags (160x120 images, 3 frames, both storage formats) are written by make-bag
from synthetic scenes of procedural meshes, refined by eval-bag in flow mode (no trained
model), and the outputs checked: the output bag reads back with the right types and
stamps, the report's metrics match a direct computation with evaluation.metrics from
the ground truth in the bag, the input bag is byte-identical afterwards, an interrupted
run leaves nothing behind, and malformed or truncated bags give errors naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
import shutil

import numpy as np
import pytest

from pose_refiner_ros.evaluation import bag_io as B
from pose_refiner_ros.evaluation import bag_messages as BM
from pose_refiner_ros.evaluation.bag_topics import find_topic
from pose_refiner_ros.evaluation.bag_writer import BagWriter
from pose_refiner_ros.ros import conversions as conv

REPO = Path(__file__).resolve().parents[2]
W, H, FRAMES = 160, 120, 3
# The type hash rosidl generates for vision_msgs/msg/Detection3DArray 4.1.1 (Humble /
# Jazzy), as published e.g. by other ROS 2 client libraries' generated code. A definition
# that differs in any field changes it, and real publishers would no longer match.
DETECTION3DARRAY_RIHS01 = "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018"


def _fields(text: str) -> list[str]:
    """The field lines of a .msg text (comments and blank lines dropped)."""
    lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return [" ".join(ln.split()) for ln in lines if ln]


def _digest(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


# -- types and messages --------------------------------------------------------------------


def test_vision_msgs_definitions_match_the_interfaces_and_upstream():
    src = REPO / "scripts" / "ros_interfaces" / "vision_msgs" / "msg"
    for name, text in B.VISION_MSGS.items():
        f = src / (name.rsplit("/", 1)[1] + ".msg")
        assert f.exists(), f"{f} missing: the two definitions must stay in step"
        assert _fields(text) == _fields(f.read_text()), name
    assert B.typestore().hash_rihs01(B.DETECTIONS) == DETECTION3DARRAY_RIHS01


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_colour_image_round_trip_through_the_node_conversions(encoding):
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    msg = BM.image_msg(rgb, encoding, 5, "cam")
    raw = B.typestore().serialize_cdr(msg, B.IMAGE)
    back = B.typestore().deserialize_cdr(raw, B.IMAGE)
    assert back.encoding == encoding and (back.height, back.width) == (H, W)
    np.testing.assert_array_equal(conv.image_to_rgb(back), rgb)


@pytest.mark.parametrize("encoding,tol", [("16UC1", 5e-4), ("32FC1", 0.0)])
def test_depth_image_round_trip(encoding, tol):
    depth = np.random.default_rng(1).uniform(0.3, 3.0, (H, W)).astype(np.float32)
    depth[0, :5] = 0.0
    back = conv.depth_to_m(BM.image_msg(depth, encoding, 5, "cam"))
    np.testing.assert_allclose(back, depth, atol=tol)
    assert np.all(back[0, :5] == 0)


def test_pose_detection_and_tf_messages_carry_the_pose():
    rng = np.random.default_rng(2)
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=3).as_matrix()
    T[:3, 3] = rng.normal(size=3) * 0.1 + (0, 0, 1)
    pose = BM.pose_stamped_msg(T, 1, "c").pose
    np.testing.assert_allclose(conv.pose_to_matrix(pose), T, atol=1e-12)
    msg = BM.detections_msg([BM.DetectionOut("mug", T, 0.7, -np.ones(3), np.ones(3), "m0")], 7, "c")
    objects, rejections = conv.detections_to_objects(msg, "c")
    assert not rejections and objects[0].class_id == "mug"
    assert objects[0].score == pytest.approx(0.7)
    np.testing.assert_allclose(objects[0].T_cam_obj, T, atol=1e-12)
    tf = BM.tf_msg([("c", "obj", T)], 9).transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("c", "obj")
    assert B.stamp_to_ns(tf.header.stamp) == 9


def test_bag_tools_import_no_ros():
    """The bag tools run where no ROS is installed: importing them pulls in no rclpy."""
    import subprocess
    import sys

    code = ("import sys; import pose_refiner_ros.evaluation.eval_bag, "
            "pose_refiner_ros.evaluation.make_bag, pose_refiner_ros.ros.conversions, "
            "pose_refiner_ros.ros.sync, pose_refiner_ros.ros.params; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', "
            "'vision_msgs', 'geometry_msgs', 'tf2_msgs')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# -- reading and writing -------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_writer_reader_round_trip(tmp_path, storage):
    path = tmp_path / "bag"
    rgb = np.zeros((H, W, 3), np.uint8)
    with BagWriter(path, storage) as w:
        w.add_topic("/cam/image", B.IMAGE)
        w.add_topic("/pose", B.POSE_STAMPED)
        for i in range(3):
            w.write("/cam/image", 100 + i, BM.image_msg(rgb, "rgb8", 1000 + i, "cam"))
            w.write("/pose", 100 + i, BM.pose_stamped_msg(np.eye(4), 1000 + i, "cam"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]  # no partial left
    with B.BagReader(path) as bag:
        assert bag.storage == storage
        assert bag.topics == {"/cam/image": B.IMAGE, "/pose": B.POSE_STAMPED}
        got = [(t, ts, B.stamp_to_ns(m.header.stamp)) for t, ts, m in bag.messages()]
    assert [g[2] for g in got if g[0] == "/pose"] == [1000, 1001, 1002]
    assert [g[1] for g in got] == sorted(g[1] for g in got)


def test_writer_interrupted_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with BagWriter(tmp_path / "bag", "mcap") as w:
            w.add_topic("/pose", B.POSE_STAMPED)
            w.write("/pose", 1, BM.pose_stamped_msg(np.eye(4), 1, "c"))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_topic_discovery_prefers_names_and_explains_ambiguity(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as w:
        for topic, t in [("/cam/color/image_raw", B.IMAGE), ("/cam/depth/image_raw", B.IMAGE),
                         ("/cam/color/camera_info", B.CAMERA_INFO),
                         ("/cam/depth/camera_info", B.CAMERA_INFO),
                         ("/det_a", B.DETECTIONS), ("/det_b", B.DETECTIONS)]:
            w.add_topic(topic, t)
    with B.BagReader(path) as bag:
        img = find_topic(bag, B.IMAGE, "image")
        assert img == "/cam/color/image_raw"
        assert find_topic(bag, B.IMAGE, "depth") == "/cam/depth/image_raw"
        assert find_topic(bag, B.CAMERA_INFO, "camera_info", near=img) == "/cam/color/camera_info"
        with pytest.raises(B.BagError, match="--detections-topic"):
            find_topic(bag, B.DETECTIONS, "detections")
        assert find_topic(bag, B.DETECTIONS, "detections", "/det_b") == "/det_b"
        with pytest.raises(B.BagError, match="carries sensor_msgs/msg/Image"):
            find_topic(bag, B.DETECTIONS, "detections", "/cam/color/image_raw")


def _small_bag(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / f"bag_{storage}"
    with BagWriter(path, storage) as w:
        w.add_topic("/pose", B.POSE_STAMPED)
        for i in range(200):
            w.write("/pose", i, BM.pose_stamped_msg(np.eye(4), i, "c"))
    return path


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_gives_an_error_naming_the_file(tmp_path, storage):
    path = _small_bag(tmp_path, storage)
    data = next(p for p in path.iterdir() if p.suffix in (".db3", ".mcap"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(B.BagError) as err:
        with B.BagReader(path) as bag:
            for _ in bag.messages():
                pass
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["missing", "no_metadata", "bad_yaml", "garbage", "bare_file"])
def test_malformed_bag_gives_an_error_naming_the_file(tmp_path, damage):
    path = _small_bag(tmp_path, "sqlite3")
    if damage == "missing":
        path = tmp_path / "nope"
    elif damage == "no_metadata":
        (path / "metadata.yaml").unlink()
    elif damage == "bad_yaml":
        (path / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n")
    elif damage == "garbage":
        next(path.glob("*.db3")).write_bytes(b"this is not a database" * 100)
    else:
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    with pytest.raises(B.BagError) as err:
        with B.BagReader(path) as bag:
            list(bag.messages())
    assert str(path) in str(err.value)


# -- make-bag and eval-bag, end to end ------------------------------------------------------


@pytest.fixture(scope="module")
def procedural():
    from pose_refiner_ros.data.procedural import procedural_models
    from pose_refiner_ros.mesh.registry import ObjectRegistry

    return ObjectRegistry(procedural_models("val", 2, seed=0))


@pytest.fixture(scope="module")
def flow_refiner(procedural):
    from pose_refiner_ros.refine.refiner import Refiner, RefinerConfig

    return Refiner(procedural, RefinerConfig(mode="flow", iterations=2, crop_size=64, device="cpu"))


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def made_bag(request, tmp_path_factory):
    from pose_refiner_ros.evaluation.make_bag import make_bag

    tmp = tmp_path_factory.mktemp(f"made_{request.param}")
    path = tmp / "recording"
    info = make_bag(path, "synthetic", storage=request.param, frames=FRAMES, seed=3, width=W,
                    height=H, depth="16UC1", gt_file=str(tmp / "gt.json"), n_procedural=2)
    return path, info, tmp / "gt.json"


def test_make_bag_writes_the_documented_topics(made_bag, procedural):
    from pose_refiner_ros.evaluation.make_bag import TOPICS

    path, info, gt_file = made_bag
    assert info["frames"] == FRAMES and info["objects"] >= FRAMES
    assert Path(info["objects_spec"]).exists()  # the meshes, for eval-bag --objects
    with B.BagReader(path) as bag:
        assert bag.topics == {TOPICS["image"]: B.IMAGE, TOPICS["camera_info"]: B.CAMERA_INFO,
                              TOPICS["depth"]: B.IMAGE, TOPICS["detections"]: B.DETECTIONS,
                              TOPICS["ground_truth"]: B.DETECTIONS}
        assert all(bag.count(t) == FRAMES for t in TOPICS.values())
        images = [m for t, _, m in bag.messages([TOPICS["image"]])]
    assert (images[0].height, images[0].width, images[0].encoding) == (H, W, "rgb8")
    gt = json.loads(gt_file.read_text())["frames"]
    assert [f["stamp_ns"] for f in gt] == [B.stamp_to_ns(m.header.stamp) for m in images]
    assert {o["class_id"] for f in gt for o in f["objects"]} <= set(procedural.class_ids)


def test_make_bag_unlike_training_camera_is_one_camera_with_other_colours(tmp_path):
    """``--camera unlike-training``: every frame has the same intrinsics, and the same
    scenes come out through a colour response outside training's (warm, dim)."""
    from pose_refiner_ros.evaluation.make_bag import TOPICS, UNLIKE_TRAINING, make_bag

    def read(camera):
        path = tmp_path / camera
        make_bag(path, "synthetic", frames=3, seed=5, width=W, height=H, n_procedural=2,
                 camera=camera)
        with B.BagReader(path) as bag:
            Ks = [np.array(m.k).reshape(3, 3) for _, _, m in bag.messages([TOPICS["camera_info"]])]
            imgs = [conv.image_to_rgb(m) for _, _, m in bag.messages([TOPICS["image"]])]
        return Ks, np.stack(imgs).astype(np.float64) / 255.0

    K_var, img_var = read("varied")
    K_one, img_one = read("unlike-training")
    assert all(np.array_equal(K, K_one[0]) for K in K_one)
    assert not all(np.array_equal(K, K_var[0]) for K in K_var)
    gain = np.array(UNLIKE_TRAINING["gain"])
    mean_one, mean_var = img_one.mean((0, 1, 2)), img_var.mean((0, 1, 2))
    # Red over blue rises by about the gains' ratio; the mid-tones are darker.
    ratio = (mean_one[0] / mean_one[2]) / (mean_var[0] / mean_var[2])
    assert ratio > 0.7 * gain[0] / gain[2]
    assert mean_one[1] < mean_var[1]
    with pytest.raises(ValueError, match="--camera"):
        make_bag(tmp_path / "bop", "bop:" + str(tmp_path), camera="unlike-training")


def _gt_from_bag(path: Path) -> dict[int, list]:
    from pose_refiner_ros.evaluation.make_bag import TOPICS

    with B.BagReader(path) as bag:
        return {B.stamp_to_ns(m.header.stamp): [(o.class_id, o.T_cam_obj)
                                                for o in conv.detections_to_objects(m)[0]]
                for _, _, m in bag.messages([TOPICS["ground_truth"]])}


def test_eval_bag_outputs_bag_report_and_leaves_the_input_alone(made_bag, procedural,
                                                               flow_refiner, tmp_path):
    from pose_refiner_ros.evaluation import metrics as M
    from pose_refiner_ros.evaluation.eval_bag import eval_bag
    from pose_refiner_ros.evaluation.make_bag import TOPICS
    from pose_refiner_ros.evaluation.report import match_ground_truth

    path, info, _ = made_bag
    before = _digest(path)
    out = tmp_path / "out"
    summary = eval_bag(path, "unused.yaml", out, mode="flow", registry=procedural,
                       refiner=flow_refiner, progress=False)
    assert _digest(path) == before, "the input bag was modified"
    assert sorted(p.name for p in out.iterdir()) == ["plots", "recording_refined", "report.json",
                                                     "report.md"]
    assert summary["frames"] == FRAMES and summary["objects"] == info["objects"]

    # The output bag: every input message plus the node's outputs, stamped like the images.
    with B.BagReader(path) as bag:
        storage = bag.storage
        n_in = {t: bag.count(t) for t in bag.topics}
        image_stamps = [B.stamp_to_ns(m.header.stamp)
                        for _, _, m in bag.messages([TOPICS["image"]])]
    with B.BagReader(out / "recording_refined") as bag:
        assert bag.storage == storage
        topics = bag.topics
        for t, n in n_in.items():
            assert bag.count(t) == n
        assert topics["/refined_pose"] == B.POSE_STAMPED
        assert topics["/refined_detections"] == B.DETECTIONS
        assert topics["/tf"] == B.TF
        dets = [m for _, _, m in bag.messages(["/refined_detections"])]
        poses = [m for _, _, m in bag.messages(["/refined_pose"])]
        tfs = [m for _, _, m in bag.messages(["/tf"])]
        t_log = [t for _, t, _ in bag.messages()]
    assert t_log == sorted(t_log)
    assert [B.stamp_to_ns(m.header.stamp) for m in dets] == image_stamps
    assert {B.stamp_to_ns(m.header.stamp) for m in poses} <= set(image_stamps)
    for m in tfs:
        for tf in m.transforms:
            assert tf.header.frame_id == "camera_color_optical_frame"
            assert tf.child_frame_id.startswith("refined_")

    # The report's metrics against a direct computation from the bag's ground truth.
    report = json.loads((out / "report.json").read_text())
    gt = _gt_from_bag(path)
    init, ref = [], []
    K_by_stamp = {}
    with B.BagReader(path) as bag:
        for _, _, m in bag.messages([TOPICS["camera_info"]]):
            K_by_stamp[B.stamp_to_ns(m.header.stamp)] = np.asarray(m.k).reshape(3, 3)
    by_frame: dict = {}
    for o in report["objects"]:
        by_frame.setdefault(o["stamp_ns"], []).append(o)
    for stamp, objs in by_frame.items():
        pairs = [(o["class_id"], np.asarray(o["T_init"])) for o in objs]
        match = match_ground_truth(pairs, gt[stamp])
        for o, j in zip(objs, match, strict=True):
            m = procedural[o["class_id"]]
            kw = dict(pts_obj=m.points_m, K=K_by_stamp[stamp], image_size=(W, H),
                      diameter_m=m.diameter_m, symmetries=m.symmetries)
            init.append(M.evaluate_pose(np.asarray(o["T_init"]), gt[stamp][j][1], **kw))
            ref.append(M.evaluate_pose(np.asarray(o["T_refined"]), gt[stamp][j][1], **kw))
    direct = M.compare(init, ref)
    got = report["summary"]["metrics"]
    for side in ("initial", "refined"):
        for k, v in direct[side].items():
            assert got[side][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (side, k)
    assert got["n_worse"] == direct["n_worse"]
    assert report["summary"]["metrics"] == summary["metrics"]
    md = (out / "report.md").read_text()
    assert "Metrics (coarse vs refined)" in md and "plots/errors.png" in md
    # The head says what ran and with which settings; sources are times, not raw stamps.
    assert "- **mode**: `flow`" in md and "| sync_mode | `exact` |" in md
    assert f"| iterations | `{flow_refiner.cfg.iterations}` |" in md
    assert report["meta"]["mode"] == "flow" and report["meta"]["refiner"]["crop_size"] == 64
    ap = report["summary"]["as_published"]  # as the node publishes: what the bag holds
    assert ap["objects"] == summary["objects"]
    assert ap["published"] == sum(len(m.detections) for m in dets)
    assert [o["published"] for o in report["objects"]].count("refined") == ap["published"]
    assert "+0.000 s" in md and str(image_stamps[0]) not in md.split("## Per-object")[1]
    for name in ("errors.png", "iterations.png", "confidence.png"):
        assert (out / "plots" / name).stat().st_size > 1000


def test_eval_bag_sidecar_ground_truth_matches_the_topic(made_bag, procedural, flow_refiner,
                                                         tmp_path):
    from pose_refiner_ros.evaluation.eval_bag import eval_bag

    path, _, gt_file = made_bag
    a = eval_bag(path, "-", tmp_path / "a", registry=procedural, refiner=flow_refiner,
                 progress=False, plots=False, max_frames=1)
    b = eval_bag(path, "-", tmp_path / "b", registry=procedural, refiner=flow_refiner,
                 progress=False, plots=False, max_frames=1, gt_file=str(gt_file))
    # The topic carries quaternions, the file matrices: equal to rounding.
    for k, v in a["metrics"]["initial"].items():
        assert b["metrics"]["initial"][k] == pytest.approx(v, rel=1e-8, abs=1e-12), k
    assert a["frames"] == b["frames"] == 1


def test_eval_bag_with_depth(made_bag, procedural, flow_refiner, tmp_path):
    from pose_refiner_ros.evaluation.eval_bag import eval_bag

    summary = eval_bag(made_bag[0], "-", tmp_path / "o", use_depth=True, registry=procedural,
                       refiner=flow_refiner, progress=False, plots=False, max_frames=1)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert summary["frames"] == 1
    assert report["meta"]["topics"]["depth"] == "/camera/depth/image_raw"
    assert {o["mode"] for o in report["objects"]} == {"rgbd"}


def _compressed_copy(src: Path, dst: Path, compression: str, keep_raw: bool = False) -> str:
    """``src`` with its colour image as ``<image>/compressed`` (as image_transport
    records it); the raw image is left out unless ``keep_raw``. Returns that topic."""
    from pose_refiner_ros.evaluation.make_bag import TOPICS

    image, topic = TOPICS["image"], TOPICS["image"] + "/compressed"
    with B.BagReader(src) as bag, BagWriter(dst, bag.storage) as w:
        for conn in bag.connections:
            if conn.topic != image or keep_raw:
                w.add_topic(conn.topic, conn.msgtype, like=conn)
        w.add_topic(topic, B.COMPRESSED_IMAGE)
        for conn, t_ns, raw in bag.raw_messages():
            if conn.topic == image:
                msg = bag.deserialize(raw, conn.msgtype)
                w.write(topic, t_ns, BM.compressed_image_msg(
                    conv.image_to_rgb(msg), compression, B.stamp_to_ns(msg.header.stamp),
                    msg.header.frame_id))
                if not keep_raw:
                    continue
            w.write_raw(conn.topic, t_ns, raw)
    return topic


def test_eval_bag_reads_compressed_images_as_the_raw_ones(made_bag, procedural, flow_refiner,
                                                         tmp_path):
    from pose_refiner_ros.evaluation.eval_bag import eval_bag

    path = made_bag[0]
    raw = eval_bag(path, "-", tmp_path / "raw", registry=procedural, refiner=flow_refiner,
                   progress=False, plots=False, max_frames=1)
    topic = _compressed_copy(path, tmp_path / "png", "png")
    png = eval_bag(tmp_path / "png", "-", tmp_path / "png_out", registry=procedural,
                   refiner=flow_refiner, progress=False, plots=False, max_frames=1)
    report = json.loads((tmp_path / "png_out" / "report.json").read_text())
    assert report["meta"]["topics"]["image"] == topic
    assert png["frames"] == raw["frames"] == 1 and png["objects"] == raw["objects"]
    for stage in ("initial", "refined"):  # PNG is lossless: the same refinement
        for k, v in raw["metrics"][stage].items():
            assert png["metrics"][stage][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (stage, k)
    # JPEG: lossy, but every frame is read and refined
    _compressed_copy(path, tmp_path / "jpeg", "jpeg")
    jpeg = eval_bag(tmp_path / "jpeg", "-", tmp_path / "jpeg_out", registry=procedural,
                    refiner=flow_refiner, progress=False, plots=False, max_frames=1)
    assert jpeg["frames"] == 1 and jpeg["objects"] == raw["objects"]


def test_a_raw_image_is_preferred_to_its_compressed_twin(made_bag, tmp_path):
    from pose_refiner_ros.evaluation.bag_topics import resolve_topics
    from pose_refiner_ros.evaluation.make_bag import TOPICS

    topic = _compressed_copy(made_bag[0], tmp_path / "both", "jpeg", keep_raw=True)
    with B.BagReader(tmp_path / "both") as bag:
        assert resolve_topics(bag).image == TOPICS["image"]
        assert resolve_topics(bag, image=topic).image == topic


def test_eval_bag_interrupted_leaves_nothing(made_bag, procedural, flow_refiner, tmp_path,
                                             monkeypatch):
    from pose_refiner_ros.evaluation.eval_bag import eval_bag

    calls = []

    def refine(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return type(flow_refiner).refine(flow_refiner, *args, **kwargs)

    monkeypatch.setattr(flow_refiner, "refine", refine)
    out = tmp_path / "out"
    before = _digest(made_bag[0])
    with pytest.raises(KeyboardInterrupt):
        eval_bag(made_bag[0], "-", out, registry=procedural, refiner=flow_refiner, progress=False)
    assert not out.exists()  # created by the run, so removed with the rest
    assert _digest(made_bag[0]) == before


def test_eval_bag_on_a_truncated_bag_names_it(made_bag, procedural, flow_refiner, tmp_path):
    from pose_refiner_ros.evaluation.eval_bag import eval_bag

    bad = tmp_path / "bad"
    shutil.copytree(made_bag[0], bad)
    data = next(p for p in bad.iterdir() if p.suffix in (".db3", ".mcap"))
    data.write_bytes(data.read_bytes()[: int(data.stat().st_size * 0.6)])
    out = tmp_path / "out"
    with pytest.raises(B.BagError) as err:
        eval_bag(bad, "-", out, registry=procedural, refiner=flow_refiner, progress=False)
    assert str(bad) in str(err.value)
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def test_cli_eval_bag_reports_a_missing_topic(tmp_path, capsys):
    from pose_refiner_ros.cli import main

    path = tmp_path / "bag"
    with BagWriter(path) as w:
        w.add_topic("/pose", B.POSE_STAMPED)
    rc = main(["eval-bag", str(path), "--objects", "x.yaml", "--out", str(tmp_path / "o"),
               "--mode", "flow", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and "--image-topic" in err
