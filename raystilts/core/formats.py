"""Names that :mod:`raystilts.analysis.tables` writes and :mod:`raystilts.report.render` reads, and the
number formats both print with (scores are fractions, shown x100; None and NaN print "-").

Standard library only: the report imports these without pulling in polars.
"""

from __future__ import annotations

import math
from typing import Literal

SOURCE_LANG = "en"  # the language every chain is trained and selected on
ALL: Literal["all"] = "all"  # the grouping (and group) of every language together
# language groupings besides "lang" (one row per language) and "all"
GROUPINGS = ("resource", "family", "script", "distance")
BEST_SYSTEM = "best chain per target"  # benchmark system: each target's selected chain
BASELINE_SYSTEM = "baseline"  # benchmark system: each target's selected empty chain


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def pct(value: float | None) -> str:
    """A score x100: ``0.523`` -> ``52.3``."""
    return "-" if _missing(value) else f"{100 * value:.1f}"  # type: ignore[operator]


def signed(value: float | None) -> str:
    """A gain x100 with its sign: ``0.074`` -> ``+7.4``."""
    return "-" if _missing(value) else f"{100 * value:+.1f}"  # type: ignore[operator]


def num(value: float | None) -> str:
    """A plain statistic (a correlation): ``-0.934`` -> ``-0.93``."""
    return "-" if _missing(value) else f"{value:+.2f}"


def p_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def ci(low: float | None, high: float | None) -> str:
    """An interval of gains x100: ``[+2.7, +5.1]``."""
    if _missing(low) or _missing(high):
        return "-"
    return f"[{100 * low:+.1f}, {100 * high:+.1f}]"  # type: ignore[operator]
