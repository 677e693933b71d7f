"""The search's own logic, without Ray: which chain and seed to train next, and what is selected.

    search = build_search(space, "mini_xnli", ranking=("mini_mnli", "mini_qqp"))
    while (step := search.suggest()) is not DONE:
        if step is None:
            ...                               # wait: a first seed may still earn its others
        else:
            search.report(step.key, step.index, train(step.config))
    best = search.selection()                 # best mean over the seeds each config ran

:class:`ChainSearch` drives an Optuna study through its public ask/tell API (proposals from the
space's define-by-run function, :mod:`raystilts.core.space`), races seeds (:class:`raystilts.core.racing.
SeedRace`), answers a repeated proposal from the runs of that config instead of training it
again, and on "local" turns proposes a neighbour of the best chain so far, or, where the best
chain has none left in the space, the next task of the ranking (warm start and prior).
:func:`build_search` wires it exactly as ``raystilts search`` does for each algorithm;
:class:`raystilts.search.RacingSearcher` adapts it to Ray Tune and
``benchmarks/transfer_tables.py`` drives it with scores looked up in published tables, so both
run the same objects.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import optuna

from raystilts.core.racing import SeedRace
from raystilts.core.schema import config_key
from raystilts.core.space import (
    MIX,
    Choice,
    FloatRange,
    SearchSpace,
    all_chains,
    baseline_params,
    chain_from_params,
    chain_params,
    make_define_by_run,
)

__all__ = [
    "DONE",
    "LOCAL_SHARE",
    "MAX_DUPLICATES",
    "RACE_WITHIN_SD",
    "TRIAL_INDEX",
    "ChainSearch",
    "Launch",
    "build_search",
    "chain_identity",
    "config_key",
    "neighbour_params",
    "neighbours",
    "seed_of",
]

# The key of a trial's seed index in its config: the string Ray Tune's Repeater used, so that
# configs of searches run before this module existed still read back (``seed_of``, --resume).
TRIAL_INDEX: Final = "__trial_index__"
# The default search (algorithm: tpe) races seeds: a config runs its further seeds only when its
# first seed scores within RACE_WITHIN_SD pooled seed-sds of the best mean (raystilts.core.racing).
# One sd is the benchmark's own tolerance for "found" (benchmarks/search_efficiency.py).
RACE_WITHIN_SD = 1.0
# Proposals of a config already run (the sampler re-sampling a small discrete space) are told
# that config's score instead of training it again; after this many in a row the space is
# taken as exhausted and the search ends.
MAX_DUPLICATES = 50
# After the baseline and the warm start's chains, this share of the new configs are neighbours
# of the best chain so far (one task added, mixed in or put before it; see neighbours()) instead
# of the sampler's proposals: chains nest, and an appended task reuses the best chain's trained
# prefix. One half: as much exploitation of the chain structure as exploration by TPE.
LOCAL_SHARE = 0.5


class _Done:
    """The search has nothing more to run (every decision is in)."""

    def __repr__(self) -> str:
        return "DONE"


DONE: Final = _Done()


@dataclass(frozen=True, slots=True)
class Launch:
    """Run seed ``index`` of the config ``key`` (``config`` includes ``TRIAL_INDEX``)."""

    key: str
    index: int
    config: dict[str, Any]


def seed_of(config: Mapping[str, Any], space: SearchSpace) -> int:
    """The seed of a trial: its config's ``TRIAL_INDEX`` (0..len(seeds)-1) into the space's seeds."""
    return space.search.seeds[int(config.get(TRIAL_INDEX, 0))]


def neighbours(
    chain: Sequence[str], order: Sequence[str], space: SearchSpace, target: str
) -> list[tuple[str, ...]]:
    """The chains of the space one task away from ``chain`` (phase names; a mixture is one
    phase ``"a+b"``), for each task ``b`` not in it, in ``order``: ``b>chain``, ``chain>b``,
    then the mixture of its tasks with ``b``; only chains inside the space (length, forms).
    ``b>chain`` comes first because in sequential transfer the phase nearest the target counts
    most, and ``chain`` is the best found: it keeps that place. With length 2 and both forms,
    ``("a",)`` and order ``("b", "c")`` give ``b>a, a>b, a+b, c>a, a>c, a+c``; the empty
    chain's neighbours are the single tasks. :class:`ChainSearch` tries first those whose
    prefix is trained already.
    """
    tasks = [t for p in chain for t in p.split(MIX)]
    mixed = len(chain) == 1 and MIX in chain[0]
    out: list[tuple[str, ...]] = []
    for b in order:
        if b in tasks:
            continue
        candidates: list[tuple[str, ...]] = [(b,)] if not chain else []
        if chain and not mixed:
            candidates += [(b, *chain), (*chain, b), (MIX.join(sorted([*tasks, b])),)]
        elif mixed:
            candidates.append((MIX.join(sorted([*tasks, b])),))
        for c in candidates:
            if len(tasks) + 1 > space.intermediate.max_chain_length:
                break  # too long: every candidate adds one task (checked first: it is cheap)
            try:
                chain_params(space, target, c)
            except ValueError:  # outside the space: a form it does not search
                continue
            if c not in out:
                out.append(c)
    return out


def neighbour_params(
    space: SearchSpace, target: str, best: Mapping[str, Any], chain: Sequence[str]
) -> dict[str, Any]:
    """Params of ``chain``, a neighbour of the config ``best``: the phases it shares with the
    best chain from the start keep their hyperparameters (so their trained prefix is reused),
    the target keeps its learning rate, a new phase takes the centre of the space."""
    params = chain_params(space, target, chain)
    plan = chain_from_params(best, space, target)
    inter = space.intermediate
    for i, phase in enumerate(plan.phases):
        if i >= len(chain) or chain[i] != phase.task:
            break
        if isinstance(inter.phase.lr, FloatRange):
            params[f"phase{i}_lr"] = phase.lr
        if isinstance(inter.phase.steps, Choice):
            params[f"phase{i}_steps"] = phase.steps
    if "target_lr" in best and "target_lr" in params:
        params["target_lr"] = best["target_lr"]
    return params


def chain_identity(config: Mapping[str, Any], space: SearchSpace, target: str) -> str:
    """What a trial trains, without its seed: two configs with the same identity train the same
    chains (a+b and b+a are one mixture), so the second need not run."""
    plan = chain_from_params(config, space, target)
    blob = json.dumps(
        [[(p.task, p.lr, p.steps) for p in plan.phases], plan.target.lr, plan.target.steps]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ChainSearch:
    """One target's search: Optuna proposes, seeds are raced, duplicates answered, best exploited.

    Every new config runs its first seed (index 0); :class:`SeedRace` decides from that score
    whether it runs the others (``within_sd=None``: every config runs every seed, queued at
    once, as Tune's ``Repeater`` did). Promoted seeds go before new configs, so the best
    config's mean is known early. The study sees one trial per config and is told its mean
    over the seeds it ran. ``points`` are asked first (Optuna's enqueued trials). After them,
    a ``local_share`` of the new configs are the best chain's untried neighbours in ``order``
    (cheapest first: a trained prefix costs nothing), or, when it has none inside the space,
    the first untried single-task chain of ``order`` (``ranked=True`` only: ``order`` is then
    a ranking, the warm start's and the prior's estimate of which tasks transfer, and trying
    its next task is the one exploitation left once the chain structure is exhausted). At most
    ``num_samples`` distinct configs start.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        target: str,
        sampler: optuna.samplers.BaseSampler,
        num_samples: int,
        within_sd: float | None,
        max_seeds: int | None = None,
        points: Sequence[Mapping[str, Any]] = (),
        order: Sequence[str] = (),
        local_share: float = 0.0,
        ranked: bool = False,
        rerank: Callable[[Mapping[str, float]], Sequence[str]] | None = None,
    ) -> None:
        self.space = space
        self.target = target
        self.num_samples = num_samples
        self.define = make_define_by_run(space, target)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        for p in points:
            self.study.enqueue_trial(dict(p))
        self.race_seeds = within_sd is not None
        self.race = SeedRace(
            n_seeds=len(space.search.seeds),
            within_sd=math.inf if within_sd is None else within_sd,
            max_seeds=None if within_sd is None else max_seeds,
        )
        self.configs: dict[str, dict[str, Any]] = {}  # identity -> the config (no seed)
        self.waiting: dict[str, list[int]] = {}  # identity -> study trials awaiting its score
        self.queue: list[tuple[str, int]] = []  # promoted seeds not yet started
        self.exhausted = False
        self.duplicates = 0  # proposals answered from a config already run
        self.first_points = len(points)
        self.order = tuple(order)
        self.local_share = local_share
        self.ranked = ranked
        self.rerank = rerank  # the ranking again, given this target's task means so far
        self.local = 0  # configs proposed by the local rule
        # caches (a config never changes once proposed): its chain, and per task the params
        # and identity of its single-task chain; a 400-task replay asks for them every turn
        self._chains: dict[str, tuple[str, ...]] = {}
        self._singles: dict[str, tuple[dict[str, Any], str] | None] = {}

    def _launch(self, key: str, index: int) -> Launch:
        return Launch(key, index, {**self.configs[key], TRIAL_INDEX: index})

    def _wait_or_done(self) -> _Done | None:
        """None (ask again later) while a first seed may still be promoted, else DONE."""
        return None if self.race.pending() or self.queue else DONE

    def suggest(self) -> Launch | _Done | None:
        """The next trial to run, None to wait for a running one, or DONE."""
        if self.queue:
            return self._launch(*self.queue.pop(0))
        if self.exhausted or len(self.configs) >= self.num_samples:
            return self._wait_or_done()
        self._propose_local()
        for _ in range(MAX_DUPLICATES):
            trial = self.study.ask()
            constants = self.define(trial)  # samples the params first
            config = {**trial.params, **constants}
            key = chain_identity(config, self.space, self.target)
            self.waiting.setdefault(key, []).append(trial.number)
            if key not in self.configs:
                self.configs[key] = config
                self.race.start(key)
                if not self.race_seeds:  # every seed, queued behind the first
                    self.race.promote(key)
                    self.queue += [(key, i) for i in range(1, self.race.n_seeds)]
                return self._launch(key, 0)
            self.duplicates += 1
            self._tell(key)  # now if its seeds are in, else when they are
        self.exhausted = True  # the sampler keeps proposing what ran: the space is covered
        return self._wait_or_done()

    def report(self, key: str, index: int, score: float) -> None:
        """Seed ``index`` of ``key`` scored ``score`` (nan: the run failed)."""
        self.queue += self.race.record_all(key, index, score)
        self._tell(key)

    def selection(self) -> str | None:
        """The config with the best mean over the seeds it ran (None before any score)."""
        return self.race.best_key()

    def chain(self, key: str) -> tuple[str, ...]:
        """The phases of config ``key`` (``("a+b",)`` for a mixture)."""
        if key not in self._chains:
            self._chains[key] = chain_from_params(self.configs[key], self.space, self.target).tasks
        return self._chains[key]

    def _tell(self, key: str) -> None:
        if not self.race.done(key):
            return
        mean = self.race.mean(key)
        for number in self.waiting.pop(key, []):
            if math.isfinite(mean):
                self.study.tell(number, mean)
            else:
                self.study.tell(number, state=optuna.trial.TrialState.FAIL)

    def _propose_local(self) -> None:
        """On a local turn, enqueue the best chain's first untried neighbour in the study (or
        the ranking's next untried task, see the class docstring)."""
        later = len(self.configs) - self.first_points  # configs after the points
        if later < 0 or self.local >= self.local_share * (later + 1):
            return
        best = self.race.best_key()
        if best is None:
            return
        candidates = self._untried_neighbours(best)
        if not candidates and self.ranked:
            candidates = self._next_ranked()
        if candidates:
            self.study.enqueue_trial(candidates[0])
            self.local += 1

    def _next_ranked(self) -> list[dict[str, Any]]:
        """Params of the ranking's first single-task chain not tried yet (none: [])."""
        order = self.order
        if self.rerank is not None:  # the prior, reweighted by what this target scored
            singles = ((self.chain(k), self.race.mean(k)) for k in self.configs)
            order = tuple(
                self.rerank({c[0]: m for c, m in singles if len(c) == 1 and math.isfinite(m)})
            )
        for t in order:
            single = self._single(t)
            if single is not None and single[1] not in self.configs:
                return [single[0]]
        return []

    def _single(self, task: str) -> tuple[dict[str, Any], str] | None:
        """Params and identity of the single-task chain ``task`` (None: outside the space)."""
        if task not in self._singles:
            single = None
            if _in_space(self.space, self.target, (task,)):
                params = chain_params(self.space, self.target, (task,))
                single = (params, chain_identity(params, self.space, self.target))
            self._singles[task] = single
        return self._singles[task]

    def _untried_neighbours(self, best: str) -> list[dict[str, Any]]:
        """Params of the best chain's untried neighbours, cheapest first (stable): one whose
        phases but the last are trained already costs one phase."""
        config = self.configs[best]
        chains = neighbours(self.chain(best), self.order, self.space, self.target)
        if not chains:  # skips reading every config's chain (400 candidates: seconds)
            return []
        plans = [chain_from_params(c, self.space, self.target) for c in self.configs.values()]
        # task prefixes some config trained already (its first seed at least)
        trained = {p.tasks[:i] for p in plans for i in range(1, len(p.tasks) + 1)}

        def untrained_prefix(params: Mapping[str, Any]) -> bool:
            tasks = chain_from_params(params, self.space, self.target).tasks
            return len(tasks) > 1 and tasks[:-1] not in trained

        candidates = [neighbour_params(self.space, self.target, config, c) for c in chains]
        untried = [
            p for p in candidates if chain_identity(p, self.space, self.target) not in self.configs
        ]
        untried.sort(key=untrained_prefix)
        return untried


def _in_space(space: SearchSpace, target: str, chain: Sequence[str]) -> bool:
    try:
        chain_params(space, target, chain)
    except ValueError:
        return False
    return True


def build_search(
    space: SearchSpace,
    target: str,
    *,
    ranking: Sequence[str] | None = None,
    rerank: Callable[[Mapping[str, float]], Sequence[str]] | None = None,
) -> ChainSearch:
    """The search of ``target`` as ``raystilts search`` runs it, per ``search.algorithm``.

    ``grid``: every chain of the space once, in :func:`raystilts.core.space.all_chains` order, every
    seed. ``random``: Optuna's random sampler, every seed; ``tpe`` (the default): TPE with
    seeds raced and the local rule. For random and tpe the baseline goes first
    (``baseline_first``), then the first ``warm_start_chains`` tasks of ``ranking`` (the warm
    start and the prior, :mod:`raystilts.search.prior`; None: no ranking), whose order also
    orders the neighbours of the best chain; ``rerank`` (:class:`raystilts.search.prior.Reranker`)
    ranks again on local turns from this target's task means so far.
    """
    settings = space.search
    pool = space.intermediate.pool_for(target)
    if settings.algorithm == "grid":  # every chain once, in order: the exhaustive reference
        points = [chain_params(space, target, c) for c in all_chains(space, target)]
        return ChainSearch(
            space=space,
            target=target,
            sampler=optuna.samplers.RandomSampler(seed=settings.sampler_seed),
            num_samples=len(points),
            within_sd=None,
            points=points,
        )
    points = [baseline_params(space, target)] if settings.baseline_first else []
    ranked = [t for t in (ranking or ()) if t in pool]
    points += [
        chain_params(space, target, [t])
        for t in ranked[: settings.warm_start_chains]
        if _in_space(space, target, [t])
    ]
    if settings.algorithm == "random":  # every sampled config with every seed
        return ChainSearch(
            space=space,
            target=target,
            sampler=optuna.samplers.RandomSampler(seed=settings.sampler_seed),
            num_samples=settings.num_samples,
            within_sd=None,
            points=points,
        )
    return ChainSearch(
        space=space,
        target=target,
        sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed),
        num_samples=settings.num_samples,
        within_sd=settings.race_within_sd,
        max_seeds=settings.race_max_seeds,
        points=points,
        # the ranking's tasks first, then the rest of the pool in the space's order
        order=(*ranked, *(t for t in pool if t not in ranked)),
        local_share=settings.neighbour_share,
        ranked=bool(ranked),
        rerank=rerank if ranked else None,
    )
