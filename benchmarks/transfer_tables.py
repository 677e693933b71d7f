"""Replay published transfer tables through the search: does it find each target's best intermediate task for a tenth of the grid?

    python benchmarks/transfer_tables.py --table ../shared/data/transfer/pruksachatkun2020.csv
    python benchmarks/transfer_tables.py --table ../shared/data/transfer/taskweb_t5b_finetune.csv
    python benchmarks/transfer_tables.py --synthetic 400 40 3      # a generated 400 x 40 x 3 table
    python benchmarks/transfer_tables.py --smoke                   # a tiny generated table, seconds

For every target of a table (``task@lang`` when it has several languages), searches whose trials
look their score up instead of training: a trial of (intermediate, seed) reports that row's
score (a missing row or an undefined score: a failed trial). The searches are the objects
``raystilts search`` runs, built by :func:`raystilts.search.searcher.build_search` from a search space
of the table's tasks (single-task chains, the table's seeds, one trial at a time): the Optuna
sampler, seed racing, duplicate answering, the local rule and the warm start order. Ray Tune's
trial runner is left out. Searches:

* ``default``: the shipped defaults (TPE, seeds raced within one pooled sd, local share 0.5)
  with the prior of :mod:`raystilts.search.prior` built leave-one-target-out: the other targets' rows
  play the role of earlier searches (no TextEmb here: a table has no texts);
* ``no-prior``: the same search without a prior (and without a ranking: TPE and racing alone);
* ``random``: ``search.algorithm: random`` (every sampled config runs every seed);
* ``grid``: ``search.algorithm: grid``: every candidate and seed, in the table's order.

Per target: candidates are the table's intermediates except the target itself (``NONE`` rows
are baseline runs, ``seed = mean`` rows are ignored); cost is one per trial; the grid is every
candidate x every seed. Ground truth: the candidate with the best mean over its finite seeds.
Noise: the seed sd pooled over the target's cells with two or more finite seeds, else the sd of
its baseline runs, else 0 (the output says which). A search has *found* the target after its
t-th trial when its selection (the config with the best mean over the seeds it ran, the rule of
:meth:`raystilts.search.searcher.ChainSearch.selection`) has a true mean within one noise sd of the
best, and stays so until the search ends; trials until found is that t, or the grid's size when
it never is (the penalty; such targets count as not found). The grid's own trials until found
is its size: an exhaustive search cannot know earlier that it is done. Every search runs until
it ends or has spent the grid's size. Relative regret at a budget of b x grid trials:
``100 * (best - true mean of the selection) / |best|``.

Last line: ``transfer_tables: default/grid=R1 default/random=R2 regret@10%=G found=F/T``
(R1, R2: means over targets and repeats of the default search's trials until found over the
grid's size and over random search's (same repeat); G: mean regret at 10 % of the grid;
F/T: targets the default search found in every repeat, out of all).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna

from raystilts.core.space import SearchSpace, load_space_dict
from raystilts.core.transfer_tables import BASELINE, TransferTable, read_table
from raystilts.search.prior import Evidence, Prior, Reranker, build_prior, seed_sd
from raystilts.search.searcher import Launch, build_search

SEARCHES = ("default", "no-prior", "random", "grid")
BUDGETS = (0.05, 0.1, 0.2)


@dataclass(frozen=True, slots=True, kw_only=True)
class TableTask:
    """A table's task, as the space's validation sees it (raystilts.core.space.TaskInfo)."""

    name: str
    kind: str = "classification"
    languages: tuple[str, ...] = ("en",)
    is_target: bool = True


@dataclass(frozen=True, slots=True)
class Truth:
    """One target's ground truth from the table."""

    means: dict[str, float]  # candidate -> mean over finite seeds (NaN: none)
    best: float
    sd: float
    sd_source: str  # "seeds" | "baseline" | "none"
    seeds: tuple[str, ...]  # the table's seeds of this target, in order
    grid: int  # candidates x seeds


@dataclass(frozen=True, slots=True)
class Outcome:
    until_found: int  # trials; the grid's size when never found
    found: bool
    regret: tuple[float, ...]  # at the budgets (fractions of the grid)


def truth_of(table: TransferTable, target: str) -> Truth:
    cells = table.cells(target)
    seeds = sorted({s for c in cells.values() for s in c}, key=_seed_order)
    means = {
        i: statistics.fmean(f) if (f := [v for v in c.values() if math.isfinite(v)]) else math.nan
        for i, c in cells.items()
    }
    finite = {i: [v for v in c.values() if math.isfinite(v)] for i, c in cells.items()}
    base = table.baseline(target)
    sd = seed_sd(finite, base)  # the prior's own rule: pooled over cells, else baseline runs
    if any(len(v) >= 2 for v in finite.values()):
        source = "seeds"
    else:
        source = "baseline" if sd is not None else "none"
    finite_means = [m for m in means.values() if math.isfinite(m)]
    best = max(finite_means) if finite_means else math.nan
    return Truth(means, best, sd or 0.0, source, tuple(seeds), len(cells) * len(seeds))


def _seed_order(seed: str) -> tuple[int, float, str]:
    try:
        return (0, float(seed), seed)
    except ValueError:
        return (1, 0.0, seed)


def space_for(
    target: str, candidates: Sequence[str], n_seeds: int, **search: object
) -> SearchSpace:
    """The search space ``raystilts search`` would get for this table target: single-task
    chains over the candidates, the table's seeds, fixed learning rates and steps."""
    catalog = {t: TableTask(name=t) for t in (*candidates, target)}
    return load_space_dict(
        {
            "name": "replay",
            "model": "table",
            "targets": [target],
            "intermediate": {
                "tasks": list(candidates),
                "min_chain_length": 1,
                "max_chain_length": 1,
                "lr": 1e-3,
                "steps": 1,
            },
            "target": {"lr": 1e-3, "steps": 1, "eval_every": 1},
            "search": {
                "seeds": list(range(n_seeds)),
                "num_samples": len(candidates),
                "baseline_first": False,
                "scheduler": {"type": "none"},
                **search,
            },
        },
        catalog=catalog,
    )


def replay(
    space: SearchSpace,
    target: str,
    truth: Truth,
    cells: Mapping[str, Mapping[str, float]],
    ranking: Sequence[str] | None,
    rerank: Reranker | None = None,
) -> list[str]:
    """Run one search on looked-up scores; returns the selection after each trial (its
    candidate, "" before any score): :meth:`ChainSearch.selection` itself, at most the grid's
    size of trials."""
    search = build_search(space, target, ranking=ranking, rerank=rerank)
    trace: list[str] = []
    while len(trace) < truth.grid:
        step = search.suggest()
        if not isinstance(step, Launch):
            break  # DONE (one trial at a time: nothing is ever running when it asks)
        (task,) = search.chain(step.key)
        search.report(
            step.key, step.index, cells.get(task, {}).get(truth.seeds[step.index], math.nan)
        )
        key = search.selection()
        trace.append(search.chain(key)[0] if key is not None else "")
    return trace


def outcome(trace: Sequence[str], truth: Truth, budgets: Sequence[float] = BUDGETS) -> Outcome:
    ok = [bool(s) and truth.means[s] >= truth.best - truth.sd for s in trace]
    found = bool(ok) and ok[-1]
    until = truth.grid
    if found:
        last_bad = max((i for i, v in enumerate(ok) if not v), default=-1)
        until = last_bad + 2
    regret = []
    for b in budgets:
        n = min(len(trace), max(1, math.floor(b * truth.grid)))
        chosen = trace[n - 1] if n else ""
        value = truth.means[chosen] if chosen else math.nan
        regret.append(100 * (truth.best - value) / abs(truth.best) if truth.best else math.nan)
    return Outcome(until, found, tuple(regret))


def leave_one_out(table: TransferTable, target: str, candidates: Sequence[str]) -> Prior:
    """Leave-one-target-out: every other target task's rows are finished trials of earlier
    searches, its baseline runs included (the target task's other languages are left out
    too); each language of a multilingual table is a target of its own, as in the replay."""
    task = target.split("@")[0]
    evidence = [
        Evidence(
            target=table.target_name(r),
            chain=() if r.intermediate == BASELINE else (r.intermediate,),
            score=r.score,
        )
        for r in table.rows
        if r.target != task
    ]
    return build_prior(evidence, tasks=candidates, target=task)


def prior_ranking(table: TransferTable, target: str, candidates: Sequence[str]) -> tuple[str, ...]:
    """The ranking the default search starts from (no warm start: a table has no texts)."""
    return leave_one_out(table, target, candidates).ranking(candidates)


def run_table(
    table: TransferTable,
    repeats: int,
    log: Callable[[str], None],
    *,
    budgets: Sequence[float] = BUDGETS,
    workers: int = 1,
) -> dict[str, object]:
    """Every target of ``table``, ``repeats`` sampler seeds per search; targets in
    ``workers`` processes (each replay is one process's work: Optuna's trials are serial)."""
    jobs = [(table, target, repeats, tuple(budgets)) for target in table.targets()]
    results: dict[str, dict[str, list[Outcome]]] = {}
    truths: dict[str, Truth] = {}
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_quiet) as pool:
            done = list(pool.map(_target_job, jobs))
    else:
        done = [_target_job(job) for job in jobs]
    for target, truth, per, lines in done:
        for line in lines:
            log(line)
        if truth is not None:
            truths[target], results[target] = truth, per
    return {"results": results, "truths": truths, "budgets": tuple(budgets)}


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _target_job(
    job: tuple[TransferTable, str, int, tuple[float, ...]],
) -> tuple[str, Truth | None, dict[str, list[Outcome]], list[str]]:
    """One target: every search and repeat; returns its printed lines too."""
    table, target, repeats, budgets = job
    cells = table.cells(target)
    truth = truth_of(table, target)
    if len(cells) < 2 or not math.isfinite(truth.best):
        return target, None, {}, [f"  {target}: skipped ({len(cells)} candidate(s) with a score)"]
    candidates = list(cells)
    prior = leave_one_out(table, target, candidates)
    ranking = prior.ranking(candidates)
    rerank = Reranker(prior, tuple(candidates))
    per: dict[str, list[Outcome]] = {s: [] for s in SEARCHES}
    for r in range(repeats):
        for name in SEARCHES:
            if name == "grid" and r:  # every point enqueued in the table's order: the same
                per[name].append(per[name][0])  # trace whatever the sampler seed
                continue
            algorithm = {"random": "random", "grid": "grid"}.get(name, "tpe")
            space = space_for(
                target, candidates, len(truth.seeds), sampler_seed=r, algorithm=algorithm
            )
            default = name == "default"
            trace = replay(
                space,
                target,
                truth,
                cells,
                ranking if default else None,
                rerank if default else None,
            )
            out = outcome(trace, truth, budgets)
            if name == "grid":  # exhaustive: done only once every cell has run
                out = Outcome(truth.grid, True, out.regret)
            per[name].append(out)
    lines: list[str] = []
    _print_target(target, truth, per, lines.append, budgets)
    return target, truth, per, lines


def _print_target(
    target: str,
    truth: Truth,
    per: Mapping[str, Sequence[Outcome]],
    log: Callable[[str], None],
    budgets: Sequence[float],
) -> None:
    log(
        f"  {target}: {len(truth.means)} candidates x {len(truth.seeds)} seeds = {truth.grid}; "
        f"best {truth.best:.4g}, noise sd {truth.sd:.3g} ({truth.sd_source})"
    )
    for name, outs in per.items():
        until = [o.until_found for o in outs]
        regrets = [statistics.fmean(o.regret[i] for o in outs) for i in range(len(budgets))]
        log(
            f"    {name:9s} until found {statistics.fmean(until):7.1f} ± {_sd(until):5.1f} "
            f"({sum(o.found for o in outs)}/{len(outs)} found)  regret "
            + " ".join(f"@{b:.0%} {g:5.2f}%" for b, g in zip(budgets, regrets, strict=True))
        )


def _sd(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summary(run: Mapping[str, object], log: Callable[[str], None]) -> str:
    results: dict[str, dict[str, list[Outcome]]] = run["results"]  # type: ignore[assignment]
    truths: dict[str, Truth] = run["truths"]  # type: ignore[assignment]
    budgets: tuple[float, ...] = run["budgets"]  # type: ignore[assignment]
    r1: dict[str, list[float]] = {s: [] for s in SEARCHES}
    r2: dict[str, list[float]] = {s: [] for s in SEARCHES}
    regret: dict[str, list[list[float]]] = {s: [[] for _ in budgets] for s in SEARCHES}
    found: dict[str, int] = dict.fromkeys(SEARCHES, 0)
    for target, per in results.items():
        grid = truths[target].grid
        for name, outs in per.items():
            found[name] += all(o.found for o in outs)
            for o, rand in zip(outs, per["random"], strict=True):
                r1[name].append(o.until_found / grid)
                r2[name].append(o.until_found / rand.until_found)
                for i, g in enumerate(o.regret):
                    regret[name][i].append(g)
    n = len(results)
    # the last line's R2 is a mean of per-repeat ratios, which a lucky random repeat (found at
    # its first trial) can dominate; the ratio of mean trials is printed beside it
    trials = {
        name: sum(o.until_found for per in results.values() for o in per[name]) for name in SEARCHES
    }
    log(
        "ratio of total trials until found to random search's: "
        + ", ".join(f"{name} {trials[name] / trials['random']:.3f}" for name in SEARCHES)
    )
    # the best any search can reach on R2: found at its first trial, every target and repeat
    first = statistics.fmean(1 / o.until_found for per in results.values() for o in per["random"])
    log(
        f"a search that finds every target at its first trial would score default/random "
        f"{first:.3f} (random search's own luck bounds R2 from below)"
    )
    log("overall (means over targets and repeats):")
    for name in SEARCHES:
        log(
            f"  {name:9s} until found / grid {statistics.fmean(r1[name]):.3f}  / random "
            f"{statistics.fmean(r2[name]):.3f}  regret "
            + " ".join(
                f"@{b:.0%} {statistics.fmean(regret[name][i]):.2f}%" for i, b in enumerate(budgets)
            )
            + f"  found in every repeat {found[name]}/{n}"
        )
    return (
        f"transfer_tables: default/grid={statistics.fmean(r1['default']):.3f} "
        f"default/random={statistics.fmean(r2['default']):.3f} "
        f"regret@10%={statistics.fmean(regret['default'][budgets.index(0.1)]):.2f} "
        f"found={found['default']}/{n}"
    )


def synthetic_table(
    path: Path, *, intermediates: int, targets: int, seeds: int, rng_seed: int = 0
) -> Path:
    """Write a generated table: score = target level + task quality (shared by all targets) +
    task x target interaction + seed noise, with baseline runs; one target name is also an
    intermediate (self-transfer rows). Made up to exercise the code, not to mimic a study."""
    rng = random.Random(rng_seed)
    names = [f"i{k:03d}" for k in range(intermediates)]
    quality = {i: rng.gauss(0, 0.02) for i in names}
    lines = ["intermediate,target,language,seed,score,baseline_score,metric,source_path"]
    for t in range(targets):
        target = names[0] if t == 0 else f"t{t:03d}"  # i000 is also a target: self-transfer
        level = rng.uniform(0.5, 0.8)
        for i in [*names, BASELINE]:
            effect = 0.0 if i == BASELINE else quality[i] + rng.gauss(0, 0.015)
            # studies with one seed per cell publish several baseline runs: at least five here
            for s in range(max(seeds, 5) if i == BASELINE else seeds):
                score = level + effect + rng.gauss(0, 0.01)
                lines.append(f"{i},{target},en,{s},{score:.4f},{level:.4f},acc,synthetic")
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, nargs="*", default=[], help="transfer table CSV(s)")
    ap.add_argument("--repeats", type=int, default=5, help="sampler seeds per search")
    ap.add_argument(
        "--synthetic",
        type=int,
        nargs=3,
        metavar=("INTERMEDIATES", "TARGETS", "SEEDS"),
        help="also replay a generated table of this size",
    )
    ap.add_argument(
        "--budget-fractions",
        type=float,
        nargs="+",
        default=list(BUDGETS),
        help="budgets for the regret, as fractions of the grid (0.1 is always added)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes, one target at a time each (default: the CPU count)",
    )
    ap.add_argument("--smoke", action="store_true", help="a tiny generated table, 2 repeats")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    tables = list(args.table)
    tmp = Path(tempfile.mkdtemp(prefix="transfer-tables-"))
    if args.smoke:
        args.repeats = min(args.repeats, 2)
        args.synthetic = [12, 4, 3]
    if args.synthetic:
        i, t, s = args.synthetic
        tables.append(
            synthetic_table(tmp / f"synthetic_{i}x{t}x{s}.csv", intermediates=i, targets=t, seeds=s)
        )
    if not tables:
        ap.error("pass --table FILE.csv, --synthetic I T S or --smoke")
    last = ""
    for path in tables:
        t0 = time.perf_counter()
        table = read_table(path)
        print(f"{path}: {len(table.rows)} rows, skipped {table.skipped or 'none'}", flush=True)
        budgets = sorted({*args.budget_fractions, 0.1})  # the last line reports 10 %
        if not all(0 < b <= 1 for b in budgets) or args.repeats < 1 or args.workers < 1:
            ap.error("--budget-fractions in (0, 1], --repeats and --workers >= 1")
        run = run_table(
            table,
            args.repeats,
            lambda s: print(s, flush=True),
            budgets=budgets,
            workers=args.workers,
        )
        last = summary(run, lambda s: print(s, flush=True))
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
        if len(tables) > 1:
            print(last, flush=True)
    print(last)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
