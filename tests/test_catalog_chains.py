"""Every task of the real catalog, from its made-up fixture in the real schema, through
load -> featurize -> train one step -> evaluate on a tiny model (issue 3's "done when").

Intermediate tasks train one step and are scored on English dev; targets train one step (retrieval
targets none) and are evaluated in two of their languages (every language is loaded and checked
by tests/test_catalog.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raystilts.data.features import FeatureStore, needs_of
from raystilts.tasks.catalog import CATALOG, TaskSpec, with_labels
from raystilts.tasks.fixtures import write_fixtures
from raystilts.train.runner import ChainPlan, Phase, TrainSettings, run_chain, selection_key

REAL = sorted(name for name, t in CATALOG.items() if t.source != "embedded")
SETTINGS = TrainSettings(batch_size=4, eval_batch_size=8)
# one step of each kind's canonical intermediate before every target: the encoder is carried
BEFORE = {"qa": "squad_v1", "multiple_choice": "hellaswag", "tagging": "ccg"}


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("fixtures"))


@pytest.fixture(scope="module")
def store(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    return FeatureStore(
        cache_dir=tmp_path_factory.mktemp("catalog-features"),
        tokenizer_dir=tiny_model,
        max_length=32,
    )


def _languages(task: TaskSpec) -> tuple[str, ...]:
    langs = [lang for lang in task.languages if "dev" in task.splits(lang)]
    return tuple(langs[:1] + langs[-1:]) if len(langs) > 1 else tuple(langs)


def test_the_catalog_has_every_task_the_issue_names() -> None:
    for name in ("anli", "mnli", "qqp", "squad_v1", "squad_v2", "hellaswag", "cosmosqa",
                 "commonsenseqa", "ccg", "xnli", "pawsx", "udpos", "panx", "xquad", "mlqa",
                 "tydiqa", "bucc", "tatoeba", "xcopa", "mewslix", "lareqa"):  # fmt: skip
        assert name in CATALOG, name
    kinds = {CATALOG[n].kind for n in REAL}
    assert kinds == {"classification", "multiple_choice", "qa", "tagging", "retrieval", "mlm"}


@pytest.mark.parametrize("name", REAL)
def test_task_loads_featurizes_trains_one_step_and_evaluates(
    name: str, fixture_dir: Path, store: FeatureStore, tiny_model: Path
) -> None:
    task = with_labels(CATALOG[name], fixture_dir)
    langs = _languages(task) if task.is_target else ()
    needs = needs_of(task, target=task.is_target, languages=langs)
    before: list[TaskSpec] = []
    if task.is_target and task.kind in BEFORE:
        before = [with_labels(CATALOG[BEFORE[task.kind]], fixture_dir)]
        needs |= needs_of(before[0], target=False)
    for t, split, lang in sorted(needs, key=lambda n: (n[0].name, n[1], n[2])):
        store.ensure(t, split, lang, data_dir=fixture_dir)
        assert len(store.load(t, split, lang)) > 0, (t.name, split, lang)

    if task.is_target:
        phases = tuple(Phase(task=t, lr=1e-3, steps=1) for t in before)
        target = task
    else:  # an intermediate task: one step of it, scored on its dev set, before a target
        phases = (Phase(task=task, lr=1e-3, steps=1),)
        target = with_labels(CATALOG["pawsx"], fixture_dir)
        langs = ("en",)
        for t, split, lang in needs_of(target, target=True, languages=langs):
            store.ensure(t, split, lang, data_dir=fixture_dir)
    plan = ChainPlan(
        phases=phases,
        target=Phase(task=target, lr=1e-3, steps=1 if target.has_train else 0),
        eval_every=0,
        eval_languages=langs,
        seed=0,
    )
    out = run_chain(
        plan, base_model=str(tiny_model), store=store, settings=SETTINGS, report=lambda m: None,
        pad_id=1,
    )  # fmt: skip
    if not task.is_target:
        assert math.isfinite(out["phase0/dev_en"]), out
        assert math.isfinite(out["phase0/train/loss"]), out
        return
    for lang in langs:
        split = "test" if "test" in task.splits(lang) else "dev"  # XCOPA's English: dev only
        for metric in task.benchmark_metrics:
            value = out[f"{split}/{task.name}/{lang}/{metric}"]
            assert 0.0 <= value <= 1.0, (lang, metric, value)
    assert selection_key(task) in out
    if task.has_train:
        assert math.isfinite(out["target/train/loss"])
    else:
        assert "target/train/loss" not in out


def test_a_task_never_gets_more_tokens_than_the_model_has_positions(store: FeatureStore) -> None:
    """QA asks for 384 tokens; the tiny XLM-R has 66 positions, two of them before the first
    token (RoBERTa's padding offset): 64 is the most a feature may have."""
    assert CATALOG["squad_v1"].max_length == 384
    assert store.model_limit == 64
    assert store.max_length_for(CATALOG["squad_v1"]) == 64
    assert store.max_length_for(CATALOG["xnli"]) == 32  # the store's own, below the limit


def test_features_follow_the_data_they_were_read_from(tiny_model: Path, tmp_path: Path) -> None:
    """Entries are keyed on the local file (path, size, mtime) or "hub": fixtures swapped for
    real files, or an edited file, are tokenized again instead of served stale."""
    import os

    from raystilts.tasks.catalog import data_fingerprint

    data = write_fixtures(tmp_path / "data", tasks=["pawsx"])
    task = CATALOG["pawsx"]
    store = FeatureStore(cache_dir=tmp_path / "f", tokenizer_dir=tiny_model, max_length=32)
    need = [(task, "dev", "de")]
    store.track_data(need, data_dir=data)
    assert store.ensure(task, "dev", "de", data_dir=data) is True
    assert store.ensure(task, "dev", "de", data_dir=data) is False  # the same data: cached
    first = store.path(task, "dev", "de")
    rows = len(store.load(task, "dev", "de"))

    path = data / "pawsx" / "de" / "dev.jsonl"
    path.write_text(path.read_text(encoding="utf-8") * 2, encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    store.track_data(need, data_dir=data)
    assert store.path(task, "dev", "de") != first
    assert store.ensure(task, "dev", "de", data_dir=data) is True
    assert len(store.load(task, "dev", "de")) == 2 * rows
    hub = data_fingerprint(task, "dev", "de", None)
    assert hub.startswith("hub") and hub != data_fingerprint(CATALOG["xnli"], "dev", "de", None)
    assert data_fingerprint(task, "dev", "ja", tmp_path / "nothing-here") == hub


def test_tatoeba_searches_from_english_as_xtreme_does() -> None:
    """XTREME indexes the other language's sentences and searches each English one among them
    (third_party/evaluate_retrieval.py); the reverse direction scores differently here."""
    import numpy as np
    import torch

    from raystilts.data.features import Features
    from raystilts.kinds import get_kind

    # foreign q0, q1 (queries whose gold is the English c0, c1), English c0, c1
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.9, 0.44]])
    feats = Features(
        input_ids=[[5]] * 4,
        labels=[0] * 4,
        kind="retrieval",
        columns={
            "role": ["query", "query", "candidate", "candidate"],
            "id": ["q0", "q1", "c0", "c1"],
            "gold": [["c0"], ["c1"], [], []],
        },
    )

    class FixedEmbeddings:
        def outputs(self, f: Features):  # type: ignore[no-untyped-def]
            yield list(range(len(f))), None, vectors

    retrieval = get_kind("retrieval")
    out = retrieval.evaluate(FixedEmbeddings(), CATALOG["tatoeba"], feats, "de", {})  # type: ignore[arg-type]
    # en -> xx: c0 finds q0 (right), c1 finds q0 too (wrong); xx -> en would score 1.0
    assert out == {"accuracy": 0.5}
    assert np.isclose(out["accuracy"], 0.5)


def test_xcopa_english_selects_models_but_is_not_in_the_test_average() -> None:
    xcopa = CATALOG["xcopa"]
    assert xcopa.splits("en") == ("train", "dev")
    assert xcopa.splits("et") == ("dev", "test")


def test_collate_never_rebuilds_every_row_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch reads its own rows only: ``lengths`` walks the whole set (O(N) per call)."""
    from raystilts.data.features import Features, collate

    feats = Features(input_ids=[[0, 5, 6, 2]] * 1000 + [[0, 2]], labels=[1] * 1001)

    def whole_set(self: Features) -> list[int]:
        raise AssertionError("collate read the lengths of every row")

    monkeypatch.setattr(Features, "lengths", property(whole_set))
    batch = collate(feats, [3, 1000], pad_id=1)
    assert batch["input_ids"].tolist() == [[0, 5, 6, 2], [0, 2, 1, 1]]
