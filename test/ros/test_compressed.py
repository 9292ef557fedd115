"""image_transport's compressed images (ros.compressed): format strings, the size read
from the header, decoding cross-checked against OpenCV and PNG's exact round trip.
No ROS needed: messages are stand-ins with the same fields."""

from __future__ import annotations

from types import SimpleNamespace as Msg

import cv2
import numpy as np
import pytest

from pose_refiner_ros.ros import compressed as cmp


def _image(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]  # red ramp left to right
    img[..., 2] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]  # blue ramp top to bottom
    img[..., 1] = rng.integers(0, 40, (h, w))
    return img


@pytest.mark.parametrize("fmt, want", [
    ("rgb8; jpeg compressed bgr8", ("rgb8", "jpeg", "bgr8")),
    ("bgr8; png compressed bgr8", ("bgr8", "png", "bgr8")),
    ("mono8; jpeg compressed ", ("mono8", "jpeg", "")),
    ("rgb8; jpeg compressed rgb8", ("rgb8", "jpeg", "rgb8")),
    ("jpeg", ("", "jpeg", "")),
    ("PNG", ("", "png", "")),
    ("", ("", "", "")),
    ("16UC1; compressedDepth png", ("16UC1", "compresseddepth", "")),
])
def test_parse_format(fmt, want):
    assert cmp.parse_format(fmt) == want


@pytest.mark.parametrize("compression", ["jpeg", "png"])
def test_round_trip_as_image_transport_writes_it(compression):
    img = _image()
    fmt, data = cmp.encode_rgb(img, compression)
    assert fmt == f"rgb8; {compression} compressed bgr8"
    assert cmp.compressed_size(data) == (64, 48)
    out = cmp.decode_rgb(Msg(format=fmt, data=data))
    assert out.shape == img.shape and out.dtype == np.uint8
    if compression == "png":
        np.testing.assert_array_equal(out, img)  # lossless
    else:
        assert np.abs(out.astype(int) - img).mean() < 8.0  # chroma subsampled
    # red and blue are where they were: not swapped
    assert out[24, -1, 0] > 200 and out[24, -1, 2] < 160 and out[-1, 0, 2] > 200


def test_decoding_matches_opencv_and_honours_the_pixel_order():
    img = _image()
    ok, bgr_png = cv2.imencode(".png", img[..., ::-1])
    assert ok
    ref = cv2.imdecode(bgr_png, cv2.IMREAD_COLOR)[..., ::-1]  # the independent reading
    for fmt in ("bgr8; png compressed bgr8", "png", "", "rgb8; png compressed "):
        np.testing.assert_array_equal(cmp.decode_rgb(Msg(format=fmt, data=bgr_png)), ref)
    # a producer that handed RGB pixels to the encoder says so after "compressed"
    ok, rgb_png = cv2.imencode(".png", img)
    out = cmp.decode_rgb(Msg(format="rgb8; png compressed rgb8", data=rgb_png))
    np.testing.assert_array_equal(out, img)


def test_grey_and_alpha_become_three_channels():
    grey = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    ok, data = cv2.imencode(".png", grey)
    out = cmp.decode_rgb(Msg(format="mono8; png compressed ", data=data))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    bgra = np.dstack([_image()[..., ::-1], np.full((48, 64), 7, np.uint8)])
    ok, data = cv2.imencode(".png", bgra)
    out = cmp.decode_rgb(Msg(format="bgra8; png compressed bgra8", data=data))
    np.testing.assert_array_equal(out, _image())


def test_size_is_read_from_the_header_without_decoding():
    fmt, data = cmp.encode_rgb(_image(30, 50), "jpeg")
    assert cmp.compressed_size(np.frombuffer(data, np.uint8)) == (50, 30)
    # a PNG header that claims 100000 x 100000 pixels: the size, not gigabytes
    _, png = cmp.encode_rgb(_image(), "png")
    huge = bytearray(png)
    huge[16:24] = (100000).to_bytes(4, "big") * 2
    assert cmp.compressed_size(bytes(huge[:64])) == (100000, 100000)


@pytest.mark.parametrize("damage, says", [
    (lambda d: d[: len(d) // 2], "do not decode"),  # cut short
    (lambda d: d[:2] + bytes(200), "frame header"),  # JPEG signature, then nothing
    (lambda d: bytes(range(256)) * 4, "neither JPEG nor PNG"),
])
def test_damaged_data_is_refused_with_the_reason(damage, says):
    fmt, data = cmp.encode_rgb(_image(), "jpeg")
    with pytest.raises(ValueError, match=says):
        cmp.decode_rgb(Msg(format=fmt, data=damage(data)))


@pytest.mark.parametrize("fmt, says", [
    ("16UC1; compressedDepth png", "compressedDepth"),
    ("rgb8; theora compressed bgr8", "expected JPEG or PNG"),
    ("16UC1; png compressed ", "not a colour image"),
])
def test_formats_other_than_colour_jpeg_or_png_are_refused(fmt, says):
    _, data = cmp.encode_rgb(_image(), "png")
    with pytest.raises(ValueError, match=says):
        cmp.decode_rgb(Msg(format=fmt, data=data))


def test_empty_data_is_refused():
    with pytest.raises(ValueError, match="no data"):
        cmp.decode_rgb(Msg(format="rgb8; jpeg compressed bgr8", data=b""))
