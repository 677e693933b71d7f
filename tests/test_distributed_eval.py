"""The final evaluation spread over a trial's DDP ranks scores exactly what one rank alone scores."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
import torch

from raystilts.data.features import FeatureStore
from raystilts.tasks.catalog import CATALOG
from raystilts.train.distributed_eval import languages_for_rank
from raystilts.train.runner import ChainPlan, Phase

TARGETS = ("mini_udpos", "mini_xnli")


@pytest.fixture(scope="module")
def store(tiny_model: Path, mini_data: Path, feature_dir: Path) -> FeatureStore:
    s = FeatureStore(cache_dir=feature_dir, tokenizer_dir=tiny_model, max_length=48)
    for name in TARGETS:
        task = CATALOG[name]
        for lang in task.languages:
            for split in task.splits(lang):
                s.ensure(task, split, lang, data_dir=mini_data)
    return s


def _plan(target: str) -> ChainPlan:
    t = CATALOG[target]
    return ChainPlan(
        phases=(),
        target=Phase(task=t, lr=1e-3, steps=1),
        eval_every=1,
        eval_languages=t.languages,
        seed=0,
    )


def _scores(model_dir: str, feature_dir: str, target: str, rank: int, world: int) -> Any:
    """The target's final metrics as rank ``rank`` of ``world`` computes them (no training:
    a seeded head on the tiny model; ranks other than 0 start from other weights, as they do
    when rank 0 alone restored the kept checkpoint)."""
    from raystilts.train.distributed_eval import sync_weights
    from raystilts.train.models import build_model
    from raystilts.train.runner import Dist, TrainSettings, _ChainRun, _evaluate_target

    store = FeatureStore(cache_dir=Path(feature_dir), tokenizer_dir=Path(model_dir), max_length=48)
    model = build_model(model_dir, CATALOG[target], None, seed=5, pad_id=1)
    if rank:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
    sync_weights(model, world_size=world)
    dist = Dist(rank=rank, world_size=world)
    plan = _plan(target)
    run = _ChainRun(
        plan=plan, base_model=model_dir, store=store, settings=TrainSettings(batch_size=8),
        dist=dist, pad_id=1, prefix_cache=None,
    )  # fmt: skip
    return _evaluate_target(plan, run.score, model, dist)


def _rank(rank: int, world: int, init: str, args: tuple[str, str], out: Any) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        out.put((rank, {t: _scores(*args, t, rank, world) for t in TARGETS}))
    finally:
        torch.distributed.destroy_process_group()


def test_languages_go_to_exactly_one_rank() -> None:
    langs = CATALOG["mini_udpos"].languages
    for world in (1, 2, 4, 8):
        shares = [languages_for_rank(langs, rank=r, world_size=world) for r in range(world)]
        assert sorted(x for s in shares for x in s) == sorted(langs)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="rank 2"):
        languages_for_rank(langs, rank=2, world_size=2)


def test_two_ranks_score_exactly_what_one_rank_scores(
    store: FeatureStore, tiny_model: Path, feature_dir: Path, tmp_path: Path
) -> None:
    """A tagging target (six languages: three per rank) and a classification one (three)."""
    args = (str(tiny_model), str(feature_dir))
    alone = {t: _scores(*args, t, 0, 1) for t in TARGETS}
    ctx = mp.get_context("spawn")  # two gloo ranks in their own processes
    out = ctx.Queue()
    init = (tmp_path / "init").as_uri()
    procs = [ctx.Process(target=_rank, args=(r, 2, init, args, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    for target in TARGETS:
        assert results[1][target] == {}  # rank 1 scored its languages; rank 0 holds them all
        assert results[0][target] == alone[target]  # every language and average, bit for bit
        per_lang = [k for k in alone[target] if k.startswith("test/") and "/avg/" not in k]
        metrics = [k for k in alone[target] if k.startswith(f"test/{target}/en/")]
        assert len(per_lang) == len(CATALOG[target].languages) * len(metrics)
