"""Tests for raystilts.core.space: loading, validation messages, and the Optuna define-by-run."""

from __future__ import annotations

import copy
import json
import math
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import pytest

from raystilts.core.errors import UserError
from raystilts.core.space import (
    ChainPlanSpec,
    Choice,
    FloatRange,
    PhaseSpec,
    SearchSpace,
    baseline_params,
    chain_from_params,
    chain_name,
    load_space,
    load_space_dict,
    make_define_by_run,
)

ROOT = Path(__file__).resolve().parents[1]
LANGS = ("en", "qaa", "qab", "qac", "qad", "qae")


@dataclass(frozen=True, kw_only=True)
class FakeTask:
    name: str
    kind: str
    languages: tuple[str, ...]
    is_target: bool


CATALOG = {
    t.name: t
    for t in (
        FakeTask(name="mini_mnli", kind="classification", languages=("en",), is_target=False),
        FakeTask(name="mini_qqp", kind="classification", languages=("en",), is_target=False),
        FakeTask(name="mini_ccg", kind="tagging", languages=("en",), is_target=False),
        FakeTask(name="mini_topic", kind="classification", languages=("en",), is_target=False),
        FakeTask(name="mini_xnli", kind="classification", languages=LANGS, is_target=True),
        FakeTask(name="mini_udpos", kind="tagging", languages=LANGS, is_target=True),
    )
}

FULL: dict[str, Any] = {
    "name": "t",
    "targets": ["mini_xnli", "mini_udpos"],
    "intermediate": {
        "tasks": ["mini_mnli", "mini_qqp", "mini_ccg"],
        "max_chain_length": 3,
        "lr": {"low": "1e-4", "high": 3.0e-3},
        "steps": {"choices": [200, 100]},
    },
    "target": {"lr": {"low": 1e-4, "high": 1e-2}, "steps": 40, "eval_every": 10},
    "search": {"seeds": [3], "scheduler": {"grace_period": 2}},
}


def load(data: dict[str, Any]) -> SearchSpace:
    return load_space_dict(data, catalog=CATALOG)


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- valid spaces


def test_demo_yaml_loads() -> None:
    space = load_space(ROOT / "search_spaces" / "demo.yaml", catalog=CATALOG)
    assert space.name == "demo" and space.model == "embedded"
    assert space.targets == ("mini_xnli", "mini_udpos")
    assert space.intermediate.phase.lr == FloatRange(low=3e-4, high=3e-3, log=True)
    assert space.intermediate.max_chain_length == 2
    assert space.target.num_reports == 4
    assert space.languages is None and space.languages_for("mini_udpos") == LANGS
    assert space.source_path == str(ROOT / "search_spaces" / "demo.yaml")


def test_demo_small_yaml_is_small() -> None:
    space = load_space(ROOT / "search_spaces" / "demo_small.yaml", catalog=CATALOG)
    assert space.targets == ("mini_xnli",)
    assert space.search.num_samples == 3 and space.intermediate.max_chain_length == 1
    assert space.target.steps <= 10 and space.intermediate.phase.steps == 4


def test_defaults_fill_everything_but_name_and_targets() -> None:
    space = load({"name": "x", "targets": ["mini_xnli"]})
    assert space.model == "embedded"
    assert space.intermediate.tasks == ("mini_ccg", "mini_mnli", "mini_qqp", "mini_topic")
    assert (space.intermediate.min_chain_length, space.intermediate.max_chain_length) == (0, 2)
    assert space.target.steps == 200 and space.target.eval_every == 50 and space.target.lr == 1e-3
    assert space.search.seeds == (0,) and space.search.baseline_first
    assert space.search.scheduler.type == "asha" and space.resources.use_gpu == "auto"
    assert space.source_path is None


def test_string_floats_choices_and_languages() -> None:
    space = load({**FULL, "languages": ["en", "qab"]})
    assert space.intermediate.phase.lr == FloatRange(low=1e-4, high=3e-3, log=True)
    assert space.intermediate.phase.steps == Choice(values=(100, 200))
    assert space.languages == ("en", "qab") and space.languages_for("mini_xnli") == ("en", "qab")


@pytest.mark.parametrize(
    ("batch", "cap", "workers", "expected"),
    [
        (32, None, 1, (32, 1)),
        (32, None, 4, (8, 1)),  # more workers: smaller per-worker batch, same effective batch
        (32, 8, 1, (8, 4)),  # a memory cap: accumulate 4 micro-batches
        (32, 8, 2, (8, 2)),
        (32, 5, 1, (4, 8)),  # equal micro-batches: 8 x 4 = 32, not 7 x 4 = 28
        (30, 7, 2, (5, 3)),
        (26, 4, 2, (3, 4)),  # 13 per worker: 4 x 3 (24 in all), not 13 x 1
        (62, 8, 2, (7, 4)),  # per worker 31, prime: 4 x 7 = 28
    ],
)
def test_gradient_accumulation_keeps_the_effective_batch(
    batch: int, cap: int | None, workers: int, expected: tuple[int, int]
) -> None:
    space = load(with_("training.batch_size", batch, "training.max_device_batch_size", cap))
    micro, steps = space.training.accumulation(workers)
    assert (micro, steps) == expected
    assert micro * steps * workers <= batch
    assert micro * steps * workers > batch * 2 / 3  # never a degenerate split
    assert cap is None or micro <= cap


def test_cluster_resources_parse() -> None:
    space = load(
        with_(
            "resources.placement_strategy",
            "spread",
            "resources.gpus_per_worker",
            0.5,
            "training.save_model",
            True,
        )
    )
    assert space.resources.placement_strategy == "SPREAD"
    assert space.resources.gpus_per_worker == 0.5 and space.training.save_model


def test_to_dict_is_json_and_round_trips() -> None:
    space = load(FULL)
    data = json.loads(json.dumps(space.to_dict()))
    assert data["intermediate"]["steps"] == {"choices": [100, 200]}
    assert load(data) == space


def test_baseline_first_defaults_off_without_empty_chain() -> None:
    space = load({"name": "x", "targets": ["mini_xnli"], "intermediate": {"min_chain_length": 1}})
    assert not space.search.baseline_first


# --------------------------------------------------------------------------- invalid spaces


def with_(*changes: Any) -> dict[str, Any]:
    """FULL with each dotted path set: `with_("a.b", 1, "c", 2)` (missing sections are created)."""
    data = copy.deepcopy(FULL)
    for path, value in zip(changes[::2], changes[1::2], strict=True):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            with_("search.num_samples", "six"),
            "search.num_samples: expected an integer >= 1, got 'six'",
        ),
        (
            with_("intermediate.tasks", ["mini_mnlx"]),
            (
                "intermediate.tasks: unknown task 'mini_mnlx' (did you mean 'mini_mnli'?); "
                "run 'raystilts tasks' to list tasks"
            ),
        ),
        (
            with_("intermediate.lr", {"low": 0.01, "high": 0.001}),
            "intermediate.lr: low 0.01 >= high 0.001; set low < high",
        ),
        (with_("nmae", "x"), "nmae: unknown key (did you mean 'name'?)"),
        (with_("search.num_sample", 3), "search.num_sample: unknown key (did you mean"),
        (with_("intermediate.lr", {"low": 1e-4}), "intermediate.lr.high: missing"),
        (with_("intermediate.lr", {"low": -1, "high": 1}), "intermediate.lr.low: expected"),
        (with_("intermediate.lr", "fast"), "intermediate.lr: expected a number > 0 or a range"),
        (with_("intermediate.steps", {"choices": []}), "intermediate.steps.choices: expected"),
        (with_("intermediate.steps", 0), "intermediate.steps: expected an integer >= 1 or"),
        (with_("intermediate.max_chain_length", 4), "intermediate.max_chain_length: 4 is longer"),
        (with_("intermediate.min_chain_length", 4), "intermediate.min_chain_length: 4 > max"),
        (
            with_("intermediate.tasks", ["mini_qqp", "mini_qqp"]),
            "intermediate.tasks: 'mini_qqp' is listed twice",
        ),
        (with_("intermediate.tasks", []), "intermediate.tasks: empty, but max_chain_length is 3"),
        (with_("targets", ["mini_mnli"]), "targets: 'mini_mnli' has no multilingual evaluation"),
        (with_("targets", []), "targets: expected a non-empty list of task names"),
        (with_("targets", "mini_xnli"), "targets: expected a non-empty list"),
        (with_("languages", ["qaa"]), "languages: ['qaa'] lacks 'en'"),
        (with_("languages", ["en", "zz"]), "languages: 'zz' is not a language of 'mini_xnli'"),
        (with_("target.eval_every", 50), "target.eval_every: 50 > steps 40"),
        (with_("search.scheduler.grace_period", 5), "search.scheduler.grace_period: 5 exceeds"),
        (with_("search.scheduler.type", "hyperband"), "search.scheduler.type: expected asha"),
        (with_("search.scheduler", None), "search.scheduler: expected a mapping"),
        (with_("search.seeds", []), "search.seeds: expected a non-empty list"),
        (with_("search.race_max_seeds", 0), "search.race_max_seeds: expected an integer >= 1"),
        (with_("search.seeds", [1, 1]), "search.seeds: duplicates in [1, 1]"),
        (
            with_("search.warm_start", "textembb"),
            "search.warm_start: expected textemb or none, got 'textembb' (did you mean 'textemb'?)",
        ),
        (
            with_("intermediate.min_chain_length", 1, "search.baseline_first", True),
            "search.baseline_first: true needs intermediate.min_chain_length 0",
        ),
        (with_("training.batch_size", True), "training.batch_size: expected an integer >= 1"),
        (with_("training.warmup_ratio", 1), "training.warmup_ratio: expected a number in [0, 1)"),
        (with_("resources.use_gpu", "maybe"), "resources.use_gpu: expected auto, true or false"),
        (with_("resources.cpus_per_worker", "nan"), "resources.cpus_per_worker: expected"),
        (
            with_("resources.placement_strategy", "SPRED"),
            "resources.placement_strategy: expected one of PACK, SPREAD, STRICT_PACK, "
            "STRICT_SPREAD, got 'SPRED' (did you mean 'SPREAD'?)",
        ),
        (
            with_("resources.gpus_per_worker", 0),
            "resources.gpus_per_worker: expected a fraction in (0, 1] or a whole number",
        ),
        (
            with_("training.max_device_batch_size", 0),
            "training.max_device_batch_size: expected an integer >= 1",
        ),
        (with_("training.save_model", "yes"), "training.save_model: expected true or false"),
        (with_("name", "my search"), "name: expected letters"),
        (with_("model", ""), "model: expected 'embedded'"),
        ({"targets": ["mini_xnli"]}, "name: missing required key"),
        ({"name": "x"}, "targets: missing required key"),
    ],
)
def test_invalid_space_names_field_and_value(data: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as info:
        load(data)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(UserError, match=r"^top level: expected a mapping"):
        load_space_dict([1, 2], catalog=CATALOG)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.yaml: no such file"):
        load_space(tmp_path / "nope.yaml", catalog=CATALOG)


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntargets: [mini_xnli\nsearch: {}\n")
    with pytest.raises(UserError) as info:
        load_space(path, catalog=CATALOG)
    assert str(info.value).startswith(f"{path}:3:") and "\n" not in str(info.value)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\ntargets: [mini_xnli]\nname: y\n")
    with pytest.raises(UserError, match=r":3:1: invalid YAML: .*duplicate key 'name'"):
        load_space(path, catalog=CATALOG)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ntargets: [mini_xnli]\nsearch: {num_samples: 0}\n")
    with pytest.raises(UserError) as info:
        load_space(path, catalog=CATALOG)
    assert str(info.value) == f"search.num_samples: expected an integer >= 1, got 0 (in {path})"


# --------------------------------------------------------------------------- define-by-run


def test_define_by_run_samples_valid_chains() -> None:
    pool = ["mini_mnli", "mini_qqp", "mini_ccg", "mini_xnli"]  # a target may be intermediate
    space = load(with_("intermediate.tasks", pool))
    fn = make_define_by_run(space, "mini_xnli")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    lengths = set()
    for _ in range(60):  # Optuna raises if one name ever gets different choices
        trial = study.ask()
        constants = fn(trial)
        assert constants == {"target": "mini_xnli"}
        plan = chain_from_params({**trial.params, **constants}, space, "mini_xnli")
        lengths.add(len(plan.phases))
        assert len(set(plan.tasks)) == len(plan.tasks)
        assert set(plan.tasks) <= {"mini_mnli", "mini_qqp", "mini_ccg"}  # never the target itself
        assert all(1e-4 <= p.lr <= 3e-3 and p.steps in (100, 200) for p in plan.phases)
        assert plan.target.task == "mini_xnli" and 1e-4 <= plan.target.lr <= 1e-2
        assert plan.target.steps == 40 and plan.eval_every == 10
        assert plan.name == chain_name(plan.tasks, "mini_xnli")
        study.tell(trial, float(len(plan.phases)))
    assert lengths == {0, 1, 2, 3}


def test_param_names_encode_the_tasks_already_used() -> None:
    space = load(FULL)
    trial = optuna.trial.FixedTrial(
        {
            "chain_length": 2,
            "phase0_task": "mini_qqp",
            "phase1_task_after_mini_qqp": "mini_ccg",
            "phase0_lr": 1e-3,
            "phase1_lr": 2e-3,
            "phase0_steps": 100,
            "phase1_steps": 200,
            "target_lr": 5e-3,
        }
    )
    constants = make_define_by_run(space, "mini_udpos")(trial)
    assert chain_from_params({**trial.params, **constants}, space, "mini_udpos") == ChainPlanSpec(
        phases=(
            PhaseSpec(task="mini_qqp", lr=1e-3, steps=100),
            PhaseSpec(task="mini_ccg", lr=2e-3, steps=200),
        ),
        target=PhaseSpec(task="mini_udpos", lr=5e-3, steps=40),
        eval_every=10,
    )


def test_fixed_values_are_not_suggested() -> None:
    space = load_space(ROOT / "search_spaces" / "demo_small.yaml", catalog=CATALOG)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        make_define_by_run(space, "mini_xnli")(trial)
        assert set(trial.params) <= {"chain_length", "phase0_task"}
        plan = chain_from_params(trial.params, space, "mini_xnli")
        assert all(p.lr == 1e-3 and p.steps == 4 for p in (*plan.phases, plan.target))


def test_baseline_is_enqueued_first() -> None:
    space = load(FULL)
    params = baseline_params(space, "mini_xnli")
    assert params == {"chain_length": 0, "target_lr": pytest.approx(1e-3)}  # geometric mean
    study = optuna.create_study()
    study.enqueue_trial(params)
    trial = study.ask()
    plan = chain_from_params(
        make_define_by_run(space, "mini_xnli")(trial) | trial.params, space, "mini_xnli"
    )
    assert plan.phases == () and plan.name == "mini_xnli"
    assert math.isclose(plan.target.lr, 1e-3)


def test_baseline_params_for_fixed_lr_and_no_empty_chain() -> None:
    space = load({"name": "x", "targets": ["mini_xnli"]})
    assert baseline_params(space, "mini_xnli") == {"chain_length": 0}
    with pytest.raises(ValueError, match="min_chain_length is 1"):
        baseline_params(
            replace(space, intermediate=replace(space.intermediate, min_chain_length=1)),
            "mini_xnli",
        )


def test_define_by_run_pickles() -> None:
    fn = make_define_by_run(load(FULL), "mini_udpos")
    assert pickle.loads(pickle.dumps(fn)) == fn


def test_unknown_target_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^target: 'mini_xnl' .*did you mean 'mini_xnli'"):
        make_define_by_run(load(FULL), "mini_xnl")


def test_chain_from_params_rejects_foreign_params() -> None:
    space = load(FULL)
    with pytest.raises(ValueError, match="missing parameter 'phase0_task'"):
        chain_from_params({"chain_length": 1}, space, "mini_xnli")
    with pytest.raises(ValueError, match="for target 'mini_udpos'"):
        chain_from_params({"chain_length": 0, "target": "mini_udpos"}, space, "mini_xnli")
    with pytest.raises(ValueError, match="chain_length 7 is outside"):
        chain_from_params({"chain_length": 7}, space, "mini_xnli")


def test_chain_name() -> None:
    assert chain_name(["mini_mnli", "mini_qqp"], "mini_xnli") == "mini_mnli>mini_qqp>mini_xnli"
    assert chain_name([], "mini_xnli") == "mini_xnli"


def test_several_seeds_and_warm_start_chain_params() -> None:
    from raystilts.core.space import chain_from_params, chain_params

    space = load(with_("search.seeds", [0, 1, 2]))
    assert space.search.seeds == (0, 1, 2) and space.search.warm_start == "textemb"
    params = chain_params(space, "mini_xnli", ["mini_qqp", "mini_mnli"])
    plan = chain_from_params(params, space, "mini_xnli")
    assert [p.task for p in plan.phases] == ["mini_qqp", "mini_mnli"]
    assert plan.phases[0].lr == pytest.approx((1e-4 * 3e-3) ** 0.5)  # centre of the log range
    assert plan.phases[1].steps == 200  # the largest choice
    with pytest.raises(ValueError, match="outside the space"):
        chain_params(space, "mini_xnli", ["mini_topic"])


def test_grid_algorithm_enumerates_every_chain() -> None:
    from raystilts.core.space import all_chains

    space = load(with_("search.algorithm", "grid", "intermediate.max_chain_length", 2))
    chains = all_chains(space, "mini_xnli")
    assert len(chains) == 1 + 3 + 6 and chains[0] == () and ("mini_qqp", "mini_ccg") in chains
    with pytest.raises(UserError, match=r"search\.algorithm: expected tpe, random or grid"):
        load(with_("search.algorithm", "bayes"))


def test_mixture_and_sequence_forms_are_searched() -> None:
    from raystilts.core.space import all_chains, chain_params

    space = load(with_("intermediate.forms", ["sequence", "mixture"]))
    fn = make_define_by_run(space, "mini_xnli")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(80):
        trial = study.ask()
        constants = fn(trial)
        plan = chain_from_params({**trial.params, **constants}, space, "mini_xnli")
        if any("+" in t for t in plan.tasks):
            (mixed,) = plan.tasks  # a mixture is one phase, its tasks in a canonical order
            assert mixed.split("+") == sorted(mixed.split("+")) and len(mixed.split("+")) >= 2
            seen.add("mixture")
        elif len(plan.tasks) >= 2:
            seen.add("sequence")
        study.tell(trial, 0.0)
    assert seen == {"sequence", "mixture"}
    chains = all_chains(space, "mini_xnli")
    assert ("mini_ccg+mini_mnli",) in chains and ("mini_mnli", "mini_ccg") in chains
    assert len(chains) == 1 + 3 + 6 + 3 + 6 + 1  # lengths 0..3, sequences and mixtures
    for chain in chains:  # every grid point is a valid point of the space
        plan = chain_from_params(chain_params(space, "mini_xnli", chain), space, "mini_xnli")
        assert plan.tasks == chain
    only_mixed = load(with_("intermediate.forms", ["mixture"]))
    assert ("mini_mnli", "mini_ccg") not in all_chains(only_mixed, "mini_xnli")
    with pytest.raises(UserError, match=r"intermediate\.forms: expected a list"):
        load(with_("intermediate.forms", ["mixed"]))
    with pytest.raises(UserError, match="mixture needs chains of 2"):
        load(with_("intermediate.forms", ["mixture"], "intermediate.max_chain_length", 1))
    with pytest.raises(UserError, match=r"intermediate\.mixture\.sampling"):
        load(with_("intermediate.forms", ["mixture"], "intermediate.mixture", {"sampling": "x"}))


def test_early_stopping_is_off_for_seeds_and_grids() -> None:
    assert load(with_("search", {"seeds": [0, 1]})).search.scheduler.type == "none"
    assert load(with_("search", {"algorithm": "grid"})).search.scheduler.type == "none"
    assert load(with_("search", {"seeds": [0]})).search.scheduler.type == "asha"
    with pytest.raises(UserError, match="asha with 2 seeds would mix stopped and finished runs"):
        load(with_("search", {"seeds": [0, 1], "scheduler": {"type": "asha"}}))
    with pytest.raises(ValueError, match="outside the space"):
        from raystilts.core.space import chain_params

        chain_params(load(FULL), "mini_xnli", ["mini_mnli", "mini_mnli"])


# --------------------------------------------------------------------------- real catalog


def test_paper_spaces_validate_against_the_real_catalog() -> None:
    from raystilts.tasks.catalog import CATALOG as REAL

    for name in ("paper_xtreme.yaml", "paper_xtreme_r.yaml"):
        space = load_space(ROOT / "search_spaces" / name, catalog=REAL)
        assert space.model == "FacebookAI/xlm-roberta-large"
        assert len(space.intermediate.tasks) == 9 and space.intermediate.min_chain_length == 0
        for target in space.targets:
            assert REAL[target].is_target
            assert space.languages_for(target) == REAL[target].languages
        assert load_space_dict(space.to_dict(), catalog=REAL).to_dict() == space.to_dict()
    xtreme = load_space(ROOT / "search_spaces" / "paper_xtreme.yaml", catalog=REAL)
    assert xtreme.target_for("pawsx").steps == 7719 and xtreme.target_for("pawsx").lr == 1e-5
    assert xtreme.target_for("tatoeba") == replace(xtreme.target, per_task=())  # the default
    plan = chain_from_params({"chain_length": 0}, xtreme, "tydiqa")
    assert (plan.target.steps, plan.eval_every) == (231, 231)


def test_per_target_settings() -> None:
    data = copy.deepcopy(FULL)
    data["target"] = {
        "lr": 1e-3,
        "steps": 200,
        "eval_every": 50,
        "tasks": {"mini_udpos": {"steps": 80, "lr": {"low": 1e-4, "high": 1e-3}}},
    }
    space = load_space_dict(data, catalog=CATALOG)
    udpos = space.target_for("mini_udpos")
    assert udpos.steps == 80 and udpos.eval_every == 20  # the default's 4 reports
    assert isinstance(udpos.lr, FloatRange)
    assert space.target_for("mini_xnli").steps == 200
    assert "target_lr" in baseline_params(space, "mini_udpos")
    assert "target_lr" not in baseline_params(space, "mini_xnli")
    assert load_space_dict(space.to_dict(), catalog=CATALOG) == space
    data["target"]["tasks"] = {"mini_mnli": {"steps": 10}}
    with pytest.raises(UserError, match=r"target.tasks.mini_mnli: not a target"):
        load_space_dict(data, catalog=CATALOG)
    data["target"]["tasks"] = {"mini_xnli": {"step": 10}}
    with pytest.raises(UserError, match=r"target.tasks.mini_xnli.step: unknown key"):
        load_space_dict(data, catalog=CATALOG)


def test_languages_per_target_mapping() -> None:
    """``languages: {target: [...]}`` evaluates each target on its own subset; a retrieval
    target (no training, no English set) needs no 'en'; targets left out keep every language."""
    from raystilts.tasks.catalog import CATALOG as REAL

    raw = {
        "name": "per_target",
        "model": "embedded",
        "targets": ["pawsx", "bucc", "xquad"],
        "languages": {"pawsx": ["en", "de"], "bucc": ["fr"]},
        "intermediate": {"tasks": ["mnli"], "max_chain_length": 1, "lr": 1e-5, "steps": 10},
        "target": {"lr": 1e-5, "steps": 10, "eval_every": 5},
    }
    space = load_space_dict(raw, catalog=REAL)
    assert space.languages_for("pawsx") == ("en", "de")
    assert space.languages_for("bucc") == ("fr",)
    assert space.languages_for("xquad") == REAL["xquad"].languages
    assert load_space_dict(space.to_dict(), catalog=REAL).to_dict() == space.to_dict()
    for bad, message in (
        ({"pawsx": ["de"]}, r"languages\.pawsx: \['de'\] lacks 'en'"),
        ({"bucc": ["en"]}, r"languages\.bucc: 'en' is not a language of 'bucc'"),
        ({"xnli": ["en"]}, r"languages: 'xnli' is not a target of this space"),
    ):
        with pytest.raises(UserError, match=message):
            load_space_dict({**raw, "languages": bad}, catalog=REAL)


def test_fractional_gpus_say_how_many_trials_share_a_gpu() -> None:
    from raystilts.core.space import Resources

    assert Resources(gpus_per_worker=0.25).trials_per_gpu() == 4
    assert Resources(gpus_per_worker=0.2).workers_per_gpu() == 5  # not 4 by rounding 1/0.2
    assert Resources(gpus_per_worker=0.25, workers_per_trial=2).trials_per_gpu() == 2
    assert Resources(gpus_per_worker=2, workers_per_trial=1).trials_per_gpu() == 0.5
