"""Compatibility: extractive QA windows and span decoding moved to :mod:`raystilts.kinds.qa`,
the module of the QA task kind, which owns them with its featurization, head and scoring."""

from __future__ import annotations

from raystilts.kinds.qa import (
    MAX_QUESTION_LENGTH,
    decode_answers,
    featurize_qa,
    max_context_masks,
)

__all__ = [
    "MAX_QUESTION_LENGTH",
    "decode_answers",
    "featurize_qa",
    "max_context_masks",
]
