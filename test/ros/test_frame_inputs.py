"""A frame's images (ros.frame_inputs): the same checks and reasons for raw and
compressed images, the size checked before decoding, depth that does not fit dropped.
No ROS needed: messages are stand-ins with the same fields (rosbags ones as well)."""

from __future__ import annotations

from types import SimpleNamespace as Msg

import numpy as np
import pytest

from pose_refiner_ros.geometry.camera import CameraModel
from pose_refiner_ros.ros import compressed as cmp
from pose_refiner_ros.ros.frame_inputs import frame_images

H, W = 48, 64
K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])


def _cam(width=W, height=H):
    return CameraModel.from_camera_info(width=width, height=height, K=K, D=np.zeros(5),
                                        distortion_model="plumb_bob").validate()


def _rgb():
    """Smooth ramps (JPEG keeps them within a few levels), red left-right, blue top-down."""
    u, v = np.meshgrid(np.linspace(0, 255, W), np.linspace(0, 255, H))
    return np.dstack([u, np.full_like(u, 90), v]).astype(np.uint8)


def _raw(img, encoding="rgb8"):
    h, w = img.shape[:2]
    return Msg(height=h, width=w, encoding=encoding, step=3 * w, is_bigendian=0,
               data=img.tobytes())


def _compressed(img, compression="png"):
    fmt, data = cmp.encode_rgb(img, compression)
    return Msg(format=fmt, data=data)


def _reasons(rejections):
    return [r.reason for r in rejections]


@pytest.mark.parametrize("make, tol", [(_raw, 0), (_compressed, 0),
                                       (lambda img: _compressed(img, "jpeg"), 3)])
def test_raw_and_compressed_give_the_same_image(make, tol):
    img = _rgb()
    images, rejections = frame_images(make(img), None, _cam())
    assert rejections == [] and images.depth_m is None
    assert np.abs(images.image_rgb.astype(int) - img).mean() <= tol  # JPEG: lossy
    np.testing.assert_array_equal(images.K_px, K)
    assert images.K_px.flags.writeable


@pytest.mark.parametrize("compressed", [False, True])
def test_same_reasons_for_raw_and_compressed(compressed):
    make = _compressed if compressed else _raw
    img = _rgb()
    cases = [
        (make(img), None, "no_camera_info"),
        (make(img[: H // 2, : W // 2].copy()), _cam(), "size_mismatch"),
    ]
    if compressed:
        good = _compressed(img, "jpeg")
        cases += [
            (Msg(format=good.format, data=b""), _cam(), "empty_image"),
            (Msg(format="16UC1; compressedDepth png", data=good.data), _cam(), "bad_encoding"),
            (Msg(format=good.format, data=good.data[: len(good.data) // 2]), _cam(),
             "bad_image"),
            (Msg(format=good.format, data=bytes(1000)), _cam(), "bad_image"),
        ]
    else:
        cases += [
            (Msg(height=0, width=0, encoding="rgb8", step=0, data=b""), _cam(), "empty_image"),
            (_raw(img, "yuv422"), _cam(), "bad_encoding"),
            (Msg(height=H, width=W, encoding="rgb8", step=3 * W, data=bytes(10)), _cam(),
             "bad_image"),
        ]
    for msg, cam, reason in cases:
        images, rejections = frame_images(msg, None, cam)
        assert images is None and _reasons(rejections) == [reason], (reason, rejections)


def test_a_compressed_image_of_the_wrong_size_is_refused_before_decoding(monkeypatch):
    msg = _compressed(np.zeros((H * 2, W * 2, 3), np.uint8))

    def no_decoding(_):
        raise AssertionError("decoded an image whose header already disagreed")

    monkeypatch.setattr(cmp, "decode_rgb", no_decoding)
    images, rejections = frame_images(msg, None, _cam())
    assert images is None and _reasons(rejections) == ["size_mismatch"]
    assert f"{2 * W}x{2 * H}" in rejections[0].message


def test_depth_that_does_not_fit_is_dropped_and_the_frame_goes_on():
    depth = Msg(height=H // 2, width=W // 2, encoding="32FC1", step=4 * (W // 2),
                is_bigendian=0, data=np.ones((H // 2, W // 2), "<f4").tobytes())
    images, rejections = frame_images(_compressed(_rgb()), depth, _cam())
    assert images is not None and images.depth_m is None
    assert _reasons(rejections) == ["bad_depth"]
    good = Msg(height=H, width=W, encoding="32FC1", step=4 * W, is_bigendian=0,
               data=np.full((H, W), 0.5, "<f4").tobytes())
    images, rejections = frame_images(_compressed(_rgb()), good, _cam())
    assert rejections == [] and np.allclose(images.depth_m, 0.5)


def test_rosbags_compressed_images_read_like_rclpy_ones():
    from pose_refiner_ros.evaluation import bag_io as B
    from pose_refiner_ros.evaluation import bag_messages as BM

    img = _rgb()
    msg = BM.compressed_image_msg(img, "png", 5, "cam")
    raw = B.typestore().serialize_cdr(msg, B.COMPRESSED_IMAGE)
    back = B.typestore().deserialize_cdr(raw, B.COMPRESSED_IMAGE)
    images, rejections = frame_images(back, None, _cam())
    assert rejections == []
    np.testing.assert_array_equal(images.image_rgb, img)
