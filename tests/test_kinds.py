"""Every task type through featurize -> cache -> collate -> train -> evaluate on a tiny model,
from canonical examples (tests/kinds_data.py), with the metric keys each type reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from kinds_data import ALL, BUCC, MC, MEWSLI, MLM, NER, PAIR, POS, QA, QA2, TATOEBA, needs

from raystilts.data.features import FeatureStore, collate, doc_stride, mlm_collator
from raystilts.tasks.catalog import TaskSpec
from raystilts.train.mixture import MultiTaskModel
from raystilts.train.runner import ChainPlan, Phase, TrainSettings, run_chain, selection_key

SETTINGS = TrainSettings(batch_size=4, eval_batch_size=8)


@pytest.fixture(scope="module")
def kinds_store(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FeatureStore]:
    from kinds_data import use_fixture_examples

    with pytest.MonkeyPatch.context() as mp:
        use_fixture_examples(mp)
        store = FeatureStore(
            cache_dir=tmp_path_factory.mktemp("kinds"), tokenizer_dir=tiny_model, max_length=32
        )
        for task in ALL:
            for t, split, lang in needs(task):
                store.ensure(t, split, lang, data_dir=None)
        yield store


def _run(store: FeatureStore, model: Path, phases: list[Phase], target: TaskSpec, steps: int = 2):
    plan = ChainPlan(
        phases=tuple(phases),
        target=Phase(task=target, lr=1e-3, steps=steps),
        eval_every=0,
        eval_languages=target.languages,
        seed=0,
    )
    reports: list[dict[str, float]] = []
    out = run_chain(
        plan, base_model=str(model), store=store, settings=SETTINGS, report=reports.append, pad_id=1
    )
    assert reports[-1] == out
    return out


# --- featurization --------------------------------------------------------------------------


def test_multiple_choice_pads_every_choice_to_the_longest_of_the_batch(
    kinds_store: FeatureStore,
) -> None:
    feats = kinds_store.load(MC, "train", "en")
    assert all(len(row) == 3 for row in feats.input_ids)  # (C, T) per example
    batch = collate(feats, [0, 1, 2], pad_id=1)
    longest = max(len(c) for i in (0, 1, 2) for c in feats.input_ids[i])
    assert batch["input_ids"].shape == (3, 3, longest)
    assert batch["attention_mask"].sum().item() == sum(
        len(c) for i in (0, 1, 2) for c in feats.input_ids[i]
    )
    assert batch["labels"].tolist() == feats.labels[:3]
    assert feats.lengths[0] == max(len(c) for c in feats.input_ids[0])


def test_qa_features_train_positions_eval_offsets_and_task_max_length(
    kinds_store: FeatureStore,
) -> None:
    assert kinds_store.path(QA, "dev", "de").name.count("-len64-") == 1  # the task's 384-style
    assert kinds_store.path(PAIR, "dev", "de").name.count("-len32-") == 1  # the store's
    train = kinds_store.load(QA, "train", "en")
    assert {"start_positions", "end_positions"} <= set(train.columns)
    assert max(len(x) for x in train.input_ids) <= 64
    batch = collate(train, [0, 1], pad_id=1)
    assert batch["start_positions"].shape == (2,) and "labels" not in batch
    dev = kinds_store.load(QA, "dev", "de")
    assert {"example_id", "offsets"} <= set(dev.columns)
    assert len(dev) > len(dev.examples) == 10  # long contexts need two windows (doc stride)
    assert {str(e["id"]) for e in dev.examples} == set(dev.columns["example_id"])
    assert doc_stride(384) == (128, 64)  # XTREME's stride and question length


def test_retrieval_rows_keep_role_id_and_gold(kinds_store: FeatureStore) -> None:
    feats = kinds_store.load(BUCC, "test", "fr")
    assert feats.columns["role"].count("query") == feats.columns["role"].count("candidate") == 10
    assert feats.columns["gold"][0] == [] and feats.columns["gold"][1] == ["c1"]
    assert not feats.labels


def test_mlm_masks_per_batch_with_transformers_collator(kinds_store: FeatureStore) -> None:
    feats = kinds_store.load_train(MLM)  # en and de train splits, joined
    assert len(feats) == 2 * 24
    a = collate(
        feats, list(range(8)), pad_id=1, mlm=mlm_collator(kinds_store.tokenizer_dir, seed=3)
    )
    b = collate(
        feats, list(range(8)), pad_id=1, mlm=mlm_collator(kinds_store.tokenizer_dir, seed=3)
    )
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    masked = a["labels"] != -100
    assert 0 < int(masked.sum()) < int(a["attention_mask"].sum())
    plain = collate(feats, list(range(8)), pad_id=1)["input_ids"]
    assert torch.equal(a["labels"][masked], plain[masked])  # labels are the original tokens
    assert not masked[:, 0].any()  # <s> is never masked (special-tokens mask)


def test_second_trial_does_no_tokenisation(
    kinds_store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raystilts.data.features as data

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("tokenized again")

    monkeypatch.setattr(data, "featurize", boom)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", boom)
    for task in ALL:
        for t, split, lang in needs(task):
            assert kinds_store.ensure(t, split, lang, data_dir=None) is False


def test_needs_of_each_kind() -> None:
    assert {(s, lang) for _, s, lang in needs(TATOEBA)} == {
        (s, lang) for s in ("dev", "test") for lang in ("de", "fr")
    }  # no training data: nothing to train on
    assert ("train", "de") in {(s, lang) for _, s, lang in needs(MLM)}  # every train language


# --- train and evaluate ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "metrics"),
    [
        (MC, {"accuracy"}),
        (QA, {"exact_match", "f1"}),
        (NER, {"f1", "precision", "recall"}),
        (POS, {"f1", "accuracy"}),
    ],
)
def test_trainable_target_reports_its_metrics_per_language(
    kinds_store: FeatureStore, tiny_model: Path, target: TaskSpec, metrics: set[str]
) -> None:
    out = _run(kinds_store, tiny_model, [], target)
    for split in ("dev", "test"):
        for lang in ("en", "de", "avg"):
            got = {
                k.rsplit("/", 1)[1] for k in out if k.startswith(f"{split}/{target.name}/{lang}/")
            }
            assert got == metrics, (split, lang)
    assert all(0.0 <= out[f"test/{target.name}/de/{m}"] <= 1.0 for m in metrics)
    assert out["target/train/loss"] > 0
    assert selection_key(target) == f"dev/{target.name}/en/{target.metric}"


def test_mlm_and_squad_v2_phases_then_classification(
    kinds_store: FeatureStore, tiny_model: Path
) -> None:
    phases = [Phase(task=MLM, lr=1e-3, steps=2), Phase(task=QA2, lr=1e-3, steps=2)]
    out = _run(kinds_store, tiny_model, phases, PAIR)
    assert 0.0 <= out["phase0/dev_en"] <= 1.0  # masked-token accuracy
    assert 0.0 <= out["phase1/dev_en"] <= 1.0  # SQuAD v2.0-style F1
    assert out["phase0/train/loss"] > 0
    assert 0.0 <= out["test/k_pair/de/accuracy"] <= 1.0


@pytest.mark.parametrize("target", [TATOEBA, BUCC, MEWSLI])
def test_retrieval_target_is_evaluated_without_training(
    kinds_store: FeatureStore, tiny_model: Path, target: TaskSpec
) -> None:
    out = _run(kinds_store, tiny_model, [Phase(task=PAIR, lr=1e-3, steps=2)], target, steps=0)
    assert "target/train/loss" not in out and "phase0/train/loss" in out
    assert f"dev/{target.name}/en/{target.metric}" not in out  # no English side to select on
    key = selection_key(target)
    assert key == f"dev/{target.name}/avg/{target.metric}" and key in out
    for split in ("dev", "test"):
        for lang in ("de", "fr"):
            assert 0.0 <= out[f"{split}/{target.name}/{lang}/{target.metric}"] <= 1.0
    if target is BUCC:  # the dev threshold is applied to test, and recorded
        for lang in ("de", "fr"):
            assert out[f"test/k_bucc/{lang}/threshold"] == out[f"dev/k_bucc/{lang}/threshold"]
        assert "test/k_bucc/avg/threshold" not in out
        assert {"precision", "recall"} <= {k.rsplit("/", 1)[1] for k in out if "k_bucc/de" in k}


def test_retrieval_layer_is_configurable(kinds_store: FeatureStore, tiny_model: Path) -> None:
    from raystilts.train.models import Embedder, build_model, retrieval_layer

    middle = build_model(str(tiny_model), TATOEBA, None, seed=0)
    assert isinstance(middle, Embedder) and middle.layer == 1  # 2 layers: the middle is 1
    assert retrieval_layer(24, None) == 12 and retrieval_layer(24, -1) == 24
    with pytest.raises(ValueError, match="outside"):
        retrieval_layer(2, 5)
    a = _run(kinds_store, tiny_model, [], TATOEBA, steps=0)
    plan = ChainPlan(
        phases=(),
        target=Phase(task=TATOEBA, lr=1e-3, steps=0),
        eval_every=0,
        eval_languages=TATOEBA.languages,
        seed=0,
    )
    last = run_chain(
        plan,
        base_model=str(tiny_model),
        store=kinds_store,
        settings=TrainSettings(batch_size=4, retrieval_layer=0),
        report=lambda _: None,
        pad_id=1,
    )
    assert set(a) == set(last)


def test_mixture_of_any_kinds_shares_one_encoder(
    kinds_store: FeatureStore, tiny_model: Path
) -> None:
    model = MultiTaskModel.from_pretrained(str(tiny_model), [QA, MC, MLM, NER], seed=0)
    encoders = {id(model.task_model(t).base_model) for t in model.tasks}
    assert len(encoders) == 1
    mixed = Phase(task=QA, also=(MC, MLM, NER), lr=1e-3, steps=4)
    out = _run(kinds_store, tiny_model, [mixed], PAIR)
    for t in (QA, MC, MLM, NER):
        assert 0.0 <= out[f"phase0/dev_en/{t.name}"] <= 1.0


def test_warm_start_ranks_any_kind_for_any_target(
    kinds_store: FeatureStore, tiny_model: Path
) -> None:
    from raystilts.train.transfer import rank_intermediates

    for target in (TATOEBA, QA):
        ranking = rank_intermediates(
            model_dir=str(tiny_model),
            store=kinds_store,
            target=target,
            intermediates=[PAIR, MC, QA2, NER, MLM],
            pad_id=1,
            max_examples=16,
        )
        assert set(ranking.order) == {"k_pair", "k_mc", "k_qa2", "k_ner", "k_mlm"}
        assert all(-1.0 <= s <= 1.0 for s in ranking.scores.values())


def test_workspace_needs_no_data_dir_for_hub_tasks(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kinds_data import use_fixture_examples

    from raystilts.core.errors import UserError
    from raystilts.tasks.catalog import CATALOG
    from raystilts.train.workspace import prepare_workspace

    use_fixture_examples(monkeypatch)  # stands in for the hub
    ws = prepare_workspace(
        model=str(tiny_model),
        needs=needs(MC),
        max_length=32,
        cache_dir=tmp_path,
        data_dir=None,
        log=False,
    )
    assert ws.data_dir is None and ws.to_config()["data_dir"] is None
    assert ws.misses == len(needs(MC))
    with pytest.raises(UserError, match=r"embedded task.*mini_xnli.*--data-dir"):
        prepare_workspace(
            model=str(tiny_model),
            needs=[(CATALOG["mini_xnli"], "dev", "en")],
            max_length=32,
            cache_dir=tmp_path,
            data_dir=None,
            log=False,
        )
