"""The report of a finished sweep, written by a child process while Ray stops.

Job: start ``python -m sweep.report -q STORE`` and wait for it, stopping it on a signal, and say
how it went ("written", "failed", "interrupted"). What the report holds is ``sweep.report``'s.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)


class Job:
    """``python -m sweep.report -q STORE`` started now, in a child process.

    The sweep starts it once its store is finished and then stops Ray, so the report's imports
    and drawing overlap Ray's shutdown (and the child, which never touches Ray, may fork to
    draw figures in parallel). ``wait`` logs the outcome; a report failure never fails a
    finished sweep.
    """

    def __init__(self, store_path: str | os.PathLike) -> None:
        import subprocess

        self.store = str(store_path)
        logger.info("writing the report")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sweep.report", "-q", self.store],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def cancel(self) -> None:
        """Stop the report (the sweep was interrupted as it started); ``wait`` then says
        "interrupted"."""
        self._proc.kill()

    def wait(self) -> str:
        """Wait for the report: "written", "failed" (logged) or "interrupted" (Ctrl-C, which
        reaches the child too: it shares the terminal's process group)."""
        import subprocess

        from sweep import interrupts

        try:
            while True:
                # A signal's KeyboardInterrupt can be swallowed (raised inside a weakref
                # callback or a __del__, which Python reports as "Exception ignored"): the
                # signal itself is remembered, so the wait also stops on that state.
                if interrupts.received() is not None:
                    raise KeyboardInterrupt
                try:
                    out, err = self._proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except KeyboardInterrupt:
            self._proc.kill()
            self._proc.wait()
            out, err = "", ""
        code = self._proc.returncode
        lines = [line for line in err.splitlines() if line.strip()]
        if code == 0:
            for line in lines:  # the child's warnings, in the sweep's log
                logger.warning("report: %s", line)
            logger.info("report: %s", out.strip().splitlines()[-1])
            return "written"
        if code in (-signal.SIGINT, -signal.SIGKILL, 130) or "KeyboardInterrupt" in err:
            logger.warning("report interrupted; write it with: python -m sweep.report %s",
                           self.store)
            return "interrupted"
        logger.warning("report not written: %s", lines[-1] if lines else f"exit code {code}")
        return "failed"
