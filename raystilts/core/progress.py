"""One live line per running trial, on the driver, each time the trial reports.

    tracker = TrialProgress(target="mini_xnli", metric="dev/mini_xnli/en/accuracy", total=100)
    print(tracker.line("t1", "mini_mnli>mini_xnli#0", {"target_step": 25, ...}))
    # [mini_xnli] mini_mnli>mini_xnli#0   target 25/100  en dev 61.2  ~40s left

A trial reports during its target phase (every ``eval_every`` steps); the time left is the
target phase's rate since the trial's first report, so the intermediate phases (which report
nothing until the chain ends) do not inflate it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from raystilts.core.schema import parse_metric_key

__all__ = ["Bar", "TrialProgress"]


@dataclass
class TrialProgress:
    """Progress of the running trials of one target (driver side, no Ray)."""

    target: str
    metric: str  # the selection key, e.g. dev/mini_xnli/en/accuracy
    total: int  # target steps of a trial
    clock: Callable[[], float] = time.monotonic
    first: dict[str, tuple[float, float]] = field(default_factory=dict)  # trial -> (t, step)

    def line(self, trial_id: str, name: str, result: Mapping[str, object]) -> str | None:
        """The line for one report of ``trial_id``; None for a report without a step."""
        step = result.get("target_step")
        if not isinstance(step, (int, float)) or step >= self.total:
            return None  # the final report: the callback prints the trial's end line
        now = self.clock()
        t0, s0 = self.first.setdefault(trial_id, (now, float(step)))
        left = "time left ?"
        if step > s0 and now > t0:
            left = f"~{(now - t0) / (step - s0) * (self.total - step):.0f}s left"
        score = result.get(self.metric)
        shown = (
            f"{_lang(self.metric)} dev {100 * score:.1f}" if isinstance(score, float) else ""
        )
        return f"  [{self.target}] {name:38s} target {step:.0f}/{self.total}  {shown:14s} {left}"

    def forget(self, trial_id: str) -> None:
        self.first.pop(trial_id, None)


@dataclass
class Bar:
    """A one-line progress bar for long first-run work (pretraining, tokenization).

    On a terminal it redraws one line in place; in a log (not a TTY) it prints a line at each
    tenth, so a CI log shows progress without pages of redraws.

        bar = Bar("tokenizing", total=60)
        for _ in range(60): bar.advance()
        bar.close()
    """

    label: str
    total: int
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    done: int = 0
    suffix: str = ""
    _shown_tenth: int = -1
    _t0: float = field(default_factory=time.monotonic)

    def advance(self, n: int = 1, *, suffix: str = "") -> None:
        self.done = min(self.total, self.done + n)
        self.suffix = suffix or self.suffix
        tenth = self.done * 10 // max(1, self.total)
        if self.stream.isatty():
            self.stream.write("\r" + self._text())
            self.stream.flush()
        elif tenth != self._shown_tenth:
            self._shown_tenth = tenth
            print(self._text(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()

    def _text(self) -> str:
        width = 24
        filled = width * self.done // max(1, self.total)
        bar = "#" * filled + "." * (width - filled)
        took = time.monotonic() - self._t0
        tail = f" {self.suffix}" if self.suffix else ""
        return f"  {self.label} [{bar}] {self.done}/{self.total} ({took:.0f}s){tail}"


def _lang(metric: str) -> str:
    """The language of a metric key (``dev/xnli/en/accuracy`` -> ``en``)."""
    parsed = parse_metric_key(metric)
    return parsed.lang if parsed else metric
