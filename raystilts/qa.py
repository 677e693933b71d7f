"""Compatibility: ``raystilts.qa`` moved to :mod:`raystilts.data.qa`."""

from __future__ import annotations

from raystilts.data.qa import (
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
