"""Made-up tasks of every kind with canonical examples (the schema of raystilts.tasks.catalog'
read_examples), for featurization, runner and model-family tests that need no data files.

``use_fixture_examples(monkeypatch)`` makes :meth:`raystilts.data.features.FeatureStore.ensure` read
these instead of a data directory.
"""

from __future__ import annotations

from typing import Any

import pytest

from raystilts.kinds import get_kind
from raystilts.kinds.base import made_up_task as _task
from raystilts.tasks.catalog import TaskSpec

PAIR = get_kind("classification").fixture_task()
MC = get_kind("multiple_choice").fixture_task()
QA = get_kind("qa").fixture_task()
QA2 = _task("k_qa2", "qa", "f1", max_length=64, allow_unanswerable=True, is_target=False)
NER = get_kind("tagging").fixture_task()
POS = _task("k_pos", "tagging", "accuracy", labels=("DET", "NOUN", "VERB", "ADP"))
MLM = get_kind("mlm").fixture_task()
TATOEBA = get_kind("retrieval").fixture_task()
BUCC = _task("k_bucc", "retrieval", "f1", has_train=False, languages=("de", "fr"))
MEWSLI = _task("k_mewsli", "retrieval", "map@20", has_train=False, languages=("de", "fr"))
ALL = (PAIR, MC, QA, QA2, NER, POS, MLM, TATOEBA, BUCC, MEWSLI)
SIZES = {"train": 24, "dev": 10, "test": 10}


def examples(task: TaskSpec, split: str, lang: str) -> list[dict[str, Any]]:
    """Deterministic canonical examples of ``task``: its kind's made-up ones
    (:meth:`raystilts.kinds.Kind.fixture_examples`), a few per split and language."""
    return get_kind(task.kind).fixture_examples(task, split, lang, n=SIZES[split])


@pytest.fixture
def fixture_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture_examples(monkeypatch)


def use_fixture_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    import raystilts.data.features as data
    from raystilts.tasks import catalog as tasks

    ours = {t.name for t in ALL}
    real = tasks.read_examples

    def read(task: TaskSpec, split: str, lang: str, *, data_dir: Any) -> list[dict[str, Any]]:
        if task.name in ours:
            return examples(task, split, lang)
        return real(task, split, lang, data_dir=data_dir)

    monkeypatch.setattr(data, "read_examples", read)


def needs(task: TaskSpec) -> set[tuple[TaskSpec, str, str]]:
    from raystilts.data.features import needs_of

    return needs_of(task, target=task.is_target, languages=task.languages)
