"""SIGTERM handled like Ctrl-C: schedulers (Slurm, Kubernetes) send SIGTERM before pre-empting a
job, and a training run should then save a resumable checkpoint rather than die mid-step.

``sigterm_as_interrupt`` turns the first SIGTERM into ``Terminated`` (a ``KeyboardInterrupt``,
so every ``except KeyboardInterrupt`` clean-up path runs unchanged) and ignores further ones
until the block ends, so a second signal cannot break the checkpoint being saved. The CLI exits
with 143 (128 + SIGTERM), as a process killed by the signal would.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block (main thread only; elsewhere a no-op), SIGTERM raises ``Terminated``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
