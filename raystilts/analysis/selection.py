"""Is the English-dev selection of a target's best chain worth reporting as one winner?

    checks = selection_checks(runs_to_long(load_runs(...)))
    for line in selection_notes(checks): print(line)

:func:`raystilts.analysis.best_chains` picks the configuration with the best mean English dev
score. When other chains (or the baseline) score within one seed standard deviation of it, the
pick is a coin toss among them: their dev scores differ by less than reseeding the same chain
does, so a reader should see "not significant" and the tied chains, not one winner. The seed
sd is pooled over the target's configurations that ran two or more seeds (sample sd, ddof 1:
the rule of :mod:`raystilts.core.racing`); with one seed per chain it is unknown, and the note says
so instead of guessing a noise level.

Candidates are those of ``best_chains``: FINISHED runs with test scores of the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from raystilts.core.formats import SOURCE_LANG
from raystilts.core.schema import PHASE_SEP

__all__ = ["SelectionCheck", "selection_checks", "selection_notes"]


@dataclass(frozen=True, kw_only=True)
class SelectionCheck:
    """The selection of one target: the best chain's English dev score against the others'."""

    target: str
    best: str  # chain name of the selected configuration
    best_dev: float  # its mean English dev score over seeds
    seed_sd: float | None  # pooled seed sd of English dev; None: no chain ran two seeds
    tied: tuple[tuple[str, float], ...]  # other chains within one sd (best first)
    baseline_tied: bool  # the baseline is among the tied chains

    @property
    def significant(self) -> bool | None:
        """True: no rival within one seed sd; False: some; None: the sd is unknown."""
        return None if self.seed_sd is None else not self.tied


def _per_seed_dev(long: pl.DataFrame) -> pl.LazyFrame:
    """English dev of each candidate run (the dev mean for a target without English), per seed."""
    dev = pl.col("split") == "dev"
    is_en = dev & (pl.col("lang") == SOURCE_LANG)
    return (
        long.lazy()
        .filter(
            pl.col("status") == "FINISHED",
            pl.col("task") == pl.col("target"),
            pl.col("metric") == pl.col("primary_metric"),
            pl.col("config_key").is_not_null(),
        )
        .filter((pl.col("split") == "test").any().over("run_id"))
        .group_by("target", "config_key", "chain", "seed")
        .agg(
            dev=pl.when(is_en.any())
            .then(pl.col("value").filter(is_en).mean())
            .otherwise(pl.col("value").filter(dev).mean())
        )
        .filter(pl.col("dev").is_not_null())
    )


def selection_checks(long: pl.DataFrame, *, within_sd: float = 1.0) -> list[SelectionCheck]:
    """One :class:`SelectionCheck` per target with a candidate (sorted by target); the best is
    chosen as ``best_chains`` chooses (mean dev, then fewer phases, then chain name)."""
    configs = (
        _per_seed_dev(long)
        .group_by("target", "config_key", "chain")
        .agg(
            mean=pl.col("dev").mean(),
            var=pl.col("dev").var(ddof=1),
            n=pl.col("dev").len(),
        )
        .with_columns(phases=pl.col("chain").str.count_matches(PHASE_SEP))
        .sort(["target", "mean", "phases", "chain"], descending=[False, True, False, False])
        .collect()
    )
    checks = []
    for (target,), rows in configs.group_by("target", maintain_order=True):
        several = rows.filter(pl.col("n") >= 2)
        dof = int((several["n"] - 1).sum())
        sd = math.sqrt(float((several["var"] * (several["n"] - 1)).sum()) / dof) if dof else None
        best, *others = rows.iter_rows(named=True)
        tied = tuple(
            (str(r["chain"]), float(r["mean"]))
            for r in others
            if sd is not None and r["mean"] >= best["mean"] - within_sd * sd
        )
        checks.append(
            SelectionCheck(
                target=str(target),
                best=str(best["chain"]),
                best_dev=float(best["mean"]),
                seed_sd=sd,
                tied=tied,
                baseline_tied=any(PHASE_SEP not in chain for chain, _ in tied),
            )
        )
    return sorted(checks, key=lambda c: c.target)


def selection_notes(checks: Sequence[SelectionCheck]) -> list[str]:
    """One line per target whose selection is not significant or cannot be judged (x100)."""
    lines = []
    for c in checks:
        if c.seed_sd is None:
            lines.append(
                f"{c.target}: one seed per chain, so seed noise is unknown and the selection of "
                f"{c.best} cannot be judged significant; run several seeds "
                "(search.seeds: [0, 1, 2]) to know"
            )
        elif c.tied:
            rivals = ", ".join(f"{chain} {100 * dev:.1f}" for chain, dev in c.tied)
            baseline = " (the baseline among them)" if c.baseline_tied else ""
            lines.append(
                f"{c.target}: selection not significant: {c.best} (en dev {100 * c.best_dev:.1f}) "
                f"is within one seed sd ({100 * c.seed_sd:.1f}) of {rivals}{baseline}; "
                "treat these chains as tied"
            )
    return lines
