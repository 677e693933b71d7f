"""Classification: one sequence (or a pair) per example, one class per example.

Canonical example: ``{"text": [first, second?], "label": class index}``. Features: the
tokenized text, ``labels`` the class index. Head: ``AutoModelForSequenceClassification`` with the
task's label count. Score: accuracy of the argmax class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raystilts.kinds.base import (
    Columns,
    EvalContext,
    Features,
    Kind,
    argmax_accuracy,
    fixture_rng,
    fixture_sentence,
    made_up_task,
)
from raystilts.tasks.catalog import TaskSpec

__all__ = ["KIND", "Classification", "kept"]


def kept(enc: Any, *names: str) -> Columns:
    """The columns ``names`` of a tokenizer's output that it produced, as lists."""
    return {n: list(enc[n]) for n in names if n in enc}


class Classification(Kind):
    name = "classification"
    auto_head = "AutoModelForSequenceClassification"
    labels_from_task = True

    def featurize(
        self,
        task: TaskSpec,
        examples: Sequence[dict[str, Any]],
        tokenizer: Any,
        *,
        max_length: int,
        split: str,
    ) -> Columns:
        width = len(examples[0]["text"]) if examples else 1
        columns = [[ex["text"][i] for ex in examples] for i in range(width)]
        enc = tokenizer(*columns, truncation=True, max_length=max_length)
        return {
            **kept(enc, "input_ids", "token_type_ids"),
            "labels": [int(ex["label"]) for ex in examples],
        }

    def evaluate(
        self,
        ev: EvalContext,
        task: TaskSpec,
        feats: Features,
        lang: str,
        dev: Mapping[str, float],
    ) -> dict[str, float]:
        return argmax_accuracy(ev, feats)

    def fixture_task(self) -> TaskSpec:
        return made_up_task("k_pair", self.name, "accuracy", labels=("no", "yes"))

    def fixture_examples(
        self, task: TaskSpec, split: str, lang: str, *, n: int
    ) -> list[dict[str, Any]]:
        rng = fixture_rng(task, split, lang)
        return [
            {
                "text": [" ".join(fixture_sentence(rng, 5)), " ".join(fixture_sentence(rng, 4))],
                "label": i % 2,
            }
            for i in range(n)
        ]


KIND = Classification()
