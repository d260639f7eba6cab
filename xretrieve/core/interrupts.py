"""SIGTERM handled like Ctrl-C: schedulers (Slurm, Kubernetes) send SIGTERM before pre-empting a
job, and a command or a training run should then clean up (temporary files removed, the
trainer's resumable checkpoint saved) rather than die mid-write.

``sigterm_as_interrupt`` turns the first SIGTERM into ``Terminated`` (a ``KeyboardInterrupt``,
so every ``except KeyboardInterrupt`` clean-up path runs unchanged) and ignores further ones
until the outermost block ends, so a second signal cannot break the clean-up. The CLI wraps
every command in it and exits with ``EXIT_TERMINATED`` (143 = 128 + SIGTERM, as a process killed
by the signal would); the trainer wraps its run in it too, so that the Python API saves the same
checkpoint. ``keep_sigterm_handler`` keeps that handler in place across a library call that
replaces it (``ray.init``; see ``xretrieve.core.ray_cluster.connect``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread; the previous handler
    is restored on exit. Elsewhere than in the main thread (signal handlers can only be set
    there), and inside an enclosing block (the CLI's around the trainer's), a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Run a block that installs a SIGTERM handler of its own (``ray.init`` does: its handler
    exits with a stack dump) and put back the one that was there before, so that SIGTERM still
    cleans up as ``sigterm_as_interrupt`` promises. Where that block turned a SIGTERM into
    ``SystemExit(SIGTERM)`` (as Ray's handler does) while ours was in charge, it becomes
    ``Terminated``, as ours would have raised. Elsewhere than in the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as error:
        if previous is not _raise_terminated or error.code != signal.SIGTERM:
            raise
        previous = signal.SIG_IGN  # as _raise_terminated leaves it, for the clean-up
        raise Terminated from None
    finally:
        if previous is not None:  # None: a handler not set from Python, which cannot be restored
            signal.signal(signal.SIGTERM, previous)
