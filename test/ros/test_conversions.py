"""Messages <-> core types.

The readers only read fields, so they are tested on plain namespaces with the messages'
field names (as ``rosbags`` messages are read too); the builders need the real message
packages (see ``ros_helpers.require_ros``).
"""

from types import SimpleNamespace as NS

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from ros_helpers import require_ros
from scipy.spatial.transform import Rotation

from pose_refiner_ros.ros import conversions as conv


def image_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    """A namespace with sensor_msgs/Image's fields; ``pad`` bytes at the end of each row."""
    H, W = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(H, -1).view(np.uint8)
    data = np.concatenate([rows, np.full((H, pad), 0xAB, np.uint8)], axis=1)
    return NS(
        height=H,
        width=W,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=data.shape[1],
        data=data.tobytes(),
        header=NS(frame_id="cam"),
    )


def pose_msg(t, q_xyzw):
    return NS(
        position=NS(x=t[0], y=t[1], z=t[2]),
        orientation=NS(x=q_xyzw[0], y=q_xyzw[1], z=q_xyzw[2], w=q_xyzw[3]),
    )


@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_image_to_rgb_every_encoding_with_padding(encoding, pad):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    if encoding == "mono8":
        src, want = rgb[..., 0], np.repeat(rgb[..., :1], 3, axis=2)
    else:
        src = rgb[..., ::-1] if encoding.startswith("bgr") else rgb
        if encoding.endswith("a8"):
            src = np.concatenate([src, np.full((5, 7, 1), 77, np.uint8)], axis=2)
        want = rgb
    out = conv.image_to_rgb(image_msg(src, encoding, pad))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize(
    "msg, match",
    [
        (
            NS(height=2, width=2, encoding="yuv422", step=4, data=bytes(8), is_bigendian=0),
            "unsupported encoding",
        ),
        (NS(height=0, width=4, encoding="rgb8", step=12, data=b"", is_bigendian=0), "empty image"),
        (
            NS(height=2, width=4, encoding="rgb8", step=11, data=bytes(24), is_bigendian=0),
            "step 11",
        ),
        (
            NS(height=2, width=4, encoding="rgb8", step=12, data=bytes(23), is_bigendian=0),
            "23 bytes",
        ),
    ],
)
def test_image_to_rgb_rejects_bad_images(msg, match):
    with pytest.raises(ValueError, match=match):
        conv.image_to_rgb(msg)


@given(
    encoding=st.sampled_from(
        ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "32FC1", "", "8UC3"]
    ),
    height=st.integers(0, 6),
    width=st.integers(0, 6),
    step=st.integers(0, 40),
    n_bytes=st.integers(0, 300),
)
@settings(max_examples=200, deadline=None)
def test_readers_return_an_image_or_raise_value_error(encoding, height, width, step, n_bytes):
    msg = NS(
        height=height,
        width=width,
        encoding=encoding,
        step=step,
        data=bytes(n_bytes),
        is_bigendian=0,
    )
    for read, shape in (
        (conv.image_to_rgb, (height, width, 3)),
        (conv.depth_to_m, (height, width)),
    ):
        try:
            out = read(msg)
        except ValueError:
            continue
        assert out.shape == shape


def test_depth_16uc1_millimetres_both_byte_orders():
    mm = np.array([[0, 1000, 65535], [250, 1, 2]], dtype=np.uint16)
    for big in (False, True):
        src = mm.astype(">u2" if big else "<u2")
        out = conv.depth_to_m(image_msg(src, "16UC1", pad=2, bigendian=big))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, mm / 1000.0, rtol=1e-6)


def test_depth_32fc1_metres_invalid_values_become_zero():
    d = np.array([[1.5, np.nan, np.inf], [-2.0, 0.0, 0.25]], dtype="<f4")
    out = conv.depth_to_m(image_msg(d, "32FC1", pad=4))
    np.testing.assert_array_equal(out, [[1.5, 0, 0], [0, 0, 0.25]])
    with pytest.raises(ValueError, match="unsupported encoding"):
        conv.depth_to_m(image_msg(d, "rgb8"))


def camera_info(K, width=64, height=48, d=(), model="plumb_bob"):
    P = np.zeros((3, 4))
    P[:, :3] = np.asarray(K).reshape(3, 3)
    return NS(
        width=width,
        height=height,
        k=list(np.asarray(K, float).reshape(-1)),
        d=list(d),
        distortion_model=model,
        binning_x=0,
        binning_y=0,
        p=list(P.reshape(-1)),
        roi=NS(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False),
    )


def test_camera_info_to_model():
    K = [[100.0, 0, 31.5], [0, 110.0, 23.5], [0, 0, 1]]
    cam = conv.camera_info_to_model(camera_info(K))
    np.testing.assert_allclose(cam.K, K)
    assert (cam.width, cam.height) == (64, 48) and not cam.is_distorted
    with pytest.raises(ValueError, match="camera_info: .*all zeros"):
        conv.camera_info_to_model(camera_info(np.zeros((3, 3))))
    with pytest.raises(ValueError, match="camera_info: .*NaN"):
        conv.camera_info_to_model(camera_info(np.full((3, 3), np.nan)))


def test_pose_to_matrix_matches_scipy_xyzw_order():
    rng = np.random.default_rng(1)
    for _ in range(5):
        R = Rotation.random(random_state=rng)
        q = R.as_quat()  # scipy: (x, y, z, w)
        t = rng.normal(size=3)
        T = conv.pose_to_matrix(pose_msg(t, 2.0 * q))  # normalised
        np.testing.assert_allclose(T[:3, :3], R.as_matrix(), atol=1e-12)
        np.testing.assert_allclose(T[:3, 3], t)
        np.testing.assert_array_equal(T[3], [0, 0, 0, 1])


@pytest.mark.parametrize(
    "t, q, match",
    [
        ((0, 0, 1), (0, 0, 0, 0), "zero norm"),
        ((0, 0, 1), (np.nan, 0, 0, 1), "quaternion .* not finite"),
        ((np.inf, 0, 1), (0, 0, 0, 1), "position is not finite"),
    ],
)
def test_pose_to_matrix_rejects_bad_poses(t, q, match):
    with pytest.raises(ValueError, match=match):
        conv.pose_to_matrix(pose_msg(t, q))


def detection(class_id, t, q=(0, 0, 0, 1), score=0.9, frame="", extra=()):
    results = [NS(hypothesis=NS(class_id=class_id, score=score), pose=NS(pose=pose_msg(t, q)))]
    results += [
        NS(hypothesis=NS(class_id=c, score=s), pose=NS(pose=pose_msg(t, q))) for c, s in extra
    ]
    return NS(header=NS(frame_id=frame), results=results)


def test_detections_to_objects_keeps_good_ones_and_says_why_others_are_not():
    msg = NS(
        header=NS(frame_id="cam"),
        detections=[
            detection("mug", (0, 0, 1)),
            detection("mug", (0, 0, 1), q=(0, 0, 0, 0)),
            detection("box", (0, 0, 1), frame="other_cam"),
            NS(header=NS(frame_id=""), results=[]),
            detection("", (0, 0, 1)),
            detection("box", (0, 0, -1)),
            detection("low", (0.1, 0, 2), score=0.2, extra=[("high", 0.7)]),
        ],
    )
    objects, rejections = conv.detections_to_objects(msg, "cam")
    assert [(o.class_id, o.index) for o in objects] == [("mug", 0), ("high", 6)]
    assert objects[1].score == pytest.approx(0.7)
    assert [r.reason for r in rejections] == [
        "bad_pose",
        "wrong_frame",
        "no_hypothesis",
        "no_class_id",
        "behind_camera",
    ]
    assert "other_cam" in rejections[1].message
    # the array's own frame counts when a detection has none
    msg.header.frame_id = "elsewhere"
    objects, rejections = conv.detections_to_objects(msg, "cam")
    assert objects == [] and {r.reason for r in rejections} == {"wrong_frame"}


# -- builders (real messages) ---------------------------------------------------------------
def test_builders_round_trip():
    require_ros()
    from std_msgs.msg import Header

    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    rng = np.random.default_rng(2)
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    T[:3, 3] = [0.1, -0.2, 0.9]
    np.testing.assert_allclose(conv.pose_to_matrix(conv.matrix_to_pose(T)), T, atol=1e-12)
    ps = conv.make_pose_stamped(header, T)
    assert ps.header.frame_id == "cam" and ps.header.stamp.nanosec == 345
    tf = conv.make_transform_stamped(header, "refined_mug_0", T)
    assert tf.child_frame_id == "refined_mug_0" and tf.transform.translation.z == pytest.approx(0.9)
    assert tf.transform.rotation.w >= 0

    lo, hi = np.array([-0.01, -0.02, -0.05]), np.array([0.03, 0.02, 0.05])
    det = conv.make_detection(header, "mug", T, 0.8, lo, hi, "refined_mug_0")
    assert det.results[0].hypothesis.class_id == "mug" and det.id == "refined_mug_0"
    np.testing.assert_allclose([det.bbox.size.x, det.bbox.size.y, det.bbox.size.z], hi - lo)
    centre = T[:3, :3] @ ((lo + hi) / 2) + T[:3, 3]
    c = det.bbox.center.position
    np.testing.assert_allclose([c.x, c.y, c.z], centre)
    arr = conv.make_coarse_detections(header, [("mug", T, 0.5), ("box", T, 0.25)])
    objects, rejections = conv.detections_to_objects(arr, "cam")
    assert [o.class_id for o in objects] == ["mug", "box"] and not rejections
    np.testing.assert_allclose(objects[1].T_cam_obj, T, atol=1e-12)

    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    for enc in ("rgb8", "bgr8"):
        np.testing.assert_array_equal(conv.image_to_rgb(conv.rgb_to_image(rgb, header, enc)), rgb)
    depth = rng.uniform(0.2, 3.0, (4, 6)).astype(np.float32)
    np.testing.assert_allclose(
        conv.depth_to_m(conv.depth_m_to_image(depth, header, "16UC1")), depth, atol=5e-4
    )
    np.testing.assert_array_equal(conv.depth_to_m(conv.depth_m_to_image(depth, header)), depth)
    info = conv.make_camera_info(np.array([[50.0, 0, 3], [0, 50, 2], [0, 0, 1]]), 6, 4, header)
    assert conv.camera_info_to_model(info).width == 6
