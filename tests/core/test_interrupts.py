"""The one SIGTERM mechanism the CLI (``reports_errors``) and the trainer share."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from xretrieve.core.interrupts import (
    EXIT_TERMINATED,
    Terminated,
    keep_sigterm_handler,
    sigterm_as_interrupt,
)


def test_sigterm_raises_terminated_once_and_the_handler_is_restored() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    caught = 0
    with sigterm_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt as error:  # what every Ctrl-C clean-up path catches
            caught += isinstance(error, Terminated)
            os.kill(os.getpid(), signal.SIGTERM)  # a second one during the clean-up: ignored
    assert caught == 1
    assert signal.getsignal(signal.SIGTERM) is previous
    assert EXIT_TERMINATED == 143


def test_a_nested_block_leaves_the_outer_one_in_charge() -> None:
    """The CLI's block encloses the trainer's: a SIGTERM in the trainer raises once, and a
    second one while the CLI finishes its clean-up is still ignored."""
    previous = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            with sigterm_as_interrupt():
                os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # after the inner block: still ignored
    assert signal.getsignal(signal.SIGTERM) is previous


def _exit_like_ray(signum: int, frame: object) -> None:
    sys.exit(signum)  # what ray.init installs in the driver


def test_a_handler_installed_by_a_library_is_replaced_by_ours_again() -> None:
    """``ray.init`` sets its own SIGTERM handler (exit code 1 with a stack dump, no clean-up):
    after the call, SIGTERM raises ``Terminated`` again."""
    with sigterm_as_interrupt():
        with keep_sigterm_handler():
            signal.signal(signal.SIGTERM, _exit_like_ray)
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # during the clean-up: ignored


def test_a_sigterm_within_the_library_call_becomes_terminated() -> None:
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            with keep_sigterm_handler():
                signal.signal(signal.SIGTERM, _exit_like_ray)
                os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # ignored, as after our own handler ran
    # Without our handler in charge, the library's exit stands.
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        with keep_sigterm_handler():
            signal.signal(signal.SIGTERM, _exit_like_ray)
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is previous
