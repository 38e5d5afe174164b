"""Ctrl-C and SIGTERM as a clean stop: finish the current iteration (or step), save, say how to resume.

    signals.install()                 # entry points, just before training
    ... if signals.stop_requested(): save and leave the loop (trainers, at each safe point)
    signals.exit_code()               # 130 after SIGINT, 143 after SIGTERM, None when no signal came

A second signal stops at once (`os._exit`, no checkpoint: the last completed save stays valid, because every
save is atomic).

MindSpore installs its own C-level SIGINT handler whenever a graph runs (`mindspore::DefaultIntHandler`,
invisible to `signal.getsignal`, which still reports Python's), and that handler re-sends the signal as SIGTERM
to its own process: before this module, Ctrl-C after the first graph ended the run with status 143, no message
and no cleanup. So `stop_requested()` re-installs our SIGINT handler at every safe point (MindSpore keeps
replacing it), and a Ctrl-C that lands while a graph runs arrives here as SIGTERM: it is handled the same way
(and reported as SIGTERM, exit code 143, since the two cannot be told apart then).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Optional

logger = logging.getLogger(__name__)

_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}
_installed = False
_received: Optional[int] = None


def _handle(signum: int, frame) -> None:
    global _received
    if _received is not None:
        sys.stderr.write(f"\n{_NAMES.get(signum, signum)} again: stopping now, without a checkpoint\n")
        sys.stderr.flush()
        os._exit(128 + signum)
    _received = signum
    logger.warning(
        "received %s: stopping after the current iteration, with a checkpoint (send it again to stop at once)",
        _NAMES.get(signum, signum),
    )


def install() -> None:
    """Handle SIGINT and SIGTERM from now on (main thread only, as Python requires)."""
    global _installed, _received
    _received = None
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)
    _installed = True


def uninstall() -> None:
    """Back to Python's defaults (KeyboardInterrupt on SIGINT, termination on SIGTERM)."""
    global _installed
    if _installed:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _installed = False


def stop_requested() -> bool:
    """True once a signal asked to stop; a safe point to call it. Re-arms our SIGINT handler (see module doc).

    Always False while not installed: a signal handled during an earlier run in this process (which keeps its
    `exit_code()` after `uninstall()`) must not stop a later trainer that runs without the handlers.
    """
    if not _installed:
        return False
    signal.signal(signal.SIGINT, _handle)
    return _received is not None


def received() -> Optional[str]:
    """The name of the signal that asked to stop, or None."""
    return None if _received is None else _NAMES.get(_received, str(_received))


def exit_code() -> Optional[int]:
    """128 + the signal number (130 SIGINT, 143 SIGTERM) once a signal asked to stop, else None."""
    return None if _received is None else 128 + _received
