"""Metrics as pure functions on label arrays (numpy), one per task type.

>>> accuracy([0, 1, 2], [0, 1, 1])
0.6666666666666666
>>> token_accuracy([[0, 1, -100]], [[0, 2, 1]])
0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["accuracy", "score", "token_accuracy"]

IGNORE_INDEX = -100


def accuracy(gold: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray) -> float:
    g, p = np.asarray(gold), np.asarray(pred)
    if g.shape != p.shape:
        raise ValueError(f"gold and predictions differ in shape: {g.shape} vs {p.shape}")
    return float((g == p).mean()) if g.size else float("nan")


def token_accuracy(gold: Sequence[Sequence[int]], pred: Sequence[Sequence[int]]) -> float:
    """Accuracy over scored tokens (gold != -100): POS accuracy, as UD tagging reports it."""
    g = np.concatenate([np.asarray(x) for x in gold]) if len(gold) else np.empty(0, dtype=int)
    p = np.concatenate([np.asarray(x) for x in pred]) if len(pred) else np.empty(0, dtype=int)
    keep = g != IGNORE_INDEX
    return accuracy(g[keep], p[keep])


def score(kind: str, gold: list, pred: list) -> dict[str, float]:  # type: ignore[type-arg]
    """All metrics of a task type, keyed by metric name."""
    if kind == "tagging":
        return {"accuracy": token_accuracy(gold, pred)}
    if kind == "classification":
        return {"accuracy": accuracy(gold, pred)}
    raise ValueError(f"no metric for task type {kind!r}")
