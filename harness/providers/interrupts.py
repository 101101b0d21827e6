"""Ctrl-C (SIGINT) and SIGTERM while provider calls are in flight: the calls already sent are paid for, so they are
let finish (each within its request timeout) and their replies handed on (cached, saved) before the run stops.

`deferred_signals(loop, on_signal)` routes both signals, while provider calls run on the main thread's event loop,
to `on_signal(signum, count)` on that loop instead of raising KeyboardInterrupt mid-call; the previous handlers
come back afterwards. `CallsInterrupted` is how the scheduler says that it stopped for a signal; `reraise` turns it
into what the CLI expects (KeyboardInterrupt, or harness.errors.Terminated for SIGTERM: exit 130 / 143).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn


class CallsInterrupted(Exception):
    """The calls stopped for a signal: those already sent were let finish (or abandoned on a second signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def reraise(exc: CallsInterrupted) -> NoReturn:
    """The KeyboardInterrupt the signal stands for (Terminated for SIGTERM, as harness/cli.py makes it)."""
    from harness.errors import Terminated

    raise (Terminated() if exc.signum == signal.SIGTERM else KeyboardInterrupt()) from None


def say(text: str) -> None:
    """One line on stderr from a signal's callback (a plain write: never a re-entered print)."""
    try:
        os.write(2, f"\n{text}\n".encode())
    except OSError:
        pass


@contextmanager
def deferred_signals(loop: asyncio.AbstractEventLoop, on_signal: Callable[[int, int], None]) -> Iterator[None]:
    """While the block runs: SIGINT and SIGTERM call `on_signal(signum, how_many_so_far)` on `loop`. Only in the main
    thread (elsewhere Python delivers no signal) and never for a signal the process ignores or that was set outside
    Python; the previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = [0]

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        received[0] += 1
        loop.call_soon_threadsafe(on_signal, signum, received[0])

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(signum)
        if old is signal.SIG_IGN or old is None:
            continue
        previous[signum] = old
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
