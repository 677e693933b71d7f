"""The task catalog: what each task is (type, labels, metric, languages) and where its data lives.

    from raystilts.tasks import CATALOG
    CATALOG["mini_xnli"].languages   # ('en', 'qaa', 'qab', 'qac', 'qad', 'qae')

A task is plain data. Loading reads JSON lines in the task's schema from a data directory laid
out as ``<data_dir>/<task>/<lang>/<split>.jsonl``; the embedded benchmark writes exactly that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from raystilts.embedded import generate as mini
from raystilts.errors import UserError

__all__ = ["CATALOG", "TaskSpec", "example_text", "get_task", "read_examples"]

TaskKind = Literal["classification", "multiple_choice", "qa", "tagging", "retrieval", "mlm"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """One task. ``text_fields`` are the input columns (one or two); ``label_field`` the output."""

    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    metric: str  # the primary metric, used for selection and reporting
    languages: tuple[str, ...]
    is_target: bool
    text_fields: tuple[str, ...]
    label_field: str
    source: str
    description: str
    # XTREME's category of a target ("classification", "structured_prediction",
    # "question_answering", "retrieval"); None for intermediate tasks
    category: str | None = None
    # the English task this one is a machine translation of ("translate-train" data), if any
    translation_of: str | None = None
    # metrics averaged into the task's benchmark score (XTREME: QA is the mean of EM and F1)
    score_metrics: tuple[str, ...] = ()
    # preferred maximum tokens per feature (QA: 384); None: the search's max_length
    max_length: int | None = None
    # languages whose train splits are concatenated for training (MLM, translate-train: several)
    train_languages: tuple[str, ...] = ("en",)
    # False for zero-shot retrieval targets (BUCC, Tatoeba...): evaluated without training
    has_train: bool = True
    # SQuAD v2.0-style unanswerable questions
    allow_unanswerable: bool = False

    @property
    def benchmark_metrics(self) -> tuple[str, ...]:
        return self.score_metrics or (self.metric,)

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    def splits(self, lang: str) -> tuple[str, ...]:
        """Splits available in ``lang``: targets are zero-shot, so only English has ``train``."""
        return mini.splits_of(self.name, lang)


_MINI_CATEGORY = {"mini_xnli": "classification", "mini_udpos": "structured_prediction"}


def _mini(
    name: str, kind: TaskKind, labels: tuple[str, ...], fields: tuple[str, ...], description: str
) -> TaskSpec:
    return TaskSpec(
        name=name,
        kind=kind,
        labels=labels,
        metric="accuracy",
        languages=mini.languages_of(name),
        is_target=name in mini.TARGET_TASKS,
        text_fields=fields,
        label_field="tags" if kind == "tagging" else "label",
        source="embedded",
        description=description,
        category=_MINI_CATEGORY.get(name),
    )


_PAIR = ("premise", "hypothesis")
CATALOG: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        _mini(
            "mini_mnli", "classification", mini.NLI_LABELS, _PAIR, "English NLI, large (as MNLI)"
        ),
        _mini(
            "mini_qqp",
            "classification",
            ("different", "paraphrase"),
            _PAIR,
            "English paraphrase pairs (as QQP)",
        ),
        _mini("mini_ccg", "tagging", mini.CCG_TAGS, ("tokens",), "English role supertags (as CCG)"),
        _mini(
            "mini_topic",
            "classification",
            mini.VERB_CLASSES,
            ("sentence",),
            "English verb class (unrelated skill)",
        ),
        _mini(
            "mini_xnli",
            "classification",
            mini.NLI_LABELS,
            _PAIR,
            "NLI, 400 English train, 6 languages (as XNLI)",
        ),
        _mini(
            "mini_udpos",
            "tagging",
            mini.POS_TAGS,
            ("tokens",),
            "POS tags, 60 English train, 6 languages (as UDPOS)",
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    try:
        return CATALOG[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(CATALOG), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(
            f"unknown task '{name}'{hint}; run 'raystilts tasks' to list tasks"
        ) from None


def read_examples(task: TaskSpec, split: str, lang: str, *, data_dir: Path) -> list[dict[str, Any]]:
    """Read ``<data_dir>/<task>/<lang>/<split>.jsonl``; a missing file is a one-line UserError."""
    path = data_dir / task.name / lang / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(
            f"task '{task.name}': no {split} data for language '{lang}' at {path}; "
            f"put JSON lines with fields {', '.join(task.text_fields)}, {task.label_field} there"
        )
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [_canonical(task, r) for r in rows]


def _canonical(task: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
    """A row of the task's own schema as the canonical example of its kind (see CONTRACT)."""
    if task.kind == "classification":
        return {"text": [row[f] for f in task.text_fields], "label": int(row[task.label_field])}
    if task.kind == "tagging":
        return {"tokens": list(row["tokens"]), "tags": list(row[task.label_field])}
    return row


def example_text(task: TaskSpec, ex: dict[str, Any]) -> str:
    """One plain string per canonical example (what a text-embedding estimate reads)."""
    kind = task.kind
    if kind == "classification":
        return " ".join(ex["text"])
    if kind == "tagging":
        return " ".join(ex["tokens"])
    if kind == "multiple_choice":
        return " ".join([ex["context"], *ex["choices"]])
    if kind == "qa":
        return f"{ex['question']} {ex['context']}"
    return str(ex["text"])  # retrieval, mlm
