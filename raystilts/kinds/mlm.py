"""Masked language modelling: an intermediate phase on raw text (Wikipedia).

Canonical example: ``{"text": str}``. Features: the tokenized text and its special-tokens
mask; masking happens per batch (:func:`mlm_collator`, transformers'
``DataCollatorForLanguageModeling``), so every epoch masks differently. Head:
``AutoModelForMaskedLM``. Score: accuracy on masked tokens, with one fixed masking (seed 0) so
phases compare.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raystilts.kinds.base import (
    IGNORE_INDEX,
    Batch,
    Columns,
    EvalContext,
    Features,
    Kind,
    collate_rows,
    fixture_rng,
    fixture_sentence,
    made_up_task,
)
from raystilts.kinds.classification import kept
from raystilts.tasks.catalog import TaskSpec

__all__ = ["KIND", "MLM_PROBABILITY", "MaskedLM", "mlm_collator"]

MLM_PROBABILITY = 0.15  # BERT's and XLM-R's masking rate


def mlm_collator(tokenizer_dir: Path, *, seed: int) -> Any:
    """transformers' ``DataCollatorForLanguageModeling`` (15% of tokens; of those 80% masked,
    10% random, 10% kept) with its own seeded generator, for collating MLM rows."""
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    collator = DataCollatorForLanguageModeling(
        tokenizer=tok, mlm_probability=MLM_PROBABILITY, seed=seed
    )
    collator.create_rng()  # we call it in this process, outside a DataLoader
    return collator


class MaskedLM(Kind):
    name = "mlm"
    auto_head = "AutoModelForMaskedLM"

    def featurize(
        self,
        task: TaskSpec,
        examples: Sequence[dict[str, Any]],
        tokenizer: Any,
        *,
        max_length: int,
        split: str,
    ) -> Columns:
        enc = tokenizer(
            [ex["text"] for ex in examples],
            truncation=True,
            max_length=max_length,
            return_special_tokens_mask=True,
        )
        return kept(enc, "input_ids", "special_tokens_mask")

    def masker(self, tokenizer_dir: Path, *, seed: int) -> Any:
        return mlm_collator(tokenizer_dir, seed=seed)

    def collate(
        self, feats: Features, idx: Sequence[int], *, pad_id: int, mlm: Any = None
    ) -> Batch:
        """Masked by ``mlm`` (:func:`mlm_collator`), which also makes the ``labels``; without
        it the rows are plain inputs."""
        if mlm is None:
            return collate_rows(feats, idx, pad_id=pad_id)
        stm = feats.columns.get("special_tokens_mask")
        rows = [
            {"input_ids": feats.input_ids[i], **({"special_tokens_mask": stm[i]} if stm else {})}
            for i in idx
        ]
        batch = mlm(rows)
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    def evaluate(
        self,
        ev: EvalContext,
        task: TaskSpec,
        feats: Features,
        lang: str,
        dev: Mapping[str, float],
    ) -> dict[str, float]:
        collator = mlm_collator(ev.tokenizer_dir, seed=0)
        correct = total = 0
        # the logits are (B, T, vocabulary): a training-sized batch, not an evaluation-sized one
        for _, batch, out in ev.outputs(feats, batch_size=ev.train_batch_size, mlm=collator):
            labels = batch["labels"]
            keep = labels != IGNORE_INDEX
            correct += int((out.logits.argmax(-1).cpu()[keep] == labels[keep]).sum())
            total += int(keep.sum())
        return {"accuracy": correct / total if total else math.nan}

    def fixture_task(self) -> TaskSpec:
        return made_up_task(
            "k_mlm", self.name, "accuracy", train_languages=("en", "de"), is_target=False
        )

    def fixture_examples(
        self, task: TaskSpec, split: str, lang: str, *, n: int
    ) -> list[dict[str, Any]]:
        rng = fixture_rng(task, split, lang)
        return [{"text": " ".join(fixture_sentence(rng, rng.randint(4, 12)))} for _ in range(n)]


KIND = MaskedLM()
