"""How much training does the default search need to find each target's best chain? Against the grid and random search.

    python benchmarks/search_efficiency.py                                  # length 1, seeds 0 1 2
    python benchmarks/search_efficiency.py --max-chain-length 1 --seeds 0 1 \\
        --phase-steps 150 --target-steps 60 --eval-every 20 --samples 3    # ~30 min on 2 cores
    python benchmarks/search_efficiency.py --fresh                          # rerun all three searches
    python benchmarks/search_efficiency.py --smoke     # CI: 2 chains, 1 seed, a few steps, fresh
    python benchmarks/search_efficiency.py --tasks mini_mnli mini_qqp mini_ccg \
        --max-chain-length 2 --forms sequence mixture --seeds 0 1 --phase-steps 100 \
        --target-steps 40 --eval-every 20 --samples 6    # 13 chains x 2 seeds; ~50 min on 2 cores

Runs three searches through the same system (``raystilts.search.driver.run_search``: Ray Tune + Optuna,
Ray Train trials, the prefix cache, MLflow), each in its own directory under ``--workdir`` so
that no search reads another's prefix cache or runs:

* ``grid``: ``search.algorithm: grid``, no scheduler, no warm start: every chain up to
  ``--max-chain-length`` x every seed. It is the ground truth: per target and chain, the mean
  and standard deviation over seeds of the English dev score (the selection criterion) and of
  the zero-shot test average. The best chain has the highest mean English dev score; a chain
  is *correct* when its mean is at least ``best - sd(best)`` (population sd over seeds, as in
  ``benchmarks/chain_effects.py``).
* ``default``: the shipped defaults: TPE, the baseline and the TextEmb warm start's chains
  first, ASHA when there is one seed (with several, the space refuses early stopping and every
  trial runs to the end); ``--samples`` distinct configs per target. Seeds are raced
  (``raystilts.core.racing``): a config runs its further seeds only when its first seed scores
  within one pooled seed-sd of the best mean so far, and a proposal of a chain already run is
  told its score instead of training it again.
* ``random``: plain random search (Optuna's random sampler, no warm start, no baseline first,
  no ASHA), the same budget and seeds.

The learning rates are fixed (``--phase-lr``, ``--target-lr``), so the space is exactly the
grid's chains and the grid is exhaustive. A search (and its directory) is reused when its
settings are unchanged, so a rerun with the same flags only re-reads MLflow.

Compute is counted in training steps (batch 32 throughout; phase and target steps cost the
same; evaluation is not counted): per trial, the steps of each intermediate phase the prefix
cache did not serve (``phase{i}/cached``; for a trial ASHA stopped, which logs no phase
metrics, a phase counts as cached when an earlier trial of the same search trained the same
prefix with the same seed) plus the target steps it ran (a stopped trial: the last step it
reported to MLflow). *Steps until found*: trials in start order (MLflow's); after each, the
search's selection (``raystilts.analysis.tables.best_chains`` on the trials so far: mean English dev
over the seeds available) is checked against the grid; the cost is the sum of steps up to the
trial after which the selection is correct and stays correct, or the whole search if it never
is. The grid's own cost is its total: an exhaustive search cannot know earlier that it is done; it is
counted like the others, so the prefix cache's savings are in it (a length-2 sequence reuses
its single-task prefix, the second target reuses every phase of the first).

Prints a table per target and search, the compute per search, and last
``search_efficiency: default/grid=R1 default/random=R2 prefix_saved=S found=F/T`` (R1: default
search's steps until found over the grid's total steps; R2: over random search's steps until
found; S: share of the default search's requested phase trainings the prefix cache saved;
F/T: targets whose best chain the default search found, out of all targets).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raystilts.analysis import tables as analysis
from raystilts.core.space import SearchSpace, all_chains, load_space_dict
from raystilts.search import SearchRun, run_search
from raystilts.tasks import CATALOG
from raystilts.tasks.embedded import generate
from raystilts.tracking import RunRecord, default_tracking_uri, load_runs
from raystilts.train.pretrain import SMOKE_PRETRAIN, ensure_base_model
from raystilts.train.workspace import default_cache_dir

SEARCHES = ("grid", "random", "default")  # the references first: the default is iterated on
BENCH_VERSION = 1  # bump when what a search directory holds changes meaning
ATTEMPTS = 3  # runs of a search whose trials failed (a shared machine's Ray may be killed)
MARKER = "benchmark.json"  # written after a search completes: its settings, for reuse
# CI's size: all three searches through Ray, Tune, Optuna and MLflow end to end, the numbers
# meaningless; fresh each time in its own directory, never touching a full-size run's.
SMOKE: dict[str, Any] = {
    "workdir": Path(tempfile.gettempdir()) / "raystilts-bench" / "search_efficiency_smoke",
    "targets": ["mini_xnli"],
    "tasks": ["mini_mnli"],
    "seeds": [0],
    "phase_steps": 4,
    "target_steps": 4,
    "eval_every": 2,
    "samples": 2,
    "max_concurrent": 1,
    "fresh": True,
    "tiny_model": True,
}
SMOKE_CACHE = Path(tempfile.gettempdir()) / "raystilts-bench" / "smoke-cache"
TINY = SMOKE_PRETRAIN  # 5 steps: a smoke run must not spend minutes pretraining


@dataclass(frozen=True, slots=True)
class Trial:
    """One trial run of a search, with the compute it actually spent."""

    target: str
    chain: str
    seed: int
    order: tuple[int, int]  # (target's position in the space, start order)
    finished: bool  # has test scores: ran to the end
    phase_steps: int  # intermediate steps trained (cached phases cost 0)
    target_steps: int  # target steps run (fewer when ASHA stopped it)
    requested: int  # phases asked of the prefix cache
    saved: int  # phases the prefix cache served
    logged: bool  # requested/saved come from the trial's prefix_cache/* metrics
    record: RunRecord

    @property
    def steps(self) -> int:
        return self.phase_steps + self.target_steps


@dataclass(frozen=True, slots=True)
class Truth:
    """The grid's scores of one chain for one target, over seeds."""

    dev_mean: float
    dev_sd: float
    test_mean: float
    test_sd: float
    seeds: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one search did on one target."""

    trials: int
    configs: int
    selected: str | None
    found: bool
    steps_until_found: int  # the whole search's steps on this target when never found
    steps_total: int


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "raystilts-bench" / "search_efficiency",
        help="one directory per search below it (reused while the settings match)",
    )
    ap.add_argument("--targets", nargs="+", default=["mini_xnli", "mini_udpos"])
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=["mini_mnli", "mini_qqp", "mini_ccg", "mini_topic"],
        help="the intermediate pool",
    )
    ap.add_argument(
        "--max-chain-length", type=int, default=1, help="1: 5 chains; 2: 17 (23 with mixtures)"
    )
    ap.add_argument(
        "--forms",
        nargs="+",
        choices=["sequence", "mixture"],
        default=["sequence"],
        help="intermediate.forms: sequence and/or mixture (mixture needs length 2)",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--phase-steps", type=int, default=300, help="as the demo")
    ap.add_argument("--phase-lr", type=float, default=1e-3, help="fixed: the grid is exhaustive")
    ap.add_argument("--target-steps", type=int, default=100, help="as the demo")
    ap.add_argument("--target-lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=25, help="English dev reports: ASHA rungs")
    ap.add_argument("--samples", type=int, default=4, help="configs per target (default, random)")
    ap.add_argument("--max-concurrent", type=int, default=2, help="the useful ceiling on 2 cores")
    ap.add_argument("--sampler-seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="rerun every search, reuse none")
    ap.add_argument(
        "--tiny-model",
        action="store_true",
        help=f"a 5-step tiny encoder and the embedded data in {SMOKE_CACHE}, not the base model",
    )
    ap.add_argument("--smoke", action="store_true", help=f"CI's tiny size: {SMOKE}")
    if ap.parse_known_args()[0].smoke:  # explicit flags still win over the smoke sizes
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()
    if not 0 < args.max_chain_length <= len(args.tasks):
        ap.error(f"--max-chain-length {args.max_chain_length}: expected 1..{len(args.tasks)}")

    assets = tiny_assets() if args.tiny_model else None
    spaces = {kind: build_space(kind, args, assets) for kind in SEARCHES}
    seconds: dict[str, float | None] = {}
    for kind, space in spaces.items():
        seconds[kind] = ensure_search(
            kind, space, args.workdir / kind, fresh=args.fresh, assets=assets
        )
    trials = {
        kind: trial_costs(
            load_runs(tracking_uri=uri(args.workdir / kind), experiment=s.name),
            s,
            tracking_uri=uri(args.workdir / kind),
        )
        for kind, s in spaces.items()
    }
    grid_space = spaces["grid"]
    truth = ground_truth(trials["grid"], grid_space)
    outcomes = {
        kind: {t: outcome(trials[kind], t, truth[t]) for t in grid_space.targets}
        for kind in SEARCHES
    }
    print_truth(truth, grid_space)
    print_outcomes(outcomes, truth, grid_space)

    def total(kind: str, field: str) -> int:
        return sum(getattr(o, field) for o in outcomes[kind].values())

    print()
    print(f"{'search':8s}  {'trials':>6s}  {'steps':>8s}  {'until found':>11s}  "
          f"{'found':>5s}  {'prefix saved':>14s}  {'wall s':>7s}")  # fmt: skip
    for kind in SEARCHES:
        req, saved, logged = prefix_share(trials[kind])
        wall = seconds[kind]
        print(
            f"{kind:8s}  {len(trials[kind]):6d}  {total(kind, 'steps_total'):8d}  "
            f"{total(kind, 'steps_until_found'):11d}  "
            f"{sum(o.found for o in outcomes[kind].values())}/{len(outcomes[kind]):<3d}  "
            f"{saved:4d}/{req:<4d} {saved / req if req else 0.0:4.0%}  "
            f"{'reused' if wall is None else f'{wall:.0f}':>7s}"
            + ("" if logged == len(trials[kind]) else f"  ({len(trials[kind]) - logged} inferred)")
        )
    default_found = total("default", "steps_until_found")
    r1 = default_found / max(1, total("grid", "steps_total"))
    r2 = default_found / max(1, total("random", "steps_until_found"))
    req, saved, _ = prefix_share(trials["default"])
    found = sum(o.found for o in outcomes["default"].values())
    print(
        f"targets: default/grid <= 0.20 {'met' if r1 <= 0.2 else 'NOT met'}, "
        f"default/random <= 0.50 {'met' if r2 <= 0.5 else 'NOT met'}"
    )
    print(
        f"search_efficiency: default/grid={r1:.3f} default/random={r2:.3f} "
        f"prefix_saved={saved / req if req else 0.0:.3f} found={found}/{len(grid_space.targets)}"
    )


# ----------------------------------------------------------------------------- the searches


def tiny_assets() -> tuple[Path, Path]:
    """(model dir, data dir) of the tiny encoder and the embedded data, built once."""
    model = ensure_base_model(SMOKE_CACHE, TINY, log=False)
    return model, generate(SMOKE_CACHE / "embedded-data", seed=0)


def build_space(
    kind: str, args: argparse.Namespace, assets: tuple[Path, Path] | None = None
) -> SearchSpace:
    """The benchmark's space for one search; only the ``search`` section differs."""
    search: dict[str, Any] = {
        "num_samples": args.samples,
        "max_concurrent": args.max_concurrent,
        "seeds": list(args.seeds),
        "sampler_seed": args.sampler_seed,
    }
    if kind == "grid":  # num_samples is ignored: every chain once per seed
        search |= {"algorithm": "grid", "warm_start": "none", "scheduler": {"type": "none"}}
    elif kind == "random":  # plain: nothing of the default's help
        search |= {
            "algorithm": "random",
            "warm_start": "none",
            "baseline_first": False,
            "scheduler": {"type": "none"},
        }
    data = {
        "name": f"search_efficiency_{kind}",
        "model": "embedded" if assets is None else str(assets[0]),
        "targets": list(args.targets),
        "intermediate": {
            "tasks": list(args.tasks),
            "min_chain_length": 0,
            "max_chain_length": args.max_chain_length,
            "forms": list(args.forms),
            "lr": args.phase_lr,
            "steps": args.phase_steps,
        },
        "target": {"lr": args.target_lr, "steps": args.target_steps, "eval_every": args.eval_every},
        "search": search,
    }
    return load_space_dict(data, catalog=CATALOG)


def uri(workdir: Path) -> str:
    return default_tracking_uri(workdir)


def ensure_search(
    kind: str,
    space: SearchSpace,
    workdir: Path,
    *,
    fresh: bool,
    assets: tuple[Path, Path] | None = None,
) -> float | None:
    """Run the search in ``workdir`` unless a completed one with the same settings is there;
    returns its wall seconds, or None when reused."""
    settings = json.dumps(
        {"version": BENCH_VERSION, "space": space.to_dict()}, sort_keys=True, default=str
    )
    marker = workdir / MARKER
    if not fresh and marker.is_file() and json.loads(marker.read_text())["settings"] == settings:
        print(f"{kind}: reusing {workdir}", flush=True)
        return None  # its wall time was measured by the run that made it
    for attempt in range(1, ATTEMPTS + 1):
        if workdir.exists():  # a stale or partial search: its prefix cache would flatter it
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        print(f"{kind}: running in {workdir} (attempt {attempt})", flush=True)
        # (the driver pins Ray's dashboard address for Train's State API itself)
        summary = run_search(
            space,
            run=SearchRun(
                workdir=workdir,
                cache_dir=default_cache_dir() if assets is None else SMOKE_CACHE,
                tracking_uri=uri(workdir),
                data_dir=None if assets is None else assets[1],
            ),
        )
        if not any(summary["failed"].values()):
            marker.write_text(json.dumps({"settings": settings, "seconds": summary["seconds"]}))
            return float(summary["seconds"])
        # On a shared machine another user's `ray stop --force` kills our Ray too: its trials
        # fail. A fresh Ray and a fresh directory; counting a half-failed search would be wrong.
        print(f"{kind}: failed trials {summary['failed']}; restarting Ray", flush=True)
        import ray

        ray.shutdown()
    raise SystemExit(f"{kind}: trials failed in {ATTEMPTS} attempts; see the Ray logs above")


# ----------------------------------------------------------------------------- compute


def trial_costs(
    records: Sequence[RunRecord], space: SearchSpace, *, tracking_uri: str
) -> list[Trial]:
    """Every trial of a search with the steps it spent, in start order (targets run in turn)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    targets = list(space.targets)

    def last_step(r: RunRecord, key: str) -> int:
        """The last target step a stopped trial reported (the MLflow step of its dev metric)."""
        return int(max((m.step for m in client.get_metric_history(r.run_id, key)), default=0))

    # load_runs gives runs oldest first: MLflow's start time is the trial's start order
    start = {r.run_id: i for i, r in enumerate(records)}

    def order(r: RunRecord) -> tuple[int, int]:
        return targets.index(r.params["target"]), start[r.run_id]

    trained: set[tuple[int, tuple[tuple[str, str, str], ...]]] = set()  # (seed, prefix)
    out = []
    for r in sorted(records, key=order):
        target = r.params["target"]
        seed = int(r.params["seed"])
        length = int(r.params["chain_length"])
        phases = tuple(
            (r.params[f"phase{i}_task"], r.params[f"phase{i}_lr"], r.params[f"phase{i}_steps"])
            for i in range(length)
        )
        finished = any(k.startswith(f"test/{target}/") for k in r.metrics)
        if finished:  # what the trial measured
            cached = [r.metrics.get(f"phase{i}/cached", 0.0) == 1.0 for i in range(length)]
        else:  # a stopped or failed trial logs no phase metrics: what the cache held before it
            cached = [(seed, phases[: i + 1]) in trained for i in range(length)]
        trained.update((seed, phases[: i + 1]) for i in range(length))
        logged = "prefix_cache/phases_requested" in r.metrics
        out.append(
            Trial(
                target=target,
                chain=r.params["chain"],
                seed=seed,
                order=order(r),
                finished=finished,
                phase_steps=sum(int(p[2]) for p, c in zip(phases, cached, strict=True) if not c),
                target_steps=(
                    int(r.params["target_steps"])
                    if finished
                    else last_step(r, f"dev/{target}/en/{r.params['metric']}")
                ),
                requested=(int(r.metrics["prefix_cache/phases_requested"]) if logged else length),
                saved=int(r.metrics["prefix_cache/phases_saved"]) if logged else sum(cached),
                logged=logged,
                record=r,
            )
        )
    return out


def prefix_share(trials: Sequence[Trial]) -> tuple[int, int, int]:
    """(phases requested, phases saved, trials whose counts were logged) over a search."""
    return (
        sum(t.requested for t in trials),
        sum(t.saved for t in trials),
        sum(t.logged for t in trials),
    )


# ----------------------------------------------------------------------------- ground truth


def ground_truth(trials: Sequence[Trial], space: SearchSpace) -> dict[str, dict[str, Truth]]:
    """Per target and chain: English dev and test average over the grid's seeds."""
    out: dict[str, dict[str, Truth]] = {}
    for target in space.targets:
        metric = CATALOG[target].metric
        rows: dict[str, tuple[list[float], list[float]]] = {}
        for t in trials:
            if t.target == target and t.finished:
                devs, tests = rows.setdefault(t.chain, ([], []))
                devs.append(t.record.metrics[f"dev/{target}/en/{metric}"])
                tests.append(t.record.metrics[f"test/{target}/avg/{metric}"])
        expected = len(all_chains(space, target))
        if len(rows) != expected:
            raise SystemExit(
                f"grid: {len(rows)} of {expected} chains of {target} finished; "
                "rerun with --fresh (failed trials are in the search's Ray logs)"
            )
        out[target] = {
            chain: Truth(
                dev_mean=statistics.mean(devs),
                dev_sd=statistics.pstdev(devs),
                test_mean=statistics.mean(tests),
                test_sd=statistics.pstdev(tests),
                seeds=len(devs),
            )
            for chain, (devs, tests) in rows.items()
        }
    return out


def best_of(truth: Mapping[str, Truth]) -> str:
    """Highest mean English dev; ties to fewer phases, then the name (as best_chains)."""
    return min(truth, key=lambda c: (-truth[c].dev_mean, c.count(">"), c))


def correct(truth: Mapping[str, Truth]) -> set[str]:
    """Chains within one seed-sd of the best chain's mean English dev score."""
    best = truth[best_of(truth)]
    return {c for c, t in truth.items() if t.dev_mean >= best.dev_mean - best.dev_sd}


def outcome(trials: Sequence[Trial], target: str, truth: Mapping[str, Truth]) -> Outcome:
    mine = [t for t in trials if t.target == target]  # in start order
    ok = correct(truth)
    selections = [selection([t.record for t in mine[: k + 1]], target) for k in range(len(mine))]
    found_at = None  # index of the trial after which the selection is and stays correct
    for k in reversed(range(len(mine))):
        if selections[k] not in ok:
            break
        found_at = k
    total = sum(t.steps for t in mine)
    return Outcome(
        trials=len(mine),
        configs=len({t.record.params.get("config_key") for t in mine}),
        selected=selections[-1] if selections else None,
        found=found_at is not None,
        steps_until_found=total if found_at is None else sum(t.steps for t in mine[: found_at + 1]),
        steps_total=total,
    )


def selection(records: Sequence[RunRecord], target: str) -> str | None:
    """The chain a search would report now: ``analysis.best_chains`` on its runs so far."""
    results = analysis.best_chains(analysis.runs_to_long(records))
    return next((r.chain_name for r in results if r.target == target), None)


# ----------------------------------------------------------------------------- output


def print_truth(truth: Mapping[str, Mapping[str, Truth]], space: SearchSpace) -> None:
    for target, chains in truth.items():
        best, ok = best_of(chains), correct(chains)
        seeds = next(iter(chains.values())).seeds
        print(f"\n{target}: ground truth (grid, {seeds} seeds; mean ± sd over seeds)")
        print(f"  {'chain':36s}  {'en dev':>13s}  {'test avg':>13s}")
        for chain in sorted(chains, key=lambda c: -chains[c].dev_mean):
            t = chains[chain]
            mark = " best" if chain == best else (" within 1 sd" if chain in ok else "")
            print(
                f"  {chain:36s}  {100 * t.dev_mean:6.1f} ± {100 * t.dev_sd:4.1f}  "
                f"{100 * t.test_mean:6.1f} ± {100 * t.test_sd:4.1f}{mark}"
            )


def print_outcomes(
    outcomes: Mapping[str, Mapping[str, Outcome]],
    truth: Mapping[str, Mapping[str, Truth]],
    space: SearchSpace,
) -> None:
    print(
        f"\n{'target':10s}  {'search':8s}  {'trials':>6s}  {'configs':>7s}  {'selected':36s}  "
        f"{'grid en dev':>11s}  {'found':>5s}  {'until found':>11s}  {'steps':>8s}"
    )
    for target in space.targets:
        for kind, per_target in outcomes.items():
            o = per_target[target]
            dev = truth[target].get(o.selected or "")
            print(
                f"{target:10s}  {kind:8s}  {o.trials:6d}  {o.configs:7d}  "
                f"{o.selected or '-':36s}  "
                f"{'-' if dev is None else f'{100 * dev.dev_mean:.1f}':>11s}  "
                f"{'yes' if o.found else 'no':>5s}  {o.steps_until_found:11d}  {o.steps_total:8d}"
            )


if __name__ == "__main__":
    main()
