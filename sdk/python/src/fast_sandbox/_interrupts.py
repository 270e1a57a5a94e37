"""Ctrl-C while a command starts: the blocking SDK's counterpart of the async one's shielded start.

A KeyboardInterrupt raised while a Start call waits for the daemon's first message would leave the
command running, unknown to the caller (its pid not yet come), until its timeout. So a first SIGINT
during the start is only noted: the start completes (within its request timeout), the caller kills
the command and raises KeyboardInterrupt then. A second SIGINT interrupts at once, as it always did.
Only in the main thread, and only while SIGINT has Python's own handler: a handler the program
installed itself is left alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator, Optional


class Interruption:
    """Whether a SIGINT came while :func:`first_interrupt_deferred` held it back."""

    def __init__(self) -> None:
        self.pending = False


@contextlib.contextmanager
def first_interrupt_deferred() -> Iterator[Interruption]:
    interruption = Interruption()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield interruption
        return

    def note(_signum: int, _frame: Optional[FrameType]) -> None:
        interruption.pending = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second one interrupts at once

    signal.signal(signal.SIGINT, note)
    try:
        yield interruption
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
