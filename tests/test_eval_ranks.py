"""The final evaluation split over DDP ranks (two gloo processes, no Ray): the same metrics as
one process, each language scored on exactly one rank, and rank 0's weights on every rank."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

from raystilts.tasks import CATALOG
from raystilts.train.runner import ChainPlan, Dist, Phase, _evaluate_target, _weights_from_rank0

LANGS = ("en", "qaa", "qab", "qac", "qad")


def _plan() -> ChainPlan:
    task = CATALOG["mini_xnli"]
    return ChainPlan(
        phases=(),
        target=Phase(task=task, lr=1e-3, steps=1),
        eval_every=1,
        eval_languages=LANGS,
        seed=0,
    )


def _score(seen: list[str]):  # type: ignore[no-untyped-def]
    def score(model, task, split, lang, dev=None):  # type: ignore[no-untyped-def]
        seen.append(f"{split}/{lang}")
        base = (LANGS.index(lang) + 1) / 7 + (0.01 if split == "test" else 0.0)
        # test sees its language's dev metrics (BUCC's threshold), so they must travel along
        return {"accuracy": base, "from_dev": (dev or {}).get("accuracy", -1.0)}

    return score


def _worker(rank: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        dist = Dist(rank=rank, world_size=2)
        model = nn.Linear(3, 2)
        if rank == 0:
            with torch.no_grad():
                model.weight.fill_(7.0)  # as if rank 0 alone restored the best checkpoint
        _weights_from_rank0(model, dist)
        seen: list[str] = []
        metrics = _evaluate_target(_plan(), _score(seen), model, dist)
        result = {"metrics": metrics, "seen": seen, "weight": float(model.weight.sum())}
        Path(out, f"{rank}.json").write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_score_what_one_scores(tmp_path: Path) -> None:
    one = _evaluate_target(_plan(), _score([]), nn.Linear(3, 2))
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(init, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["metrics"] == one  # identical numbers, keys and order-free equality
        assert r["weight"] == 7.0 * 6
    seen = ranks[0]["seen"] + ranks[1]["seen"]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 2 * len(LANGS)  # each once
    assert all(one[f"test/mini_xnli/{lang}/from_dev"] >= 0 for lang in LANGS)
    assert list(ranks[0]["metrics"]) == list(one)  # the same key order as one process
