"""A prior over intermediate tasks from other targets' finished trials, combined with the warm start.

    evidence = [Evidence(target="rte", chain=("mnli",), score=0.86), ...]
    prior = build_prior(evidence, tasks=("mnli", "sst", "qqp"), target="boolq")
    ranking = prior.ranking(warm=("sst", "mnli", "qqp"))   # the order a search tries them in

In published intermediate-task studies some tasks help almost every target and some hurt
almost all (Pruksachatkun et al. 2020; Poth et al. 2021): what other targets measured is
evidence about a new target before it trains anything. The rule, and why each part:

* per other target, a task's score is its mean over the target's finished single-task chains
  (seeds, repeats); tasks are then ranked within that target and the rank scaled to [0, 1]
  (best 1, worst 0, ties share their mean rank). Ranks, not scores: targets differ in scale
  (accuracy, F1, percent) and difficulty, and one broken cell cannot outweigh the others;
* where that target's seeds show its noise, a task's value there is the mean of its scaled
  rank and whether it came within one seed sd of that target's best (:func:`target_values`):
  a search is judged on selecting a task within that tolerance of the best, so being near
  another target's best is the evidence that matters most, and a place in the middle of the
  field matters less;
* a task's prior is the mean of its scaled ranks over the targets that ran it, shrunk toward
  the neutral 0.5 by one pseudo-target: a task seen on one target does not outrank one that was
  good on ten (a Bayesian average); a task no other target ran is neutral;
* with a warm start ranking (TextEmb, :mod:`raystilts.train.transfer`), its scaled rank takes the
  place of the pseudo-target: a zero-cost similarity estimate counts as much as one observed
  target, so with one or two targets seen it still matters and with many it yields.

* once the searched target has scored a few single-task chains (``MIN_SHARED``), each other
  target is weighted by how well its ranking agrees with them (Spearman's correlation on the
  tasks both ran, counted in null standard deviations around one vote each:
  :func:`agreement_weight`): which tasks help is partly specific to the target (TaskWeb, Kim
  et al. 2023), and a target that ranks the same tasks alike is the better guide to the rest
  (:meth:`Prior.reweighted`, the search's :class:`Reranker`).

Only single-task chains are evidence: a longer chain's score belongs to its order and partners.
Pure (no Ray, no MLflow): :func:`evidence_from_runs` reads plain run records.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from raystilts.search.searcher import ChainSearch

__all__ = [
    "Evidence",
    "Prior",
    "Reranker",
    "agreement_weight",
    "build_prior",
    "evidence_from_runs",
    "evidence_from_search",
    "rank_tasks",
    "scaled_ranks",
    "seed_sd",
    "target_values",
]

NEUTRAL = 0.5  # the prior of a task no other target ran: neither end of the ranking
# observed tasks a target must share with another before their agreement weights it: a rank
# correlation over fewer is +1 or -1 by chance half the time
MIN_SHARED = 3


@dataclass(frozen=True, slots=True)
class Evidence:
    """One finished trial (or a seed mean) of some target: chain and selection score."""

    target: str
    chain: tuple[str, ...]
    score: float


@dataclass(frozen=True, slots=True)
class Prior:
    """Per task: the shrunk mean scaled rank over other targets, and those targets' sums."""

    target: str
    rank_sums: dict[str, float]  # task -> (weighted) sum of its scaled ranks over other targets
    support: dict[str, float]  # task -> (weighted) number of other targets that ran it
    sources: tuple[str, ...]  # the other targets the evidence came from
    means: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> task -> mean
    # target -> task -> scaled rank (scaled_ranks of ``means``), kept so that reweighting on
    # every local turn of a search does not sort every other target again (400 tasks x 40
    # targets: most of a replay's time)
    ranks: dict[str, dict[str, float]] = field(default_factory=dict)

    def reweighted(self, observed: Mapping[str, float]) -> Prior:
        """The prior with each other target weighted by the agreement of its task means with
        ``observed`` (this target's task means so far; :func:`agreement_weight` of their
        Spearman correlation); unchanged until a target shares ``MIN_SHARED`` observed tasks,
        or when no weight is positive."""
        weights = {}
        for other, means in self.means.items():
            shared = [t for t in observed if t in means]
            rho = 0.0
            if len(shared) >= MIN_SHARED:
                rho = _spearman([observed[t] for t in shared], [means[t] for t in shared])
            weights[other] = agreement_weight(rho, len(shared))
        if not any(weights.values()) or all(w == 1.0 for w in weights.values()):
            return self  # nobody agrees, or no evidence either way yet
        sums: dict[str, float] = defaultdict(float)
        support: dict[str, float] = defaultdict(float)
        for other, w in weights.items():
            ranks = self.ranks.get(other) or scaled_ranks(self.means[other])
            for t, r in ranks.items():
                sums[t] += w * r
                support[t] += w
        return Prior(self.target, dict(sums), dict(support), self.sources, self.means, self.ranks)

    def score(self, task: str, warm: float | None = None) -> float:
        """The task's prior; ``warm`` (its scaled warm-start rank) replaces the pseudo-target."""
        pseudo = NEUTRAL if warm is None else warm
        return (self.rank_sums.get(task, 0.0) + pseudo) / (self.support.get(task, 0) + 1)

    def ranking(self, tasks: Sequence[str], warm: Sequence[str] | None = None) -> tuple[str, ...]:
        """``tasks`` best first by :meth:`score` (with the warm start's ranking ``warm``);
        ties keep the warm start's order, then the order of ``tasks``."""
        order = [t for t in (warm or ()) if t in tasks] + [
            t for t in tasks if t not in (warm or ())
        ]
        warm_rank = scaled_ranks({t: -i for i, t in enumerate(warm)}) if warm else {}
        scores = {t: self.score(t, warm_rank.get(t)) for t in order}
        return tuple(sorted(order, key=lambda t: -scores[t]))  # stable: ties keep ``order``

    def describe(self, tasks: Sequence[str], warm: Sequence[str] | None = None) -> str:
        """One line for logs and MLflow tags: sources and the ranking with scores."""
        warm_rank = scaled_ranks({t: -i for i, t in enumerate(warm)}) if warm else {}
        ranked = self.ranking(tasks, warm)
        shown = ", ".join(f"{t} {self.score(t, warm_rank.get(t)):.2f}" for t in ranked)
        return f"prior from {len(self.sources)} target(s) ({', '.join(self.sources)}): {shown}"


def scaled_ranks(scores: Mapping[str, float]) -> dict[str, float]:
    """Ranks of ``scores`` scaled to [0, 1], best 1, ties at their mean rank; one key: 0.5.

    >>> scaled_ranks({"a": 0.9, "b": 0.5, "c": 0.5})
    {'a': 1.0, 'b': 0.25, 'c': 0.25}
    """
    if len(scores) == 1:
        return dict.fromkeys(scores, NEUTRAL)
    ordered = sorted(scores, key=lambda k: scores[k])
    out: dict[str, float] = {}
    start = 0
    while start < len(ordered):  # a run of ties shares the mean of its 0-based ranks
        end = start
        while end + 1 < len(ordered) and scores[ordered[end + 1]] == scores[ordered[start]]:
            end += 1
        for key in ordered[start : end + 1]:
            out[key] = (start + end) / 2 / (len(ordered) - 1)
        start = end + 1
    return {k: out[k] for k in scores}


def seed_sd(scores: Mapping[str, Sequence[float]], baseline: Sequence[float] = ()) -> float | None:
    """A target's noise, as the race and the replay's truth measure it: the seed sd pooled
    over the tasks with two or more scores (sample sd, ddof 1); where no task has two (one
    seed per cell), the sd of the ``baseline`` runs (no intermediate task); else None."""
    num, dof = 0.0, 0
    for values in scores.values():
        if len(values) >= 2:
            num += statistics.variance(values) * (len(values) - 1)
            dof += len(values) - 1
    if dof:
        return math.sqrt(num / dof)
    return statistics.stdev(baseline) if len(baseline) >= 2 else None


def target_values(
    scores: Mapping[str, Sequence[float]], baseline: Sequence[float] = ()
) -> dict[str, float]:
    """One other target's evidence about each task, in [0, 1]: the mean of its scaled rank
    and whether its mean is within one seed sd of that target's best (1 or 0), when the
    seeds (or the ``baseline`` runs, :func:`seed_sd`) give the sd; the scaled rank alone when
    they do not.

    Why the near-best term: a search has found a target when it selects a task within one
    seed sd of the best (the tolerance of the selection and of the replay's "found"), so what
    another target says most directly is whether the task was near *its* best; a rank in the
    middle of the field says little about that. The rank orders the tasks within each side.

    >>> target_values({"a": [0.80, 0.82], "b": [0.80, 0.80], "c": [0.5, 0.52]})
    {'a': 1.0, 'b': 0.75, 'c': 0.0}
    >>> target_values({"a": [0.8], "b": [0.5]})  # one seed each, no baseline runs: unknown
    {'a': 1.0, 'b': 0.0}
    >>> target_values({"a": [0.8], "b": [0.79], "c": [0.5]}, baseline=[0.6, 0.62])
    {'a': 1.0, 'b': 0.75, 'c': 0.0}
    """
    means = {t: statistics.fmean(v) for t, v in scores.items()}
    ranks = scaled_ranks(means)
    sd = seed_sd(scores, baseline)
    if sd is None:
        return ranks
    best = max(means.values())
    return {t: (ranks[t] + (means[t] >= best - sd)) / 2 for t in means}


def build_prior(evidence: Iterable[Evidence], *, tasks: Sequence[str], target: str) -> Prior:
    """The prior of ``target`` over ``tasks`` from the evidence of every other target (the
    module docstring: the rule and why). Non-finite scores and other chains are ignored."""
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    baselines: dict[str, list[float]] = defaultdict(list)  # their runs show the noise too
    wanted = set(tasks)
    for e in evidence:
        if e.target == target or len(e.chain) > 1 or not math.isfinite(e.score):
            continue
        if not e.chain:
            baselines[e.target].append(e.score)
        elif e.chain[0] in wanted and e.chain[0] != e.target:  # self-transfer is no evidence
            cells[e.target][e.chain[0]].append(e.score)
    sums: dict[str, float] = defaultdict(float)
    support: dict[str, float] = defaultdict(float)
    sources = []
    all_means = {}
    all_ranks = {}
    for other in sorted(cells):
        means = {t: statistics.fmean(v) for t, v in cells[other].items()}
        if len(means) < 2:  # one task alone ranks against nothing
            continue
        sources.append(other)
        all_means[other] = means
        all_ranks[other] = target_values(cells[other], baselines.get(other, ()))
        for t, r in all_ranks[other].items():
            sums[t] += r
            support[t] += 1
    return Prior(target, dict(sums), dict(support), tuple(sources), all_means, all_ranks)


def agreement_weight(rho: float, shared: int) -> float:
    """The weight of another target whose task means have Spearman correlation ``rho`` with
    this target's over ``shared`` tasks: one vote, plus the agreement counted in null
    standard deviations (rho over k unrelated rankings has sd about 1/sqrt(k-1)), clipped at
    0. Few shared tasks move the weight little: over three, rho is +-1 by chance a third of
    the time, and a clipped rho alone silenced most targets on such luck.

    >>> agreement_weight(0.0, 3), agreement_weight(1.0, 5), agreement_weight(-0.5, 5)
    (1.0, 3.0, 0.0)
    """
    if shared < MIN_SHARED:
        return 1.0
    return max(0.0, 1.0 + rho * math.sqrt(shared - 1))


def _spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's on tied-average ranks); 0 when one is constant.
    numpy: a search reweights its prior on every local turn, over every other target."""
    ra, rb = _average_ranks(np.asarray(a, dtype=float)), _average_ranks(np.asarray(b, dtype=float))
    if len(ra) < 2:
        return 0.0
    ra -= ra.mean()
    rb -= rb.mean()
    sxx, syy = float(ra @ ra), float(rb @ rb)
    return float(ra @ rb) / math.sqrt(sxx * syy) if sxx and syy else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks of ``x``, ties at their mean rank (as :func:`scaled_ranks`, unscaled)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.empty(len(x), dtype=bool)  # where a run of equal values starts
    new[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(x)) - 1
    ranks = np.empty(len(x))
    ranks[order] = ((starts + ends) / 2)[np.cumsum(new) - 1]
    return ranks


@dataclass(frozen=True, slots=True)
class Reranker:
    """The ranking of ``tasks`` given this target's task means so far (picklable, for Tune's
    searcher checkpoints): :meth:`Prior.reweighted`, then :meth:`Prior.ranking`.

    The same arithmetic as :meth:`Prior.reweighted`, in the same order, on numpy rows built
    once: a search calls it on every local turn, and with 400 tasks x 40 other targets the
    dict version was most of a replay's time (benchmarks/transfer_tables.py)."""

    prior: Prior
    tasks: tuple[str, ...]
    warm: tuple[str, ...] | None = None
    _rows: tuple[dict[str, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        names = sorted({t for means in self.prior.means.values() for t in means})
        column = {t: j for j, t in enumerate(names)}
        rows = []
        for other, means in self.prior.means.items():  # the order reweighted() sums in
            ranks = self.prior.ranks.get(other) or scaled_ranks(means)
            mean_row, rank_row, has = (
                np.full(len(names), np.nan),
                np.zeros(len(names)),
                np.zeros(len(names)),
            )
            for t, m in means.items():
                mean_row[column[t]], rank_row[column[t]], has[column[t]] = m, ranks[t], 1.0
            rows.append((mean_row, rank_row, has))
        object.__setattr__(self, "_rows", (column, rows))

    def __call__(self, observed: Mapping[str, float]) -> tuple[str, ...]:
        column, rows = self._rows
        seen = [t for t in observed if t in column]
        cols = np.array([column[t] for t in seen], dtype=int)
        values = np.array([observed[t] for t in seen], dtype=float)
        weights: list[tuple[float, int]] = []
        for i, (mean_row, _, has) in enumerate(rows):
            shared = has[cols] > 0 if len(cols) else np.zeros(0, dtype=bool)
            k, rho = int(shared.sum()), 0.0
            if k >= MIN_SHARED:
                rho = _spearman(values[shared], mean_row[cols][shared])
            weights.append((agreement_weight(rho, k), i))
        if not any(w for w, _ in weights) or all(w == 1.0 for w, _ in weights):
            return self.prior.ranking(self.tasks, self.warm)
        sums, support = np.zeros(len(column)), np.zeros(len(column))
        for w, i in weights:
            sums += w * rows[i][1]
            support += w * rows[i][2]
        reweighted = Prior(
            self.prior.target,
            {t: float(sums[j]) for t, j in column.items()},
            {t: float(support[j]) for t, j in column.items()},
            self.prior.sources,
            self.prior.means,
            self.prior.ranks,
        )
        return reweighted.ranking(self.tasks, self.warm)


class _Run(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def params(self) -> dict[str, str]: ...
    @property
    def metrics(self) -> dict[str, float]: ...


def evidence_from_runs(runs: Iterable[_Run]) -> list[Evidence]:
    """Evidence from finished MLflow trial runs (:class:`raystilts.tracking.RunRecord`): params
    ``target`` and ``intermediate`` (a JSON list), scored on the run's ``selection_metric``
    param (written by ``raystilts import``) or else the catalog target's selection metric."""
    from raystilts.tasks import CATALOG, selection_key

    out: list[Evidence] = []
    for run in runs:
        target = run.params.get("target")
        if run.status != "FINISHED" or not target:
            continue
        key = run.params.get("selection_metric") or (
            selection_key(CATALOG[target]) if target in CATALOG else None
        )
        value = run.metrics.get(key) if key else None
        try:
            chain = tuple(json.loads(run.params.get("intermediate", "null")) or ())
        except ValueError:
            continue
        if value is not None and math.isfinite(value):
            out.append(Evidence(target=target, chain=chain, score=float(value)))
    return out


def evidence_from_search(search: ChainSearch) -> list[Evidence]:
    """A finished (or running) search's trials as evidence: one per finite seed score of each
    config, as its MLflow runs would give (:func:`evidence_from_runs`), so that the seeds
    show the target's noise (:func:`target_values`)."""
    out = []
    for key, config in search.race.configs.items():
        chain = search.chain(key)
        out += [
            Evidence(target=search.target, chain=chain, score=v)
            for v in config.scores.values()
            if math.isfinite(v)
        ]
    return out


def rank_tasks(
    prior: Prior | None, tasks: Sequence[str], warm: Sequence[str] | None
) -> tuple[str, ...] | None:
    """The ranking a target's search starts from (:func:`raystilts.search.searcher.build_search`):
    the prior combined with the warm start; None when there is neither."""
    if prior is None or not prior.sources:
        return tuple(warm) if warm else None
    return prior.ranking(tasks, warm)
