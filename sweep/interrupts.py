"""SIGINT and SIGTERM for the command line: both stop a sweep the way Ctrl-C does.

Job: turn either signal into ``KeyboardInterrupt`` in the main thread, remember which came
first (the exit code: 130 for SIGINT, 143 for SIGTERM, as a shell reports a death by it), and
hold a signal back while the store is being written (``deferred``), so that no signal, first
or second, ever lands in the middle of a write. Batch schedulers, ``timeout``, Kubernetes and
``ray job stop`` send SIGTERM, not SIGINT; Python's default for SIGTERM would die at once and
lose the unflushed points. Installed by ``sweep.__main__`` only: a library caller keeps its
own handlers.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_first: int | None = None  # the first signal received
_depth = 0  # nesting of `deferred` sections
_pending = False  # a signal arrived inside a deferred section
_installed = False


def install() -> None:
    """Our handler for SIGINT and SIGTERM (main thread only; again after Ray set its own)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    _installed = True


def installed() -> bool:
    return _installed


def received() -> int | None:
    """The first signal received (``signal.SIGINT`` or ``signal.SIGTERM``), or None."""
    return _first


def exit_code(default: int = 130) -> int:
    """128 + the first signal: 130 for SIGINT, 143 for SIGTERM; ``default`` if none came
    (a KeyboardInterrupt raised without a signal)."""
    return 128 + _first if _first is not None else default


def _handler(signum: int, frame: Any) -> None:
    global _first, _pending
    if _first is None:
        _first = signum
    else:
        logger.warning("%s again: stopping now; what is saved stays saved",
                       signal.Signals(signum).name)
    if _depth:
        _pending = True
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section no SIGINT/SIGTERM interrupts (a store write): a signal received inside it
    raises KeyboardInterrupt when it ends. Without our handler installed (a library caller)
    this changes nothing."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            _pending = False
            raise KeyboardInterrupt
