"""Fast tests of the search's own logic, no Ray cluster: seed racing and the racing searcher."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Any

import optuna
import pytest

from raystilts.core.racing import SeedRace
from raystilts.core.space import SearchSpace, chain_params, load_space_dict

LANGS = ("en", "qaa", "qab")


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
        FakeTask(name="c", kind="tagging", languages=("en",), is_target=False),
        FakeTask(name="t", kind="classification", languages=LANGS, is_target=True),
    )
}


def _space(seeds: list[int]) -> SearchSpace:
    return load_space_dict(
        {
            "name": "u",
            "targets": ["t"],
            "intermediate": {
                "tasks": ["a", "b", "c"],
                "max_chain_length": 2,
                "forms": ["sequence", "mixture"],
                "lr": 1e-3,
                "steps": 10,
            },
            "target": {"lr": 1e-3, "steps": 10, "eval_every": 5},
            "search": {"seeds": seeds, "scheduler": {"type": "none"}},
        },
        catalog=CATALOG,
    )


# ----------------------------------------------------------------------------- SeedRace


def test_race_promotes_without_evidence_then_only_within_one_sd() -> None:
    race = SeedRace(n_seeds=3)
    race.start("base")
    assert race.record("base", 0, 0.50) == (1,)  # no sd yet: promote
    assert not race.done("base") and race.pending()
    assert race.record("base", 1, 0.54) == ()  # no rival: two seeds estimate the noise
    assert race.done("base") and not race.pending()
    assert race.seed_sd() == pytest.approx(math.sqrt(0.0008))
    race.start("weak")
    assert race.record("weak", 0, 0.49) == ()  # 0.49 < 0.52 - 0.028
    assert race.done("weak")  # one seed is all it runs
    race.start("close")
    assert race.record_all("close", 0, 0.505) == [("close", 1)]  # within one sd of 0.52
    # two seeds: mean 0.4975 is judged on its standard error, sd / sqrt(2) (sd pooled 0.021)
    assert race.record_all("close", 1, 0.49) == [] and race.done("close")
    race.start("strong")
    assert race.record_all("strong", 0, 0.53) == [("strong", 1)]
    # a third seed for the challenger: the best (base, two seeds) runs its third too
    assert race.record_all("strong", 1, 0.53) == [("strong", 2), ("base", 2)]
    race.start("failed")
    assert race.record("failed", 0, math.nan) == ()  # a failed first seed never earns more


def test_race_pools_the_sd_and_excludes_the_config_itself() -> None:
    race = SeedRace(n_seeds=2, within_sd=0.0)
    for key, (s0, s1) in {"x": (0.4, 0.6), "y": (0.7, 0.7)}.items():
        race.start(key)
        race.record(key, 0, s0)
        race.record(key, 1, s1)
    # variances 0.02 and 0, one degree of freedom each
    assert race.seed_sd() == pytest.approx(math.sqrt(0.01))
    assert race.best_mean() == pytest.approx(0.7)
    assert race.best_mean(exclude="y") == pytest.approx(0.5)
    race.start("z")
    assert race.record("z", 0, 0.7) == (1,)  # ties the best: within zero sds


def test_race_minimises_in_min_mode_and_one_seed_never_promotes() -> None:
    race = SeedRace(n_seeds=2, mode="min")
    for key, scores in {"x": (1.0, 1.2)}.items():
        race.start(key)
        race.record(key, 0, scores[0])
        race.record(key, 1, scores[1])
    race.start("worse")
    assert race.record("worse", 0, 2.0) == ()
    race.start("better")
    assert race.record("better", 0, 0.5) == (1,)
    single = SeedRace(n_seeds=1)
    single.start("k")
    assert single.record("k", 0, 0.9) == () and single.done("k")


def test_race_stops_its_rungs_at_max_seeds() -> None:
    # 8 seeds, capped at 4: a challenger level with the best earns 2, then 4, never 8
    race = SeedRace(n_seeds=8, max_seeds=4)
    race.start("a")
    assert race.record("a", 0, 0.50) == (1,)
    assert race.record("a", 1, 0.52) == ()
    race.start("b")
    assert race.record_all("b", 0, 0.51) == [("b", 1)]
    assert race.record_all("b", 1, 0.51) == [("b", 2), ("b", 3), ("a", 2), ("a", 3)]
    for i, score in ((2, 0.52), (3, 0.50)):
        race.record_all("b", i, score)
    for i, score in ((2, 0.51), (3, 0.51)):
        assert race.record_all("a", i, score) == []  # at the cap: no 5th seed
    assert race.done("a") and race.done("b") and not race.pending()
    # without a race (promote), every seed runs whatever the cap
    race.start("all")
    race.promote("all")
    assert race.configs["all"].scheduled == 8
    with pytest.raises(ValueError, match="max_seeds"):
        SeedRace(n_seeds=2, max_seeds=0)


def test_race_refuses_bad_arguments_and_unscheduled_seeds() -> None:
    with pytest.raises(ValueError, match="n_seeds"):
        SeedRace(n_seeds=0)
    with pytest.raises(ValueError, match="within_sd"):
        SeedRace(n_seeds=2, within_sd=-1)
    race = SeedRace(n_seeds=2)
    race.start("k")
    with pytest.raises(ValueError, match="already started"):
        race.start("k")
    with pytest.raises(ValueError, match="not scheduled"):
        race.record("k", 1, 0.5)  # seed 1 runs only after promotion


# ----------------------------------------------------------------------------- RacingSearcher


class ListSampler(optuna.samplers.BaseSampler):
    """Stands in for TPE: each trial the study does not take from its queue gets the next of a
    fixed list of proposals (a trial's params all come from one proposal)."""

    def __init__(self, proposals: list[dict[str, Any]]) -> None:
        self.proposals = list(proposals)
        self.assigned: dict[int, dict[str, Any]] = {}

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        if trial.number not in self.assigned:
            self.assigned[trial.number] = self.proposals.pop(0)
        return self.assigned[trial.number][name]


def _search(
    space: SearchSpace,
    proposals: list[dict[str, Any]],
    samples: int = 10,
    **kw: Any,
) -> Any:
    from raystilts.search.searcher import RACE_WITHIN_SD, ChainSearch

    return ChainSearch(
        space=space,
        target="t",
        sampler=ListSampler(proposals),
        num_samples=samples,
        within_sd=kw.pop("within_sd", RACE_WITHIN_SD),
        **kw,
    )


def _told(search: Any) -> dict[int, float | None]:
    """What the study was told per trial number (None: failed); running trials left out."""
    done = [t for t in search.study.trials if t.state.is_finished()]
    return {t.number: t.value for t in done}


def test_racing_searcher_runs_promoted_seeds_first_and_skips_duplicates() -> None:
    from raystilts.search import RacingSearcher
    from raystilts.search.searcher import DONE, TRIAL_INDEX, chain_identity

    space = _space([0, 1])
    base = chain_params(space, "t", [])
    a, b = chain_params(space, "t", ["a"]), chain_params(space, "t", ["b"])
    ab_mix = chain_params(space, "t", ["a+b"])
    ba_mix = {**ab_mix, "phase0_task": "b", "phase1_task_after_b": "a"}  # the same mixture
    search = _search(space, [base, a, a, ab_mix, ba_mix, b], samples=4)
    racer = RacingSearcher(search, metric="dev")  # Tune's view: trial ids
    scores = {("base", 0): 0.50, ("base", 1): 0.54, ("a", 0): 0.60, ("a", 1): 0.62}
    scores |= {("mix", 0): 0.30, ("b", 0): 0.59}
    names = {
        chain_identity(params, space, "t"): name
        for name, params in {"base": base, "a": a, "mix": ab_mix, "b": b}.items()
    }

    started: list[tuple[str, int]] = []

    def run(trial_id: str) -> Any:
        config = racer.suggest(trial_id)
        if isinstance(config, dict):
            key, index = racer.trials[trial_id]
            assert config[TRIAL_INDEX] == index
            started.append((names[key], index))
        return config

    def finish(trial_id: str) -> None:
        key, index = racer.trials[trial_id]
        racer.on_trial_complete(trial_id, {"dev": scores[(names[key], index)]})

    run("t1")  # base seed 0
    run("t2")  # a seed 0 (two at a time)
    finish("t1")  # no evidence yet: base earns seed 1
    run("t3")  # base seed 1 goes before new configs
    finish("t2")  # no sd yet: a earns seed 1
    finish("t3")  # base done: sd from base's two seeds
    assert _told(search) == {0: pytest.approx(0.52)}
    run("t4")  # a seed 1
    run("t5")  # the duplicate of a is skipped: the a+b mixture, seed 0
    assert search.duplicates == 1
    finish("t4")  # a done (0.61): its duplicate proposal is told the same mean
    assert _told(search)[1] == _told(search)[2] == pytest.approx(0.61)
    finish("t5")  # 0.30: far below, seed 0 only
    run("t6")  # b+a mixture is a+b: skipped; b seed 0
    finish("t6")  # 0.59 >= 0.61 - sd (0.028): earns seed 1
    run("t7")
    assert started == [
        ("base", 0),
        ("a", 0),
        ("base", 1),
        ("a", 1),
        ("mix", 0),
        ("b", 0),
        ("b", 1),
    ]
    assert racer.suggest("t8") is None  # four configs out, b's seed 1 still out
    racer.on_trial_complete("t7", {"dev": 0.57})
    assert racer.suggest("t9") == "FINISHED" and search.suggest() is DONE
    assert names[search.selection()] == "a"
    # pickles with its state (Tune saves the searcher with save/get_state)
    state = pickle.loads(pickle.dumps(racer.get_state()))
    b_key = next(k for k, v in names.items() if v == "b")
    assert state["search"].race.mean(b_key) == pytest.approx(0.58)


def test_racing_searcher_stops_at_num_samples_and_one_seed_is_plain() -> None:
    from raystilts.search import RacingSearcher

    space = _space([0])
    props = [chain_params(space, "t", [t]) for t in ("a", "b", "c")]
    racer = RacingSearcher(_search(space, props, samples=2), metric="dev")
    for tid in ("t1", "t2"):
        assert racer.suggest(tid)["__trial_index__"] == 0
    assert racer.suggest("t3") is None  # two configs out, not reported yet
    racer.on_trial_complete("t1", {"dev": 0.5})
    racer.on_trial_complete("t2", None, error=True)
    assert _told(racer.search) == {0: 0.5, 1: None}  # a failed trial is told as failed
    assert racer.suggest("t3") == "FINISHED"


def test_without_racing_every_seed_is_queued_behind_the_first() -> None:
    space = _space([0, 1, 2])
    search = _search(space, [chain_params(space, "t", ["a"])], samples=1, within_sd=None)
    steps = [search.suggest() for _ in range(4)]
    assert [s.index for s in steps[:3]] == [0, 1, 2] and steps[3] is None
    for s in steps[:3]:
        search.report(s.key, s.index, 0.5)
    assert _told(search) == {0: 0.5}


# ----------------------------------------------------------------------------- --resume


def test_resume_refuses_an_edited_space_in_one_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Ray: the check runs before anything starts. The stored fingerprint is the one a
    fresh search writes; a Tune experiment is faked by its tuner.pkl."""
    from raystilts.cli import main
    from raystilts.core.space import load_space
    from raystilts.search.driver import _check_fingerprint, _write_fingerprint
    from raystilts.tasks.catalog import CATALOG as REAL

    text = (
        "name: edited\ntargets: [mini_xnli]\n"
        "intermediate: {tasks: [mini_mnli, mini_ccg], max_chain_length: 1, lr: 1.0e-3, "
        "steps: 30}\ntarget: {lr: 1.0e-3, steps: 30, eval_every: 10}\n"
        "search: {num_samples: 3, seeds: [0]}\n"
    )
    yaml_path = tmp_path / "space.yaml"
    yaml_path.write_text(text)
    storage = tmp_path / "wd" / "ray_results"
    _write_fingerprint(load_space(yaml_path, catalog=REAL), str(storage))
    (storage / "edited-mini_xnli").mkdir(parents=True)  # one target's, as before the pool
    (storage / "edited-mini_xnli" / "tuner.pkl").write_bytes(b"")
    args = ["search", str(yaml_path), "--resume", "--workdir", str(tmp_path / "wd")]
    # a search of an older raystilts (one experiment per target): one line, not a crash
    assert main([*args, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "one Tune experiment per target" in err
    (storage / "edited-search").mkdir(parents=True)  # the search's one experiment
    (storage / "edited-search" / "tuner.pkl").write_bytes(b"")
    # unchanged, or changed only in resources (other hardware): resumable
    _check_fingerprint(load_space(yaml_path, catalog=REAL), str(storage))
    yaml_path.write_text(text + "resources: {workers_per_trial: 2}\n")
    _check_fingerprint(load_space(yaml_path, catalog=REAL), str(storage))
    # an edit to what is searched: refused, naming both ways out
    yaml_path.write_text(text.replace("num_samples: 3", "num_samples: 4"))
    assert main([*args, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "changed since search 'edited' started" in err and "without --resume" in err
    assert not (tmp_path / "m.db").exists()  # refused before MLflow or Ray were touched


# ----------------------------------------------------------------------------- neighbours


def test_neighbours_add_mix_or_prepend_one_task_inside_the_space() -> None:
    from raystilts.search.searcher import neighbours

    space = _space([0])
    assert neighbours((), ("b", "c", "a"), space, "t") == [("b",), ("c",), ("a",)]
    assert neighbours(("a",), ("b", "c"), space, "t") == [
        *[("b", "a"), ("a", "b"), ("a+b",)],
        *[("c", "a"), ("a", "c"), ("a+c",)],
    ]
    assert neighbours(("a", "b"), ("c",), space, "t") == []  # length 3 is outside
    assert neighbours(("a+b",), ("c",), space, "t") == []


def test_neighbour_params_keep_the_best_prefix_hyperparameters() -> None:
    from raystilts.core.space import chain_from_params
    from raystilts.search.searcher import chain_identity, neighbour_params

    raw = _space([0]).to_dict()
    raw["intermediate"]["lr"] = {"low": 1e-4, "high": 1e-2}
    space = load_space_dict(raw, catalog=CATALOG)
    best = {**chain_params(space, "t", ["a"]), "phase0_lr": 3e-4}
    params = neighbour_params(space, "t", best, ("a", "b"))
    plan = chain_from_params(params, space, "t")
    assert [(p.task, p.lr) for p in plan.phases] == [("a", 3e-4), ("b", pytest.approx(1e-3))]
    mixed = chain_from_params(neighbour_params(space, "t", best, ("a+b",)), space, "t")
    assert mixed.phases[0].lr == pytest.approx(1e-3)  # a new phase: the centre
    assert chain_identity(params, space, "t") != chain_identity(best, space, "t")


def test_racing_searcher_alternates_neighbours_of_the_best_with_the_sampler() -> None:
    from raystilts.core.space import chain_from_params

    space = _space([0])
    points = [chain_params(space, "t", []), chain_params(space, "t", ["a"])]
    sampled = [chain_params(space, "t", [t]) for t in ("c", "b")]
    search = _search(
        space,
        sampled,
        samples=6,
        points=points,  # the baseline and one warm-start chain
        order=("b", "a", "c"),
        local_share=0.5,
    )
    chains = []
    for score in [0.5, 0.6, 0.55, 0.4, 0.7, 0.1]:
        step = search.suggest()
        chains.append(chain_from_params(step.config, space, "t").name)
        search.report(step.key, step.index, score)
    assert chains == [
        "t",  # points first
        "a>t",
        "a>b>t",  # local: best is a>t; b>a>t would train b first, a>b>t reuses a
        "c>t",  # the sampler
        "a+b>t",  # local: a>t still best (a>b>t 0.55); one phase
        "b>t",  # the sampler
    ]
    assert search.local == 2


def test_racing_searcher_puts_the_best_task_last_when_the_other_prefix_is_trained() -> None:
    from raystilts.core.space import chain_from_params

    space = _space([0])
    points = [chain_params(space, "t", c) for c in ([], ["a"], ["b"])]
    search = _search(
        space,
        [chain_params(space, "t", ["c"])],
        samples=4,
        points=points,
        order=("a", "b", "c"),
        local_share=0.5,
    )
    for score in [0.5, 0.6, 0.55]:
        step = search.suggest()
        search.report(step.key, step.index, score)
    # best a>t; b was trained as a single, so b>a>t costs one phase, like a>b>t, and goes first
    assert chain_from_params(search.suggest().config, space, "t").name == "b>a>t"


def test_a_ranking_proposes_its_next_task_when_the_best_has_no_neighbour() -> None:
    """Single-task chains only: no neighbour is inside the space, so a local turn takes the
    ranking's first untried task (ranked=True), and the sampler's turn the sampler's."""
    from raystilts.core.space import chain_from_params

    raw = _space([0]).to_dict()
    raw["intermediate"] |= {"max_chain_length": 1, "min_chain_length": 1, "forms": ["sequence"]}
    raw["search"] |= {"baseline_first": False}
    space = load_space_dict(raw, catalog=CATALOG)
    from raystilts.search.searcher import Launch

    names = []
    for ranked in (True, False):
        search = _search(
            space,
            [chain_params(space, "t", [t]) for t in ("b", "a")],
            samples=3,
            points=[chain_params(space, "t", ["c"])],
            local_share=0.5,
            order=("c", "a", "b"),
            ranked=ranked,
        )
        chains = []
        while isinstance(step := search.suggest(), Launch):
            chains.append(chain_from_params(step.config, space, "t").name)
            search.report(step.key, step.index, 0.5)
        names.append(chains)
    assert names[0] == ["c>t", "a>t", "b>t"]  # point, the ranking's next, the sampler
    assert names[1] == ["c>t", "b>t", "a>t"]  # no ranking: the sampler alone


def test_asha_never_stops_the_baseline_but_still_ranks_against_it() -> None:
    """Every gain is measured against the empty chain: ASHA may stop any other trial at a rung,
    never the baseline; the baseline's scores still set the rung's cutoff."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from raystilts.core.space import baseline_params
    from raystilts.search.driver import BaselineKeepingASHA

    space = _space([0])
    asha = BaselineKeepingASHA(
        space=space,
        target="t",
        time_attr="step",
        metric="score",
        mode="max",
        max_t=10,
        grace_period=5,
        reduction_factor=2,
    )
    good = SimpleNamespace(trial_id="good", config=chain_params(space, "t", ["a"]))
    base = SimpleNamespace(trial_id="base", config=baseline_params(space, "t"))
    weak = SimpleNamespace(trial_id="weak", config=chain_params(space, "t", ["b"]))
    for trial in (good, base, weak):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, good, {"step": 5, "score": 0.9}) == TrialScheduler.CONTINUE
    # below the rung's cutoff: plain ASHA stops it; the baseline continues all the same
    assert asha.on_trial_result(None, base, {"step": 5, "score": 0.1}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, weak, {"step": 5, "score": 0.2}) == TrialScheduler.STOP
