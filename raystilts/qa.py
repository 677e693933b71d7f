"""Compatibility: ``raystilts.qa`` moved to :mod:`raystilts.data.qa`."""

from __future__ import annotations

from raystilts.data.qa import (
    MAX_QUESTION_LENGTH,
    decode_answers,
    featurize_qa,
)

__all__ = [
    "MAX_QUESTION_LENGTH",
    "decode_answers",
    "featurize_qa",
]
