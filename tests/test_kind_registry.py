"""The task-kind registry (raystilts.kinds): every registered kind, on its own made-up task,
round-trips canonical examples -> features -> batch -> a tiny model's forward pass -> scores,
so a new kind module is tested by adding its registry line."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import torch

from raystilts.kinds import KIND_NAMES, Features, Kind, get_kind
from raystilts.kinds.base import made_up_task
from raystilts.tasks.catalog import CATALOG, TaskKind, TaskSpec

N = 6  # examples per split: every label of the made-up tasks, and quick


def test_registry_names_the_catalogs_kinds() -> None:
    assert set(KIND_NAMES) == set(get_args(TaskKind))  # TaskSpec.kind may name only these
    assert {t.kind for t in CATALOG.values()} <= set(KIND_NAMES)
    for name in KIND_NAMES:
        kind = get_kind(name)
        assert isinstance(kind, Kind) and kind.name == name
        assert kind.fixture_task().kind == name
    with pytest.raises(ValueError, match=r"no task kind 'generative'; known: classification"):
        get_kind("generative")


def test_kinds_and_features_load_without_torch() -> None:
    """The registry and the feature store stay importable without torch: a kind module that
    defines torch modules is imported on first lookup only."""
    check = "import sys, raystilts.kinds, raystilts.data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0


class _Context:
    """The runner's side of :class:`raystilts.kinds.EvalContext`, with nothing else."""

    def __init__(self, model: torch.nn.Module, tokenizer_dir: Path, kind: Kind) -> None:
        self.model, self.tokenizer_dir, self.kind = model.eval(), tokenizer_dir, kind
        self.train_batch_size = 4
        self.pos_scheme = "pos"

    def outputs(
        self, feats: Features, *, batch_size: int | None = None, mlm: Any = None
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor], Any]]:
        rows = list(range(len(feats)))
        size = batch_size or 8
        for i in range(0, len(rows), size):
            idx = rows[i : i + size]
            batch = self.kind.collate(feats, idx, pad_id=1, mlm=mlm)
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                yield idx, batch, self.model(**inputs)


def _features(kind: Kind, task: TaskSpec, split: str, lang: str, tokenizer: Any) -> Features:
    examples = kind.fixture_examples(task, split, lang, n=N)
    assert examples == kind.fixture_examples(task, split, lang, n=N)  # a pure function
    cols = kind.featurize(task, examples, tokenizer, max_length=64, split=split)
    feats = Features(
        input_ids=cols.pop("input_ids"),
        labels=cols.pop("labels", []),
        kind=kind.name,
        columns=cols,
        examples=list(examples) if kind.keeps_examples(split) else [],
    )
    return feats


@pytest.mark.parametrize("name", KIND_NAMES)
def test_every_kind_round_trips_examples_to_scores(name: str, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from raystilts.train.models import build_model

    kind = get_kind(name)
    task = kind.fixture_task()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    model = build_model(str(tiny_model), task, None, seed=0, pad_id=1)
    if task.has_train:  # a training batch gives a finite loss with gradients
        train = _features(kind, task, "train", "en", tokenizer)
        assert len(train) >= N
        masker = kind.masker(tiny_model, seed=0)
        batch = kind.collate(train, list(range(4)), pad_id=1, mlm=masker)
        assert batch["input_ids"].shape[0] == 4
        loss = model(**batch).loss
        assert math.isfinite(float(loss))
        loss.backward()
        model.zero_grad()
    lang = task.languages[-1]  # not English: scoring is per language
    dev = _features(kind, task, "dev", lang, tokenizer)
    scores = kind.evaluate(_Context(model, tiny_model, kind), task, dev, lang, {})
    assert task.metric in scores
    assert 0.0 <= scores[task.metric] <= 1.0, scores
    assert all(math.isfinite(v) for v in scores.values()), scores


def test_a_kind_is_one_module_and_one_registry_line() -> None:
    """What the registry promises a new kind: its module's KIND, found by name."""
    import importlib

    import raystilts.kinds as registry

    for name, module in registry._MODULES.items():
        assert importlib.import_module(f"raystilts.kinds.{module}").KIND is get_kind(name)


def test_made_up_task_overrides_fields() -> None:
    task = made_up_task("k_x", "classification", "accuracy", labels=("a", "b"), is_target=False)
    assert (task.kind, task.labels, task.is_target, task.languages) == (
        "classification",
        ("a", "b"),
        False,
        ("en", "de"),
    )


def test_a_kind_without_a_head_fails_when_defined() -> None:
    import pytest

    from raystilts.kinds.base import Kind

    with pytest.raises(TypeError, match="set auto_head or override build_head"):

        class Headless(Kind):
            name = "headless"
