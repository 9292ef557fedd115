"""All or nothing for a command's output folder, whatever the moment of a Ctrl-C or a
``kill`` (SIGTERM).

Everything is written into a staging folder inside the output folder,
``.<command>.partial/``, and moved into place only once complete, by a few renames
during which SIGINT and SIGTERM are held back (they take effect once the output is
whole). An interrupt before that removes the staging folder (and the output folder
itself when this run created it and nothing else is in it): nothing appears. Partial
files that an earlier run killed hard left behind are removed at the start.

Used by ``eval-bag``, ``eval``, ``make-bag`` (its output folder: the bag's parent) and
``bench``; a file that goes elsewhere (``make-bag --gt-file``, ``bench --markdown``) is
staged beside its target (:meth:`Staging.outside`).

Test hook: with the environment variable ``POSE_REFINER_TEST_PAUSE_AT=<point>`` the
command prints ``paused at <point>`` on stderr and waits there (``POSE_REFINER_TEST_PAUSE_S``
seconds, default 30), so that a test can send a signal at that exact moment. Points:
``bag_closed`` (the output bag complete, in the staging folder), ``report_written``
(everything complete, not yet moved), ``commit`` (the first file moved into place,
signals held back), and ``train_step`` (``pose-refiner train``, after its first step).
Never set in normal use.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import shutil
import signal
import sys
import threading
import time

PAUSE_ENV = "POSE_REFINER_TEST_PAUSE_AT"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptedWhenComplete(KeyboardInterrupt):
    """A signal came while the complete output was being moved into place: it is all
    there. ``result`` is what the command would have returned."""

    def __init__(self, result):
        super().__init__("interrupted after the output was complete")
        self.result = result


def pause_for_test(point: str) -> None:
    """The test hook of the module docstring (a no-op unless the variable names ``point``)."""
    if os.environ.get(PAUSE_ENV) == point:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("POSE_REFINER_TEST_PAUSE_S", "30")))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def sigterm_as_interrupt() -> None:
    """Make SIGTERM stop the command like Ctrl-C (a KeyboardInterrupt), so that it
    cleans up the same way (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


@contextlib.contextmanager
def signals_held_back():
    """Hold SIGINT and SIGTERM back in the block; yields the list of those that came."""
    came: list = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    old = {s: signal.signal(s, lambda n, f: came.append(n)) for s in _SIGNALS}
    try:
        yield came
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Staging:
    """The staging folder of one run of ``command`` into ``out_dir`` (module docstring).

    Args:
        out_dir: the output folder (created when missing).
        command: names the staging folder, ``.<command>.partial``.
        stale: glob patterns, in ``out_dir``, of partial files this command's earlier
            runs may have left (removed now).
    """

    def __init__(self, out_dir: str | os.PathLike, command: str, stale: tuple = ()):
        self.out_dir = Path(out_dir)
        self.created = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / f".{command}.partial"
        for pattern in (self.path.name, *stale):
            for p in self.out_dir.glob(pattern):
                _remove(p)
        self.path.mkdir()
        self._outside: dict = {}

    def outside(self, target: str | os.PathLike) -> Path:
        """Where to write a file that goes to ``target``: in the staging folder when
        ``target`` is in ``out_dir``, else its sibling ``.<stem>.partial<suffix>`` (the
        suffix kept for writers that go by it; a stale one removed now), moved in by
        :meth:`commit` with the rest (or removed by :meth:`abort`)."""
        target = Path(target)
        if target.parent.resolve() == self.out_dir.resolve():
            return self.path / target.name
        staged = target.parent / f".{target.stem}.partial{target.suffix}"
        _remove(staged)
        self._outside[staged] = target
        return staged

    def commit(self) -> bool:
        """Move everything staged into ``out_dir``, replacing what is there under the
        same names; True when SIGINT or SIGTERM came meanwhile (held back)."""
        with signals_held_back() as came:
            moves = [(p, self.out_dir / p.name) for p in sorted(self.path.iterdir())]
            for i, (p, target) in enumerate(moves + list(self._outside.items())):
                if not (p.exists() or p.is_symlink()):
                    continue
                if target.exists() or target.is_symlink():
                    _remove(target)
                p.rename(target)
                if i == 0:
                    pause_for_test("commit")
            self.path.rmdir()
        return bool(came)

    def abort(self) -> None:
        """Remove everything staged (and ``out_dir`` when this run created it and it
        is empty)."""
        _remove(self.path)
        for staged in self._outside:
            _remove(staged)
        if self.created:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()
