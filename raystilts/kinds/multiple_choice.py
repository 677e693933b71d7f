"""Multiple choice: a context and C choices per example, one right choice.

Canonical example: ``{"context": str, "choices": [str] * C, "label": choice index}``.
Features: one (context, choice) sequence per choice, ``input_ids`` (C, T) per example; a batch
pads every choice to the longest choice of the batch, ``(B, C, T)``. Head:
``AutoModelForMultipleChoice``, or for decoder-only families, which have no such class, a
one-logit sequence classifier over each (context, choice) (:class:`ChoiceScorer`). Score:
accuracy of the argmax choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from raystilts.kinds.base import (
    Batch,
    Columns,
    EvalContext,
    Features,
    Kind,
    argmax_accuracy,
    fixture_rng,
    fixture_sentence,
    made_up_task,
    pad,
)
from raystilts.tasks.catalog import TaskSpec

__all__ = ["KIND", "ChoiceScorer", "MultipleChoice"]


class ChoiceScorer(nn.Module):
    """Multiple choice for families without ``AutoModelForMultipleChoice`` (decoder-only:
    Llama, GPT-2, Qwen...): a one-logit ``AutoModelForSequenceClassification`` scores every
    (context, choice) sequence (at its last non-pad token, as the class does) and a softmax over
    each example's choices gives the loss, exactly like the encoders' multiple-choice heads.

    Takes and returns what ``AutoModelForMultipleChoice`` does: ``input_ids`` (B, C, T),
    ``attention_mask`` (B, C, T), optional ``labels`` (B,); ``logits`` (B, C) and ``loss``.
    """

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    @property
    def config(self) -> Any:
        return self.scorer.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        **kw: Any,
    ) -> Any:
        from transformers.modeling_outputs import MultipleChoiceModelOutput

        b, c, t = input_ids.shape
        flat = {k: v.reshape(b * c, t) for k, v in kw.items() if v is not None}
        scores = self.scorer(
            input_ids=input_ids.reshape(b * c, t),
            attention_mask=attention_mask.reshape(b * c, t),
            **flat,
        ).logits  # (B*C, 1)
        logits = scores.reshape(b, c)  # (B, C)
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return MultipleChoiceModelOutput(loss=loss, logits=logits)

    def save_pretrained(self, path: str) -> None:
        self.scorer.save_pretrained(path)  # type: ignore[operator]


class MultipleChoice(Kind):
    name = "multiple_choice"
    grouped = True

    def featurize(
        self,
        task: TaskSpec,
        examples: Sequence[dict[str, Any]],
        tokenizer: Any,
        *,
        max_length: int,
        split: str,
    ) -> Columns:
        firsts = [ex["context"] for ex in examples for _ in ex["choices"]]
        seconds = [c for ex in examples for c in ex["choices"]]
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length) if firsts else {}
        out: Columns = {"input_ids": [], "labels": [int(ex["label"]) for ex in examples]}
        names = [n for n in ("input_ids", "token_type_ids") if n in enc]
        for n in names:
            out[n] = []
        i = 0
        for ex in examples:  # regroup: (C, T) per example
            c = len(ex["choices"])
            for n in names:
                out[n].append(list(enc[n][i : i + c]))
            i += c
        return out

    def collate(
        self, feats: Features, idx: Sequence[int], *, pad_id: int, mlm: Any = None
    ) -> Batch:
        width = max(feats.length(i) for i in idx)
        choices = {len(feats.input_ids[i]) for i in idx}
        if len(choices) != 1:
            raise ValueError(f"a multiple-choice batch mixes {sorted(choices)} choices per example")
        flat = [c for i in idx for c in feats.input_ids[i]]
        shape = (len(idx), choices.pop(), width)  # (B, C, T)
        out = {
            "input_ids": pad(flat, width, pad_id).reshape(shape),
            "attention_mask": pad([[1] * len(c) for c in flat], width, 0).reshape(shape),
        }
        if "token_type_ids" in feats.columns:
            tt = [c for i in idx for c in feats.columns["token_type_ids"][i]]
            out["token_type_ids"] = pad(tt, width, 0).reshape(shape)
        if feats.labels:
            out["labels"] = torch.tensor([feats.labels[i] for i in idx], dtype=torch.long)
        return out

    def build_head(
        self, base_model: str, config: Any, task: TaskSpec, *, retrieval_layer: int | None = None
    ) -> nn.Module:
        import transformers as tf
        from transformers.models.auto import modeling_auto

        if type(config) in modeling_auto.MODEL_FOR_MULTIPLE_CHOICE_MAPPING:
            model: nn.Module = tf.AutoModelForMultipleChoice.from_pretrained(
                base_model, config=config
            )
            return model
        config.num_labels = 1
        scorer = tf.AutoModelForSequenceClassification.from_pretrained(base_model, config=config)
        return ChoiceScorer(scorer)

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
        return made_up_task("k_mc", self.name, "accuracy")

    def fixture_examples(
        self, task: TaskSpec, split: str, lang: str, *, n: int
    ) -> list[dict[str, Any]]:
        rng = fixture_rng(task, split, lang)
        return [
            {
                "context": " ".join(fixture_sentence(rng, 6)),
                "choices": [" ".join(fixture_sentence(rng, rng.randint(1, 5))) for _ in range(3)],
                "label": i % 3,
            }
            for i in range(n)
        ]


KIND = MultipleChoice()
