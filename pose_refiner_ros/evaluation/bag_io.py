"""ROS 2 bags without ROS: the message types, the type store, stamps, and reading.

Bags are read and written with the pure-Python ``rosbags`` library, in both storage
formats of rosbag2 (``sqlite3`` and ``mcap``), so the offline tools run on machines with
no ROS installation. Messages here are ``rosbags`` message objects, not rclpy ones, but they
have the same fields: they are read with the node's own conversions
(``pose_refiner_ros.ros.conversions``, which import no ROS), so a bag is interpreted
exactly as the node interprets live messages. Which topic is which:
:mod:`.bag_topics`; writing: :mod:`.bag_writer`, with messages built by
:mod:`.bag_messages`.

Types: the ROS 2 Jazzy type store of ``rosbags`` (identical to Humble for every type used
here) plus ``vision_msgs`` 4.1.1 (Humble and Jazzy), registered from its ``.msg``
definitions below. A bag that embeds its own definitions (mcap always, sqlite3 from Iron
on) is read with those for any type the store does not know.

Example::

    with BagReader("recording") as bag:
        image_topic = bag_topics.find_topic(bag, IMAGE, role="image", override=None)
        for topic, t_ns, msg in bag.messages([image_topic]):
            rgb = conversions.image_to_rgb(msg)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import functools
import os
from pathlib import Path

__all__ = [
    "IMAGE",
    "COMPRESSED_IMAGE",
    "CAMERA_INFO",
    "DETECTIONS",
    "POSE_STAMPED",
    "TF",
    "BagError",
    "BagReader",
    "typestore",
    "stamp_to_ns",
    "ns_to_stamp",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DETECTIONS = "vision_msgs/msg/Detection3DArray"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TF = "tf2_msgs/msg/TFMessage"

# vision_msgs 4.1.1 (ros-perception/vision_msgs, the release on Humble and Jazzy), the
# types that Detection3DArray is made of, field for field (comments dropped: they do not
# enter the type hash). The same definitions are built for rclpy from
# scripts/ros_interfaces/vision_msgs/msg/; test/evaluation/test_bags.py checks that the
# two agree and that the type hash is upstream's.
VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox3D bbox\n"
        "string id\n"
    ),
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nDetection3D[] detections\n",
}


class BagError(RuntimeError):
    """A bag cannot be read or written; the message names the file and what to do."""


@functools.lru_cache(maxsize=1)
def _base_typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def typestore():
    """The type store used to (de)serialize: ROS 2 Jazzy plus vision_msgs (shared, do not
    register types into it; :class:`BagReader` makes its own when a bag brings new ones)."""
    return _base_typestore()


# -- stamps --------------------------------------------------------------------------------


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(t_ns: int):
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    Time = typestore().types["builtin_interfaces/msg/Time"]
    sec, nanosec = divmod(int(t_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


# -- reading -------------------------------------------------------------------------------


def _describe(path: Path) -> str:
    return (
        f"expected a ROS 2 bag: a directory with metadata.yaml and its .db3 or .mcap "
        f"file(s), or a single .mcap / .db3 file; got {path}"
    )


class BagReader:
    """Streams the messages of one ROS 2 bag (sqlite3 or mcap), deserialized.

    Use as a context manager. Nothing is loaded up front: :meth:`messages` yields one
    message at a time in log-time order, so memory stays flat on a bag of any length.
    The bag is opened read-only and never modified.

    Args:
        path: a rosbag2 directory (``metadata.yaml`` plus storage files), or a bare
            ``.mcap`` / ``.db3`` file.

    Raises:
        BagError: the path is missing, is not a bag, or the bag is malformed or
            truncated (also raised from :meth:`messages` when damage is found later);
            the message names the file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._reader = None
        self.store = None

    # context manager ---------------------------------------------------------------------
    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        from rosbags.rosbag2 import Reader

        if not self.path.exists():
            raise BagError(f"{self.path}: no such file or directory; {_describe(self.path)}")
        try:
            reader = Reader(self.path)
            reader.open()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # rosbags, sqlite (apsw), struct, YAML and OS errors
            raise BagError(self._open_error(err)) from err
        self._reader = reader
        try:
            self.store = self._make_store(reader.connections)
        except Exception:
            self.close()
            raise

    def _open_error(self, err: Exception) -> str:
        why = f"{type(err).__name__}: {err}"
        p = self.path
        if p.is_dir():
            storage = sorted(x.name for x in p.iterdir() if x.suffix in (".db3", ".mcap"))
            if not (p / "metadata.yaml").exists() and storage:
                return (f"{p}: metadata.yaml is missing (a recording that was killed?); pass the "
                        f"storage file itself ({p / storage[0]}), or rebuild the metadata with "
                        f"`ros2 bag reindex {p}`")
            if (p / "metadata.yaml").exists():
                return (f"{p}: cannot open the bag, its metadata or storage file is damaged or "
                        f"truncated ({why}). A truncated .mcap can often be repaired with "
                        "`mcap recover`; a missing or broken metadata.yaml with `ros2 bag reindex`")
        elif p.suffix in (".db3", ".mcap"):
            return (f"{p}: cannot open the bag file, it is damaged or truncated ({why}). A "
                    "truncated .mcap can often be repaired with `mcap recover`")
        return f"{p}: not a ROS 2 bag ({why}); {_describe(p)}"

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            try:
                reader.close()
            except Exception:  # closing a damaged bag may fail too; nothing left to do
                pass

    def _make_store(self, connections):
        """The base store, plus the bag's embedded definitions of types it lacks."""
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        base = _base_typestore()
        missing = {c.msgtype for c in connections} - set(base.fielddefs)
        if not missing:
            return base
        types: dict = {}
        for conn in connections:
            if conn.msgtype not in missing or conn.msgdef.format == MessageDefinitionFormat.NONE:
                continue
            try:
                if conn.msgdef.format == MessageDefinitionFormat.MSG:
                    found = get_types_from_msg(conn.msgdef.data, conn.msgtype)
                else:
                    sep = "=" * 80 + "\n"
                    found = {}
                    for part in conn.msgdef.data.split(sep):
                        if part.startswith("IDL: "):
                            part = part.split("\n", 1)[1]
                        if part.strip():
                            found.update(get_types_from_idl(part))
            except Exception:  # an unparsable definition: the topic just stays unreadable
                continue
            types.update({k: v for k, v in found.items() if k not in base.fielddefs})
        if not types:
            return base
        from rosbags.typesys import Stores, get_typestore

        store = get_typestore(Stores.EMPTY)
        store.register(dict(base.fielddefs))
        try:
            store.register(types)
        except Exception:
            return base
        return store

    def _check(self) -> None:
        if self._reader is None:
            raise BagError(f"{self.path}: the bag is not open (use `with BagReader(path) as bag`)")

    # metadata ----------------------------------------------------------------------------
    @property
    def storage(self) -> str:
        """``"sqlite3"`` or ``"mcap"``."""
        files = self.files
        return "mcap" if files and files[0].suffix == ".mcap" else "sqlite3"

    @property
    def files(self) -> list[Path]:
        """The storage files of the bag."""
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if p.suffix in (".mcap", ".db3"))
        return [self.path]

    @property
    def topics(self) -> dict[str, str]:
        """Topic name -> message type, for every topic of the bag."""
        self._check()
        return {c.topic: c.msgtype for c in self._reader.connections}

    @property
    def connections(self) -> list:
        """The ``rosbags`` connections (topic, msgtype, msgdef, digest, QoS)."""
        self._check()
        return list(self._reader.connections)

    @property
    def message_count(self) -> int:
        self._check()
        return int(self._reader.message_count)

    def count(self, topic: str) -> int:
        """Number of messages on ``topic`` according to the bag's index."""
        self._check()
        return sum(c.msgcount for c in self._reader.connections if c.topic == topic)

    def topics_of_type(self, msgtype: str) -> list[str]:
        """Topics carrying ``msgtype`` (e.g. :data:`IMAGE`), sorted."""
        return sorted({t for t, m in self.topics.items() if m == msgtype})

    # messages ----------------------------------------------------------------------------
    def raw_messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple]:
        """Yield ``(connection, t_log_ns, rawdata)`` in log-time order.

        Args:
            topics: only these topics; None: every topic.
        """
        self._check()
        conns = self._reader.connections
        if topics is not None:
            wanted = set(topics)
            conns = [c for c in conns if c.topic in wanted]
            if not conns:
                return
        try:
            yield from self._reader.messages(connections=conns)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except Exception as err:
            raise BagError(
                f"{self.path}: the bag is damaged or truncated; reading stopped "
                f"({type(err).__name__}: {err}). A truncated .mcap can often be repaired "
                "with `mcap recover`"
            ) from err

    def deserialize(self, raw, msgtype: str):
        """Deserialize one CDR message of ``msgtype``; BagError names the bag on failure."""
        try:
            return self.store.deserialize_cdr(raw, msgtype)
        except Exception as err:
            raise BagError(
                f"{self.path}: a {msgtype} message cannot be decoded ({type(err).__name__}: "
                f"{err}); the bag is damaged, or was recorded with a different definition "
                "of that type"
            ) from err

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple]:
        """Yield ``(topic, t_log_ns, message)`` in log-time order, deserialized."""
        for conn, t_ns, raw in self.raw_messages(topics):
            yield conn.topic, t_ns, self.deserialize(raw, conn.msgtype)
