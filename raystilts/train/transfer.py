"""Warm start: rank intermediate tasks for a target before training anything.

    from raystilts.train.transfer import rank_intermediates
    ranking = rank_intermediates(model_dir=ws.model, store=ws.features, target=CATALOG["mini_xnli"],
                                 intermediates=[CATALOG[n] for n in ("mini_mnli", "mini_topic")],
                                 pad_id=ws.pad_id)
    ranking.order      # ('mini_mnli', 'mini_topic'): best first
    ranking.seconds    # wall cost of the estimate (model load and every forward pass)

The estimator is **TextEmb** (Vu et al., 2020, "Exploring and Predicting Transferability across
NLP Tasks", EMNLP, section 4.1): embed a task's training inputs with the frozen *base* model,
average them into one vector per task, and score an intermediate task by the cosine similarity
of its vector with the target's. Why this one:

* It needs only the base model. Estimators that score features with the target's labels
  (LogME, You et al., ICML 2021; LEEP; H-score) measure how well a *given* encoder suits the
  target: to rank intermediate tasks they need one encoder per intermediate task, i.e. the
  fine-tuning the warm start exists to avoid. On the base model alone they return one number
  for every candidate. Vu et al.'s stronger TaskEmb (Fisher information of a fine-tuned model)
  needs a fine-tuned model per task for the same reason.
* It is cheap and its cost is bounded: at most ``max_examples`` forward passes per task, no
  backward pass: 8 batches of 64 per task at the default 512 (on two CPU cores, seconds for the
  embedded model; for XLM-R large on one GPU, expected seconds per task, not yet measured).
* Vu et al. found TextEmb a useful (if weaker than TaskEmb) predictor of intermediate-task
  transfer, mostly through *domain* and *input format* similarity. That is what it measures
  here too: read the ranking as a prior for which chains to try first, not as a prediction of
  the gain. In particular it cannot tell two tasks with the same inputs and unrelated labels
  apart.

Differences from the paper: inputs are mean-pooled per example over non-pad tokens (special
tokens included) and the per-example vectors averaged, rather than averaging all tokens of the
dataset at once, so long examples do not dominate; and a seeded sample of ``max_examples``
stands in for the full training set, which bounds the cost for 400k-example tasks like MNLI.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from raystilts.data.features import Features, collate, eval_batches

if TYPE_CHECKING:
    import torch
    from torch import nn

    from raystilts.data.features import FeatureStore
    from raystilts.tasks.catalog import TaskSpec

__all__ = [
    "METHOD",
    "Ranking",
    "centroid",
    "cosine",
    "embed",
    "embed_with",
    "load_encoder",
    "rank_intermediates",
    "sample_indices",
    "task_inputs",
]

METHOD = "textemb-cosine"  # the name logged with a ranking (Vu et al. 2020, TextEmb)
EMBED_BATCH = 64  # examples per forward pass: small enough for XLM-R large at 128 tokens in fp32


@dataclass(frozen=True, slots=True, kw_only=True)
class Ranking:
    """Intermediate tasks scored for one target; ``order`` is best first (ties by name)."""

    target: str
    scores: dict[str, float]
    order: tuple[str, ...]
    seconds: float  # wall time of the whole estimate, model load included
    method: str


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors; 0.0 when either is all zeros.

    >>> cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0]))  # doctest: +ELLIPSIS
    0.7071...
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cosine of vectors with different shapes {a.shape} and {b.shape}")
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm > 0.0 else 0.0


def centroid(embeddings: np.ndarray) -> np.ndarray:
    """The task vector: the mean of per-example embeddings ``(N, H) -> (H,)``, in float64."""
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(
            f"centroid needs a non-empty (examples, hidden) array, got shape {embeddings.shape}"
        )
    return np.asarray(embeddings, dtype=np.float64).mean(axis=0)


def sample_indices(n: int, *, max_examples: int, seed: int) -> list[int]:
    """A seeded sample of ``min(n, max_examples)`` distinct indices, in increasing order."""
    if max_examples < 1:
        raise ValueError(f"max_examples must be at least 1, got {max_examples}")
    if n <= max_examples:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=max_examples, replace=False))


def load_encoder(model_dir: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen base encoder (no task head), in eval mode so dropout cannot vary results."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # an MLM checkpoint loads without its head: expected
    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(model_dir)
    model.eval()
    model.requires_grad_(False)
    return model.to(device)


def embed_with(
    model: nn.Module,
    feats: Features,
    *,
    max_examples: int = 512,
    pad_id: int,
    seed: int = 0,
    batch_size: int = EMBED_BATCH,
) -> np.ndarray:
    """:func:`embed` with an already loaded encoder (see :func:`load_encoder`)."""
    import torch

    if len(feats) == 0:
        raise ValueError("cannot embed an empty feature set: featurize the task's train split")
    idx = sample_indices(len(feats), max_examples=max_examples, seed=seed)
    plain = feats.first_sequences()  # any task type: one token sequence per row
    sample = Features(input_ids=[plain.input_ids[i] for i in idx], kind="plain")
    device = next(model.parameters()).device
    pieces: list[np.ndarray] = []
    order: list[int] = []  # sample rows in the length-sorted order the batches visit them
    with torch.no_grad():
        for rows in eval_batches(sample.lengths, batch_size=batch_size):
            batch = collate(sample, rows, pad_id=pad_id)
            ids = batch["input_ids"].to(device)  # (B, T)
            mask = batch["attention_mask"].to(device)  # (B, T)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
            m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, H)
            pieces.append(pooled.float().cpu().numpy())
            order.extend(rows)
    out = np.empty((len(sample), pieces[0].shape[1]), dtype=np.float32)  # (N, H)
    out[order] = np.concatenate(pieces)  # back to sample order
    return out


def embed(
    model_dir: str,
    feats: Features,
    *,
    max_examples: int = 512,
    pad_id: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Mean-pooled last hidden states of the frozen base model, one row per sampled example.

    Takes a seeded sample of ``min(len(feats), max_examples)`` examples (rows in increasing
    example order), pools over the non-pad tokens of each, and returns a float32 array of shape
    ``(examples, hidden_size)``. The same inputs give the same array.
    """
    model = load_encoder(model_dir, device=device)
    return embed_with(model, feats, max_examples=max_examples, pad_id=pad_id, seed=seed)


def task_inputs(store: FeatureStore, task: TaskSpec) -> Features:
    """The inputs that stand for ``task``: its training rows (as Vu et al.), or for a task
    without training data (zero-shot retrieval) its first featurized dev (else test) set."""
    if task.has_train:
        return store.load_train(task)
    for split in ("dev", "test"):
        for lang in task.languages:
            if (store.path(task, split, lang) / "dataset_info.json").is_file():
                return store.load(task, split, lang)
    raise ValueError(
        f"task {task.name!r} has no training data and no featurized dev or test set to embed"
    )


def rank_intermediates(
    *,
    model_dir: str,
    store: FeatureStore,
    target: TaskSpec,
    intermediates: Sequence[TaskSpec],
    pad_id: int,
    max_examples: int = 512,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Ranking:
    """Score each intermediate task by TextEmb cosine with ``target`` (module docstring: why).

    Reads the ``train`` features of every task from ``store`` (featurize them first, as
    :func:`raystilts.train.workspace.prepare_workspace` does) and embeds each task once per call. Any
    task type works: a multiple-choice row contributes its first (context, choice) sequence, a
    QA window its question and context, a task of several training languages all of them.
    """
    if not intermediates:
        raise ValueError(f"no intermediate tasks to rank for target '{target.name}'")
    start = time.perf_counter()
    model = load_encoder(model_dir, device=device)
    vectors: dict[str, np.ndarray] = {}

    def vector(task: TaskSpec) -> np.ndarray:
        if task.name not in vectors:
            feats = task_inputs(store, task)
            emb = embed_with(model, feats, max_examples=max_examples, pad_id=pad_id, seed=seed)
            vectors[task.name] = centroid(emb)
        return vectors[task.name]

    goal = vector(target)
    scores = {t.name: cosine(vector(t), goal) for t in intermediates}
    bad = {name: s for name, s in scores.items() if not math.isfinite(s)}
    if bad:
        raise ValueError(f"non-finite transfer scores {bad}: the base model's outputs overflowed")
    order = tuple(sorted(scores, key=lambda name: (-scores[name], name)))
    return Ranking(
        target=target.name,
        scores=scores,
        order=order,
        seconds=time.perf_counter() - start,
        method=METHOD,
    )
