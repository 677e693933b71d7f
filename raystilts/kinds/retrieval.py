"""Retrieval: queries find their gold candidates by embedding similarity, without training.

Canonical example: ``{"role": "query" | "candidate", "id", "text", "gold": [candidate ids]}``.
Features: one sequence per row with its ``role``, ``id``, ``gold`` and ``text``. Head: the bare
encoder, mean-pooled over one hidden layer (:class:`Embedder`). Score: the task's metric picks
the procedure (:data:`PROCEDURES`): ``accuracy`` Tatoeba (nearest candidate by cosine), ``f1``
BUCC (ratio margin; the threshold of this language's dev split applied to test, recorded as
``threshold``), ``map@20`` Mewsli-X and LAReQA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from raystilts.kinds.base import (
    Columns,
    EvalContext,
    Features,
    Kind,
    fixture_rng,
    fixture_sentence,
    made_up_task,
)
from raystilts.metrics import scores as metrics_lib
from raystilts.tasks.catalog import TaskSpec

__all__ = ["KIND", "PROCEDURES", "Embedder", "Retrieval", "retrieval_layer"]


def retrieval_layer(num_layers: int, layer: int | None) -> int:
    """Index into ``hidden_states`` (0 = embeddings, ``num_layers`` = last layer): the middle
    layer by default, as XTREME pools for BUCC and Tatoeba; a negative ``layer`` counts from
    the top (``-1`` = last layer)."""
    if layer is None:
        return num_layers // 2
    index = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= index <= num_layers:
        raise ValueError(
            f"retrieval_layer {layer} is outside the model's layers 0..{num_layers} "
            f"(or -1..-{num_layers + 1} from the top)"
        )
    return index


class Embedder(nn.Module):
    """A bare encoder that returns one vector per sequence: the mean over non-pad tokens of
    hidden layer ``layer`` (``forward(...) -> (B, H)``). Used by retrieval, which trains
    nothing: its inputs are compared by cosine similarity."""

    base_model_prefix = "model"

    def __init__(self, model: nn.Module, *, layer: int | None = None) -> None:
        super().__init__()
        self.model = model
        config: Any = model.config
        layers = int(config.num_hidden_layers)
        self.layer = retrieval_layer(layers, layer)

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kw
        )
        hidden = out.hidden_states[self.layer]  # (B, T, H)
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, H)

    def save_pretrained(self, path: str) -> None:
        self.model.save_pretrained(path)  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class Embedded:
    """One (split, language) embedded: queries and candidates with their ids and gold ids."""

    queries: list[int]  # row indices
    cands: list[int]
    q_emb: np.ndarray  # (Q, H)
    c_emb: np.ndarray  # (N, H)
    ids: list[str]
    gold: list[list[str]]
    texts: list[str] | None

    @property
    def cand_ids(self) -> list[str]:
        return [self.ids[i] for i in self.cands]


def _map_at_20(e: Embedded, dev: Mapping[str, float]) -> dict[str, float]:
    gold_sets = [e.gold[i] for i in e.queries]
    return {"map@20": metrics_lib.map_at_k(e.q_emb, e.c_emb, e.cand_ids, gold_sets, k=20)}


def _bucc(e: Embedded, dev: Mapping[str, float]) -> dict[str, float]:
    pairs = {(e.ids[i], g) for i in e.queries for g in e.gold[i]}
    scores = metrics_lib.bucc_scores(
        e.q_emb,
        [e.ids[i] for i in e.queries],
        e.c_emb,
        e.cand_ids,
        pairs,
        threshold=dev.get("threshold"),
        # repeated sentences are dropped, as XTREME
        src_texts=None if e.texts is None else [e.texts[i] for i in e.queries],
        tgt_texts=None if e.texts is None else [e.texts[i] for i in e.cands],
    )
    return {k: float(v) for k, v in scores.items()}


def _tatoeba(e: Embedded, dev: Mapping[str, float]) -> dict[str, float]:
    where = {c: j for j, c in enumerate(e.cand_ids)}
    scored = [j for j, i in enumerate(e.queries) if e.gold[i]]
    english = [where[e.gold[e.queries[j]][0]] for j in scored]
    # as XTREME: each English sentence searches the other language's sentences
    return {
        "accuracy": metrics_lib.tatoeba_accuracy(
            e.c_emb[english], e.q_emb[scored], list(range(len(scored)))
        )
    }


# a retrieval task's metric -> its procedure
PROCEDURES: dict[str, Callable[[Embedded, Mapping[str, float]], dict[str, float]]] = {
    "map@20": _map_at_20,
    "f1": _bucc,
    "accuracy": _tatoeba,
}


class Retrieval(Kind):
    name = "retrieval"

    def featurize(
        self,
        task: TaskSpec,
        examples: Sequence[dict[str, Any]],
        tokenizer: Any,
        *,
        max_length: int,
        split: str,
    ) -> Columns:
        enc = tokenizer([ex["text"] for ex in examples], truncation=True, max_length=max_length)
        return {
            "input_ids": list(enc["input_ids"]),
            "role": [str(ex["role"]) for ex in examples],
            "id": [str(ex["id"]) for ex in examples],
            "gold": [[str(g) for g in ex.get("gold") or ()] for ex in examples],
            # BUCC mines over unique sentences and drops repeated ones, as XTREME: needs the texts
            "text": [str(ex["text"]).strip() for ex in examples],
        }

    def build_head(
        self, base_model: str, config: Any, task: TaskSpec, *, retrieval_layer: int | None = None
    ) -> nn.Module:
        from transformers import AutoModel

        return Embedder(AutoModel.from_pretrained(base_model, config=config), layer=retrieval_layer)

    def evaluate(
        self,
        ev: EvalContext,
        task: TaskSpec,
        feats: Features,
        lang: str,
        dev: Mapping[str, float],
    ) -> dict[str, float]:
        if task.metric not in PROCEDURES:
            raise ValueError(
                f"retrieval task {task.name!r}: metric {task.metric!r} has no procedure; "
                "use accuracy (Tatoeba), f1 (BUCC) or map@20"
            )
        emb = np.empty((len(feats), 0), dtype=np.float32)
        for idx, _, out in ev.outputs(feats):
            pooled = out.float().cpu().numpy()  # (B, H)
            if emb.shape[1] == 0:
                emb = np.zeros((len(feats), pooled.shape[1]), dtype=np.float32)
            emb[idx] = pooled
        role = feats.columns["role"]
        queries = [i for i, r in enumerate(role) if r == "query"]
        cands = [i for i, r in enumerate(role) if r == "candidate"]
        embedded = Embedded(
            queries=queries,
            cands=cands,
            q_emb=emb[queries],
            c_emb=emb[cands],
            ids=feats.columns["id"],
            gold=feats.columns["gold"],
            texts=feats.columns.get("text"),
        )
        return PROCEDURES[task.metric](embedded, dev)

    def fixture_task(self) -> TaskSpec:
        return made_up_task(
            "k_tatoeba", self.name, "accuracy", has_train=False, languages=("de", "fr")
        )

    def fixture_examples(
        self, task: TaskSpec, split: str, lang: str, *, n: int
    ) -> list[dict[str, Any]]:
        """Queries in ``lang`` with reversed-text candidates; the metric shapes the gold sets:
        BUCC-style (f1) leaves every fourth query without a pair, map@20 gives two."""
        rng = fixture_rng(task, split, lang)
        queries, cands = [], []
        for i in range(n):
            text = " ".join(fixture_sentence(rng, 5))
            gold = [f"c{i}"] if task.metric != "f1" or i % 4 != 0 else []
            if task.metric == "map@20":
                gold = [f"c{i}", f"c{(i + 1) % n}"]
            queries.append({"role": "query", "id": f"q{i}", "text": text, "gold": gold})
            cands.append({"role": "candidate", "id": f"c{i}", "text": text[::-1], "gold": []})
        return queries + cands


KIND = Retrieval()
