"""Writing a ROS 2 bag without ROS (``rosbags``, sqlite3 or mcap), atomically: nothing
appears at the output path until the bag is complete. Messages to write are built by
:mod:`.bag_messages`; ``make-bag`` and ``eval-bag`` write through it.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil

from .bag_io import BagError, typestore

__all__ = ["BagWriter"]


class BagWriter:
    """Writes a new ROS 2 bag atomically: the bag is built inside a hidden directory
    ``.<name>.partial`` beside ``path`` and moved to ``path`` by :meth:`close`; on an
    exception (including ``KeyboardInterrupt``) inside the ``with`` block, or
    :meth:`abort`, the partial bag is deleted. Nothing appears at ``path`` until the bag
    is complete.

    Args:
        path: the bag directory to create (must not exist unless ``overwrite``).
        storage: ``"sqlite3"`` or ``"mcap"``.
        overwrite: replace an existing bag at ``path`` once the new one is complete.
    """

    def __init__(self, path: str | os.PathLike, storage: str = "sqlite3",
                 overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin

        plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
        if storage not in plugins:
            raise ValueError(f"storage: expected 'sqlite3' or 'mcap', got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.overwrite = overwrite
        self._plugin = plugins[storage]
        self.partial = self.path.parent / f".{self.path.name}.partial"
        self._writer = None
        self._conns: dict[str, object] = {}

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        from rosbags.rosbag2 import Writer

        if self.path.exists() and not self.overwrite:
            raise BagError(f"{self.path} exists already; choose another output or remove it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_partial()  # left by a run that was killed hard
        self.partial.mkdir()
        try:
            self._writer = Writer(self.partial / self.path.name, version=9,
                                  storage_plugin=self._plugin)
            self._writer.open()
        except BaseException:
            self._writer = None
            self._remove_partial()
            raise

    def add_topic(self, topic: str, msgtype: str, like=None) -> bool:
        """Declare a topic. ``like``: a connection of an input bag whose definition, type
        hash and QoS are copied (so a copied topic plays back exactly as recorded).

        Returns False (and declares nothing) when the type is unknown here and ``like``
        brings no definition (e.g. a custom message in a Humble bag): rosbag2 needs a
        definition and a type hash, which cannot be made up.
        """
        if topic in self._conns:
            return True
        kwargs: dict = {}
        if like is not None:
            kwargs["offered_qos_profiles"] = list(getattr(like.ext, "offered_qos_profiles", ()))
            if like.msgdef.data and like.digest:
                kwargs.update(msgdef=like.msgdef.data, rihs01=like.digest)
        if "msgdef" not in kwargs:
            if msgtype not in typestore().fielddefs:
                if like is None:
                    raise BagError(f"{self.path}: message type {msgtype} is unknown")
                return False
            kwargs["typestore"] = typestore()
        self._conns[topic] = self._writer.add_connection(topic, msgtype, **kwargs)
        return True

    def has_topic(self, topic: str) -> bool:
        return topic in self._conns

    def write_raw(self, topic: str, t_ns: int, raw) -> None:
        """Write already-serialized CDR bytes on a declared topic."""
        self._writer.write(self._conns[topic], int(t_ns), raw)

    def write(self, topic: str, t_ns: int, msg) -> None:
        """Serialize ``msg`` (a ``rosbags`` message) and write it on a declared topic."""
        conn = self._conns[topic]
        self._writer.write(conn, int(t_ns), typestore().serialize_cdr(msg, conn.msgtype))

    def close(self) -> None:
        """Finish the bag and move it to ``path``."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
            if self.path.exists():
                shutil.rmtree(self.path)
            (self.partial / self.path.name).rename(self.path)
        finally:
            self._remove_partial()

    def abort(self) -> None:
        """Stop and delete the partial bag."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:
                pass
        self._remove_partial()

    def _remove_partial(self) -> None:
        if self.partial.exists():
            shutil.rmtree(self.partial, ignore_errors=True)
