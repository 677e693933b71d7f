"""Benchmark metrics as pure numpy functions (scores are fractions in [0, 1]).
"""

from __future__ import annotations

from raystilts.metrics.scores import (
    MLQA_LANGUAGES,
    accuracy,
    bucc_candidates,
    bucc_scores,
    cosine_similarity,
    map_at_k,
    normalize_answer,
    qa_style,
    score,
    squad_scores,
    tagging_scheme,
    tagging_scores,
    tatoeba_accuracy,
    token_accuracy,
)

__all__ = [
    "MLQA_LANGUAGES",
    "accuracy",
    "bucc_candidates",
    "bucc_scores",
    "cosine_similarity",
    "map_at_k",
    "normalize_answer",
    "qa_style",
    "score",
    "squad_scores",
    "tagging_scheme",
    "tagging_scores",
    "tatoeba_accuracy",
    "token_accuracy",
]
