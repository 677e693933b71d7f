"""The task catalog: every real task's fields against the contract, the benchmarks' language
lists, and `raystilts tasks [--json]`."""

from __future__ import annotations

import json

import pytest

from raystilts.cli import main
from raystilts.core.languages import BENCHMARK_LANGUAGES, load_languages
from raystilts.tasks import embedded as mini
from raystilts.tasks.catalog import CATALOG, sources

KINDS = {"classification", "multiple_choice", "qa", "tagging", "retrieval", "mlm"}
METRICS = {"accuracy", "exact_match", "f1", "precision", "recall", "map@20"}
CATEGORIES = {"classification", "structured_prediction", "question_answering", "retrieval"}
INTERMEDIATE = ("anli", "mnli", "qqp", "squad_v1", "squad_v2", "hellaswag", "cosmosqa")
INTERMEDIATE += ("commonsenseqa", "ccg")
XTREME = ("xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa", "bucc", "tatoeba")
XTREME_R = ("xnli", "xcopa", "udpos_r", "panx_r", "xquad_r", "mlqa", "tydiqa", "mewslix")
XTREME_R += ("lareqa", "tatoeba_r")


def test_every_paper_task_is_in_the_catalog() -> None:
    for name in (*INTERMEDIATE, *XTREME, *XTREME_R):
        assert name in CATALOG
    assert all(not CATALOG[n].is_target for n in INTERMEDIATE)
    assert all(CATALOG[n].is_target for n in (*XTREME, *XTREME_R))


@pytest.mark.parametrize("name", list(sources.SOURCES))
def test_real_task_fields(name: str) -> None:
    task = CATALOG[name]
    known = load_languages()
    assert task.kind in KINDS and task.metric in METRICS
    assert set(task.benchmark_metrics) <= METRICS
    assert task.languages and all(lang in known for lang in task.languages)
    assert len(set(task.languages)) == len(task.languages)
    if "en" in task.languages:
        assert task.languages[0] == "en"
    assert (task.category in CATEGORIES) == task.is_target
    assert task.source and task.description
    if task.kind in ("qa", "retrieval", "mlm", "multiple_choice"):
        assert task.labels == ()
        assert task.num_labels == 1
    if task.kind == "qa":
        assert task.benchmark_metrics == ("exact_match", "f1") and task.max_length == 384
    if task.kind == "retrieval":
        assert not task.has_train and task.is_target
    if task.translation_of is not None:
        assert task.translation_of in CATALOG and len(task.train_languages) > 1
    # splits: targets are zero-shot, only train_languages train, every eval language evaluates
    for lang in task.languages:
        splits = task.splits(lang)
        assert {"dev", "test"} <= set(splits) or (lang in task.dev_only and "dev" in splits)
        assert ("train" in splits) == (task.has_train and lang in task.train_languages)
    # the declarative table covers every split the catalog promises
    spec = sources.SOURCES[name]
    for lang in task.languages:
        for split in task.splits(lang):
            assert spec.source_for(split, lang).schema in (*sources.SCHEMAS, *sources.READERS)


def test_benchmark_language_lists() -> None:
    x, xr = BENCHMARK_LANGUAGES["xtreme"], BENCHMARK_LANGUAGES["xtreme_r"]
    counts = {"xnli": 15, "pawsx": 7, "udpos": 33, "panx": 40, "xquad": 11, "mlqa": 7}
    counts |= {"tydiqa": 9, "bucc": 4, "tatoeba": 36, "xcopa": 12}  # xcopa: 11 + English COPA
    for name, n in counts.items():
        assert len(CATALOG[name].languages) == n, name
    assert set(CATALOG["bucc"].languages) == set(x["bucc2018"])
    for name in ("udpos", "panx", "tatoeba", "xquad"):
        assert set(CATALOG[f"{name}_r"].languages) == set(xr[name])
        assert set(CATALOG[name].languages) == set(x[name])
    for name in ("xnli", "mlqa", "tydiqa", "mewslix", "lareqa"):
        assert set(CATALOG[name].languages) == set(xr[name])


def test_variants() -> None:
    assert CATALOG["xnli_tt"].translation_of == "mnli"
    assert CATALOG["squad_tt"].translation_of == "squad_v1"
    assert CATALOG["squad_v2"].allow_unanswerable and not CATALOG["squad_v1"].allow_unanswerable
    mlm = CATALOG["wiki_mlm"]
    assert mlm.kind == "mlm" and len(mlm.train_languages) == 40 and not mlm.is_target


def test_embedded_tasks_unchanged() -> None:
    for name in ("mini_mnli", "mini_qqp", "mini_ccg", "mini_topic", "mini_xnli", "mini_udpos"):
        task = CATALOG[name]
        assert task.source == "embedded" and task.languages == mini.languages_of(name)
        for lang in task.languages:
            assert task.splits(lang) == mini.splits_of(name, lang)


def test_tasks_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(CATALOG)
    for r in rows:
        assert {"name", "type", "metric", "languages", "source", "category", "has_train"} <= set(r)
    xnli = next(r for r in rows if r["name"] == "xnli")
    assert xnli["type"] == "classification" and xnli["metric"] == "accuracy"
    assert len(xnli["languages"]) == 15 and "facebook/xnli" in xnli["source"]


def test_tasks_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CATALOG) + 1
    assert any(line.startswith("tydiqa ") and "google/xtreme" in line for line in lines)
