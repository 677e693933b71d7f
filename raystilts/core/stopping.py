"""Clean stops: SIGTERM and Ctrl-C end a search the way ``--resume`` expects.

    with stopping.installed() as stops:        # the CLI, around a search
        run_search(space, run=run)              # search/driver.py wraps each tuner.fit() in tune_run()

SIGTERM is what ``ray job stop``, Slurm and spot preemption send. Without a handler of our own,
``ray.init`` installs one that calls ``sys.exit`` from inside the driver, which aborts it with a
C++ stack dump (exit 134) and leaves the MLflow runs RUNNING. Here both signals do the same:

- inside a Tune run (:func:`tune_run`), the first signal asks Tune to stop as its own SIGUSR1
  handler does: Tune saves its experiment state one last time (so ``--resume`` continues the
  running trials), stops them, and the MLflow callback ends their runs KILLED; when ``fit``
  returns, :class:`SearchInterrupted` is raised so the remaining targets do not start;
- outside a Tune run (pretraining, tokenization, warm start) or on a second signal,
  :class:`SearchInterrupted` is raised at once.

``SearchInterrupted`` is a ``KeyboardInterrupt``, so every ``except KeyboardInterrupt`` on the
way up (the search's parent run ends KILLED) treats both signals alike. The exit code the CLI
returns is the shell's convention, 128 + the signal number: 143 for SIGTERM, 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["SearchInterrupted", "StopSignals", "installed", "reclaim", "tune_run"]

HANDLED = (signal.SIGTERM, signal.SIGINT)
_TUNE_LOGGER = "ray.tune.tune"  # the module logger of tune.run(), which Tuner.fit() calls


class SearchInterrupted(KeyboardInterrupt):
    """A search stopped by a signal; ``signum`` says which."""

    def __init__(self, signum: int, *, tune_started: bool) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.tune_started = tune_started  # False: nothing for --resume to continue yet

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by it."""
        return 128 + self.signum


def _no_tune_yet(signum: int, frame: FrameType | None) -> None:
    """SIGUSR1's handler until Tune installs its own: marks "Tune has not started"."""


class StopSignals:
    """The handler for SIGTERM and SIGINT of one search; see the module docstring."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.tune_started = False  # some Tune run began: its state can be resumed
        self.in_tune = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in HANDLED:
            self._previous.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, self.handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def interrupted(self) -> SearchInterrupted:
        signum = self.received if self.received is not None else signal.SIGINT
        return SearchInterrupted(signum, tune_started=self.tune_started)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        tune_stop: Callable[[int, FrameType | None], Any] | Any = signal.getsignal(signal.SIGUSR1)
        if first and self.in_tune and callable(tune_stop) and tune_stop is not _no_tune_yet:
            print(
                f"\nraystilts: {signal.Signals(signum).name}: saving the search state and "
                "stopping the running trials (send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
            # Tune's own lines ("Stop signal received", "Resume with Tuner.restore(...)") would
            # contradict ours: the way to continue is `raystilts search --resume`
            logging.getLogger(_TUNE_LOGGER).setLevel(logging.ERROR)
            tune_stop(signal.SIGUSR1, frame)  # Tune's documented stop signal; fit() returns
            return
        raise self.interrupted()

    @contextlib.contextmanager
    def tune_run(self) -> Iterator[None]:
        """Around ``tuner.fit()``: a signal stops Tune gracefully, then raises on the way out."""
        self.install()  # again: ray.init replaced our SIGTERM handler with one that aborts
        # Tune's own SIGINT handler would swallow Ctrl-C and let the next target start
        saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        saved_usr1 = signal.signal(signal.SIGUSR1, _no_tune_yet)
        saved_level = logging.getLogger(_TUNE_LOGGER).level
        self.in_tune, self.tune_started = True, True
        try:
            yield
        except Exception as e:
            if self.received is None:
                raise
            # Ctrl-C in a terminal reaches Ray's own processes too; what fails while stopping
            # is part of the stop, not a new error for the user
            raise self.interrupted() from e
        finally:
            self.in_tune = False
            signal.signal(signal.SIGUSR1, saved_usr1)
            logging.getLogger(_TUNE_LOGGER).setLevel(saved_level)
            if saved_env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env
        if self.received is not None:
            raise self.interrupted()


_ACTIVE: list[StopSignals] = []  # signal handlers are per process: at most one search's


@contextlib.contextmanager
def installed() -> Iterator[StopSignals]:
    """SIGTERM and SIGINT stop the search run inside; the previous handlers come back after.

    Only the main thread may install signal handlers; elsewhere this changes nothing.
    """
    stops = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    stops.install()
    _ACTIVE.append(stops)
    try:
        yield stops
    finally:
        _ACTIVE.remove(stops)
        stops.uninstall()


def reclaim() -> None:
    """Put our handlers back (after ``ray.init``, which installs its own SIGTERM handler)."""
    if _ACTIVE:
        _ACTIVE[-1].install()


def tune_run() -> contextlib.AbstractContextManager[None]:
    """:meth:`StopSignals.tune_run` of the installed handler; nothing without one (a library
    caller of ``run_search`` keeps its own signal handling)."""
    return _ACTIVE[-1].tune_run() if _ACTIVE else contextlib.nullcontext()
