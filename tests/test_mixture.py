"""Mixture phases: sampling weights, the seeded task sampler, and one encoder shared by many heads."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from raystilts.data.features import FeatureStore, collate
from raystilts.tasks.catalog import CATALOG
from raystilts.train.mixture import MultiTaskModel, TaskSampler, mixture_name, mixture_weights
from raystilts.train.runner import _encoder_state, build_model

MNLI, CCG = CATALOG["mini_mnli"], CATALOG["mini_ccg"]


@pytest.fixture(scope="module")
def store(tiny_model: Path, mini_data: Path, feature_dir: Path) -> FeatureStore:
    s = FeatureStore(cache_dir=feature_dir, tokenizer_dir=tiny_model, max_length=48)
    for task in (MNLI, CCG):
        s.ensure(task, "train", "en", data_dir=mini_data)
    return s


@pytest.fixture
def model(tiny_model: Path) -> MultiTaskModel:
    return MultiTaskModel.from_pretrained(str(tiny_model), [MNLI, CCG], seed=0)


def _batch(store: FeatureStore, task: str) -> dict[str, torch.Tensor]:
    feats = store.load(CATALOG[task], "train", "en")
    return collate(feats, list(range(8)), pad_id=1)


def _head(model: MultiTaskModel, task: str) -> dict[str, nn.Parameter]:
    """The parameters of ``task``'s model that are not the shared encoder's."""
    prefix = str(model.task_model(task).base_model_prefix) + "."
    return {n: p for n, p in model.task_model(task).named_parameters() if not n.startswith(prefix)}


# --- weights ---------------------------------------------------------------------------------


def test_weights_hand_computed() -> None:
    assert mixture_weights({"a": 100, "b": 400}, sampling="proportional") == pytest.approx(
        {"a": 0.2, "b": 0.8}
    )
    # T = 2: sqrt(100) : sqrt(400) = 10 : 20
    assert mixture_weights(
        {"a": 100, "b": 400}, sampling="temperature", temperature=2.0
    ) == pytest.approx({"a": 1 / 3, "b": 2 / 3})
    # T = 1 is proportional; a cap of 200 makes b count as 200 (1:2), then T = 2 gives 1:sqrt(2)
    sizes = {"a": 100, "b": 400, "c": 500}
    assert mixture_weights(sizes, sampling="temperature", temperature=1.0) == pytest.approx(
        mixture_weights(sizes, sampling="proportional")
    )
    assert mixture_weights(sizes, sampling="proportional", size_cap=200) == pytest.approx(
        {"a": 0.2, "b": 0.4, "c": 0.4}
    )
    w = mixture_weights({"a": 100, "b": 400}, sampling="temperature", size_cap=200)
    assert w["b"] / w["a"] == pytest.approx(2**0.5)
    assert list(w) == ["a", "b"]  # the order of the sizes: every rank builds the same sampler


@pytest.mark.parametrize(
    ("kwargs", "quoted"),
    [
        ({"sizes": {"a": 1}, "sampling": "uniform"}, "'uniform'"),
        ({"sizes": {"a": 1}, "sampling": "temperature", "temperature": 0.0}, "0.0"),
        ({"sizes": {"a": 1}, "sampling": "temperature", "temperature": float("inf")}, "inf"),
        ({"sizes": {"a": 1}, "sampling": "proportional", "size_cap": 0}, "got 0"),
        ({"sizes": {}, "sampling": "proportional"}, "no sizes"),
        ({"sizes": {"a": 10, "b": 0}, "sampling": "proportional"}, "'b'"),
        ({"sizes": {"a": -3}, "sampling": "proportional"}, "-3"),
    ],
)
def test_weights_reject_bad_input(kwargs: dict[str, object], quoted: str) -> None:
    with pytest.raises(ValueError, match=quoted):
        mixture_weights(**kwargs)  # type: ignore[arg-type]


def test_mixture_name() -> None:
    assert mixture_name(["mini_mnli", "mini_qqp"]) == "mini_mnli+mini_qqp"
    assert mixture_name(["mini_mnli"]) == "mini_mnli"
    with pytest.raises(ValueError, match="'a>b'"):
        mixture_name(["a>b"])


# --- sampler ---------------------------------------------------------------------------------


def test_sampler_same_seed_same_sequence() -> None:
    weights = {"a": 0.2, "b": 0.5, "c": 0.3}
    rank0 = TaskSampler(weights=weights, rng=random.Random(7))
    rank1 = TaskSampler(weights=weights, rng=random.Random(7))
    seq0 = [rank0.draw() for _ in range(500)]
    assert seq0 == [rank1.draw() for _ in range(500)]
    other = TaskSampler(weights=weights, rng=random.Random(8))
    assert seq0 != [other.draw() for _ in range(500)]
    # a numpy Generator works too, and is as deterministic
    np0 = TaskSampler(weights=weights, rng=np.random.default_rng(7))
    np1 = TaskSampler(weights=weights, rng=np.random.default_rng(7))
    assert [np0.draw() for _ in range(200)] == [np1.draw() for _ in range(200)]


@pytest.mark.parametrize("make_rng", [random.Random, np.random.default_rng])
def test_sampler_frequencies_approach_weights(make_rng: type) -> None:
    weights = mixture_weights({"a": 100, "b": 400, "c": 900}, sampling="temperature")
    sampler = TaskSampler(weights={**weights, "never": 0.0}, rng=make_rng(0))
    n = 30_000
    counts = Counter(d for d, _ in zip(sampler, range(n), strict=False))
    assert counts["never"] == 0
    for task, p in weights.items():
        assert counts[task] / n == pytest.approx(p, abs=0.015)


def test_sampler_normalises_and_rejects_bad_weights() -> None:
    assert TaskSampler(weights={"a": 1.0, "b": 3.0}, rng=random.Random(0)).weights == {
        "a": 0.25,
        "b": 0.75,
    }
    for bad, quoted in [({}, "empty"), ({"a": -1.0}, "-1.0"), ({"a": float("nan")}, "nan")]:
        with pytest.raises(ValueError, match=quoted):
            TaskSampler(weights=bad, rng=random.Random(0))
    with pytest.raises(ValueError, match="all be zero"):
        TaskSampler(weights={"a": 0.0}, rng=random.Random(0))


# --- shared encoder --------------------------------------------------------------------------


def test_encoder_shared_and_counted_once(model: MultiTaskModel) -> None:
    enc = model.encoder
    assert model.tasks == ("mini_mnli", "mini_ccg")
    for task in model.tasks:
        tm = model.task_model(task)
        assert getattr(tm, str(tm.base_model_prefix)) is enc
        ptrs = {p.data_ptr() for p in getattr(tm, str(tm.base_model_prefix)).parameters()}
        assert ptrs == {p.data_ptr() for p in enc.parameters()}
    heads = [p for t in model.tasks for p in _head(model, t).values()]
    params = list(model.parameters())
    assert len(params) == len(list(enc.parameters())) + len(heads)
    assert len({id(p) for p in params}) == len(params)
    assert {id(p) for p in params} == {id(p) for p in enc.parameters()} | {id(p) for p in heads}
    assert type(model.task_model("mini_ccg")).__name__.endswith("ForTokenClassification")
    assert type(model.task_model("mini_mnli")).__name__.endswith("ForSequenceClassification")
    with pytest.raises(ValueError, match="'mini_qqp'"):
        model.task_model("mini_qqp")


@pytest.mark.parametrize(("task", "other"), [("mini_mnli", "mini_ccg"), ("mini_ccg", "mini_mnli")])
def test_step_updates_encoder_and_only_its_head(
    model: MultiTaskModel, store: FeatureStore, task: str, other: str
) -> None:
    def snapshot() -> dict[str, dict[str, torch.Tensor]]:
        return {
            "encoder": {n: p.detach().clone() for n, p in model.encoder.named_parameters()},
            **{t: {n: p.detach().clone() for n, p in _head(model, t).items()} for t in model.tasks},
        }

    before = snapshot()
    model(task, **_batch(store, task)).loss.backward()
    assert all(p.grad is None for p in _head(model, other).values())
    assert all(p.grad is not None for p in _head(model, task).values())
    emb = model.encoder.get_submodule("embeddings.word_embeddings").weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    # AdamW skips parameters without a gradient: no momentum, no weight decay for the other head
    torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1).step()
    after = snapshot()

    def moved(part: str) -> set[str]:
        return {n for n, v in before[part].items() if not torch.equal(v, after[part][n])}

    assert "embeddings.word_embeddings.weight" in moved("encoder")
    assert moved(task) == set(before[task])  # every weight of the head that was used
    assert moved(other) == set()


def test_encoder_state_loads_into_next_phase_model(
    model: MultiTaskModel, store: FeatureStore, tiny_model: Path
) -> None:
    model("mini_mnli", **_batch(store, "mini_mnli")).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()  # so the state differs from the base model
    state = model.encoder_state()
    assert state.keys() == _encoder_state(model).keys()  # the runner's own reader agrees
    assert all(torch.equal(state[k], v) for k, v in _encoder_state(model).items())
    nxt = build_model(str(tiny_model), CATALOG["mini_udpos"], state, seed=1)
    loaded = getattr(nxt, str(nxt.base_model_prefix)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    fresh = build_model(str(tiny_model), CATALOG["mini_udpos"], None, seed=1)
    assert not all(
        torch.equal(v, getattr(fresh, str(fresh.base_model_prefix)).state_dict()[k])
        for k, v in state.items()
    )
    # and a mixture starts from a previous phase's encoder the same way
    mixed = MultiTaskModel.from_pretrained(
        str(tiny_model), [CCG, MNLI], encoder_state=state, seed=3
    )
    assert all(torch.equal(mixed.encoder_state()[k], v) for k, v in state.items())


def test_rejects_duplicate_tasks_and_non_hf_models(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="mini_mnli"):
        MultiTaskModel.from_pretrained(str(tiny_model), [MNLI, MNLI], seed=0)
    with pytest.raises(ValueError, match="'plain'"):
        MultiTaskModel({"plain": nn.Linear(2, 2)})


def test_under_ddp_with_unused_parameter_search(
    model: MultiTaskModel, store: FeatureStore, tmp_path: Path
) -> None:
    """One process of gloo: alternating heads train without DDP waiting for the unused one."""
    import torch.distributed as dist

    assert model.needs_unused_parameter_search
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=model.needs_unused_parameter_search
        )
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
        for task in ("mini_mnli", "mini_ccg", "mini_ccg", "mini_mnli"):
            other = "mini_ccg" if task == "mini_mnli" else "mini_mnli"
            ddp(task, **_batch(store, task)).loss.backward()
            assert all(p.grad is None for p in _head(model, other).values())
            opt.step()
            opt.zero_grad(set_to_none=True)
        assert _encoder_state(ddp).keys() == model.encoder_state().keys()
    finally:
        dist.destroy_process_group()
