"""What a task kind is, and the parts several kinds share.

A kind (classification, multiple choice, tagging, QA, retrieval, MLM) is everything about a task
that follows from its type and not from its data: how canonical examples become features, how
features become a batch, which head the encoder gets, how the model's outputs are scored, and
made-up canonical examples to test all of that. One :class:`Kind` subclass per module of this
package; :func:`raystilts.kinds.get_kind` finds it by the name a
:class:`raystilts.tasks.catalog.TaskSpec` carries in ``kind``.

Torch is imported inside the methods that need it (or at the top of the kind modules that
define torch modules), never here: :class:`Features` and the registry load without torch.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from raystilts.metrics.scores import IGNORE_INDEX
from raystilts.tasks.catalog import TaskSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from raystilts.metrics.scores import TaggingScheme

__all__ = [
    "FIXTURE_LANGUAGES",
    "IGNORE_INDEX",
    "Columns",
    "EvalContext",
    "Features",
    "Kind",
    "argmax_accuracy",
    "collate_rows",
    "fixture_rng",
    "fixture_sentence",
    "made_up_task",
    "pad",
    "sequence_inputs",
]

Columns = dict[str, list[Any]]
Batch = dict[str, "torch.Tensor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Features:
    """One featurized (task, split, language): ``input_ids`` per row ((T,), or (C, T) for a
    kind whose rows are several sequences: multiple choice), ``labels`` per row where the kind
    has them (an int or a per-token list), other ``columns`` by name, and for QA evaluation the
    canonical ``examples``. ``kind`` is a registered kind's name, or ``"plain"`` for bare
    sequences (what a text embedding reads)."""

    input_ids: list[Any]
    labels: list[Any] = field(default_factory=list)
    kind: str = "classification"
    columns: Mapping[str, list[Any]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    # whether a row is several sequences (the kind's ``grouped``); looked up once, not per row
    grouped: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from raystilts.kinds import KIND_NAMES, get_kind

        grouped = self.kind in KIND_NAMES and get_kind(self.kind).grouped
        object.__setattr__(self, "grouped", grouped)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        """Tokens per row; a multiple-choice row counts its longest choice (what it pads to)."""
        return [self.length(i) for i in range(len(self.input_ids))]

    def length(self, i: int) -> int:
        """Tokens of row ``i`` (O(1): batches must not rebuild :attr:`lengths`)."""
        row = self.input_ids[i]
        if self.grouped:
            return max((len(c) for c in row), default=0)
        return len(row)

    def first_sequences(self) -> Features:
        """One plain sequence per row (a multiple-choice row's first choice), no labels: what
        a text embedding of the inputs reads (raystilts.train.transfer)."""
        ids = [x[0] for x in self.input_ids] if self.grouped else self.input_ids
        return Features(input_ids=ids, kind="plain")

    @staticmethod
    def concat(parts: Sequence[Features]) -> Features:
        """Rows of several feature sets of one task, in order (training languages joined)."""
        if len(parts) == 1:
            return parts[0]
        names = set(parts[0].columns)
        return Features(
            input_ids=[x for p in parts for x in p.input_ids],
            labels=[x for p in parts for x in p.labels],
            kind=parts[0].kind,
            columns={n: [x for p in parts for x in p.columns[n]] for n in names},
            examples=[x for p in parts for x in p.examples],
        )


class EvalContext(Protocol):
    """What a kind's :meth:`Kind.evaluate` gets from the runner (raystilts.train.runner)."""

    @property
    def tokenizer_dir(self) -> Path: ...

    @property
    def train_batch_size(self) -> int: ...

    @property
    def pos_scheme(self) -> TaggingScheme: ...

    def outputs(
        self, feats: Features, *, batch_size: int | None = None, mlm: Any = None
    ) -> Iterator[tuple[list[int], Batch, Any]]:
        """(row indices, CPU batch, model output) per evaluation batch, the model in eval mode."""
        ...


class Kind(ABC):
    """One task kind. Subclasses set :attr:`name` and implement the abstract methods; the
    defaults suit kinds whose rows are single sequences with at most one label per row."""

    name: ClassVar[str]
    # a row is several sequences padded together: (B, C, T) batches (multiple choice)
    grouped: ClassVar[bool] = False
    # the transformers auto class of the kind's head (build_head), and whether the task's
    # label count sizes it
    auto_head: ClassVar[str | None] = None
    labels_from_task: ClassVar[bool] = False

    @abstractmethod
    def featurize(
        self,
        task: TaskSpec,
        examples: Sequence[dict[str, Any]],
        tokenizer: Any,
        *,
        max_length: int,
        split: str,
    ) -> Columns:
        """Tokenize canonical examples into columns, no padding (batches pad). A change here
        must bump ``raystilts.data.features.FEATURIZE_VERSION``: cached features key on it."""

    def keeps_examples(self, split: str) -> bool:
        """Whether the feature cache keeps the canonical examples next to the features (QA
        evaluation decodes answers from them)."""
        return False

    def masker(self, tokenizer_dir: Path, *, seed: int) -> Any:
        """A seeded per-batch transform :meth:`collate` applies to training batches (MLM's
        masking), or None."""
        return None

    def collate(
        self, feats: Features, idx: Sequence[int], *, pad_id: int, mlm: Any = None
    ) -> Batch:
        """Rows ``idx`` padded to the batch's longest row (dynamic padding): model inputs and,
        where the rows have them, training targets."""
        return collate_rows(feats, idx, pad_id=pad_id)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # a kind names its head's auto class or builds its head itself: said at definition,
        # not when a trial first builds a model
        super().__init_subclass__(**kwargs)
        if cls.auto_head is None and cls.build_head is Kind.build_head:
            raise TypeError(f"kind {cls.__name__}: set auto_head or override build_head")

    def build_head(
        self, base_model: str, config: Any, task: TaskSpec, *, retrieval_layer: int | None = None
    ) -> nn.Module:
        """``base_model`` with a fresh head for ``task`` (``config`` already loaded and given a
        pad token; the caller seeds torch first and loads the carried encoder after). By
        default transformers' ``auto_head`` class, with ``task.num_labels`` outputs where
        ``labels_from_task``; a kind whose head is not one auto class overrides this."""
        import transformers

        assert self.auto_head is not None  # checked when the kind's class is defined
        if self.labels_from_task:
            config.num_labels = task.num_labels
        head = getattr(transformers, self.auto_head)
        model: nn.Module = head.from_pretrained(base_model, config=config)
        return model

    @abstractmethod
    def evaluate(
        self,
        ev: EvalContext,
        task: TaskSpec,
        feats: Features,
        lang: str,
        dev: Mapping[str, float],
    ) -> dict[str, float]:
        """Metrics by name on one (split, language); ``dev``: this language's dev metrics when
        scoring test (BUCC applies their threshold)."""

    @abstractmethod
    def fixture_task(self) -> TaskSpec:
        """A made-up task of this kind (tests; :meth:`fixture_examples` are its data)."""

    @abstractmethod
    def fixture_examples(
        self, task: TaskSpec, split: str, lang: str, *, n: int
    ) -> list[dict[str, Any]]:
        """``n`` deterministic made-up canonical examples of ``task`` (a pure function of the
        arguments), the shape :func:`raystilts.tasks.catalog.read_examples` returns."""


# --------------------------------------------------------------------------- batches


def pad(rows: Sequence[Sequence[int]], width: int, value: int) -> torch.Tensor:
    """``rows`` right-padded with ``value`` to ``width``: a (len(rows), width) long tensor."""
    import torch

    out = torch.full((len(rows), width), value, dtype=torch.long)
    for r, seq in enumerate(rows):
        out[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def sequence_inputs(feats: Features, idx: Sequence[int], *, pad_id: int) -> Batch:
    """``input_ids``, ``attention_mask`` and (where featurized) ``token_type_ids`` of single
    sequence rows, each (B, T) with T the longest row of the batch."""
    width = max(feats.length(i) for i in idx)
    seqs: list[list[int]] = [feats.input_ids[i] for i in idx]
    out = {
        "input_ids": pad(seqs, width, pad_id),  # (B, T)
        "attention_mask": pad([[1] * len(r) for r in seqs], width, 0),
    }
    if "token_type_ids" in feats.columns:
        out["token_type_ids"] = pad([feats.columns["token_type_ids"][i] for i in idx], width, 0)
    return out


def collate_rows(feats: Features, idx: Sequence[int], *, pad_id: int) -> Batch:
    """:func:`sequence_inputs` plus one class index per row as ``labels`` where rows have them."""
    import torch

    out = sequence_inputs(feats, idx, pad_id=pad_id)
    if feats.labels:
        out["labels"] = torch.tensor([feats.labels[i] for i in idx], dtype=torch.long)
    return out


# --------------------------------------------------------------------------- scoring


def argmax_accuracy(ev: EvalContext, feats: Features) -> dict[str, float]:
    """Accuracy of the argmax class (or choice) against ``labels``."""
    from raystilts.metrics import scores

    gold: list[int] = []
    pred: list[int] = []
    for _, batch, out in ev.outputs(feats):
        gold.extend(batch["labels"].tolist())
        pred.extend(out.logits.argmax(-1).cpu().tolist())
    return {"accuracy": scores.accuracy(gold, pred)}


# --------------------------------------------------------------------------- made-up data

FIXTURE_LANGUAGES = ("en", "de")
_WORDS = (
    *("the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to"),
    *("park", "bird", "sang", "in", "tree", "sun", "was", "hot"),
)


def fixture_rng(task: TaskSpec, split: str, lang: str) -> random.Random:
    """The generator of ``task``'s made-up examples of (split, language)."""
    return random.Random(f"{task.name}/{split}/{lang}")


def fixture_sentence(rng: random.Random, n: int) -> list[str]:
    """``n`` words drawn from a small vocabulary every tokenizer splits the same way."""
    return [rng.choice(_WORDS) for _ in range(n)]


def made_up_task(name: str, kind: str, metric: str, **kw: Any) -> TaskSpec:
    """A target task of ``kind`` in :data:`FIXTURE_LANGUAGES` whose data is made up; ``kw``
    overrides any other :class:`~raystilts.tasks.catalog.TaskSpec` field."""
    fields: dict[str, Any] = {
        "labels": (),
        "languages": FIXTURE_LANGUAGES,
        "is_target": True,
        "source": "fixture",
        "description": f"made-up {kind} task",
        "text_fields": (),
        "label_field": "",
    }
    fields.update(kw)
    return TaskSpec(name=name, kind=kind, metric=metric, **fields)  # type: ignore[arg-type]
