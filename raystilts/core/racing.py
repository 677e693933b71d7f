"""Seed racing: a sampled chain earns its further seeds only while it can still be the best.

    race = SeedRace(n_seeds=4, within_sd=1.0)
    race.start("cfg-a")
    race.record("cfg-a", 0, 0.61)     # -> (1,): the noise is unknown yet, its seeds double
    race.record("cfg-a", 1, 0.59)     # -> (): no rival: two seeds estimate the noise
    race.start("cfg-b")
    race.record("cfg-b", 0, 0.40)     # -> (): far below cfg-a's mean: seed 0 only
    race.start("cfg-c")
    race.record_all("cfg-c", 0, 0.62) # -> [("cfg-c", 1)]: within reach
    race.record_all("cfg-c", 1, 0.61) # -> [("cfg-c", 2), ("cfg-c", 3), ("cfg-a", 2), ("cfg-a", 3)]

Running every sampled chain with every seed spends most of a search's compute on chains that
one seed already shows to be hopeless. This is successive halving over seeds (the idea behind
racing algorithms such as F-race and irace, Birattari et al. 2002, López-Ibáñez et al. 2016,
and behind Hyperband's rungs, with seeds as the resource): every configuration runs its first
seed; once all its scheduled seeds are in, it earns as many more (1, 2, 4, ... up to every
seed) only when its mean is within ``within_sd`` standard errors (``sd / sqrt(seeds run)``) of
the best other mean seen so far. After one seed that is ``within_sd`` seed standard
deviations; each further rung judges a better-measured mean more tightly, as a race eliminates
a candidate as soon as the evidence against it suffices, instead of running all remaining
seeds on one score. The seed standard deviation is pooled over the configurations that ran
several seeds (sample sd, ddof 1), so the rule scales with the noise the search actually
measures instead of a constant picked for one benchmark.

Why the selection stays sound: a configuration left at fewer seeds had a mean below ``best -
within_sd * sd / sqrt(n)`` when it was judged, so it is below the best mean and cannot be
selected over it by the mean-over-seeds rule of :func:`raystilts.analysis.best_chains`. Until
there is an estimate of the seed sd (no configuration has two finite scores yet) a
configuration is promoted: the rule never refuses without evidence. Without a rival (the
first configuration), it stops once the sd can be estimated: more seeds would decide nothing;
when a challenger later earns more seeds than the best, the best runs as many
(:meth:`SeedRace.record_all`), so the race compares means of equal evidence.

Where the rungs stop (``max_seeds``, the search's ``race_max_seeds``, 4 by default): chains
whose means differ by less than one seed sd are a tie for the selection (the tolerance of
:mod:`raystilts.analysis` and of the replay benchmark's "found"), and after 4 seeds a mean's
standard error is half a seed sd, so the difference of two such means (sd x sqrt(2/4), 0.71 sd)
rarely hides a gap beyond the tolerance; the 5th to 8th seeds would halve that error again at
twice the cost of the config, on the chains closest to the best, where a search spends most.

Pure (no Ray): :class:`raystilts.search.driver.RacingSearcher` drives it from Tune.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

__all__ = ["SeedRace"]


@dataclass(slots=True)
class _Config:
    scheduled: int = 1  # seeds this configuration will run (1 until promoted)
    scores: dict[int, float] = field(default_factory=dict)  # seed index -> score (nan: failed)
    mean: float = math.nan  # of the finite scores (kept: the race reads every mean per record)
    spread: float = 0.0  # variance x (n - 1) of the finite scores, when n >= 2 ...
    dof: int = 0  # ... and n - 1 (else 0): the configuration's share of the pooled sd


class SeedRace:
    """Which configurations run their further seeds (module docstring: the rule and why).

    Scores are maximised; pass ``mode="min"`` for losses. Keys are opaque strings (a hash of
    the configuration's hyperparameters without its seed).

    >>> race = SeedRace(n_seeds=2)
    >>> race.start("a"); race.record("a", 0, 0.5)
    (1,)
    >>> race.record("a", 1, 0.7), race.done("a"), round(race.mean("a"), 3)
    ((), True, 0.6)
    >>> race.start("b"); race.record("b", 0, 0.3)   # 0.3 < 0.6 - 1 * sd (0.141)
    ()
    >>> race.start("c"); race.record("c", 0, 0.55)  # 0.55 >= 0.6 - 0.141: runs seed 1
    (1,)
    """

    def __init__(
        self,
        *,
        n_seeds: int,
        within_sd: float = 1.0,
        mode: str = "max",
        max_seeds: int | None = None,
    ) -> None:
        if n_seeds < 1:
            raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
        if max_seeds is not None and max_seeds < 1:
            raise ValueError(f"max_seeds must be at least 1, got {max_seeds}")
        if not within_sd >= 0:
            raise ValueError(f"within_sd must be >= 0, got {within_sd}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.n_seeds = n_seeds
        # the most seeds a raced configuration earns (module docstring: why more stop paying)
        self.cap = n_seeds if max_seeds is None else min(n_seeds, max_seeds)
        self.within_sd = within_sd
        self.sign = 1.0 if mode == "max" else -1.0
        self.configs: dict[str, _Config] = {}

    def start(self, key: str) -> None:
        """A new configuration, about to run its first seed (index 0)."""
        if key in self.configs:
            raise ValueError(f"configuration {key!r} was already started")
        self.configs[key] = _Config()

    def promote(self, key: str) -> None:
        """Schedule every seed of ``key`` now, without a race (a search that runs every seed)."""
        self.configs[key].scheduled = self.n_seeds

    def record(self, key: str, index: int, score: float) -> tuple[int, ...]:
        """Record seed ``index``'s score (nan for a failed run); returns the seed indices to
        run now: the next rung (as many seeds again) when the scheduled ones are all in and
        their mean earns promotion, else none."""
        config = self.configs[key]
        if not 0 <= index < config.scheduled or index in config.scores:
            raise ValueError(f"seed index {index} of {key!r} was not scheduled or is reported")
        config.scores[index] = float(score)
        self._update(config)
        run = len(config.scores)
        if run < config.scheduled or config.scheduled >= self.cap:
            return ()
        finite = [s for s in config.scores.values() if math.isfinite(s)]
        if len(finite) < run or not self.promotes(key, statistics.fmean(finite), seeds=run):
            return ()  # a failed seed never earns more
        old, config.scheduled = config.scheduled, min(self.cap, 2 * config.scheduled)
        return tuple(range(old, config.scheduled))

    def record_all(self, key: str, index: int, score: float) -> list[tuple[str, int]]:
        """:meth:`record`, and when ``key`` earns a rung beyond the seeds of the best other
        configuration (whose seeds are all in), that one's seeds up to the same count: a
        race compares means of equal evidence, and the selection should not rest on fewer
        seeds than its challenger. Returns (configuration, seed index) pairs to run now."""
        runs = [(key, i) for i in self.record(key, index, score)]
        if not runs:
            return runs
        target = self.configs[key].scheduled
        best = self._best_other(key)
        if best is not None and self.done(best) and self.configs[best].scheduled < target:
            old = self.configs[best].scheduled
            self.configs[best].scheduled = target
            runs += [(best, i) for i in range(old, target)]
        return runs

    def _best_other(self, key: str) -> str | None:
        scored = [k for k in self.configs if k != key and math.isfinite(self.mean(k))]
        return max(scored, key=lambda k: self.sign * self.mean(k)) if scored else None

    def promotes(self, key: str, score: float, *, seeds: int = 1) -> bool:
        """Whether ``score``, the mean of ``seeds`` seeds of ``key``, is within reach of the
        best other mean: ``within_sd`` standard errors of it."""
        if not math.isfinite(score):
            return False
        rival = self.best_mean(exclude=key)
        sd = self.seed_sd()
        if sd is None:
            return True  # no evidence to refuse on: the noise is unknown
        if rival is None:
            return False  # nothing to race against: more seeds would decide nothing
        return self.sign * score >= self.sign * rival - self.within_sd * sd / math.sqrt(seeds)

    def done(self, key: str) -> bool:
        """Every seed the configuration will run has reported."""
        config = self.configs[key]
        return len(config.scores) == config.scheduled

    def pending(self) -> bool:
        """Some configuration still waits for a score (its decision may add trials)."""
        return any(not self.done(k) for k in self.configs)

    def mean(self, key: str) -> float:
        """Mean of the finite scores of ``key`` (nan when none)."""
        return self.configs[key].mean

    def _update(self, config: _Config) -> None:
        """Recompute a configuration's mean and its share of the pooled sd."""
        finite = [s for s in config.scores.values() if math.isfinite(s)]
        if len(finite) >= 2:
            config.spread = statistics.variance(finite) * (len(finite) - 1)
            config.dof = len(finite) - 1
        config.mean = statistics.fmean(finite) if finite else math.nan

    def best_key(self) -> str | None:
        """The configuration with the best mean (ties: the first started), None before any."""
        scored = [k for k in self.configs if math.isfinite(self.mean(k))]
        if not scored:
            return None
        return max(scored, key=lambda k: self.sign * self.mean(k))

    def best_mean(self, *, exclude: str | None = None) -> float | None:
        """The best mean over configurations with a finite score, ``exclude`` left out."""
        means = [self.mean(k) for k in self.configs if k != exclude]
        finite = [m for m in means if math.isfinite(m)]
        if not finite:
            return None
        return max(finite) if self.sign > 0 else min(finite)

    def seed_sd(self) -> float | None:
        """Pooled sample sd over seeds: sqrt of the degrees-of-freedom-weighted mean of the
        per-configuration variances, over configurations with two or more finite scores
        (each configuration's share kept by :meth:`record`; summed in the same order as ever)."""
        num = 0.0
        dof = 0
        for config in self.configs.values():
            if config.dof:
                num += config.spread
                dof += config.dof
        return math.sqrt(num / dof) if dof else None
