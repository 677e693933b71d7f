"""A search on a GPU cluster, simulated: how busy the GPUs are and how long it takes, today's
one-target-at-a-time scheduling beside one pool for every target.

    python benchmarks/cluster_sim.py                       # the paper study, 3 seeds, 8/32/128 GPUs
    python benchmarks/cluster_sim.py --gpus 16 64 --seeds 0 1 2 3 4
    python benchmarks/cluster_sim.py --smoke               # 1 seed, 8 GPUs: seconds

A discrete-event simulation that runs the real scheduling code and replaces only training by a
cost model: the searches are :func:`raystilts.search.searcher.build_search`'s ``ChainSearch``
objects of ``search_spaces/paper_xtreme.yaml`` (grid: ten chains x nine targets x seeds); the
new scheduling is the pool ``raystilts search`` runs, built by the driver's own
:func:`raystilts.search.pool.build_pool` and driven through :class:`raystilts.search.pool.PoolTrials`
exactly as the driver's Tune searcher drives it (a trial "reports" once its prefix is trained);
a prefix being trained is a :class:`raystilts.train.prefix_claims.PrefixClaims` claim (files in
a temporary directory, on the simulated clock), which a trial needing it waits for, as
:meth:`raystilts.train.prefix_cache.PrefixCache.turn` makes it. One trial uses
``workers_per_trial x gpus_per_worker`` GPUs (one, here).

* ``sequential`` (today): one target after another, each target's trials ``gpus`` at a time (the
  best today's driver can do on the cluster: ``max_concurrent`` set to the GPU count; the
  space's own ``max_concurrent: 1`` is reported too, as ``sequential@space``); trained prefixes
  stay in the cache for later targets; a prefix is trained by every trial that misses it while
  nobody has finished it (today's cache has no claims across nodes).
* ``pool`` (new, as ``raystilts search`` now runs): every target's trials share one limit of
  ``gpus`` and one queue (longest trials first, :func:`raystilts.search.pool.trial_cost`); a
  launch whose prefix a running trial is training is held back until that trial reports (the
  driver's ``PrefixesInTraining``), and a trial that starts anyway waits for the claim's holder,
  so each prefix trains once.

Baseline rule, fixed before measuring: today's scheduling at its best setting, since a user
with 32 GPUs would set ``max_concurrent: 32``; comparing against ``max_concurrent: 1`` would
credit the pool with what a flag already gives.

Cost model (every number an assumption with its source; no GPU was measured here):

* a training step of XLM-R large (``PARAMS`` = 560M, Conneau et al. 2020) at batch 32 x 256
  tokens costs ``6 x params x tokens`` FLOPs (Kaplan et al. 2020, the 6ND rule) at
  ``PEAK`` = 312 TFLOP/s (A100 bf16 dense, NVIDIA's data sheet) x ``MFU`` = 0.4 (a usual
  utilisation for encoder fine-tuning with fused kernels): about 0.22 s a step;
* evaluation costs ``2 x params x tokens`` per example at the same rate; examples per language
  and split: ``EVAL_EXAMPLES`` (XTREME, Hu et al. 2020, Table 1 and its appendix; UD-POS, BUCC
  rounded); dev on English every ``eval_every`` target steps, dev and test in every language
  at the end; evaluation on one GPU per trial, as today's rank 0 does;
* a trial starts in ``STARTUP_S`` (workers, model load) and a cached prefix loads in ``LOAD_S``.
* scores: a hash of (target, chain, seed); the paper study is a grid, so scores do not change
  what runs.

Last line: ``cluster_sim: busy=B makespan_vs_sequential=M gpus=32`` (B: busy share of the pool's
GPU time; M: the pool's makespan over today's, at 32 GPUs, else the first count simulated).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import itertools
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from raystilts.core.space import SearchSpace, chain_from_params, load_space
from raystilts.search.pool import PoolLaunch, PoolTrials, SearchPool, build_pool
from raystilts.search.searcher import DONE, Launch, build_search, seed_of
from raystilts.tasks import CATALOG
from raystilts.train.prefix_claims import PrefixClaims

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "paper_xtreme.yaml"
PARAMS = 560e6  # XLM-R large
PEAK = 312e12  # A100 bf16 dense FLOP/s
MFU = 0.4
STARTUP_S = 60.0
LOAD_S = 30.0
# (dev, test) examples per language; the English dev of the selection metric is the dev count
EVAL_EXAMPLES: dict[str, tuple[int, int]] = {
    "xnli": (2490, 5010),
    "pawsx": (2000, 2000),
    "udpos": (1000, 2000),
    "panx": (10000, 10000),
    "xquad": (1190, 1190),
    "mlqa": (500, 5000),
    "tydiqa": (440, 1000),
    "bucc": (2000, 20000),
    "tatoeba": (0, 2000),
}


NOTE = f"""note: cost model (assumed, not measured on a GPU): a step costs 6 x {PARAMS:.3g} params x
  batch x tokens FLOPs (Kaplan et al. 2020) at {PEAK:.3g} FLOP/s (A100 bf16 data sheet) x MFU {MFU};
  evaluation 2 x params x tokens per example, example counts per language from XTREME (Hu et al.
  2020, Table 1; UD-POS and BUCC rounded); startup {STARTUP_S:.0f} s, cached prefix load {LOAD_S:.0f} s.
  sequential: today's driver with max_concurrent = GPUs (its best setting); sequential@space: with
  the space's max_concurrent. Makespan ratio is against sequential, not sequential@space."""


@dataclass(frozen=True, slots=True)
class CostModel:
    """Seconds of GPU time for the parts of a trial."""

    batch: int
    tokens: int

    def step_s(self) -> float:
        return 6 * PARAMS * self.batch * self.tokens / (PEAK * MFU)

    def eval_s(self, examples: int) -> float:
        return 2 * PARAMS * self.tokens * examples / (PEAK * MFU)

    def target_s(self, space: SearchSpace, target: str, steps: int) -> float:
        """The target phase: training, its English dev evaluations, the final evaluation."""
        dev, test = EVAL_EXAMPLES.get(target, (1000, 1000))
        every = space.target_for(target).eval_every
        evals = steps // every if steps and every else 0
        final = len(space.languages_for(target)) * (dev + test)
        return steps * self.step_s() + self.eval_s(evals * dev + final)


@dataclass(slots=True)
class Cluster:
    """The simulated clock, free GPUs, trained prefixes and the GPU-seconds spent."""

    gpus: int
    claims: PrefixClaims
    now: float = 0.0
    free: int = 0
    cache: set[str] = field(default_factory=set)
    busy_s: float = 0.0
    prefix_trainings: int = 0
    prefix_waits: int = 0  # trials that waited for another trial's claim instead of training
    done_at: dict[str, float] = field(default_factory=dict)  # prefix in training -> when done
    events: list[tuple[float, int, str, str, Launch | None]] = field(default_factory=list)
    counter: int = 0

    def at(self, t: float, name: str, trial: str, launch: Launch | None = None) -> None:
        """At ``t``: prefix ``name`` ("key owner") of ``trial`` is trained (no launch), or
        ``trial`` of target ``name`` ends."""
        self.counter += 1
        heapq.heappush(self.events, (t, self.counter, name, trial, launch))


def prefix_of(space: SearchSpace, target: str, launch: Launch) -> str | None:
    """The key of the trial's intermediate prefix (phases and seed: what the cache keys on)."""
    plan = chain_from_params(launch.config, space, target)
    if not plan.phases:
        return None
    phases = [(p.task, p.lr, p.steps) for p in plan.phases]
    blob = repr((phases, seed_of(launch.config, space)))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def score_of(target: str, launch: Launch) -> float:
    digest = hashlib.sha256(f"{target}{launch.key}{launch.index}".encode()).digest()
    return digest[0] / 255


def start(
    cluster: Cluster,
    space: SearchSpace,
    cost: CostModel,
    step: PoolLaunch,
    trial: str,
    *,
    wait_for_claims: bool,
) -> None:
    """Run one trial on one GPU: its prefix (train, load, or wait for its trainer), its target.
    ``wait_for_claims``: the prefix cache takes turns (now); else every trial that misses a
    prefix trains it (before)."""
    target, launch = step.target, step.launch
    cluster.free -= 1
    plan = chain_from_params(launch.config, space, target)
    steps = plan.target.steps if CATALOG[target].has_train else 0
    key = prefix_of(space, target, launch)
    owner = f"{target}/{launch.key}/{launch.index}"
    t = cluster.now + STARTUP_S
    busy = STARTUP_S + cost.target_s(space, target, steps)
    if key is not None and key in cluster.cache:
        busy += LOAD_S
        cluster.at(t, "", trial)  # its first report: no prefix to train
    elif key is not None and wait_for_claims and not cluster.claims.claim(key, owner):
        # another trial holds the claim: wait for its entry (the GPU idles), then load it
        wait = max(0.0, cluster.done_at[key] - t)
        busy += wait + LOAD_S
        cluster.prefix_waits += 1
        cluster.at(t + wait, "", trial)
    elif key is not None:
        prefix_s = sum(p.steps for p in plan.phases) * cost.step_s()
        busy += prefix_s
        cluster.prefix_trainings += 1
        cluster.claims.claim(key, owner)  # today's runs never read it: they train regardless
        cluster.done_at[key] = t + prefix_s
        cluster.at(t + prefix_s, f"{key} {owner}", trial)
    else:
        cluster.at(t, "", trial)
    cluster.busy_s += busy
    cluster.at(cluster.now + busy, target, trial, launch)


def simulate(
    space: SearchSpace, gpus: int, limit: int, targets: Sequence[Sequence[str]]
) -> Cluster:
    """Run the targets' searches in groups (one group at a time; a group shares one pool of
    ``limit`` trials); returns the finished cluster (its clock is the makespan)."""
    cost = CostModel(batch=space.training.batch_size, tokens=space.training.max_length)
    with tempfile.TemporaryDirectory(prefix="cluster-sim-") as tmp:
        cluster = Cluster(gpus=gpus, free=gpus, claims=PrefixClaims(root=tmp, ttl_s=1e9))
        cluster.claims.clock = lambda: cluster.now
        pooled = len(targets) == 1 and len(targets[0]) > 1
        for group in targets:
            if pooled:  # the driver's own pool, as raystilts search builds it
                at_once = dataclasses.replace(space.search, max_concurrent=min(limit, gpus))
                pool = build_pool(
                    dataclasses.replace(space, search=at_once),
                    {t: build_search(space, t) for t in group},
                )
            else:  # before: one target's search under its own limit (ConcurrencyLimiter)
                pool = SearchPool(
                    {t: build_search(space, t) for t in group}, max_concurrent=min(limit, gpus)
                )
            _drain(cluster, space, cost, PoolTrials(pool), wait_for_claims=pooled)
    return cluster


def _drain(
    cluster: Cluster, space: SearchSpace, cost: CostModel, trials: PoolTrials, *,
    wait_for_claims: bool,
) -> None:  # fmt: skip
    """Fill free GPUs from the pool, advance to the next event, repeat until the pool is done."""
    ids = itertools.count()
    while True:
        while cluster.free > 0:
            trial = f"trial{next(ids)}"
            step = trials.suggest(trial)
            if not isinstance(step, PoolLaunch):
                break
            start(cluster, space, cost, step, trial, wait_for_claims=wait_for_claims)
        if not cluster.events:
            if trials.suggest(f"trial{next(ids)}") is DONE:
                return
            raise RuntimeError("cluster_sim: nothing runs and the pool is not done (a stall)")
        cluster.now, _, name, trial, launch = heapq.heappop(cluster.events)
        if launch is not None:  # the trial ends: its GPU is free, its score reported
            cluster.free += 1
            trials.complete(trial, score_of(name, launch))
            continue
        if name:  # a prefix is trained: in the cache, its claim released
            key, owner = name.split(" ", 1)
            cluster.cache.add(key)
            cluster.claims.release(key, owner)
            cluster.done_at.pop(key, None)
        trials.progressed(trial)  # the trial's first report (the driver's on_trial_result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=SPACE)
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="1 seed, 8 GPUs: seconds")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a study per target and run
    if args.smoke:
        args.gpus, args.seeds = [8], [0]
    space = load_space(args.space, catalog=CATALOG)
    space = dataclasses.replace(
        space, search=dataclasses.replace(space.search, seeds=tuple(args.seeds))
    )
    cost = CostModel(batch=space.training.batch_size, tokens=space.training.max_length)
    print(
        f"{space.name}: {len(space.targets)} targets x seeds {list(args.seeds)}; step "
        f"{cost.step_s():.3f} s, startup {STARTUP_S:.0f} s, cached prefix load {LOAD_S:.0f} s"
    )
    print(
        f"{'gpus':>5} {'scheduling':16} {'makespan_h':>10} {'busy':>6} {'prefixes':>8} "
        f"{'waits':>5}"
    )
    line = ""
    for gpus in args.gpus:
        rows = {
            "sequential@space": simulate(
                space, gpus, space.search.max_concurrent, [[t] for t in space.targets]
            ),
            "sequential": simulate(space, gpus, gpus, [[t] for t in space.targets]),
            "pool": simulate(space, gpus, gpus, [list(space.targets)]),
        }
        for name, c in rows.items():
            busy = c.busy_s / (gpus * c.now)
            print(
                f"{gpus:>5} {name:16} {c.now / 3600:>10.2f} {busy:>6.3f} "
                f"{c.prefix_trainings:>8} {c.prefix_waits:>5}"
            )
        pool, seq = rows["pool"], rows["sequential"]
        # no schedule of the same work ends before work / GPUs: the ratio any scheduler can reach
        bound = pool.busy_s / gpus
        print(
            f"{gpus:>5} {'(work / GPUs)':16} {bound / 3600:>10.2f}  lowest makespan of any "
            f"scheduler doing this work: {bound / seq.now:.3f} of sequential"
        )
        if gpus == 32 or not line:
            line = (
                f"cluster_sim: busy={pool.busy_s / (gpus * pool.now):.3f} "
                f"makespan_vs_sequential={pool.now / seq.now:.3f} gpus={gpus}"
            )
    print(NOTE)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
