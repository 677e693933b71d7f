"""Loading real tasks: fixtures in each task's REAL schema -> canonical examples, through the
local-file path and through the very hub code path (a local directory laid out like the hub),
and the one-line errors when neither has the data. No network: HF_HUB_OFFLINE is set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from raystilts.core.errors import UserError
from raystilts.tasks.catalog import CATALOG, TaskSpec, read_examples, sources, task_labels
from raystilts.tasks.fixtures import write_fixtures, write_hub_mirror

REAL = [name for name in sources.SOURCES]


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("fixtures"))


def check_canonical(
    task: TaskSpec, examples: list[dict[str, Any]], labels: tuple[str, ...]
) -> None:
    """Fields, types, label ranges and answer spans of the contract's canonical examples."""
    assert examples, task.name
    kind = task.kind
    if kind == "classification":
        for ex in examples:
            assert set(ex) == {"text", "label"}
            assert 1 <= len(ex["text"]) <= 2 and all(isinstance(t, str) and t for t in ex["text"])
            assert isinstance(ex["label"], int) and 0 <= ex["label"] < len(labels)
    elif kind == "multiple_choice":
        for ex in examples:
            assert set(ex) == {"context", "choices", "label"}
            assert len(ex["choices"]) >= 2 and all(isinstance(c, str) for c in ex["choices"])
            assert 0 <= ex["label"] < len(ex["choices"])
    elif kind == "qa":
        for ex in examples:
            assert set(ex) == {"id", "context", "question", "answers"}
            texts, starts = ex["answers"]["text"], ex["answers"]["answer_start"]
            assert len(texts) == len(starts)
            assert texts or task.allow_unanswerable, f"{task.name}: unanswerable {ex['id']}"
            for text, start in zip(texts, starts, strict=True):
                assert ex["context"][start : start + len(text)] == text
    elif kind == "tagging":
        for ex in examples:
            assert set(ex) == {"tokens", "tags"}
            assert len(ex["tokens"]) == len(ex["tags"]) > 0
            assert all(t in labels for t in ex["tags"])
    elif kind == "retrieval":
        ids = {ex["id"] for ex in examples if ex["role"] == "candidate"}
        queries = [ex for ex in examples if ex["role"] == "query"]
        assert queries and ids
        for ex in examples:
            assert set(ex) == {"role", "id", "text", "gold"} and isinstance(ex["text"], str)
            assert set(ex["gold"]) <= ids
            if ex["role"] == "candidate":
                assert ex["gold"] == []
        assert any(q["gold"] for q in queries)
    else:
        assert kind == "mlm"
        assert all(set(ex) == {"text"} and ex["text"] for ex in examples)


@pytest.mark.parametrize("name", REAL)
def test_fixtures_read_as_canonical_examples(name: str, fixture_dir: Path) -> None:
    task = CATALOG[name]
    labels = task_labels(task, fixture_dir)
    langs = dict.fromkeys((*task.languages, *task.train_languages))
    for lang in langs:
        for split in task.splits(lang):
            check_canonical(task, read_examples(task, split, lang, data_dir=fixture_dir), labels)


def test_fixture_details(fixture_dir: Path) -> None:
    squad2 = read_examples(CATALOG["squad_v2"], "train", "en", data_dir=fixture_dir)
    assert any(not ex["answers"]["text"] for ex in squad2)
    panx = read_examples(CATALOG["panx"], "dev", "de", data_dir=fixture_dir)
    assert {t for ex in panx for t in ex["tags"]} >= {"O", "B-PER", "I-PER"}
    # XNLI trains on MNLI: its English train rows are GLUE's (premise/hypothesis/label/idx)
    row = sources._read_jsonl(sources.local_path(fixture_dir, "xnli", "en", "train"))[0]
    assert set(row) == {"premise", "hypothesis", "label", "idx"}
    # XCOPA renders the question as a connector after the premise
    xcopa = read_examples(CATALOG["xcopa"], "test", "et", data_dir=fixture_dir)
    assert all(ex["context"].endswith((" because", " so")) for ex in xcopa)


def test_fixtures_are_deterministic(tmp_path: Path) -> None:
    a = write_fixtures(tmp_path / "a", tasks=["tydiqa", "udpos"])
    b = write_fixtures(tmp_path / "b", tasks=["tydiqa", "udpos"])
    for path in a.rglob("*.jsonl"):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()


def test_snli_rows_without_gold_label_are_dropped() -> None:
    rows = [
        {"premise": "a", "hypothesis": "b", "label": -1},
        {"premise": "a", "hypothesis": "c", "label": 2},
    ]
    assert sources.SCHEMAS["nli"](rows, CATALOG["anli"]) == [{"text": ["a", "c"], "label": 2}]


def test_hub_code_path_reads_a_hub_layout_offline(tmp_path: Path) -> None:
    """The same load_dataset calls as online, on parquet laid out like the hub repositories:
    each task once (its English train, else its first language's test), plus the cases where
    language codes, split expressions or row filters matter."""
    mirror = write_hub_mirror(tmp_path / "hub", languages=["en", "de", "ar", "et", "sw"])
    cases = [("xnli", "dev", "de"), ("udpos", "test", "de"), ("tatoeba", "test", "sw")]
    for name in REAL:
        task = CATALOG[name]
        if not sources.SOURCES[name].local_only:
            trains = "train" in task.splits("en")
            cases.append((name, "train", "en") if trains else (name, "test", task.languages[0]))
    for name, split, lang in cases:
        task = CATALOG[name]
        examples = read_examples(task, split, lang, data_dir=None, hub_mirror=mirror)
        check_canonical(task, examples, task.labels)
    # ANLI+ = ANLI R1-R3 + MNLI + SNLI (train only)
    anli = read_examples(CATALOG["anli"], "train", "en", data_dir=None, hub_mirror=mirror)
    dev = read_examples(CATALOG["anli"], "dev", "en", data_dir=None, hub_mirror=mirror)
    assert len(anli) > len(dev)
    # TyDiQA's one config holds every language: only this language's questions come back
    tydi = read_examples(CATALOG["tydiqa"], "dev", "ar", data_dir=None, hub_mirror=mirror)
    assert tydi and all(ex["id"].startswith("arabic-") for ex in tydi)


def test_unreachable_hub_fails_fast_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        read_examples(CATALOG["xnli"], "dev", "de", data_dir=None)
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert "\n" not in msg
    assert "task 'xnli'" in msg and "facebook/xnli/de:validation" in msg
    assert "--data-dir" in msg and "premise, hypothesis, label" in msg


def test_local_only_tasks_name_the_file_and_schema(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"ccg/en/train.jsonl.*CCGbank is licensed.*tags"):
        read_examples(CATALOG["ccg"], "train", "en", data_dir=tmp_path)
    with pytest.raises(UserError, match=r"mewslix/de/test.jsonl.*get-mewsli-x.sh"):
        read_examples(CATALOG["mewslix"], "test", "de", data_dir=None)
    with pytest.raises(UserError, match=r"ccg/tags.txt"):
        task_labels(CATALOG["ccg"], tmp_path)


def test_zero_shot_splits_are_refused() -> None:
    with pytest.raises(UserError, match=r"no train split in 'de'"):
        read_examples(CATALOG["xnli"], "train", "de", data_dir=None)
    with pytest.raises(UserError, match=r"no train split"):
        read_examples(CATALOG["tatoeba"], "train", "de", data_dir=None)


def test_a_dead_host_is_detected_once_and_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the hub (or a URL's host) unreachable the load runs in HF's offline mode (the cache,
    or one line at once) instead of a minute of retries; the offline switch is restored."""
    import datasets.config
    import huggingface_hub.constants

    before = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probed: list[str] = []

    def dead(host: str) -> bool:
        probed.append(host)
        return False

    monkeypatch.setattr(sources, "_reachable", dead)
    for task, lang, host in (("xquad", "de", "huggingface.co"), ("squad_tt", "de", None)):
        split = "dev" if task == "xquad" else "train"
        start = time.monotonic()
        with pytest.raises(UserError, match="is unreachable and the HF cache has no copy"):
            read_examples(CATALOG[task], split, lang, data_dir=None)
        assert time.monotonic() - start < 10
        assert host is None or probed[-1] == host
    assert probed[-1] == "storage.googleapis.com"  # the translate-train files' host
    after = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    assert after == before
