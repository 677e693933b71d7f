"""Every target of a search in one pool of trials: one concurrency limit, one queue, no Ray.

    pool = SearchPool({t: build_search(space, t) for t in space.targets},
                      max_concurrent=32, cost={t: trial_steps(space, t) for t in space.targets})
    while (step := pool.suggest()) is not DONE:
        if step is None:
            ...                                   # wait for a running trial to report
        else:
            pool.report(step.target, step.launch.key, step.launch.index, train(step))

Running one target after another leaves the cluster idle while a target's last trials run;
sharing one limit across targets keeps every slot busy while any target has work. Each target
keeps its own :class:`raystilts.search.searcher.ChainSearch` (its sampler, seed race, selection
and stopping); the pool only decides *which target* fills a free slot:

* longest trials first (``cost``): the classic LPT rule for makespan, a long trial started
  last is what leaves the other slots idle at the end;
* among equal costs, the target with fewest running trials, then the space's order;
* a launch that ``blocked`` says must wait (its chain prefix is being trained by a running
  trial: :mod:`raystilts.train.prefix_claims`) is held back and the slot goes to another
  launch; it runs once the prefix is trained (then read from the cache, not trained again).

``on_report`` runs after every report (the driver shares the prior over intermediate tasks
with the other targets there: :class:`SharedPrior`). Picklable, for Tune's searcher checkpoints.

:func:`build_pool` wires a pool exactly as ``raystilts search`` runs it (its Tune searcher,
``raystilts.search.driver.PoolSearcher``, drives a :class:`PoolTrials`), and
``benchmarks/cluster_sim.py`` drives the same :class:`PoolTrials` on a simulated cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from raystilts.core.space import SearchSpace, chain_from_params
from raystilts.search.prior import Evidence, Reranker, build_prior, evidence_from_search
from raystilts.search.searcher import DONE, ChainSearch, Launch, _Done, seed_of
from raystilts.tasks import CATALOG

__all__ = [
    "TARGET",
    "PoolLaunch",
    "PoolTrials",
    "PrefixesInTraining",
    "SearchPool",
    "SharedPrior",
    "build_pool",
    "trial_cost",
]

# The key of a trial's target in its config: one Tune experiment holds every target's trials.
TARGET: Final = "__target__"


@dataclass(frozen=True, slots=True)
class PoolLaunch:
    """Run ``launch`` (a seed of one config) of ``target``; ``config`` carries both."""

    target: str
    launch: Launch

    @property
    def config(self) -> dict[str, object]:
        return {**self.launch.config, TARGET: self.target}


@dataclass(slots=True)
class SearchPool:
    """The searches of several targets under one limit of ``max_concurrent`` running trials."""

    searches: Mapping[str, ChainSearch]
    max_concurrent: int
    cost: Mapping[str, float] = field(default_factory=dict)  # a trial's expected cost per target
    blocked: Callable[[str, Launch], bool] | None = None
    on_report: Callable[[SearchPool, str], None] | None = None
    # launches held back per target at most: how far a search is asked ahead of its reports
    # (TPE proposes from fewer results the further ahead); 8 covers a grid's next few chains
    ask_ahead: int = 8
    running: dict[str, int] = field(default_factory=dict)
    held: dict[str, list[Launch]] = field(default_factory=dict)  # launches waiting for a prefix
    finished: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise ValueError(f"SearchPool max_concurrent={self.max_concurrent}: must be >= 1")
        if self.ask_ahead < 1:
            raise ValueError(f"SearchPool ask_ahead={self.ask_ahead}: must be >= 1")
        for t in self.searches:
            self.running.setdefault(t, 0)
            self.held.setdefault(t, [])

    @property
    def active(self) -> int:
        """Trials started and not yet reported."""
        return sum(self.running.values())

    def _order(self) -> list[str]:
        names = list(self.searches)
        return sorted(
            (t for t in names if t not in self.finished),
            key=lambda t: (-self.cost.get(t, 0.0), self.running[t], names.index(t)),
        )

    def _is_blocked(self, target: str, launch: Launch) -> bool:
        return self.blocked is not None and self.blocked(target, launch)

    def _start(self, target: str, launch: Launch) -> PoolLaunch:
        self.running[target] += 1
        return PoolLaunch(target, launch)

    def _from_target(self, target: str) -> PoolLaunch | None:
        """A launch of ``target`` that need not wait, holding back those that must."""
        held = self.held[target]
        for i, launch in enumerate(held):
            if not self._is_blocked(target, launch):
                return self._start(target, held.pop(i))
        while len(held) < self.ask_ahead:
            step = self.searches[target].suggest()
            if isinstance(step, Launch):
                if not self._is_blocked(target, step):
                    return self._start(target, step)
                held.append(step)
                continue
            if step is DONE and not held and self.running[target] == 0:
                self.finished.add(target)  # DONE with nothing running: no report can add trials
            break
        return None

    def suggest(self) -> PoolLaunch | _Done | None:
        """The next trial of any target, None to wait for a running one, or DONE."""
        if self.active >= self.max_concurrent:
            return None
        order = self._order()
        for target in order:
            out = self._from_target(target)
            if out is not None:
                return out
        if self.active == 0:
            # everything left waits on a prefix no running trial of ours trains: a claim of a
            # crashed run (until it expires) or of another search; run it (the trainer waits or
            # trains it itself) rather than stall
            for target in order:
                if self.held[target]:
                    return self._start(target, self.held[target].pop(0))
        if all(t in self.finished for t in self.searches):
            return DONE
        return None

    def report(self, target: str, key: str, index: int, score: float) -> None:
        """Seed ``index`` of config ``key`` of ``target`` scored ``score`` (nan: failed)."""
        self.running[target] = max(0, self.running[target] - 1)
        self.searches[target].report(key, index, score)
        if self.on_report is not None:
            self.on_report(self, target)

    def selection(self) -> dict[str, str | None]:
        """Each target's selected config (its own rule: best mean over its seeds)."""
        return {t: s.selection() for t, s in self.searches.items()}


@dataclass(slots=True)
class PrefixesInTraining:
    """A ``blocked`` test from what the driver sees: a launch waits while a running trial with
    the same intermediate phases and seed (any target: the prefix cache's key, but for the
    base model and settings, which one search shares) has reported nothing yet, i.e. is still
    in its intermediate phases; its first report comes from the target phase, after the prefix
    is in the cache. The trainers' claims (:mod:`raystilts.train.prefix_claims`) still guard
    what this misses (another search, a restarted driver)."""

    space: SearchSpace
    fresh: dict[str, tuple[object, ...]] = field(default_factory=dict)  # trial -> prefix

    def prefix(self, target: str, launch: Launch) -> tuple[object, ...] | None:
        plan = chain_from_params(launch.config, self.space, target)
        if not plan.phases:
            return None
        phases = tuple((p.task, p.lr, p.steps) for p in plan.phases)
        return (phases, seed_of(launch.config, self.space))

    def started(self, trial_id: str, target: str, launch: Launch) -> None:
        key = self.prefix(target, launch)
        if key is not None:
            self.fresh[trial_id] = key

    def progressed(self, trial_id: str) -> None:
        """The trial reported (or ended): its prefix is trained, or will not be."""
        self.fresh.pop(trial_id, None)

    def __call__(self, target: str, launch: Launch) -> bool:
        key = self.prefix(target, launch)
        return key is not None and key in self.fresh.values()


@dataclass(frozen=True, slots=True)
class SharedPrior:
    """An ``on_report`` hook: after a report of one target, every other target's ranking of
    intermediate tasks is rebuilt from all targets' finished trials so far (plus ``earlier``
    evidence and each target's ``warm`` start), as :func:`raystilts.search.searcher.build_search`
    would have built it had those trials been finished when the search started. Only targets
    whose search uses a ranking (tpe) take it; grid and random ignore rankings."""

    earlier: Sequence[Evidence] = ()
    warm: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __call__(self, pool: SearchPool, reported: str) -> None:
        evidence = [*self.earlier]
        for search in pool.searches.values():
            evidence += evidence_from_search(search)
        for target, search in pool.searches.items():
            if target == reported or search.local_share == 0.0 or target in pool.finished:
                continue
            tasks = search.space.intermediate.pool_for(target)
            prior = build_prior(evidence, tasks=tasks, target=target)
            if not prior.sources:
                continue
            warm = tuple(self.warm[target]) if self.warm.get(target) else None
            ranking = prior.ranking(tasks, warm)
            search.order = (*ranking, *(t for t in tasks if t not in ranking))
            search.ranked = True
            search.rerank = Reranker(prior, tuple(tasks), warm)


def trial_cost(space: SearchSpace, target: str) -> float:
    """A trial's relative length for the pool's longest-first rule: its target-phase steps
    (none for a target without training data) plus one step per evaluated language, so of two
    targets that train alike the one evaluated in more languages goes first. Intermediate
    phases are left out: every target draws from the same ones, and a cached prefix costs
    nothing."""
    task = CATALOG.get(target)  # a space loaded with another catalog (tests): trained
    steps = space.target_for(target).steps if task is None or task.has_train else 0
    return float(steps + len(space.languages_for(target)))


def build_pool(
    space: SearchSpace,
    searches: Mapping[str, ChainSearch],
    *,
    earlier: Sequence[Evidence] = (),
    warm: Mapping[str, Sequence[str]] | None = None,
) -> SearchPool:
    """The pool of ``searches`` (one per target) as ``raystilts search`` runs it: at most
    ``search.max_concurrent`` trials of all targets, longest trials first (:func:`trial_cost`),
    a launch whose prefix a running trial is training held back (:class:`PrefixesInTraining`)
    and, with ``search.prior.other_targets``, every target's prior rebuilt from all targets'
    finished trials (:class:`SharedPrior`, plus ``earlier`` evidence and the ``warm`` start)."""
    shared = SharedPrior(earlier=tuple(earlier), warm=dict(warm or {}))
    return SearchPool(
        searches,
        max_concurrent=space.search.max_concurrent,
        cost={t: trial_cost(space, t) for t in searches},
        blocked=PrefixesInTraining(space),
        on_report=shared if space.search.prior.other_targets else None,
    )


@dataclass(slots=True)
class PoolTrials:
    """A pool seen by trial ids, as a scheduler runs it: :meth:`suggest` names each launch
    with the id of the trial that runs it, :meth:`progressed` says the trial reported (its
    intermediate prefix is trained: launches held back for it may go), :meth:`complete` gives
    its score. Ray Tune's searcher (``raystilts.search.driver.PoolSearcher``) and the cluster
    simulation (``benchmarks/cluster_sim.py``) both call exactly these. Picklable."""

    pool: SearchPool
    trials: dict[str, PoolLaunch] = field(default_factory=dict)  # running: trial id -> launch

    def suggest(self, trial_id: str) -> PoolLaunch | _Done | None:
        """The launch trial ``trial_id`` runs, None to ask again later, or DONE."""
        step = self.pool.suggest()
        if isinstance(step, PoolLaunch):
            self.trials[trial_id] = step
            if isinstance(self.pool.blocked, PrefixesInTraining):
                self.pool.blocked.started(trial_id, step.target, step.launch)
        return step

    def progressed(self, trial_id: str) -> None:
        if isinstance(self.pool.blocked, PrefixesInTraining):
            self.pool.blocked.progressed(trial_id)

    def complete(self, trial_id: str, score: float) -> PoolLaunch | None:
        """Trial ``trial_id`` ended with ``score`` (nan: failed); its launch, None if the
        trial is not ours or was already reported."""
        step = self.trials.pop(trial_id, None)
        self.progressed(trial_id)
        if step is not None:
            self.pool.report(step.target, step.launch.key, step.launch.index, score)
        return step
