"""The search space of a STILTs search: typed, loaded from YAML, validated at load time.

    space = load_space("search_spaces/demo.yaml", catalog=catalog)
    fn = make_define_by_run(space, "mini_xnli")           # OptunaSearch(space=fn, ...)
    points = [baseline_params(space, "mini_xnli")]        # OptunaSearch(points_to_evaluate=...)
    plan = chain_from_params(config, space, "mini_xnli")  # inside the trial: config -> phases

Every mistake in a space file is a `UserError` whose message is one line: the field path, the
bad value and the fix. The task catalog is an argument, so this module stays pure (no ray,
torch or mlflow) and tests can pass a fake catalog.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import yaml

from raystilts.core.checks import check_model
from raystilts.core.errors import UserError
from raystilts.core.schema import MIX, chain_name

if TYPE_CHECKING:
    import optuna


class TaskInfo(Protocol):
    """What validation needs to know about a task (read-only, so frozen dataclasses fit)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...  # "classification" | "tagging" | ...
    @property
    def languages(self) -> tuple[str, ...]: ...
    @property
    def is_target(self) -> bool: ...  # has multilingual evaluation


@dataclass(frozen=True, slots=True, kw_only=True)
class FloatRange:
    """A float searched in [low, high]; log scale by default (learning rates)."""

    low: float
    high: float
    log: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Choice:
    """An integer picked among `values` (sorted, distinct)."""

    values: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseSpace:
    """Hyperparameters of every intermediate phase: fixed values or searched ones."""

    lr: float | FloatRange
    steps: int | Choice


@dataclass(frozen=True, slots=True, kw_only=True)
class MixtureSettings:
    """How a mixed phase samples its tasks (raystilts.train.mixture.mixture_weights)."""

    sampling: Literal["proportional", "temperature"] = "temperature"
    temperature: float = 2.0
    size_cap: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IntermediateSpace:
    tasks: tuple[str, ...]
    min_chain_length: int
    max_chain_length: int
    phase: PhaseSpace
    # how the chosen tasks of a chain are trained: in sequence (one phase each, in the sampled
    # order) and/or mixed (one multi-task phase); the search picks among the listed forms
    forms: tuple[Literal["sequence", "mixture"], ...] = ("sequence",)
    mixture: MixtureSettings = MixtureSettings()

    def pool_for(self, target: str) -> tuple[str, ...]:
        """The sorted tasks a chain for `target` may use: training the target twice is no STILT."""
        return _pool(self.tasks, target)


@functools.lru_cache(maxsize=256)  # a search asks per proposal; sorting 400 tasks each time showed
def _pool(tasks: tuple[str, ...], target: str) -> tuple[str, ...]:
    return tuple(sorted(t for t in tasks if t != target))


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpace:
    lr: float | FloatRange
    steps: int
    eval_every: int  # English dev every N steps: one report (ASHA rung) each
    # per-target settings (`target.tasks` in YAML): the paper trains each XTREME target for its
    # own number of epochs; a target not listed uses the fields above
    per_task: tuple[tuple[str, TargetSpace], ...] = ()

    @property
    def num_reports(self) -> int:
        """Reports per trial: every ``eval_every`` target steps, the last one at ``steps``."""
        return -(-self.steps // self.eval_every)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingSettings:
    batch_size: int = 32
    max_length: int = 64
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    # examples one worker puts through the model at once; above it, gradients accumulate so
    # that the effective batch stays ``batch_size`` whatever the worker count (None: no cap)
    max_device_batch_size: int | None = None
    save_model: bool = False  # keep each trial's final model as a Ray Train checkpoint
    # the target checkpoint a chain is scored with: best_en_dev (its best English dev evaluation
    # point, jiant's and XTREME's recipe) or last (its final step); logged as target/kept_step
    checkpoint: Literal["best_en_dev", "last"] = "best_en_dev"
    # how POS-style tag sets (UDPOS) are scored: pos-seqeval0 (seqeval 0.0.x's reading, which
    # reproduces XTREME's published numbers) or pos (seqeval >= 1.0's); logged as pos_scheme
    pos_scheme: Literal["pos-seqeval0", "pos"] = "pos-seqeval0"

    def accumulation(self, workers: int) -> tuple[int, int]:
        """(micro-batch per worker, micro-batches per optimizer step) for ``workers`` workers.

        The effective batch ``workers * micro * steps`` equals ``batch_size`` when it divides
        evenly and never exceeds it; ``raystilts validate`` reports the layout.
        """
        per_worker = max(1, self.batch_size // workers)
        cap = self.max_device_batch_size or per_worker
        least = -(-per_worker // cap)
        # prefer a split into equal micro-batches (32 with a cap of 5 is 8 x 4, not 7 x 4), but
        # not at any price: 13 per worker with a cap of 4 is 4 x 3 (12), not 13 x 1
        steps = next((n for n in range(least, 2 * least + 1) if per_worker % n == 0), least)
        return max(1, per_worker // steps), steps


# the defaults of the training: section, read where the YAML leaves a key out and by the
# runner's own settings (raystilts.train.runner.TrainSettings): each default is written once
TRAINING_DEFAULTS = TrainingSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerSettings:
    type: Literal["asha", "none"] = "asha"
    grace_period: int = 1  # in reports (target.eval_every steps each)
    reduction_factor: float = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorSettings:
    """Where a target's prior over intermediate tasks comes from (raystilts.search.prior): finished
    trials of the search's other targets, and of these earlier experiments' targets."""

    experiments: tuple[str, ...] = ()  # MLflow experiments in the search's tracking store
    other_targets: bool = True  # the targets this search ran before this one


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchSettings:
    num_samples: int = 6  # trials per target
    max_concurrent: int = 2  # trials at once, all targets together; 2 is the ceiling on 2 cores
    seeds: tuple[int, ...] = (0,)  # every sampled chain runs once per seed; Optuna sees the mean
    baseline_first: bool = True
    # rank intermediate tasks by a transferability estimate on the base model and try the
    # best single-task chains first ("none": Optuna alone)
    warm_start: Literal["textemb", "none"] = "textemb"
    warm_start_chains: int = 2  # how many ranked chains go first, after the baseline
    sampler_seed: int = 0
    # tpe: Optuna's TPE (the default); random: Optuna's random sampler; grid: every chain of the
    # space once (searched ranges at their centre; num_samples is ignored)
    algorithm: Literal["tpe", "random", "grid"] = "tpe"
    scheduler: SchedulerSettings = SchedulerSettings()
    # tpe only (raystilts.core.racing): a config runs its further seeds only when its first seed is
    # within this many pooled seed-sds of the best mean; null: every config runs every seed
    race_within_sd: float | None = 1.0
    # tpe only: a raced config earns at most this many seeds (raystilts.core.racing: by 4 a
    # mean's standard error is half a seed sd, finer than the one-sd tie tolerance)
    race_max_seeds: int = 4
    # tpe only: share of the new configs, after the baseline and warm start, that are
    # neighbours of the best chain so far (raystilts.search.driver.neighbours); 0: TPE alone
    neighbour_share: float = 0.5
    prior: PriorSettings = PriorSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool | Literal["auto"] = "auto"
    gpus_per_worker: float = 1.0  # with use_gpu; fractions share a GPU between trials
    # how a trial's workers are placed: PACK fills a node first, SPREAD uses several nodes
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    # worker failures (a lost spot node, a killed process) a trial recovers from; it restarts
    # from its last completed phase (the prefix cache), under the same MLflow run
    max_failures: int = 2

    def workers_per_gpu(self) -> int:
        """Workers that fit on one GPU: ``floor(1 / gpus_per_worker)`` for a fraction (Ray packs
        fractional GPU requests onto one device), 1 for a whole GPU or more.

        >>> Resources(gpus_per_worker=0.25).workers_per_gpu(), Resources().workers_per_gpu()
        (4, 1)
        """
        if self.gpus_per_worker >= 1:
            return 1
        return int(1 / self.gpus_per_worker + 1e-9)  # 1/0.2 is 4.999...: not 4 workers

    def trials_per_gpu(self) -> float:
        """Trials that share one GPU (a fraction: a trial spanning several GPUs)."""
        return self.workers_per_gpu() / (self.workers_per_trial * max(1.0, self.gpus_per_worker))


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchSpace:
    """A validated search space. `source_path` is the YAML file, None when built from a dict."""

    name: str
    model: str
    targets: tuple[str, ...]
    # as written: one list for every target, {target: list} per target, or None (every language)
    languages: tuple[str, ...] | tuple[tuple[str, tuple[str, ...]], ...] | None
    eval_languages: tuple[tuple[str, tuple[str, ...]], ...]  # resolved: (target, languages)
    intermediate: IntermediateSpace
    target: TargetSpace
    training: TrainingSettings
    search: SearchSettings
    resources: Resources
    source_path: str | None = None

    def target_for(self, target: str) -> TargetSpace:
        """The target-phase settings of ``target``: its ``target.tasks`` entry, else the defaults."""
        default = dataclasses.replace(self.target, per_task=())
        return dict(self.target.per_task).get(target, default)

    def languages_for(self, target: str) -> tuple[str, ...]:
        """The languages `target` is evaluated on ("en" first is not guaranteed)."""
        return dict(self.eval_languages)[_require_target(self, target)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict in the YAML schema; `load_space_dict` reads it back unchanged."""
        skip = ("eval_languages", "source_path")  # derived from the catalog / not a setting
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if self.languages and isinstance(self.languages[0], tuple):  # {target: [langs]}
            out["languages"] = {t: list(langs) for t, langs in self.languages}  # type: ignore[misc]
        out["intermediate"].update(out["intermediate"].pop("phase"))
        per_task = out["target"].pop("per_task")
        if per_task:  # [[name, settings], ...] -> {name: settings}, as written in YAML
            out["target"]["tasks"] = {
                name: {k: v for k, v in t.items() if k != "per_task"} for name, t in per_task
            }
        return {k: v for k, v in out.items() if k not in skip}


def _plain(value: Any) -> Any:
    if isinstance(value, Choice):
        return {"choices": list(value.values)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


# --------------------------------------------------------------------------- chains and plans


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseSpec:
    task: str
    lr: float
    steps: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainPlanSpec:
    """One sampled chain: intermediate phases in order, then the target phase."""

    phases: tuple[PhaseSpec, ...]
    target: PhaseSpec
    eval_every: int

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(p.task for p in self.phases)

    @property
    def name(self) -> str:
        return chain_name(self.tasks, self.target.task)


def _task_param(index: int, chosen: Sequence[str]) -> str:
    # Optuna needs one name per choice list; the choices are the pool minus the tasks already
    # used, so the name encodes that set (sorted: a>b and b>a share statistics for phase 2).
    # '.' keeps names valid as MLflow params and untouched by Tune's '/'-unflattening.
    return (
        f"phase{index}_task"
        if not chosen
        else f"phase{index}_task_after_{'.'.join(sorted(chosen))}"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DefineByRun:
    """Optuna define-by-run function for one target; a picklable object for Ray's OptunaSearch.

    Suggests `chain_length`, then per phase `phase{i}_task[_after_...]`, `phase{i}_lr` and
    `phase{i}_steps` (the last two only when searched), and `target_lr` when searched.
    Returns the constants `{"target": target}`, which Ray merges into the trial config.
    """

    space: SearchSpace
    target: str

    def __call__(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        inter = self.space.intermediate
        pool = inter.pool_for(self.target)
        length = trial.suggest_int("chain_length", inter.min_chain_length, inter.max_chain_length)
        chosen: list[str] = []
        for i in range(length):
            remaining = [t for t in pool if t not in chosen]
            chosen.append(trial.suggest_categorical(_task_param(i, chosen), remaining))
        phases = length
        if length >= 2 and "mixture" in inter.forms:
            form = (
                trial.suggest_categorical("form", list(inter.forms))
                if len(inter.forms) > 1
                else "mixture"
            )
            phases = 1 if form == "mixture" else length
        for i in range(phases):
            if isinstance(inter.phase.lr, FloatRange):
                lr = inter.phase.lr
                trial.suggest_float(f"phase{i}_lr", lr.low, lr.high, log=lr.log)
            if isinstance(inter.phase.steps, Choice):
                trial.suggest_categorical(f"phase{i}_steps", list(inter.phase.steps.values))
        tlr = self.space.target_for(self.target).lr
        if isinstance(tlr, FloatRange):
            trial.suggest_float("target_lr", tlr.low, tlr.high, log=tlr.log)
        return {"target": self.target}


def make_define_by_run(space: SearchSpace, target: str) -> DefineByRun:
    return DefineByRun(space=space, target=_require_target(space, target))


def baseline_params(space: SearchSpace, target: str) -> dict[str, Any]:
    """Params of the empty chain, for `points_to_evaluate`; a searched target lr takes the
    centre of its range (geometric mean on a log scale)."""
    _require_target(space, target)
    if space.intermediate.min_chain_length > 0:
        raise ValueError(
            f"baseline_params: min_chain_length is {space.intermediate.min_chain_length}, "
            "so the empty chain is outside the space; check space.search.baseline_first first"
        )
    params: dict[str, Any] = {"chain_length": 0}
    lr = space.target_for(target).lr
    if isinstance(lr, FloatRange):
        params["target_lr"] = math.sqrt(lr.low * lr.high) if lr.log else (lr.low + lr.high) / 2
    return params


def chain_params(space: SearchSpace, target: str, phases: Sequence[str]) -> dict[str, Any]:
    """Params (define-by-run names) of a chain with the centre of every searched lr range and
    the largest steps choice, for
    ``points_to_evaluate`` (the warm start's chains, the grid). ``phases`` are task names in
    order, or one mixture ``"a+b"``."""
    params = baseline_params(space, target) if not phases else {}
    inter = space.intermediate
    pool = inter.pool_for(target)
    mixed = len(phases) == 1 and MIX in phases[0]
    tasks = phases[0].split(MIX) if mixed else list(phases)
    if (
        not inter.min_chain_length <= len(tasks) <= inter.max_chain_length
        or any(t not in pool for t in tasks)
        or len(set(tasks)) != len(tasks)
        or any(MIX in p for p in phases[1:] if len(phases) > 1)
        or (mixed and "mixture" not in inter.forms)
        or (len(tasks) >= 2 and not mixed and "sequence" not in inter.forms)
    ):
        raise ValueError(f"chain_params: {list(phases)} is outside the space of {target!r}")
    params["chain_length"] = len(tasks)
    for i, task in enumerate(tasks):
        params[_task_param(i, list(tasks[:i]))] = task
    if len(tasks) >= 2 and len(inter.forms) > 1:
        params["form"] = "mixture" if mixed else "sequence"
    for i in range(1 if mixed else len(tasks)):
        if isinstance(inter.phase.lr, FloatRange):
            params[f"phase{i}_lr"] = _centre(inter.phase.lr)
        if isinstance(inter.phase.steps, Choice):
            params[f"phase{i}_steps"] = max(inter.phase.steps.values)
    tlr = space.target_for(target).lr
    if isinstance(tlr, FloatRange):
        params["target_lr"] = _centre(tlr)
    return params


def _centre(r: FloatRange) -> float:
    return math.sqrt(r.low * r.high) if r.log else (r.low + r.high) / 2


def chain_from_params(params: Mapping[str, Any], space: SearchSpace, target: str) -> ChainPlanSpec:
    """Turn a trial's flat config (sampled names + constants) into a plan; fixed values come
    from the space. Raises ValueError when `params` were not sampled from this space."""
    _require_target(space, target)
    if params.get("target", target) != target:
        raise ValueError(
            f"chain_from_params: params are for target {params['target']!r}, not {target!r}"
        )

    def get(key: str) -> Any:
        if key not in params:
            raise ValueError(
                f"chain_from_params: missing parameter {key!r} (got {sorted(params)}); "
                "were these params sampled from another search space?"
            )
        return params[key]

    inter = space.intermediate
    length = get("chain_length")
    if (
        not isinstance(length, int)
        or not inter.min_chain_length <= length <= inter.max_chain_length
    ):
        raise ValueError(f"chain_from_params: chain_length {length!r} is outside the space")
    chosen: list[str] = []
    for i in range(length):
        task = get(_task_param(i, chosen))
        if task not in inter.pool_for(target) or task in chosen:
            raise ValueError(
                f"chain_from_params: task {task!r} cannot follow {chosen} for {target!r}"
            )
        chosen.append(task)
    mixed = False
    if length >= 2 and "mixture" in inter.forms:
        mixed = get("form") == "mixture" if len(inter.forms) > 1 else True
    # a mixture is one phase; its tasks in a canonical order (a+b and b+a are one mixture)
    names = [MIX.join(sorted(chosen))] if mixed else chosen
    lr = inter.phase.lr
    steps = inter.phase.steps
    phases = [
        PhaseSpec(
            task=name,
            lr=float(get(f"phase{i}_lr")) if isinstance(lr, FloatRange) else lr,
            steps=int(get(f"phase{i}_steps")) if isinstance(steps, Choice) else steps,
        )
        for i, name in enumerate(names)
    ]
    settings = space.target_for(target)
    tlr = settings.lr
    target_phase = PhaseSpec(
        task=target,
        lr=float(get("target_lr")) if isinstance(tlr, FloatRange) else tlr,
        steps=settings.steps,
    )
    return ChainPlanSpec(phases=tuple(phases), target=target_phase, eval_every=settings.eval_every)


def _require_target(space: SearchSpace, target: str) -> str:
    if target not in space.targets:
        raise UserError(
            f"target: {target!r} is not a target of space {space.name!r}"
            f"{_did_you_mean(target, space.targets)}; use one of: {', '.join(space.targets)}"
        )
    return target


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: list[Any] = []
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.append(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_space(path: str | os.PathLike[str], *, catalog: Mapping[str, TaskInfo]) -> SearchSpace:
    """Read and validate a search-space YAML file against the task catalog."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; check the path (see search_spaces/)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc}); pass a UTF-8 YAML file") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        reason = " ".join(f"{exc.context or ''} {exc.problem or ''}".split())
        raise UserError(f"{where}: invalid YAML: {reason}; fix the syntax there") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    return load_space_dict(data, catalog=catalog, source=str(path))


def load_space_dict(
    data: Mapping[str, Any], *, catalog: Mapping[str, TaskInfo], source: str = "<dict>"
) -> SearchSpace:
    """Validate a parsed space. Only `name` and `targets` are required; errors from a file end
    with `(in SOURCE)`."""
    try:
        return _parse_space(data, catalog, source)
    except UserError as exc:
        if source == "<dict>":
            raise
        raise UserError(f"{exc} (in {source})") from None


def _training(train: _Section) -> TrainingSettings:
    """The ``training`` section (defaults: TRAINING_DEFAULTS)."""
    return TrainingSettings(
        batch_size=train.get_int("batch_size", TRAINING_DEFAULTS.batch_size, minimum=1),
        max_length=train.get_int("max_length", TRAINING_DEFAULTS.max_length, minimum=2),
        warmup_ratio=train.get_float(
            "warmup_ratio", TRAINING_DEFAULTS.warmup_ratio, "a number in [0, 1)", _unit
        ),
        weight_decay=train.get_float(
            "weight_decay", TRAINING_DEFAULTS.weight_decay, "a number >= 0", _non_negative
        ),
        max_device_batch_size=(
            None
            if train.raw("max_device_batch_size") is None
            else train.get_int("max_device_batch_size", 0, minimum=1)
        ),
        save_model=train.get_bool("save_model", TRAINING_DEFAULTS.save_model),
        checkpoint=_one_of(
            train.raw("checkpoint", TRAINING_DEFAULTS.checkpoint),
            "training.checkpoint",
            CHECKPOINT_CHOICES,
        ),
        pos_scheme=_one_of(
            train.raw("pos_scheme", TRAINING_DEFAULTS.pos_scheme),
            "training.pos_scheme",
            POS_SCHEMES,
        ),
    )


def _resources(res: _Section) -> Resources:
    """The ``resources`` section."""
    use_gpu = res.raw("use_gpu", "auto")
    if use_gpu != "auto" and not isinstance(use_gpu, bool):
        raise UserError(f"resources.use_gpu: expected auto, true or false, got {_short(use_gpu)}")
    return Resources(
        workers_per_trial=res.get_int("workers_per_trial", 1, minimum=1),
        cpus_per_worker=res.get_float("cpus_per_worker", 1.0, "a number > 0", _positive),
        use_gpu=use_gpu,
        gpus_per_worker=res.get_float(
            "gpus_per_worker", 1.0, "a fraction in (0, 1] or a whole number", _gpus
        ),
        placement_strategy=_placement(res.raw("placement_strategy", "PACK")),
        max_failures=res.get_int("max_failures", 2, minimum=0),
    )


def _parse_space(data: Any, catalog: Mapping[str, TaskInfo], source: str) -> SearchSpace:
    if not isinstance(data, Mapping):
        raise UserError(
            f"top level: expected a mapping with 'name' and 'targets', got {_short(data)}"
        )
    top = _Section(data, "", _SECTION_KEYS[""])
    for key, example in (("name", "my_search"), ("targets", "[mini_xnli]")):
        if not top.has(key):
            raise UserError(f"{key}: missing required key; add e.g. `{key}: {example}`")
    name = top.raw("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UserError(f"name: expected letters, digits, '_', '.' or '-', got {_short(name)}")
    model = top.raw("model", "embedded")
    if not isinstance(model, str) or not model.strip():
        raise UserError(
            f"model: expected 'embedded', a hub id or a local path, got {_short(model)}"
        )
    check_model(model)  # a missing local path would reach the hub, or blame the tasks
    targets = _task_list(top.raw("targets"), "targets", catalog, allow_empty=False)
    for t in targets:
        if not catalog[t].is_target:
            known = ", ".join(sorted(n for n, info in catalog.items() if info.is_target))
            raise UserError(f"targets: {t!r} has no multilingual evaluation; use one of: {known}")
    languages, eval_languages = _languages(top.raw("languages"), targets, catalog)
    intermediate = _intermediate(top.section("intermediate"), targets, catalog)
    target = _target(top.section("target"), targets)
    return SearchSpace(
        name=name,
        model=model,
        targets=targets,
        languages=languages,
        eval_languages=eval_languages,
        intermediate=intermediate,
        target=target,
        training=_training(top.section("training")),
        search=_search(top.section("search"), intermediate, target),
        resources=_resources(top.section("resources")),
        source_path=None if source == "<dict>" else source,
    )


def _languages(
    value: Any, targets: tuple[str, ...], catalog: Mapping[str, TaskInfo]
) -> tuple[
    tuple[str, ...] | tuple[tuple[str, tuple[str, ...]], ...] | None,
    tuple[tuple[str, tuple[str, ...]], ...],
]:
    """``languages``: None (every language of each target), one list for every target, or a
    mapping ``{target: [langs]}`` (targets it leaves out keep every language)."""
    if value is None:
        return None, tuple((t, _target_languages(t, None, catalog)) for t in targets)
    if isinstance(value, Mapping):
        for t in value:
            if t not in targets:
                raise UserError(
                    f"languages: {t!r} is not a target of this space ({', '.join(targets)}); "
                    "remove it or add it to targets"
                )
        per = tuple(
            (t, _target_languages(t, value[t], catalog, key=f"languages.{t}"))
            for t in targets
            if t in value
        )
        given = dict(per)
        return per, tuple(
            (t, given[t] if t in given else _target_languages(t, None, catalog)) for t in targets
        )
    langs = _str_list(value, "languages", allow_empty=False, what="language codes, e.g. [en, qaa]")
    return langs, tuple((t, _target_languages(t, langs, catalog)) for t in targets)


def _target_languages(
    target: str, value: Any, catalog: Mapping[str, TaskInfo], *, key: str = "languages"
) -> tuple[str, ...]:
    task = catalog[target]
    trained = getattr(task, "has_train", True)  # retrieval (BUCC, Tatoeba) pairs xx with en
    if value is None:
        if "en" not in task.languages and trained:
            raise UserError(f"targets: {target!r} has no 'en' data to select models on; drop it")
        return tuple(task.languages)
    langs = (
        value
        if isinstance(value, tuple)
        else _str_list(value, key, allow_empty=False, what="language codes, e.g. [en, de]")
    )
    if "en" not in langs and trained:
        raise UserError(f"{key}: {list(langs)} lacks 'en' (English dev selects models); add en")
    for lang in langs:
        if lang not in task.languages:
            have = ", ".join(task.languages)
            raise UserError(f"{key}: {lang!r} is not a language of {target!r} ({have}); remove it")
    return langs


def _intermediate(
    sec: _Section, targets: tuple[str, ...], catalog: Mapping[str, TaskInfo]
) -> IntermediateSpace:
    if sec.has("tasks"):
        tasks = _task_list(sec.raw("tasks"), "intermediate.tasks", catalog, allow_empty=True)
    else:  # default pool: every intermediate (non-target) task of the catalog
        tasks = tuple(sorted(n for n, info in catalog.items() if not info.is_target))
    smallest = min(len(_pool(tasks, t)) for t in targets)
    max_len = sec.get_int("max_chain_length", min(2, smallest), minimum=0)
    min_len = sec.get_int("min_chain_length", 0, minimum=0)
    if max_len > 0 and not tasks:
        raise UserError(
            f"intermediate.tasks: empty, but max_chain_length is {max_len}; "
            "add tasks or set max_chain_length: 0"
        )
    for t in targets:
        pool = _pool(tasks, t)
        if max_len > len(pool):
            raise UserError(
                f"intermediate.max_chain_length: {max_len} is longer than the {len(pool)} tasks "
                f"{list(pool)} open to target {t!r}; set it <= {len(pool)} or add tasks"
            )
    if min_len > max_len:
        raise UserError(
            f"intermediate.min_chain_length: {min_len} > max_chain_length {max_len}; lower it"
        )
    phase = PhaseSpace(
        lr=_lr(sec.raw("lr", {"low": 1e-4, "high": 3e-3}), "intermediate.lr"),
        steps=_steps(sec.raw("steps", 200), "intermediate.steps"),
    )
    forms_value = sec.raw("forms", ["sequence"])
    if (
        not isinstance(forms_value, list)
        or not forms_value
        or any(f not in ("sequence", "mixture") for f in forms_value)
        or len(set(forms_value)) != len(forms_value)
    ):
        raise UserError(
            f"intermediate.forms: expected a list of sequence and/or mixture, got "
            f"{_short(forms_value)}"
        )
    if "mixture" in forms_value and max_len < 2:
        raise UserError(
            f"intermediate.forms: mixture needs chains of 2 or more tasks, but "
            f"max_chain_length is {max_len}; raise it or drop mixture"
        )
    mix = sec.section("mixture")
    sampling = mix.raw("sampling", "temperature")
    if sampling not in ("proportional", "temperature"):
        raise UserError(
            f"intermediate.mixture.sampling: expected proportional or temperature, got "
            f"{_short(sampling)}"
        )
    cap = mix.raw("size_cap")
    return IntermediateSpace(
        tasks=tasks,
        min_chain_length=min_len,
        max_chain_length=max_len,
        phase=phase,
        forms=tuple(forms_value),
        mixture=MixtureSettings(
            sampling=sampling,
            temperature=mix.get_float("temperature", 2.0, "a number > 0", _positive),
            size_cap=None if cap is None else mix.get_int("size_cap", 0, minimum=1),
        ),
    )


def _target(sec: _Section, targets: tuple[str, ...] = ()) -> TargetSpace:
    default = _target_settings(sec, "target", None)
    tasks = sec.raw("tasks", {})
    if not isinstance(tasks, Mapping):
        raise UserError(
            f"target.tasks: expected a mapping of target name to {{lr, steps, eval_every}}, "
            f"got {_short(tasks)}"
        )
    per_task = []
    for name in tasks:
        if name not in targets:
            raise UserError(
                f"target.tasks.{name}: not a target of this space{_did_you_mean(name, targets)}; "
                f"use one of: {', '.join(targets)}"
            )
        path = f"target.tasks.{name}"
        per_task.append(
            (str(name), _target_settings(_Section(tasks[name], path, _TARGET_KEYS), path, default))
        )
    return dataclasses.replace(default, per_task=tuple(per_task))


_TARGET_KEYS = ("lr", "steps", "eval_every")


def _target_settings(sec: _Section, path: str, base: TargetSpace | None) -> TargetSpace:
    steps = sec.get_int("steps", base.steps if base else 200, minimum=1)
    # 4 rungs by default; a per-target entry keeps the default's rung count
    every = max(1, steps // (base.num_reports if base else 4))
    eval_every = sec.get_int("eval_every", every, minimum=1)
    if eval_every > steps:
        raise UserError(f"{path}.eval_every: {eval_every} > steps {steps}; set eval_every <= steps")
    own = base is None or sec.has("lr")
    lr = _lr(sec.raw("lr", 1e-3), f"{path}.lr") if own or base is None else base.lr
    return TargetSpace(lr=lr, steps=steps, eval_every=eval_every)


def _search(sec: _Section, intermediate: IntermediateSpace, target: TargetSpace) -> SearchSettings:
    seeds_value = sec.raw("seeds", [0])
    if not isinstance(seeds_value, list) or not seeds_value:
        raise UserError(
            f"search.seeds: expected a non-empty list of integers, got {_short(seeds_value)}"
        )
    seeds = tuple(_int(s, "search.seeds", minimum=0) for s in seeds_value)
    if len(set(seeds)) != len(seeds):
        raise UserError(f"search.seeds: duplicates in {list(seeds)}; list each seed once")
    no_baseline = intermediate.min_chain_length > 0
    baseline_first = sec.get_bool("baseline_first", not no_baseline)
    if baseline_first and no_baseline:
        raise UserError(
            "search.baseline_first: true needs intermediate.min_chain_length 0, got "
            f"{intermediate.min_chain_length}; set baseline_first: false or min_chain_length: 0"
        )
    algorithm = _algorithm(sec.raw("algorithm", "tpe"))
    sched = sec.section("scheduler")
    # early stopping judges one run at a time: with several seeds Optuna would average full
    # scores with stopped ones, and a grid is the exhaustive reference; neither stops early
    whole = len(seeds) > 1 or algorithm == "grid"
    kind = sched.raw("type", "none" if whole else "asha")
    if kind not in ("asha", "none"):
        raise UserError(f"search.scheduler.type: expected asha or none, got {_short(kind)}")
    if kind == "asha" and whole:
        why = f"{len(seeds)} seeds" if len(seeds) > 1 else "algorithm: grid"
        raise UserError(
            f"search.scheduler.type: asha with {why} would mix stopped and finished runs; "
            "set scheduler type: none, or use one seed and tpe/random"
        )
    grace = sched.get_int("grace_period", 1, minimum=1)
    if kind == "asha" and grace > target.num_reports:
        raise UserError(
            f"search.scheduler.grace_period: {grace} exceeds the {target.num_reports} reports of "
            f"a trial (ceil(target.steps / eval_every)); lower it or lower target.eval_every"
        )
    race = sec.raw("race_within_sd", 1.0)
    if race is not None:
        race = sec.get_float("race_within_sd", 1.0, "a number >= 0 or null", _non_negative)
    prior = sec.section("prior")
    return SearchSettings(
        prior=PriorSettings(
            experiments=_str_list(
                prior.raw("experiments", []),
                "search.prior.experiments",
                allow_empty=True,
                what="MLflow experiment names",
            ),
            other_targets=prior.get_bool("other_targets", True),
        ),
        race_within_sd=race,
        race_max_seeds=sec.get_int("race_max_seeds", 4, minimum=1),
        neighbour_share=sec.get_float("neighbour_share", 0.5, "a number in [0, 1]", _share),
        num_samples=sec.get_int("num_samples", 6, minimum=1),
        max_concurrent=sec.get_int("max_concurrent", 2, minimum=1),
        seeds=seeds,
        warm_start=_warm_start(sec.raw("warm_start", "textemb")),
        warm_start_chains=sec.get_int("warm_start_chains", 2, minimum=0),
        baseline_first=baseline_first,
        sampler_seed=sec.get_int("sampler_seed", 0, minimum=0),
        algorithm=algorithm,
        scheduler=SchedulerSettings(
            type=kind,
            grace_period=grace,
            reduction_factor=sched.get_float("reduction_factor", 2.0, "a number > 1", _above_one),
        ),
    )


# --------------------------------------------------------------------------- field readers


def _gpus(x: float) -> bool:
    """Ray accepts a fraction of one GPU, or whole GPUs: 1.5 of a GPU is no device."""
    return 0 < x <= 1 or (x > 1 and float(x).is_integer())


def _positive(x: float) -> bool:
    return x > 0


def _non_negative(x: float) -> bool:
    return x >= 0


def _unit(x: float) -> bool:
    return 0 <= x < 1


def _share(x: float) -> bool:
    return 0 <= x <= 1


def _above_one(x: float) -> bool:
    return x > 1


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(word: object, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Section:
    """A YAML mapping at `path` ("" = top level) with only known keys; readers report `path.key`.

    A missing key takes its default; an explicit `null` section is an error, not the defaults
    (`scheduler: null` must not silently mean ASHA).
    """

    def __init__(self, value: Any, path: str, keys: Sequence[str]) -> None:
        if not isinstance(value, Mapping):
            raise UserError(
                f"{path}: expected a mapping with keys {', '.join(keys)}, got {_short(value)}; "
                "omit it to use the defaults"
            )
        for key in value:
            if key not in keys:
                raise UserError(
                    f"{self._join(path, str(key))}: unknown key{_did_you_mean(key, keys)}; "
                    f"allowed{' under ' + path if path else ''}: {', '.join(keys)}"
                )
        self.value, self.path = value, path

    @staticmethod
    def _join(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default)

    def section(self, key: str) -> _Section:
        keys = _SECTION_KEYS[self._join(self.path, key)]
        return _Section(self.value.get(key, {}), self._join(self.path, key), keys)

    def get_int(self, key: str, default: int, *, minimum: int) -> int:
        return _int(self.value.get(key, default), self._join(self.path, key), minimum=minimum)

    def get_float(self, key: str, default: float, what: str, ok: Callable[[float], bool]) -> float:
        return _number(self.value.get(key, default), self._join(self.path, key), what, ok)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.value.get(key, default)
        if not isinstance(value, bool):
            raise UserError(
                f"{self._join(self.path, key)}: expected true or false, got {_short(value)}"
            )
        return value


_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "": (
        *("name", "model", "targets", "languages"),
        *("intermediate", "target", "training", "search", "resources"),
    ),
    "intermediate": (
        *("tasks", "min_chain_length", "max_chain_length", "lr", "steps"),
        *("forms", "mixture"),
    ),
    "intermediate.mixture": ("sampling", "temperature", "size_cap"),
    "target": ("lr", "steps", "eval_every", "tasks"),
    "training": (
        *("batch_size", "max_length", "warmup_ratio", "weight_decay"),
        *("max_device_batch_size", "save_model", "checkpoint", "pos_scheme"),
    ),
    "search": (
        *("num_samples", "max_concurrent", "seeds"),
        *("baseline_first", "sampler_seed", "scheduler", "warm_start", "warm_start_chains"),
        *("algorithm", "race_within_sd", "race_max_seeds", "neighbour_share", "prior"),
    ),
    "search.scheduler": ("type", "grace_period", "reduction_factor"),
    "search.prior": ("experiments", "other_targets"),
    "resources": (
        *("workers_per_trial", "cpus_per_worker", "use_gpu"),
        *("gpus_per_worker", "placement_strategy", "max_failures"),
    ),
}

_PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


POS_SCHEMES = ("pos-seqeval0", "pos")
CHECKPOINT_CHOICES = ("best_en_dev", "last")  # as raystilts.train.checkpointing (torch-free here)


def _one_of(value: Any, path: str, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        raise UserError(
            f"{path}: expected one of {', '.join(choices)}, got {_short(value)}"
            f"{_did_you_mean(value, choices)}"
        )
    return value


def _algorithm(value: Any) -> Literal["tpe", "random", "grid"]:
    if value not in ("tpe", "random", "grid"):
        raise UserError(
            f"search.algorithm: expected tpe, random or grid, got {_short(value)}"
            f"{_did_you_mean(value, ('tpe', 'random', 'grid'))}"
        )
    return value  # type: ignore[no-any-return]


def all_chains(space: SearchSpace, target: str) -> list[tuple[str, ...]]:
    """Every chain of the space for ``target``, shortest first: orders of distinct tasks (when
    ``sequence`` is a form) and, from two tasks on, their mixtures ``("a+b",)``."""
    import itertools

    inter = space.intermediate
    pool = inter.pool_for(target)
    chains: list[tuple[str, ...]] = []
    for n in range(inter.min_chain_length, inter.max_chain_length + 1):
        if n < 2 or "sequence" in inter.forms:
            chains += itertools.permutations(pool, n)
        if n >= 2 and "mixture" in inter.forms:
            chains += [(MIX.join(c),) for c in itertools.combinations(pool, n)]
    return chains


def _warm_start(value: Any) -> Literal["textemb", "none"]:
    if value not in ("textemb", "none"):
        raise UserError(
            f"search.warm_start: expected textemb or none, got {_short(value)}"
            f"{_did_you_mean(value, ('textemb', 'none'))}"
        )
    return value  # type: ignore[no-any-return]


def _placement(value: Any) -> Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]:
    text = str(value).upper() if isinstance(value, str) else value
    if text not in _PLACEMENTS:
        raise UserError(
            f"resources.placement_strategy: expected one of {', '.join(_PLACEMENTS)}, "
            f"got {_short(value)}{_did_you_mean(text, _PLACEMENTS)}"
        )
    return text  # type: ignore[return-value]


def _int(value: Any, path: str, *, minimum: int, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(
            f"{path}: expected {what or f'an integer >= {minimum}'}, got {_short(value)}"
        )
    return value


def _number(value: Any, path: str, what: str, ok: Callable[[float], bool]) -> float:
    """A finite float satisfying `ok`; strings like '1e-4' count (PyYAML reads them as strings)."""
    number = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            number = float(value)
    if not math.isfinite(number) or not ok(number):
        raise UserError(f"{path}: expected {what}, got {_short(value)}")
    return number


def _str_list(value: Any, path: str, *, allow_empty: bool, what: str) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not all(isinstance(v, str) for v in value)
        or not (value or allow_empty)
    ):
        article = "a" if allow_empty else "a non-empty"
        raise UserError(f"{path}: expected {article} list of {what}, got {_short(value)}")
    for i, item in enumerate(value):
        if item in value[:i]:
            raise UserError(f"{path}: {item!r} is listed twice; list it once")
    return tuple(value)


def _task_list(
    value: Any, path: str, catalog: Mapping[str, TaskInfo], *, allow_empty: bool
) -> tuple[str, ...]:
    tasks = _str_list(value, path, allow_empty=allow_empty, what="task names, e.g. [mini_xnli]")
    for task in tasks:
        if task not in catalog:
            raise UserError(
                f"{path}: unknown task {task!r}{_did_you_mean(task, sorted(catalog))}; "
                "run 'raystilts tasks' to list tasks"
            )
    return tasks


def _lr(value: Any, path: str) -> float | FloatRange:
    """A fixed learning rate, or `{low, high, log}` (log defaults to true)."""
    if not isinstance(value, Mapping):
        return _number(value, path, "a number > 0 or a range {low, high, log}", _positive)
    sec = _Section(value, path, ("low", "high", "log"))
    for key in ("low", "high"):
        if not sec.has(key):
            raise UserError(
                f"{path}.{key}: missing; a range needs both, e.g. {{low: 1.0e-4, high: 1.0e-3}}"
            )
    low = sec.get_float("low", 0.0, "a number > 0", _positive)
    high = sec.get_float("high", 0.0, "a number > 0", _positive)
    if low >= high:
        raise UserError(f"{path}: low {low} >= high {high}; set low < high")
    return FloatRange(low=low, high=high, log=sec.get_bool("log", True))


def _steps(value: Any, path: str) -> int | Choice:
    """A fixed number of steps, or `{choices: [...]}`."""
    if not isinstance(value, Mapping):
        return _int(value, path, minimum=1, what="an integer >= 1 or {choices: [100, 200]}")
    choices = _Section(value, path, ("choices",)).raw("choices")
    if not isinstance(choices, list) or not choices:
        raise UserError(
            f"{path}.choices: expected a non-empty list of integers, got {_short(choices)}"
        )
    values = [_int(v, f"{path}.choices", minimum=1) for v in choices]
    if len(set(values)) != len(values):
        raise UserError(f"{path}.choices: duplicates in {values}; list each value once")
    return Choice(values=tuple(sorted(values)))
