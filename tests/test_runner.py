"""Featurization, the tokenized cache, batching and the chain runner on a tiny real model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raystilts.core.errors import UserError
from raystilts.data.features import FeatureStore, batches, collate
from raystilts.metrics.scores import accuracy, token_accuracy
from raystilts.tasks.catalog import CATALOG, get_task
from raystilts.train.runner import ChainPlan, DivergedError, Phase, TrainSettings, run_chain
from raystilts.train.workspace import prepare_workspace


@pytest.fixture(scope="module")
def store(tiny_model: Path, mini_data: Path, feature_dir: Path) -> FeatureStore:
    s = FeatureStore(cache_dir=feature_dir, tokenizer_dir=tiny_model, max_length=48)
    for name in ("mini_mnli", "mini_ccg", "mini_xnli", "mini_udpos"):
        task = CATALOG[name]
        for lang in task.languages:
            for split in task.splits(lang):
                s.ensure(task, split, lang, data_dir=mini_data)
    return s


def test_cache_hit_does_no_tokenization(
    store: FeatureStore, mini_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raystilts.data.features as data

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("tokenized again")

    monkeypatch.setattr(data, "featurize", boom)
    assert store.ensure(CATALOG["mini_xnli"], "test", "qac", data_dir=mini_data) is False


def test_tagging_labels_only_first_subword(store: FeatureStore) -> None:
    feats = store.load(CATALOG["mini_udpos"], "test", "qad")
    row_ids, row_labels = feats.input_ids[0], feats.labels[0]
    assert len(row_ids) == len(row_labels)
    assert row_labels[0] == -100 and row_labels[-1] == -100  # <s> and </s>
    scored = [x for x in row_labels if x != -100]
    assert 3 <= len(scored) <= len(row_ids) - 2


def test_dynamic_padding_and_length_grouping(store: FeatureStore) -> None:
    feats = store.load(CATALOG["mini_mnli"], "train", "en")
    plan = batches(feats.lengths, batch_size=32, seed=0, epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(len(feats)))

    def spread(plan: list[list[int]]) -> float:
        return sum(
            max(feats.lengths[i] for i in b) - min(feats.lengths[i] for i in b) for b in plan
        ) / len(plan)

    unsorted = [list(range(i, min(i + 32, len(feats)))) for i in range(0, len(feats), 32)]
    assert spread(plan) < 0.5 * spread(unsorted)  # length-grouped: a batch pads little
    batch = collate(feats, plan[0], pad_id=1)
    assert batch["input_ids"].shape[1] == max(feats.lengths[i] for i in plan[0])
    # two ranks: disjoint batches, same count
    r0 = batches(feats.lengths, batch_size=32, seed=0, epoch=0, rank=0, world_size=2)
    r1 = batches(feats.lengths, batch_size=32, seed=0, epoch=0, rank=1, world_size=2)
    assert len(r0) == len(r1) and not {i for b in r0 for i in b} & {i for b in r1 for i in b}


def test_metrics_hand_computed() -> None:
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert token_accuracy([[-100, 1, 2, -100], [3, -100]], [[5, 1, 0, 5], [3, 3]]) == pytest.approx(
        2 / 3
    )
    assert math.isnan(accuracy([], []))


def _plan(
    phases: list[tuple[str, float, int]],
    target: str,
    *,
    steps: int = 6,
    seed: int = 0,
    lr: float = 1e-3,
) -> ChainPlan:
    t = CATALOG[target]
    return ChainPlan(
        phases=tuple(Phase(task=CATALOG[n], lr=plr, steps=s) for n, plr, s in phases),
        target=Phase(task=t, lr=lr, steps=steps),
        eval_every=3,
        eval_languages=t.languages,
        seed=seed,
    )


def test_chain_runs_phases_then_reports_every_language(
    store: FeatureStore, tiny_model: Path
) -> None:
    reports: list[dict[str, float]] = []
    plan = _plan([("mini_mnli", 1e-3, 4), ("mini_ccg", 1e-3, 4)], "mini_udpos")
    out = run_chain(
        plan,
        base_model=str(tiny_model),
        store=store,
        settings=TrainSettings(batch_size=8),
        report=reports.append,
        pad_id=1,
    )
    assert len(reports) == 2  # one intermediate report (step 3), then the final one
    assert (
        "dev/mini_udpos/en/accuracy" in reports[0]
        and "test/mini_udpos/en/accuracy" not in reports[0]
    )
    for lang in CATALOG["mini_udpos"].languages:
        for split in ("dev", "test"):
            assert 0.0 <= out[f"{split}/mini_udpos/{lang}/accuracy"] <= 1.0
    assert out["test/mini_udpos/avg/accuracy"] == pytest.approx(
        sum(out[f"test/mini_udpos/{lang}/accuracy"] for lang in CATALOG["mini_udpos"].languages) / 6
    )
    assert {"phase0/dev_en", "phase1/dev_en", "target/train/tokens_per_s"} <= out.keys()


def test_same_seed_same_result_other_seed_differs(store: FeatureStore, tiny_model: Path) -> None:
    def run(seed: int) -> dict[str, float]:
        return run_chain(
            _plan([], "mini_xnli", seed=seed),
            base_model=str(tiny_model),
            store=store,
            settings=TrainSettings(batch_size=8),
            report=lambda _: None,
            pad_id=1,
        )

    a, b, c = run(0), run(0), run(1)
    assert a["test/mini_xnli/qab/accuracy"] == b["test/mini_xnli/qab/accuracy"]
    assert a["target/train/loss"] == b["target/train/loss"]
    assert a["target/train/loss"] != c["target/train/loss"]


def test_divergence_is_detected(store: FeatureStore, tiny_model: Path) -> None:
    with pytest.raises(DivergedError, match="training loss"):
        run_chain(
            _plan([], "mini_xnli", lr=1e12),
            base_model=str(tiny_model),
            store=store,
            settings=TrainSettings(batch_size=8, max_grad_norm=1e30),
            report=lambda _: None,
            pad_id=1,
        )


def test_missing_data_is_one_line_user_error(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(UserError, match=r"no dev data for language 'qaa'.*jsonl") as e:
        prepare_workspace(
            model=str(tiny_model),
            needs=[(get_task("mini_xnli"), "dev", "qaa")],
            max_length=32,
            cache_dir=tmp_path,
            data_dir=tmp_path / "nothing",
            log=False,
        )
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="did you mean 'mini_xnli'"):
        get_task("mini_xnl")


def test_gradient_accumulation_matches_one_large_batch(
    store: FeatureStore, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One step on 8 examples equals one step on the same 8 as 2 accumulated micro-batches of 4
    (dropout off, classification loss is a mean over examples), and the model is saved."""
    import shutil

    from safetensors.torch import load_file
    from transformers import AutoConfig

    import raystilts.train.runner as runner

    model_dir = tmp_path / "no-dropout"
    shutil.copytree(tiny_model, model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(model_dir)

    def fixed(size: int) -> object:
        def plan(lengths: list[int], *, batch_size: int, **_: object) -> list[list[int]]:
            assert batch_size == size
            return [list(range(i, i + size)) for i in range(0, 8, size)]

        return plan

    weights = {}
    for micro, accum in ((8, 1), (4, 2)):
        monkeypatch.setattr(runner, "batches", fixed(micro))
        out_dir = tmp_path / f"m{micro}"
        out_dir.mkdir()
        plan = ChainPlan(
            phases=(),
            target=Phase(task=CATALOG["mini_xnli"], lr=1e-2, steps=1),
            eval_every=1,
            eval_languages=("en",),
            seed=0,
        )
        run_chain(
            plan,
            base_model=str(model_dir),
            store=store,
            settings=TrainSettings(batch_size=micro, grad_accum=accum, warmup_ratio=0.0),
            report=lambda _: None,
            pad_id=1,
            final_model_dir=out_dir,
        )
        weights[micro] = load_file(str(out_dir / "model.safetensors"))
    base = load_file(str(model_dir / "model.safetensors"))
    moved = 0
    for name, tensor in weights[8].items():
        assert torch_allclose(tensor, weights[4][name]), name
        if name in base and not torch_allclose(tensor, base[name]):
            moved += 1
    assert moved > 10  # the step really changed the encoder


def torch_allclose(a: object, b: object) -> bool:
    import torch

    return bool(torch.allclose(a, b, atol=1e-5, rtol=1e-4))  # type: ignore[arg-type]


def test_prefix_cache_reuses_a_trained_prefix_with_the_same_result(
    store: FeatureStore, tiny_model: Path, tmp_path: Path
) -> None:
    """Chain B shares its first phase with chain A: B loads it from the cache instead of
    training it, and ends exactly where B trained from scratch ends."""
    from raystilts.train.prefix_cache import PrefixCache

    def run(plan: ChainPlan, cache: PrefixCache | None) -> dict[str, float]:
        return run_chain(
            plan,
            base_model=str(tiny_model),
            store=store,
            settings=TrainSettings(batch_size=8),
            report=lambda _: None,
            pad_id=1,
            prefix_cache=cache,
            model_fingerprint="tiny",
        )

    a = _plan([("mini_mnli", 1e-3, 4)], "mini_xnli", lr=1e-3)
    b = _plan([("mini_mnli", 1e-3, 4), ("mini_ccg", 1e-3, 4)], "mini_udpos", lr=2e-3)
    cache = PrefixCache(root=str(tmp_path / "prefixes"), local_dir=tmp_path / "node")
    run(a, cache)
    assert cache.stats.writes == 1 and cache.stats.hits == 0
    cached = run(b, cache)
    assert cached["phase0/cached"] == 1.0 and "phase1/cached" not in cached
    assert "phase0/train/loss" not in cached  # not trained again
    assert cache.stats.phases_saved == 1 and cache.stats.writes == 2
    fresh = run(b, None)
    for lang in ("en", "qab", "qae"):
        assert (
            cached[f"test/mini_udpos/{lang}/accuracy"] == fresh[f"test/mini_udpos/{lang}/accuracy"]
        )
    assert cached["target/train/loss"] == pytest.approx(fresh["target/train/loss"], rel=1e-6)
    assert cached["phase0/dev_en"] == fresh["phase0/dev_en"]
    # the whole chain of b is cached now: a third run trains only the target
    again = run(b, PrefixCache(root=str(tmp_path / "prefixes"), local_dir=tmp_path / "node"))
    assert again["phase0/cached"] == again["phase1/cached"] == 1.0
    assert again["test/mini_udpos/qae/accuracy"] == fresh["test/mini_udpos/qae/accuracy"]


def test_mixture_phase_trains_both_tasks_and_carries_the_encoder(
    store: FeatureStore, tiny_model: Path, tmp_path: Path
) -> None:
    """A mixed phase of a classification and a tagging task, then the target; the mixture is
    cached under its own key (not the single task's)."""
    from raystilts.train.prefix_cache import PrefixCache

    mixed = Phase(
        task=CATALOG["mini_ccg"], also=(CATALOG["mini_mnli"],), lr=1e-3, steps=6, temperature=2.0
    )
    plan = ChainPlan(
        phases=(mixed,),
        target=Phase(task=CATALOG["mini_xnli"], lr=1e-3, steps=4),
        eval_every=2,
        eval_languages=("en", "qab"),
        seed=0,
    )
    assert plan.name == "mini_ccg+mini_mnli>mini_xnli"
    cache = PrefixCache(root=str(tmp_path / "prefixes"), local_dir=tmp_path / "node")
    out = run_chain(
        plan,
        base_model=str(tiny_model),
        store=store,
        settings=TrainSettings(batch_size=8),
        report=lambda _: None,
        pad_id=1,
        prefix_cache=cache,
        model_fingerprint="tiny",
    )
    for task in ("mini_ccg", "mini_mnli"):
        assert 0.0 <= out[f"phase0/dev_en/{task}"] <= 1.0
    assert out["phase0/dev_en"] == pytest.approx(
        (out["phase0/dev_en/mini_ccg"] + out["phase0/dev_en/mini_mnli"]) / 2
    )
    assert 0.0 <= out["test/mini_xnli/qab/accuracy"] <= 1.0
    single = _plan([("mini_ccg", 1e-3, 6)], "mini_xnli")
    depth, _ = cache.longest_hit(
        runner_keys(single, store)
    )  # the mixture's entry is not the single task's
    assert depth == 0


def runner_keys(plan: ChainPlan, store: FeatureStore) -> list[str]:
    from raystilts.train.runner import Dist, _prefix_keys

    return _prefix_keys(plan, store, TrainSettings(batch_size=8), Dist(), "tiny")


def test_a_sampled_chain_becomes_a_plan_with_its_tasks_resolved() -> None:
    """The one chain type from sampling to the workers is core.space.ChainPlanSpec (names
    only); the runner resolves its tasks, mixtures and a zero-shot target's steps."""
    from raystilts.core.space import ChainPlanSpec, MixtureSettings, PhaseSpec
    from raystilts.tasks.catalog import CATALOG

    spec = ChainPlanSpec(
        phases=(
            PhaseSpec(task="mnli+qqp", lr=2e-5, steps=10),
            PhaseSpec(task="squad_v1", lr=3e-5, steps=5),
        ),
        target=PhaseSpec(task="tatoeba", lr=1e-5, steps=7),
        eval_every=3,
    )
    mixture = MixtureSettings(sampling="proportional", size_cap=100)
    plan = ChainPlan.from_spec(
        spec, task=CATALOG.__getitem__, mixture=mixture, languages=("de", "fr"), seed=4
    )
    assert plan.name == spec.name == "mnli+qqp>squad_v1>tatoeba"
    mixed, single = plan.phases
    assert (mixed.task.name, [t.name for t in mixed.also]) == ("mnli", ["qqp"])
    assert (mixed.sampling, mixed.size_cap, mixed.lr, mixed.steps) == (
        "proportional",
        100,
        2e-5,
        10,
    )
    assert not single.also and single.task is CATALOG["squad_v1"]
    assert plan.target.steps == 0  # tatoeba has no training data: evaluated, not trained
    assert (plan.eval_every, plan.eval_languages, plan.seed) == (3, ("de", "fr"), 4)
    trained = ChainPlan.from_spec(
        ChainPlanSpec(phases=(), target=PhaseSpec(task="xnli", lr=1e-5, steps=7), eval_every=0),
        task=CATALOG.__getitem__,
        mixture=mixture,
        languages=("en",),
        seed=0,
    )
    assert trained.target.steps == 7 and trained.phases == ()


def test_a_prefix_another_trial_is_training_is_waited_for_not_trained_again(
    store: FeatureStore, tiny_model: Path, tmp_path: Path
) -> None:
    """Chain B needs the prefix that another trial (on another node, say) holds the claim of:
    B waits until that trial puts it in the cache and loads it, instead of training it too."""
    import shutil
    import threading

    from raystilts.train.prefix_cache import PrefixCache
    from raystilts.train.prefix_claims import PrefixClaims

    root, claims = str(tmp_path / "prefixes"), PrefixClaims(root=str(tmp_path / "claims"))

    def run(plan: ChainPlan, cache: PrefixCache) -> dict[str, float]:
        return run_chain(
            plan, base_model=str(tiny_model), store=store, settings=TrainSettings(batch_size=8),
            report=lambda _: None, pad_id=1, prefix_cache=cache, model_fingerprint="tiny",
        )  # fmt: skip

    a = _plan([("mini_mnli", 1e-3, 4)], "mini_xnli", lr=1e-3)
    b = _plan([("mini_mnli", 1e-3, 4), ("mini_ccg", 1e-3, 4)], "mini_udpos", lr=2e-3)
    first = run(a, PrefixCache(root=root, local_dir=tmp_path / "n1", claims=claims, owner="a"))
    assert "phase0/train/loss" in first
    (entry,) = [p for p in Path(root).glob("p1-*") if p.is_dir()]  # a trained it; out again:
    key, state = entry.name, PrefixCache(root=root, local_dir=tmp_path / "n1").get(entry.name)
    assert state is not None
    shutil.rmtree(entry)
    other = PrefixCache(root=root, local_dir=tmp_path / "n2", claims=claims, owner="other")
    assert other.turn(key) == ("train", None)  # "other" is training it now
    putter = threading.Timer(1.5, other.put, args=(key, state, {"dev_en": 0.5}))
    putter.start()
    waiter = PrefixCache(root=root, local_dir=tmp_path / "n3", claims=claims, owner="b", poll_s=0.2)
    out = run(b, waiter)
    putter.join()
    assert out["phase0/cached"] == 1.0 and "phase0/train/loss" not in out  # waited, loaded
    assert out["phase0/dev_en"] == 0.5 and "phase1/train/loss" in out
    assert out["prefix_cache/waits"] == 1.0 and out["prefix_cache/waited_s"] >= 1.0
    assert claims.holder(key) is None


def test_packed_tagging_steps_equal_padded_ones(
    store: FeatureStore, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With dropout off, two packed steps on mini_udpos move the weights as the same padded
    steps do (packing changes what is computed, not the loss); classification never packs."""
    import shutil

    from transformers import AutoConfig

    import raystilts.data.packing as packing
    import raystilts.train.runner as runner
    from raystilts.train.models import build_model

    model_dir = tmp_path / "no-dropout"
    shutil.copytree(tiny_model, model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(model_dir)
    packed: list[int] = []
    real_pack = packing.pack

    def spy(batch, **kw):  # type: ignore[no-untyped-def]
        out = real_pack(batch, **kw)
        packed.append(out["input_ids"].numel())
        return out

    monkeypatch.setattr(runner, "pack", spy)
    states = {}
    for pack in (False, True):
        task = CATALOG["mini_udpos"]
        model = build_model(str(model_dir), task, None, seed=0, pad_id=1)
        settings = TrainSettings(batch_size=8, warmup_ratio=0.0, pack=pack)
        phase = Phase(task=task, lr=1e-2, steps=2)
        runner._train_phase(
            model, phase, store=store, settings=settings, dist=runner.Dist(), seed=0, pad_id=1
        )
        states[pack] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert len(packed) == 2  # both steps of the packed run, none of the padded one
    for name, tensor in states[False].items():
        assert torch_allclose(tensor, states[True][name]), name
    packed.clear()
    task = CATALOG["mini_xnli"]
    model = build_model(str(model_dir), task, None, seed=0, pad_id=1)
    runner._train_phase(
        model,
        Phase(task=task, lr=1e-2, steps=1),
        store=store,
        settings=TrainSettings(batch_size=8),
        dist=runner.Dist(),
        seed=0,
        pad_id=1,
    )
    assert packed == []  # one label per row: padded as before
