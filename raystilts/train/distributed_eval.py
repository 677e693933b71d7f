"""A trial's final evaluation spread over its DDP ranks: each rank scores whole languages, rank 0
gathers them.

    sync_weights(model, world_size=dist.world_size)   # rank 0 restored the kept checkpoint
    mine = languages_for_rank(plan.eval_languages, rank=dist.rank, world_size=dist.world_size)
    part = {lang: score_language(lang) for lang in mine}  # dev, then test, of each language
    every = gather_languages(part, rank=dist.rank, world_size=dist.world_size)  # None off rank 0

Before, rank 0 evaluated every language (dev and test) while the other ranks waited at a barrier;
now a trial of N workers evaluates about N languages at a time.

Why whole languages, not examples: a language's dev metrics feed its test evaluation (BUCC's
threshold), and every kind scores a (split, language) from all its predictions at once (span
F1, seqeval's chunks, retrieval over the whole pool), so splitting a language's examples would
need every kind to gather raw predictions. Whole languages on one rank give, for each language,
exactly the numbers rank 0 alone computed; rank 0 then averages them in the plan's language
order, as before, so the averages are bit-identical too. With fewer languages than ranks the
extra ranks idle, as all of them did before.

No Ray here; ``torch.distributed`` only, and nothing at all with one rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

from raystilts.train.models import unwrap

__all__ = ["gather_languages", "languages_for_rank", "sync_weights"]

_T = TypeVar("_T")


def languages_for_rank(languages: Sequence[str], *, rank: int, world_size: int) -> list[str]:
    """The languages ``rank`` evaluates: every ``world_size``-th, from its own index, so each
    language goes to exactly one rank and the shares differ by one language at most.

    >>> [languages_for_rank("abcde", rank=r, world_size=2) for r in (0, 1)]
    [['a', 'c', 'e'], ['b', 'd']]
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"languages_for_rank: rank {rank} is outside world_size {world_size}")
    return list(languages[rank::world_size])


def sync_weights(model: nn.Module, *, world_size: int) -> None:
    """Every rank's weights (parameters and buffers) become rank 0's: rank 0 alone restores the
    best English-dev checkpoint, and a target that is not trained (retrieval) is never wrapped
    in DDP, so only rank 0 holds a prefix it loaded from the cache. A collective: call it on
    every rank."""
    if world_size <= 1:
        return
    with torch.no_grad():
        for tensor in unwrap(model).state_dict().values():  # views of the module's own storage
            torch.distributed.broadcast(tensor, src=0)


def gather_languages(part: Mapping[str, _T], *, rank: int, world_size: int) -> dict[str, _T] | None:
    """Rank 0: every rank's ``part`` (language -> results) in one dict; other ranks: None.
    A collective: call it on every rank."""
    if world_size <= 1:
        return dict(part)
    parts: list[Mapping[str, _T] | None] | None = [None] * world_size if rank == 0 else None
    torch.distributed.gather_object(dict(part), parts, dst=0)
    if parts is None:
        return None
    merged: dict[str, _T] = {}
    for p in parts:
        merged.update(p or {})
    return merged
