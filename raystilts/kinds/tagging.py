"""Tagging: one tag per word (POS, NER, CCG supertags).

Canonical example: ``{"tokens": [word], "tags": [tag name]}``. Features: ``labels`` on the
first subword of each word, :data:`~raystilts.kinds.base.IGNORE_INDEX` elsewhere; a batch pads
them with it. Head: ``AutoModelForTokenClassification``. Score: the tags of first subwords as
names; NER-style (IOB2) tag sets entity-level F1/precision/recall (as seqeval), POS-style tag
sets F1 and accuracy as XTREME reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raystilts.kinds.base import (
    IGNORE_INDEX,
    Batch,
    Columns,
    EvalContext,
    Features,
    Kind,
    fixture_rng,
    fixture_sentence,
    made_up_task,
    pad,
    sequence_inputs,
)
from raystilts.kinds.classification import kept
from raystilts.tasks.catalog import TaskSpec

__all__ = ["KIND", "Tagging"]


class Tagging(Kind):
    name = "tagging"
    auto_head = "AutoModelForTokenClassification"
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
        enc = tokenizer(
            [ex["tokens"] for ex in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
        )
        tag_id = {t: i for i, t in enumerate(task.labels)}
        labels: list[list[int]] = []
        for i, ex in enumerate(examples):
            seen: set[int] = set()
            row = []
            for w in enc.word_ids(i):
                if w is None or w in seen:  # special tokens and non-first subwords are not scored
                    row.append(IGNORE_INDEX)
                else:
                    seen.add(w)
                    row.append(tag_id[ex["tags"][w]])
            labels.append(row)
        return {**kept(enc, "input_ids", "token_type_ids"), "labels": labels}

    def collate(
        self, feats: Features, idx: Sequence[int], *, pad_id: int, mlm: Any = None
    ) -> Batch:
        out = sequence_inputs(feats, idx, pad_id=pad_id)
        if feats.labels:
            width = out["input_ids"].shape[1]
            out["labels"] = pad([feats.labels[i] for i in idx], width, IGNORE_INDEX)
        return out

    def evaluate(
        self,
        ev: EvalContext,
        task: TaskSpec,
        feats: Features,
        lang: str,
        dev: Mapping[str, float],
    ) -> dict[str, float]:
        from raystilts.metrics import scores as metrics_lib

        gold: list[list[str]] = []
        pred: list[list[str]] = []
        for _, batch, out in ev.outputs(feats):
            predicted = out.logits.argmax(-1).cpu()  # (B, T)
            for row, labels in enumerate(batch["labels"]):
                keep = labels != IGNORE_INDEX  # first subwords
                gold.append([task.labels[i] for i in labels[keep].tolist()])
                pred.append([task.labels[i] for i in predicted[row][keep].tolist()])
        scheme = metrics_lib.tagging_scheme(task.labels)
        scheme = ev.pos_scheme if scheme != "iob2" else scheme
        scores = metrics_lib.tagging_scores(gold, pred, scheme=scheme)
        keys = ("f1", "precision", "recall") if scheme == "iob2" else ("f1", "accuracy")
        return {k: float(scores[k]) for k in keys}

    def fixture_task(self) -> TaskSpec:
        return made_up_task(
            "k_ner", self.name, "f1", labels=("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
        )

    def fixture_examples(
        self, task: TaskSpec, split: str, lang: str, *, n: int
    ) -> list[dict[str, Any]]:
        rng = fixture_rng(task, split, lang)
        rows = []
        for _ in range(n):
            tokens = fixture_sentence(rng, rng.randint(3, 8))
            tags = [task.labels[rng.randrange(len(task.labels))] for _ in tokens]
            # valid IOB2: an I- follows its B- (tags without I- are left as drawn)
            tags = [
                "O" if t.startswith("I-") and (j == 0 or tags[j - 1][2:] != t[2:]) else t
                for j, t in enumerate(tags)
            ]
            rows.append({"tokens": tokens, "tags": tags})
        return rows


KIND = Tagging()
