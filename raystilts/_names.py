"""Names that :mod:`raystilts.analysis` writes and :mod:`raystilts.report` reads.

Standard library only: the report imports these without pulling in polars.
"""

from __future__ import annotations

from typing import Literal

SOURCE_LANG = "en"  # the language every chain is trained and selected on
ALL: Literal["all"] = "all"  # the grouping (and group) of every language together
# language groupings besides "lang" (one row per language) and "all"
GROUPINGS = ("resource", "family", "script", "distance")
BEST_SYSTEM = "best chain per target"  # benchmark system: each target's selected chain
BASELINE_SYSTEM = "baseline"  # benchmark system: each target's selected empty chain
