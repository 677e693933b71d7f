"""Best-checkpoint selection on English dev: the weights a chain reports are those of its best
evaluation point, not of its last step.

    best = BestCheckpoint()
    for step in eval_points:
        best.consider(step, dev_en_score, model)   # copies the weights only on a new best
    best.restore(model)                            # the kept weights back into the model
    best.step                                      # which step was kept (logged by the runner)

Why: the paper's recipe (jiant) and XTREME's baseline scripts evaluate English dev during target
training and report the checkpoint with the best English dev score; a run that reports its last
step instead scores whatever the learning-rate schedule ended on, which is lower and noisier when
a target overfits its small English training set. English dev only: target-language dev would
break strict zero-shot selection.

Memory: one CPU copy of the model's ``state_dict``, allocated at the first evaluation point and
overwritten in place (``Tensor.copy_``) on each new best, so selection never holds more than one
extra copy of the weights, on the host, whatever the number of evaluation points.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["CHECKPOINT_CHOICES", "BestCheckpoint", "CheckpointChoice"]

CheckpointChoice = Literal["best_en_dev", "last"]
#: ``training.checkpoint`` in a space: which target checkpoint a chain is scored with.
CHECKPOINT_CHOICES: tuple[CheckpointChoice, ...] = ("best_en_dev", "last")


class BestCheckpoint:
    """Keeps the weights of the best-scoring evaluation point (higher is better).

    Ties keep the earlier step, as jiant's and XTREME's ``result > best`` comparisons do. A NaN
    score never becomes the best (a diverged point is not a checkpoint to report).

    >>> m = nn.Linear(1, 1, bias=False)
    >>> best = BestCheckpoint()
    >>> _ = torch.nn.init.constant_(m.weight, 1.0); best.consider(10, 0.5, m)
    True
    >>> _ = torch.nn.init.constant_(m.weight, 2.0); best.consider(20, 0.4, m)
    False
    >>> best.restore(m), float(m.weight), best.step
    (True, 1.0, 10)
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self.score = -math.inf
        self._state: dict[str, torch.Tensor] | None = None

    def consider(self, step: int, score: float, model: nn.Module) -> bool:
        """Keep ``model``'s weights if ``score`` beats the best so far; True when it did."""
        if math.isnan(score) or (self.step is not None and score <= self.score):
            return False
        state = model.state_dict()
        if self._state is None:
            # one host copy, reused for every later best (no second copy is ever allocated)
            self._state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        else:
            for k, v in state.items():
                self._state[k].copy_(v.detach())
        self.step, self.score = step, float(score)
        return True

    def restore(self, model: nn.Module) -> bool:
        """Load the kept weights into ``model`` (same architecture); False when none is kept."""
        if self._state is None:
            return False
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(self._state[k])  # in place: device, dtype and DDP wrapping stay as they are
        return True
