"""Analysis of the runs: the only package that imports polars (`tables`).
"""

from __future__ import annotations

from raystilts.analysis.tables import (
    DISTANCE_KINDS,
    GROUPINGS,
    METHODS,
    Analysis,
    LanguageLike,
    RunLike,
    TargetResult,
    TaskLike,
    analyze,
    benchmark_scores,
    best_chains,
    distance_correlations,
    gains,
    language_groups,
    ordering_effects,
    render,
    render_analysis,
    runs_to_long,
    selection_comparison,
    translation_effects,
    unknown_languages,
)

__all__ = [
    "DISTANCE_KINDS",
    "GROUPINGS",
    "METHODS",
    "Analysis",
    "LanguageLike",
    "RunLike",
    "TargetResult",
    "TaskLike",
    "analyze",
    "benchmark_scores",
    "best_chains",
    "distance_correlations",
    "gains",
    "language_groups",
    "ordering_effects",
    "render",
    "render_analysis",
    "runs_to_long",
    "selection_comparison",
    "translation_effects",
    "unknown_languages",
]
