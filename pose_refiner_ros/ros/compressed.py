"""``sensor_msgs/CompressedImage`` as image_transport's ``compressed`` plugin writes it.

Cameras and bags often carry colour images compressed (``image_raw/compressed``):
JPEG or PNG bytes in ``data`` and a ``format`` string that says what they hold, e.g.
``"rgb8; jpeg compressed bgr8"``: the camera's encoding (``rgb8``), the compression
(``jpeg``) and, after ``compressed``, the channel order of the pixels that were handed
to the encoder (``bgr8``: OpenCV's order, what ``cv2.imencode`` expects, so the file's
colours are right). Older publishers write only ``"jpeg"`` or ``"png"`` (OpenCV order).
``compressedDepth`` (image_transport's depth plugin) is a depth image and is refused.

:func:`decode_rgb` reads one message into ``(H, W, 3)`` uint8 RGB with ``cv2.imdecode``;
:func:`compressed_size` reads the image size from the JPEG or PNG header without
decoding, so that an image whose size disagrees with the ``CameraInfo`` is refused
before it is decoded (a few hundred bytes of PNG can claim gigabytes of pixels).
:func:`encode_rgb` writes one, as image_transport does (for tests, the demo and bags).
Every reader raises ``ValueError`` saying what was expected and what was received.
No ROS imports: messages are only read (rosbags messages work as rclpy ones).

The node subscribes to the topic that image_transport names: ``<image>/compressed``,
where ``<image>`` is the node's ``image`` topic after namespace and remapping
(:func:`compressed_topic`); ``image:=/camera/color/image_raw`` gives
``/camera/color/image_raw/compressed``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["TRANSPORTS", "check_format", "compressed_image_msg", "compressed_size",
           "compressed_topic", "decode_rgb", "encode_rgb", "is_compressed", "parse_format"]

#: Values of the node's ``image_transport`` parameter.
TRANSPORTS = ("raw", "compressed")
#: Compressions read here (as ``format`` names them); "" when only the bytes tell.
COMPRESSIONS = ("jpeg", "jpg", "png", "")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8"


def compressed_topic(node, base: str = "image") -> str:
    """The topic image_transport subscribes to for ``base`` with the ``compressed``
    transport: ``base`` resolved (namespace, remapping), then ``/compressed``."""
    return node.resolve_topic_name(base) + "/compressed"


def is_compressed(msg) -> bool:
    """Whether ``msg`` is a ``sensor_msgs/CompressedImage`` (``format``, no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def parse_format(fmt: str) -> tuple[str, str, str]:
    """``format`` -> ``(encoding, compression, pixel order)``, lower-case where the ROS
    names are.

    ``"rgb8; jpeg compressed bgr8"`` -> ``("rgb8", "jpeg", "bgr8")``;
    ``"mono8; png compressed "`` -> ``("mono8", "png", "")``; ``"jpeg"`` ->
    ``("", "jpeg", "")``; ``"16UC1; compressedDepth png"`` -> ``("16UC1",
    "compresseddepth", "")``.
    """
    head, sep, tail = str(fmt).partition(";")
    if not sep:
        return "", head.strip().lower(), ""
    tokens = tail.split()
    compression = tokens[0].lower() if tokens else ""
    order = tokens[2] if len(tokens) >= 3 and tokens[1].lower() == "compressed" else ""
    return head.strip(), compression, order


def check_format(fmt: str) -> str:
    """The pixel order (after ``compressed``) of a ``format`` that :func:`decode_rgb`
    reads.

    Raises:
        ValueError: compressedDepth, a compression other than JPEG or PNG, or an
            encoding that is not a colour image (``16UC1``, ``32FC1``, ...).
    """
    encoding, compression, order = parse_format(fmt)
    if compression == "compresseddepth":
        raise ValueError(
            f"compressed image: format {fmt!r} is image_transport's compressedDepth (a depth "
            "image); the image input takes colour images compressed as JPEG or PNG (the "
            "'compressed' transport)")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compressed image: format {fmt!r}: unsupported compression "
                         f"{compression!r}; expected JPEG or PNG (e.g. 'rgb8; jpeg "
                         "compressed bgr8')")
    if encoding[:1].isdigit():  # 16UC1, 32FC1, 8UC1: depth or other non-colour data
        raise ValueError(f"compressed image: format {fmt!r}: encoding {encoding!r} is not a "
                         "colour image; expected e.g. rgb8, bgr8 or mono8 before the ';'")
    return order


def _as_bytes(data) -> bytes:
    return np.frombuffer(data, dtype=np.uint8).tobytes() if len(data) else b""


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's start-of-frame segment, or None."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            return None
        i += 2 + length
    return None


def compressed_size(data) -> tuple[int, int]:
    """``(width, height)`` of the JPEG or PNG in ``data`` (bytes, array or list of
    uint8), read from its header without decoding.

    Raises:
        ValueError: ``data`` is neither a JPEG nor a PNG, or its header is cut short.
    """
    raw = _as_bytes(data)
    if raw.startswith(_PNG_SIGNATURE):
        if len(raw) < 24 or raw[12:16] != b"IHDR":
            raise ValueError(f"compressed image: PNG of {len(raw)} bytes without its IHDR "
                             "header; the data is damaged")
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if raw.startswith(_JPEG_SIGNATURE):
        size = _jpeg_size(raw)
        if size is None:
            raise ValueError(f"compressed image: JPEG of {len(raw)} bytes without a readable "
                             "frame header; the data is damaged or cut short")
        return size
    raise ValueError(f"compressed image: {len(raw)} bytes that are neither JPEG nor PNG "
                     f"(they start with {raw[:8].hex(' ') or 'nothing'})")


def decode_rgb(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> ``(H, W, 3)`` uint8 RGB.

    The pixel order after ``compressed`` in ``format`` says which channels are red
    and blue (``bgr8`` or none: OpenCV's order; ``rgb8``: the producer encoded RGB).
    Alpha is dropped, grey is replicated to three channels, 16-bit PNGs are scaled to
    8 bits, an EXIF orientation is ignored (the size must stay the camera's).

    Raises:
        ValueError: unsupported format, empty data, or data that does not decode.
    """
    order = check_format(msg.format)
    if len(msg.data) == 0:
        raise ValueError(f"compressed image: no data (format {msg.format!r})")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    compressed_size(buf)  # neither JPEG nor PNG: say so rather than "does not decode"
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"compressed image: {buf.size} bytes (format {msg.format!r}) do not "
                         "decode; the data is damaged or cut short")
    if order.lower().startswith("rgb"):
        return np.ascontiguousarray(bgr)
    return np.ascontiguousarray(bgr[..., ::-1])


def encode_rgb(image_rgb: np.ndarray, compression: str = "jpeg",
               jpeg_quality: int = 95) -> tuple[str, bytes]:
    """``(H, W, 3)`` uint8 RGB -> ``(format, data)`` as image_transport's ``compressed``
    plugin publishes an ``rgb8`` image: ``"rgb8; jpeg compressed bgr8"`` (or ``png``).

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB.
        compression: ``"jpeg"`` or ``"png"``.
        jpeg_quality: 1 to 100 (image_transport's default is 95).
    """
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image_rgb: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    if compression == "jpeg":
        ok, data = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                         int(jpeg_quality)])
    elif compression == "png":
        ok, data = cv2.imencode(".png", img[..., ::-1])
    else:
        raise ValueError(f"compression: expected 'jpeg' or 'png', got {compression!r}")
    if not ok:
        raise ValueError(f"image_rgb: OpenCV could not encode it as {compression}")
    return f"rgb8; {compression} compressed bgr8", data.tobytes()


def compressed_image_msg(image_rgb: np.ndarray, header, compression: str = "jpeg"):
    """A ``sensor_msgs/CompressedImage`` (rclpy) of ``image_rgb``, see :func:`encode_rgb`."""
    from sensor_msgs.msg import CompressedImage

    fmt, data = encode_rgb(image_rgb, compression)
    return CompressedImage(header=header, format=fmt, data=data)
