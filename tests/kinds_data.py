"""Made-up tasks of every type with canonical examples (the schema of raystilts.tasks.catalog'
read_examples), for featurization, runner and model-family tests that need no data files.

``use_fixture_examples(monkeypatch)`` makes :meth:`raystilts.data.features.FeatureStore.ensure` read
these instead of a data directory.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from raystilts.tasks.catalog import TaskSpec

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "dog",
    "ran",
    "to",
    "park",
    "bird",
    "sang",
    "in",
    "tree",
    "sun",
    "was",
    "hot",
]
LANGS = ("en", "de")


def _task(name: str, kind: str, metric: str, **kw: Any) -> TaskSpec:
    fields: dict[str, Any] = {
        "labels": (),
        "languages": LANGS,
        "is_target": True,
        "source": "fixture",
        "description": f"made-up {kind} task",
        "text_fields": (),
        "label_field": "",
    }
    fields.update(kw)
    return TaskSpec(name=name, kind=kind, metric=metric, **fields)  # type: ignore[arg-type]


PAIR = _task("k_pair", "classification", "accuracy", labels=("no", "yes"))
MC = _task("k_mc", "multiple_choice", "accuracy")
QA = _task("k_qa", "qa", "f1", max_length=64, score_metrics=("exact_match", "f1"))
QA2 = _task("k_qa2", "qa", "f1", max_length=64, allow_unanswerable=True, is_target=False)
NER = _task("k_ner", "tagging", "f1", labels=("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))
POS = _task("k_pos", "tagging", "accuracy", labels=("DET", "NOUN", "VERB", "ADP"))
MLM = _task("k_mlm", "mlm", "accuracy", train_languages=LANGS, is_target=False)
TATOEBA = _task("k_tatoeba", "retrieval", "accuracy", has_train=False, languages=("de", "fr"))
BUCC = _task("k_bucc", "retrieval", "f1", has_train=False, languages=("de", "fr"))
MEWSLI = _task("k_mewsli", "retrieval", "map@20", has_train=False, languages=("de", "fr"))
ALL = (PAIR, MC, QA, QA2, NER, POS, MLM, TATOEBA, BUCC, MEWSLI)
SIZES = {"train": 24, "dev": 10, "test": 10}


def _sentence(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def examples(task: TaskSpec, split: str, lang: str) -> list[dict[str, Any]]:
    """Deterministic canonical examples of ``task`` (a few per split and language)."""
    rng = random.Random(f"{task.name}/{split}/{lang}")
    n = SIZES[split]
    kind = task.kind
    if kind == "classification":
        return [
            {"text": [" ".join(_sentence(rng, 5)), " ".join(_sentence(rng, 4))], "label": i % 2}
            for i in range(n)
        ]
    if kind == "multiple_choice":
        return [
            {
                "context": " ".join(_sentence(rng, 6)),
                "choices": [" ".join(_sentence(rng, rng.randint(1, 5))) for _ in range(3)],
                "label": i % 3,
            }
            for i in range(n)
        ]
    if kind == "qa":
        out = []
        for i in range(n):
            words = _sentence(rng, rng.randint(8, 40))  # some contexts need two windows
            answer = words[len(words) // 2]
            context = " ".join(words)
            start = len(" ".join(words[: len(words) // 2])) + 1
            answerable = not (task.allow_unanswerable and i % 3 == 0)
            out.append(
                {
                    "id": f"{lang}-{split}-{i}",
                    "context": context,
                    "question": f"where is {answer}",
                    "answers": {
                        "text": [answer] if answerable else [],
                        "answer_start": [start] if answerable else [],
                    },
                }
            )
        return out
    if kind == "tagging":
        rows = []
        for _ in range(n):
            tokens = _sentence(rng, rng.randint(3, 8))
            tags = [task.labels[rng.randrange(len(task.labels))] for _ in tokens]
            if task.name == NER.name:  # valid IOB2: an I- follows its B-
                tags = [
                    "O" if t.startswith("I-") and (j == 0 or tags[j - 1][2:] != t[2:]) else t
                    for j, t in enumerate(tags)
                ]
            rows.append({"tokens": tokens, "tags": tags})
        return rows
    if kind == "mlm":
        return [{"text": " ".join(_sentence(rng, rng.randint(4, 12)))} for _ in range(n)]
    # retrieval: queries in ``lang`` with English candidates; a few decoys
    queries, cands = [], []
    for i in range(n):
        text = " ".join(_sentence(rng, 5))
        has_gold = task.name != BUCC.name or i % 4 != 0  # BUCC: some sources have no pair
        gold = [f"c{i}"] if has_gold else []
        if task.name == MEWSLI.name:
            gold = [f"c{i}", f"c{(i + 1) % n}"]
        queries.append({"role": "query", "id": f"q{i}", "text": text, "gold": gold})
        cands.append({"role": "candidate", "id": f"c{i}", "text": text[::-1], "gold": []})
    return queries + cands


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
