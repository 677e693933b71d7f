"""The pool of every target's trials and the prefix claims, without Ray (fast)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from raystilts.core.space import SearchSpace, chain_from_params, chain_params, load_space_dict
from raystilts.search.pool import TARGET, PoolLaunch, SearchPool, SharedPrior
from raystilts.search.searcher import DONE, Launch, build_search
from raystilts.train.prefix_claims import PrefixClaims

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True, kw_only=True)
class FakeTask:
    name: str
    kind: str
    languages: tuple[str, ...]
    is_target: bool


CATALOG = {
    t.name: t
    for t in (
        FakeTask(name="a", kind="classification", languages=("en",), is_target=False),
        FakeTask(name="b", kind="classification", languages=("en",), is_target=False),
        FakeTask(name="c", kind="classification", languages=("en",), is_target=False),
        FakeTask(name="s", kind="classification", languages=("en", "de"), is_target=True),
        FakeTask(name="t", kind="classification", languages=("en", "de"), is_target=True),
    )
}


def _space(algorithm: str = "grid", seeds: tuple[int, ...] = (0, 1)) -> SearchSpace:
    return load_space_dict(
        {
            "name": "p",
            "targets": ["s", "t"],
            "intermediate": {"tasks": ["a", "b", "c"], "max_chain_length": 1, "steps": 10},
            "target": {"steps": 10, "eval_every": 5},
            "search": {
                "algorithm": algorithm,
                "seeds": list(seeds),
                "num_samples": 4,
                "warm_start": "none",
                "scheduler": {"type": "none"},
            },
        },
        catalog=CATALOG,
    )


def _pool(space: SearchSpace, limit: int, **kw: object) -> SearchPool:
    return SearchPool(
        {t: build_search(space, t) for t in space.targets},
        max_concurrent=limit,
        **kw,  # type: ignore[arg-type]
    )


def _run_all(pool: SearchPool) -> list[PoolLaunch]:
    """Start everything the pool gives, report in start order; the launches in order."""
    started: list[PoolLaunch] = []
    running: list[PoolLaunch] = []
    while (step := pool.suggest()) is not DONE:
        if isinstance(step, PoolLaunch):
            started.append(step)
            running.append(step)
            continue
        assert running, "the pool waits while nothing runs"
        done = running.pop(0)
        pool.report(done.target, done.launch.key, done.launch.index, 0.5)
    return started


def test_pool_runs_every_target_under_one_limit() -> None:
    space = _space()
    pool = _pool(space, 3)
    first = [pool.suggest() for _ in range(4)]
    assert all(isinstance(s, PoolLaunch) for s in first[:3])
    assert first[3] is None  # the shared limit, not one per target
    # equal costs: the target with fewer running trials goes next, so both targets run at once
    assert {s.target for s in first[:3] if isinstance(s, PoolLaunch)} == {"s", "t"}
    started = _run_all(_pool(space, 3))
    # the whole grid of both targets: 4 chains x 2 seeds each, every trial once
    per_target = {t: [s for s in started if s.target == t] for t in space.targets}
    assert {t: len(v) for t, v in per_target.items()} == {"s": 8, "t": 8}
    assert all(s.config[TARGET] == s.target for s in started)


def test_pool_starts_the_costliest_target_first() -> None:
    pool = _pool(_space(), 1, cost={"s": 1.0, "t": 5.0})
    step = pool.suggest()
    assert isinstance(step, PoolLaunch) and step.target == "t"


def test_blocked_launches_are_held_and_run_later_once() -> None:
    space = _space()
    training: set[tuple[str, ...]] = {("a",)}  # some trial trains prefix a: launches of a wait

    def blocked(target: str, launch: Launch) -> bool:
        return chain_from_params(launch.config, space, target).tasks in training

    pool = _pool(space, 2, blocked=blocked)
    trainer = pool.suggest()  # stays running (it stands for the trial that trains a)
    assert isinstance(trainer, PoolLaunch)
    seen = []
    for _ in range(5):
        step = pool.suggest()
        assert isinstance(step, PoolLaunch)
        seen.append(chain_from_params(step.launch.config, space, step.target).tasks)
        pool.report(step.target, step.launch.key, step.launch.index, 0.5)
    assert ("a",) not in seen  # held back while its prefix is in training
    training.clear()
    pool.report(trainer.target, trainer.launch.key, trainer.launch.index, 0.5)
    rest = [trainer, *_run_all(pool)]
    chains = [chain_from_params(s.launch.config, space, s.target).tasks for s in rest]
    assert chains.count(("a",)) == 4  # 2 targets x 2 seeds, each exactly once


def test_held_launch_runs_when_nothing_else_can() -> None:
    # a claim nobody of this pool holds (a crashed run's, until it expires) must not stall
    space = _space(seeds=(0,))
    pool = _pool(space, 4, blocked=lambda target, launch: True)
    assert isinstance(pool.suggest(), PoolLaunch)


def test_pool_pickles_for_tune_checkpoints() -> None:
    pool = _pool(_space("tpe"), 2, on_report=SharedPrior())
    step = pool.suggest()
    assert isinstance(step, PoolLaunch)
    again = pickle.loads(pickle.dumps(pool))
    assert again.running == pool.running


def test_shared_prior_reaches_the_other_target() -> None:
    space = _space("tpe", seeds=(0,))
    pool = _pool(space, 1, on_report=SharedPrior())
    scores = {("a",): 0.9, ("b",): 0.1, ("c",): 0.5, (): 0.3}
    while pool.searches["s"].race.configs.__len__() < 4:  # s runs its chains first
        step = pool.suggest()
        assert isinstance(step, PoolLaunch)
        chain = chain_from_params(step.launch.config, space, step.target).tasks
        pool.report(step.target, step.launch.key, step.launch.index, scores.get(chain, 0.0))
        if step.target == "t":
            continue
    t = pool.searches["t"]
    assert t.ranked and t.rerank is not None
    assert t.order[0] == "a"  # the best task for s leads t's ranking


# ----------------------------------------------------------------------------- PrefixClaims


def test_claim_is_exclusive_until_released_or_expired(tmp_path: Path) -> None:
    now = [0.0]
    claims = PrefixClaims(root=str(tmp_path / "claims"), ttl_s=10.0, clock=lambda: now[0])
    assert claims.claim("k", "one")
    assert not claims.claim("k", "two")
    assert claims.holder("k") == "one"
    assert claims.claim("k", "one")  # a renewal
    claims.release("k", "two")  # not its claim: left alone
    assert claims.holder("k") == "one"
    claims.release("k", "one")
    assert claims.holder("k") is None and claims.claim("k", "two")
    now[0] = 11.0  # "two" crashed: its claim lapses, nothing waits forever
    assert claims.holder("k") is None
    assert claims.claim("k", "three") and claims.holder("k") == "three"


def test_claims_on_a_uri_are_seen_by_a_second_client(tmp_path: Path) -> None:
    root = (tmp_path / "remote" / "claims").as_uri()  # not there yet: the first client makes it
    one, two = PrefixClaims(root=root), PrefixClaims(root=root)
    assert one.claim("k", "node1")
    assert two.holder("k") == "node1" and not two.claim("k", "node2")


def test_heartbeat_renews(tmp_path: Path) -> None:
    claims = PrefixClaims(root=str(tmp_path), ttl_s=0.2)
    assert claims.claim("k", "me")
    with claims.heartbeat("k", "me"):
        import time

        time.sleep(0.5)  # longer than the ttl: only the renewals keep it
        assert claims.holder("k") == "me"


def test_bad_ttl_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        PrefixClaims(root=str(tmp_path), ttl_s=0)


def test_prefixes_in_training_block_until_the_trainer_reports() -> None:
    from raystilts.search.pool import PrefixesInTraining

    space = _space(seeds=(0,))
    training = PrefixesInTraining(space)
    pool = _pool(space, 4, blocked=training)
    steps = []
    for i in range(4):
        step = pool.suggest()
        assert isinstance(step, PoolLaunch)
        training.started(f"t{i}", step.target, step.launch)
        steps.append(step)
    prefixes = [training.prefix(s.target, s.launch) for s in steps]
    started = [p for p in prefixes if p is not None]
    assert len(started) == len(set(started))  # no two running trials on one untrained prefix
    trainer = next(i for i, p in enumerate(prefixes) if p is not None)
    # the other target's trial of the same chain and seed needs the same prefix: it waits
    other = next(t for t in space.targets if t != steps[trainer].target)
    chain = chain_from_params(steps[trainer].launch.config, space, steps[trainer].target).tasks
    twin = Launch("x", 0, {**chain_params(space, other, chain), "__trial_index__": 0})
    assert training.prefix(other, twin) == prefixes[trainer]
    assert training(other, twin)
    training.progressed(f"t{trainer}")  # its first report: the prefix is in the cache
    assert not training(other, twin)


# ----------------------------------------------------------------------------- the driver's view


def test_pool_searcher_runs_both_targets_under_one_limit_and_pickles() -> None:
    """Tune's view of the pool (no Ray started): trial ids in, configs with their target out,
    scores read under the one name every target reports, FINISHED once all targets are done."""
    from raystilts.core.schema import SELECTION_SCORE
    from raystilts.search.driver import PoolSearcher
    from raystilts.search.pool import PoolTrials, build_pool

    space = _space(seeds=(0,))
    pool = build_pool(space, {t: build_search(space, t) for t in space.targets})
    pool.max_concurrent = 2
    searcher = PoolSearcher(PoolTrials(pool))
    first = [searcher.suggest(f"t{i}") for i in range(3)]
    assert first[2] is None  # two at a time, across targets
    assert {c[TARGET] for c in first[:2] if c} == {"s", "t"}
    again = pickle.loads(pickle.dumps(searcher.get_state()))  # Tune's searcher checkpoint
    assert set(again["trials"].trials) == {"t0", "t1"}
    searcher.on_trial_result("t0", {SELECTION_SCORE: 0.4})
    searcher.on_trial_complete("t0", {SELECTION_SCORE: 0.5})
    searcher.on_trial_complete("t0", {SELECTION_SCORE: 0.5})  # twice: counted once
    assert pool.active == 1
    searcher.on_trial_complete("t1", None, error=True)  # a failed trial frees its slot too
    n, configs = 3, [c for c in first if c]
    while (config := searcher.suggest(f"t{n}")) != "FINISHED":
        assert config is not None  # nothing else runs: the pool never waits here
        configs.append(config)
        searcher.on_trial_complete(f"t{n}", {SELECTION_SCORE: 0.5})
        n += 1
    assert sorted(c[TARGET] for c in configs) == ["s"] * 4 + ["t"] * 4  # every chain, once


def test_target_schedulers_keep_each_targets_rungs_apart() -> None:
    """One Tune run holds every target's trials; ASHA compares a target's trials only."""
    from types import SimpleNamespace

    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from raystilts.core.space import baseline_params
    from raystilts.search.driver import BaselineKeepingASHA, TargetSchedulers

    space = _space(seeds=(0,))

    def asha(target: str) -> BaselineKeepingASHA:
        return BaselineKeepingASHA(
            space=space, target=target, time_attr="step", max_t=10, grace_period=5,
            reduction_factor=2,
        )  # fmt: skip

    schedulers = TargetSchedulers({"s": asha("s"), "t": asha("t")})
    assert schedulers.set_search_properties("score", "max")
    assert all(s.metric == "score" for s in schedulers.schedulers.values())

    def trial(name: str, target: str, chain: tuple[str, ...]) -> SimpleNamespace:
        params = chain_params(space, target, chain) if chain else baseline_params(space, target)
        return SimpleNamespace(trial_id=name, config={**params, TARGET: target})

    strong_s, weak_t = trial("s1", "s", ("a",)), trial("t1", "t", ("b",))
    weaker_s = trial("s2", "s", ("b",))
    for x in (strong_s, weak_t, weaker_s):
        schedulers.on_trial_add(None, x)
    cont = TrialScheduler.CONTINUE
    assert schedulers.on_trial_result(None, strong_s, {"step": 5, "score": 0.9}) == cont
    # t's first trial at the rung: judged against t's trials (none), not s's 0.9
    assert schedulers.on_trial_result(None, weak_t, {"step": 5, "score": 0.2}) == cont
    assert schedulers.on_trial_result(None, weaker_s, {"step": 5, "score": 0.2}) == "STOP"
    mixed = TargetSchedulers({"s": FIFOScheduler(), "t": asha("t")})
    assert mixed.set_search_properties("score", "max")
