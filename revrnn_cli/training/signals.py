"""Turn Ctrl-C / SIGTERM into "finish this step, save, exit" instead of losing the run.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread happens to
be, e.g. half-way through an optimizer step or inside ``torch.save``; the state left behind is not
safe to checkpoint. Schedulers (Slurm, Kubernetes) send SIGTERM and then SIGKILL after a grace
period, and SIGTERM's default action kills the process without saving anything.

:class:`GracefulStop` records the first signal and lets the training loop poll ``.requested`` at a
step boundary, where the state is consistent. A second signal means the user does not want to
wait, so it raises ``KeyboardInterrupt`` at once; the loop then abandons the step and saves the
state it had before it (:mod:`.loop`). Only inside :meth:`GracefulStop.protected` (the
parameter update and the checkpoint writes, which are short) is a second signal merely noted:
an update half applied, or a checkpoint half written, is the one state that cannot be saved.
The loop can also ask for a stop itself (:meth:`GracefulStop.request`), e.g. when stdout closed.

Under torchrun a worker gets every signal twice: Ctrl-C (or a scheduler's SIGTERM) reaches the
whole process group, and torchrun forwards what it received to its workers a moment later. So
there, a repeat of the same signal within ``duplicate_window`` seconds (default 2) of the first is
taken as that copy and ignored; torchrun itself kills the workers if they take longer than its
shutdown timeout (30 s). In a multi-process run the training loop all-reduces ``requested`` so that
every rank stops after the same step.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, Iterator

from ..console import err
from ..errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM

__all__ = ["GracefulStop"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_EXIT_CODES = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}


class GracefulStop:
    """Context manager: SIGINT/SIGTERM request a stop at the next step boundary.

    Usage::

        with GracefulStop() as stop:
            for step in ...:
                train_step()
                if stop.requested:
                    save_checkpoint(...)
                    raise typer.Exit(stop.exit_code)

    Handlers can only be installed from the main thread; elsewhere (e.g. a test runner thread) the
    context manager installs nothing and ``requested`` stays False. The previous handlers are
    restored on exit, also when the body raises.
    """

    def __init__(self, announce: bool = True, duplicate_window: float | None = None) -> None:
        self.requested: bool = False
        self.signum: int | None = None
        self.announce = announce  # print the "finishing the current step" line (rank 0 only under torchrun)
        if duplicate_window is None:
            duplicate_window = 2.0 if "TORCHELASTIC_RUN_ID" in os.environ else 0.0
        self.duplicate_window = duplicate_window
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}
        self._protected = 0
        self._code: int | None = None
        self.reason: str | None = None  # what asked for the stop, in words ("SIGINT received")

    @property
    def exit_code(self) -> int:
        """130 after SIGINT, 143 after SIGTERM (shell convention 128 + signal), that of
        :meth:`request`, or 0 if nothing asked for a stop."""
        if self._code is not None:
            return self._code
        if self.signum is None:
            return EXIT_OK
        return _EXIT_CODES.get(self.signum, 128 + int(self.signum))

    def request(self, exit_code: int, reason: str) -> None:
        """Ask for a stop at the next step boundary without a signal (the first reason wins)."""
        if not self.requested:
            self.requested, self._code, self.reason = True, exit_code, reason

    @contextmanager
    def protected(self) -> Iterator[None]:
        """A section that a second signal does not interrupt (it is noted; the stop follows)."""
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            if signum == self.signum and time.monotonic() - self._first_at < self.duplicate_window:
                return  # torchrun's forwarded copy of the signal this worker already got
            if self._protected:
                return  # the stop is already on its way, right after this section
            # this signal, not the first request, is why the run stops now, and what it exits with
            self.signum, self._code = signum, None
            self.reason = f"{signal.Signals(signum).name} received again"
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        self._first_at = time.monotonic()
        name = signal.Signals(signum).name
        self.reason = f"{name} received"
        if not self.announce:
            return
        err.print(f"revrnn: {name} received: finishing the current step, then saving "
                  "(press Ctrl-C again to stop at once, saving the state before this step)",
                  markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            # None means the previous handler was installed from C and cannot be reinstated from
            # python; the default action is the closest faithful choice.
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
