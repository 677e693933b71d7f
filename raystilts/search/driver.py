"""Ray Tune + Optuna over chains, each trial a Ray Train ``TorchTrainer``: the only Ray module.

    summary = run_search(space, settings=SearchRun(workdir=Path("raystilts_runs")))

One Tune run for every target of the search: :class:`PoolSearcher`, Tune's view of the Ray-free
:class:`raystilts.search.pool.SearchPool` (every target's
:class:`raystilts.search.searcher.ChainSearch` under one ``max_concurrent``: an Optuna study per
target over the define-by-run space: chain length, tasks in order, per-phase learning rates; seed
racing; the warm start and the prior of :mod:`raystilts.search.prior`, shared across targets),
proposes trials with their target in the config, :class:`TargetSchedulers` runs each target's own
ASHA on its English dev metric, and each trial is a Tune function that fits a ``TorchTrainer`` (DDP over ``workers_per_trial``
workers; gloo on CPU, NCCL on GPU) running :func:`raystilts.train.runner.run_chain`. MLflow logging
happens on the driver, in a Tune callback, so a killed or stopped trial never leaves its run
RUNNING (the workers never talk to MLflow).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import train, tune
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from raystilts.core import stopping
from raystilts.core.errors import UserError
from raystilts.core.progress import TrialProgress
from raystilts.core.schema import (
    CHAIN_TAG,
    DIVERGED_REASON_TAG,
    OUTCOME_TAG,
    PHASE_SEP,
    SEARCH_TAG,
    SELECTION_SCORE,
    TARGET_TAG,
    TRIAL_ID_TAG,
    parse_metric_key,
)
from raystilts.core.space import SearchSpace, all_chains, chain_from_params
from raystilts.data import TOKENIZER_FILES, needs_of
from raystilts.data import storage as storage_lib
from raystilts.search.pool import TARGET, PoolLaunch, PoolTrials, build_pool
from raystilts.search.prior import (
    Evidence,
    Reranker,
    build_prior,
    evidence_from_runs,
    evidence_from_search,
    rank_tasks,
)
from raystilts.search.searcher import (
    DONE,
    LOCAL_SHARE,
    MAX_DUPLICATES,
    RACE_WITHIN_SD,
    ChainSearch,
    Launch,
    build_search,
    chain_identity,
    config_key,
    neighbour_params,
    neighbours,
    seed_of,
)
from raystilts.tasks import CATALOG, TaskSpec, selection_key, with_labels
from raystilts.tracking import Tracker, load_runs
from raystilts.train.workspace import open_workspace, prepare_workspace

# the search's logic lives in raystilts.search.searcher (no Ray); re-exported under its old names
__all__ = [
    "LOCAL_SHARE",
    "MAX_DUPLICATES",
    "RACE_WITHIN_SD",
    "BaselineKeepingASHA",
    "PoolSearcher",
    "RacingSearcher",
    "SearchRun",
    "TargetSchedulers",
    "chain_identity",
    "config_key",
    "neighbour_params",
    "neighbours",
    "run_search",
    "seed_of",
    "shutdown_ray",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchRun:
    """Where and how a search runs (the space says *what* is searched)."""

    workdir: Path  # Tune state and, by default, the MLflow store
    cache_dir: Path  # model, data and features shared across searches
    tracking_uri: str
    address: str | None = None  # None: start Ray locally
    storage_path: str | None = None  # Tune/Train storage; default <workdir>/ray_results
    data_dir: Path | None = None
    log: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    resume: bool = False  # continue the Tune experiments of an interrupted search


def _task(name: str, data_dir: Path | str | None) -> TaskSpec:
    """The catalog's task with its data-dependent labels (CCG's tag set comes with its files)."""
    return with_labels(CATALOG[name], Path(data_dir) if data_dir else None)


def _needs(space: SearchSpace, data_dir: Path | None) -> set[tuple[TaskSpec, str, str]]:
    """Every (task, split, language) feature set the search's chains read: train splits in each
    training language, English dev of every trained task, dev/test in each evaluated language."""
    needs: set[tuple[TaskSpec, str, str]] = set()
    for name in space.intermediate.tasks:
        needs |= needs_of(_task(name, data_dir), target=False)
    for target in space.targets:
        task = _task(target, data_dir)
        needs |= needs_of(task, target=True, languages=space.languages_for(target))
    return needs


def _train_loop(cfg: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: one chain, reported through ``ray.train.report``."""
    import shutil
    import tempfile

    import torch

    from raystilts.train.prefix_cache import PrefixCache
    from raystilts.train.prefix_claims import PrefixClaims
    from raystilts.train.runner import ChainPlan, Dist, DivergedError, TrainSettings, run_chain

    torch.set_num_threads(int(cfg["threads"]))
    node = ray.get_runtime_context().get_node_id()
    model, store, tok_dir = open_workspace(cfg["workspace"], node=node)
    data_dir = cfg["workspace"].get("data_dir")
    plan = ChainPlan.from_spec(
        cfg["chain"],
        task=lambda name: _task(name, data_dir),
        mixture=cfg["mixture"],
        languages=cfg["languages"],
        seed=cfg["seed"],
    )
    dist = Dist.current()
    # the effective batch (workers x micro-batch x accumulation) stays the space's batch_size
    micro, accum = cfg["training"].accumulation(dist.world_size)
    settings = TrainSettings(
        batch_size=micro,
        grad_accum=accum,
        warmup_ratio=cfg["training"].warmup_ratio,
        weight_decay=cfg["training"].weight_decay,
        checkpoint=cfg["training"].checkpoint,
        pos_scheme=cfg["training"].pos_scheme,
    )
    nodes = [node]
    if dist.world_size > 1:  # which nodes ran this trial, for its MLflow run
        gathered: list[Any] = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, node)
        nodes = gathered
    final_dir = Path(tempfile.mkdtemp(prefix="raystilts-model-")) if cfg["save_model"] else None
    final_step = float(plan.target.steps)
    key = selection_key(plan.target.task)

    def report(metrics: dict[str, float]) -> None:
        out: dict[str, Any] = dict(metrics)
        if key in out:  # the one name Tune's searcher and schedulers read, for every target
            out[SELECTION_SCORE] = out[key]
        checkpoint = None
        if metrics.get("target_step") == final_step:
            out["worker_nodes"] = ",".join(sorted(set(nodes)))
            out["worker_ranks_per_node"] = ",".join(str(nodes.count(n)) for n in sorted(set(nodes)))
            if final_dir is not None and dist.rank == 0:
                for f in tok_dir.iterdir():  # a checkpoint loads with its own tokenizer
                    if f.name in TOKENIZER_FILES and not (final_dir / f.name).exists():
                        shutil.copy2(f, final_dir / f.name)
                checkpoint = train.Checkpoint.from_directory(str(final_dir))
        train.report(out, checkpoint=checkpoint)

    # claims on the storage path: a prefix another trial (any node) is training is waited
    # for, not trained again; the owner is the trial, so a restarted trial takes its own back
    cache = PrefixCache(
        root=cfg["prefix_root"],
        local_dir=storage_lib.node_cache_root() / node / "prefixes",
        claims=PrefixClaims(root=cfg["claims_root"]),
        owner=cfg["owner"],
    )
    try:
        run_chain(
            plan,
            base_model=model,
            store=store,
            settings=settings,
            report=report,
            pad_id=cfg["workspace"]["pad_id"],
            dist=dist,
            final_model_dir=final_dir,
            prefix_cache=cache,
            model_fingerprint=cfg["model_fingerprint"],
        )
    except DivergedError as e:
        # every rank sees the same all-reduced loss, so all of them land here together; the
        # searcher gets the worst score, MLflow records the run as diverged (not the score)
        worst = {key: 0.0, SELECTION_SCORE: 0.0}
        train.report({**worst, "diverged": 1.0, "diverged_reason": str(e)})
    finally:
        cache.close()  # a claim still held (a failed put, a stopped trial): others may train
        if final_dir is not None:
            shutil.rmtree(final_dir, ignore_errors=True)


def _trial(
    config: dict[str, Any],
    *,
    space: SearchSpace,
    workspace: dict[str, Any],
    storage: str,
    threads: int,
    use_gpu: bool,
    prefix_root: str,
    claims_root: str,
    model_fingerprint: str,
) -> None:
    """A Tune function trainable: builds the chain of the config's target (``TARGET``) from
    the sampled params and fits a TorchTrainer."""
    target = str(config[TARGET])
    plan = chain_from_params(config, space, target)
    trial_name = tune.get_context().get_trial_name()
    loop_cfg = {
        "chain": plan,  # a frozen dataclass of task names; the workers resolve the tasks
        "languages": list(space.languages_for(target)),
        "seed": seed_of(config, space),
        "prefix_root": prefix_root,
        "claims_root": claims_root,
        "owner": f"{space.name}/{trial_name}",
        "model_fingerprint": model_fingerprint,
        "training": space.training,  # a frozen dataclass: pickles to the workers
        "mixture": space.intermediate.mixture,
        "save_model": space.training.save_model,
        "workspace": workspace,
        "threads": threads,
    }
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=loop_cfg,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=train.ScalingConfig(
            num_workers=space.resources.workers_per_trial,
            use_gpu=use_gpu,
            resources_per_worker={
                "CPU": space.resources.cpus_per_worker,
                **({"GPU": space.resources.gpus_per_worker} if use_gpu else {}),
            },
            placement_strategy=space.resources.placement_strategy,
        ),
        run_config=train.RunConfig(
            name=f"train-{trial_name}",
            storage_path=storage,
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]
            # a dead worker restarts the chain; completed phases come from the prefix cache
            failure_config=train.FailureConfig(max_failures=space.resources.max_failures),
        ),
    )
    trainer.fit()


class RacingSearcher(Searcher):
    """Ray Tune's view of a :class:`raystilts.search.searcher.ChainSearch`: runs on the Tune driver.

    Maps Tune trial ids to (config, seed index) and passes scores on; the search's logic (the
    sampler, seed racing, duplicates, neighbours, the warm start and the prior) lives in
    :mod:`raystilts.search.searcher`, which ``benchmarks/transfer_tables.py`` drives without Ray.
    ``suggest`` returns None to make Tune ask again (a first seed may still earn its others)
    and ``Searcher.FINISHED`` once the search is done.
    """

    def __init__(self, search: ChainSearch, *, metric: str) -> None:
        self.search = search
        self.trials: dict[str, tuple[str, int]] = {}  # Tune trial id -> (identity, seed index)
        super().__init__(metric=metric, mode="max")

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        return True  # metric and mode are fixed at construction; the space is the search's

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        step = self.search.suggest()
        if step is DONE:
            return Searcher.FINISHED  # type: ignore[return-value]
        if not isinstance(step, Launch):
            return None
        self.trials[trial_id] = (step.key, step.index)
        return step.config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id not in self.trials:
            return
        key, index = self.trials[trial_id]
        value = (result or {}).get(self.metric) if not error else None
        score = float(value) if isinstance(value, (int, float)) else math.nan
        self.search.report(key, index, score)

    def get_state(self) -> dict[str, Any]:
        return {"search": self.search, "trials": self.trials}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:  # the Optuna study (in memory) pickles
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


class PoolSearcher(Searcher):
    """Ray Tune's view of a :class:`raystilts.search.pool.SearchPool`: every target's
    :class:`ChainSearch` in one Tune run, under the pool's one ``max_concurrent``; runs on the
    Tune driver.

    Each suggested config carries its target (``TARGET``), so the trainable, the schedulers
    (:class:`TargetSchedulers`) and the MLflow callback know whose trial it is. Scores are read
    under ``SELECTION_SCORE``, the selection metric of every target under one name. The
    trial-id bookkeeping is :class:`raystilts.search.pool.PoolTrials`, which the cluster
    simulation (``benchmarks/cluster_sim.py``) drives too. ``suggest`` returns None to make
    Tune ask again (a slot waits for a first seed's score or a prefix in training) and
    ``Searcher.FINISHED`` once every target is done.
    """

    def __init__(self, trials: PoolTrials) -> None:
        self.trials = trials
        super().__init__(metric=SELECTION_SCORE, mode="max")

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        return True  # metric and mode are fixed at construction; the space is the pool's

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        step = self.trials.suggest(trial_id)
        if step is DONE:
            return Searcher.FINISHED  # type: ignore[return-value]
        return step.config if isinstance(step, PoolLaunch) else None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.trials.progressed(trial_id)  # past its prefix: launches held for it may go

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        value = (result or {}).get(SELECTION_SCORE) if not error else None
        score = float(value) if isinstance(value, (int, float)) else math.nan
        self.trials.complete(trial_id, score)

    def get_state(self) -> dict[str, Any]:
        return {"trials": self.trials}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:  # the pool with its Optuna studies (in memory)
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


class MlflowCallback(tune.Callback):
    """Runs on the driver: one MLflow run per trial; every exit path ends the run."""

    def __init__(
        self,
        *,
        tracker: Tracker,
        space: SearchSpace,
        parent: str | None = None,
        log: bool = True,
    ) -> None:
        self.tracker = tracker
        self.parent = parent
        self.log = log
        self.space = space
        self.done: dict[str, int] = {}  # per target: trials ended
        self.total: dict[str, int] = {}  # per target: trials at most
        self.progress: dict[str, TrialProgress] = {}
        for target in space.targets:
            samples = (
                len(all_chains(space, target))
                if space.search.algorithm == "grid"
                else space.search.num_samples
            )
            self.total[target] = samples * len(space.search.seeds)
            self.progress[target] = TrialProgress(
                target=target,
                metric=selection_key(CATALOG[target]),
                total=space.target_for(target).steps,
            )
        self.runs: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the callback with its experiment; a restored (--resume) copy reconnects
        # to the same store and experiment and starts with no open runs: a restored trial's
        # run is found again by its trial id (_run_of)
        state = {k: v for k, v in self.__dict__.items() if k != "tracker"}
        where = {"tracking_uri": self.tracker.tracking_uri, "experiment": self.tracker.experiment}
        return state | {"runs": {}, "done": {}, "tracker_at": where}

    def __setstate__(self, state: dict[str, Any]) -> None:
        where = state.pop("tracker_at")
        self.__dict__.update(state)
        self.tracker = Tracker(**where)

    def _params(self, trial: Any) -> dict[str, Any]:
        config = dict(trial.config)
        target = str(config[TARGET])
        plan = chain_from_params(config, self.space, target)
        params: dict[str, Any] = {
            "target": target,
            "chain": plan.name,
            "intermediate": json.dumps(list(plan.tasks)),
            "chain_length": len(plan.phases),
            "seed": seed_of(config, self.space),
            "model": self.space.model,
            "metric": CATALOG[target].metric,
            "target_lr": plan.target.lr,
            "target_steps": plan.target.steps,
            "workers_per_trial": self.space.resources.workers_per_trial,
            "batch_size": self.space.training.batch_size,
        }
        for i, p in enumerate(plan.phases):
            params |= {f"phase{i}_task": p.task, f"phase{i}_lr": p.lr, f"phase{i}_steps": p.steps}
        params["config_key"] = config_key({k: v for k, v in params.items()}, target)
        # scoring conventions, after the key (a space edit is refused on resume anyway)
        params["checkpoint"] = self.space.training.checkpoint
        params["pos_scheme"] = self.space.training.pos_scheme
        return params

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._run_of(trial)

    def _run_of(self, trial: Any) -> str:
        """The trial's MLflow run, opened on first sight: a trial restored by ``--resume`` may
        report before this (new) callback saw it start; its run is found by its trial id."""
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        params = self._params(trial)
        self.runs[trial.trial_id] = self.tracker.start_trial(
            trial_id=trial.trial_id,
            run_name=f"{params['chain']}#{params['seed']}",
            params=params,
            tags={
                TARGET_TAG: params["target"],
                CHAIN_TAG: params["chain"],
                TRIAL_ID_TAG: trial.trial_id,
                SEARCH_TAG: self.space.name,
            },
            parent_run_id=self.parent,
        )
        return self.runs[trial.trial_id]

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if result.get("diverged"):
            return  # a diverged trial's placeholder score is for the searcher only
        run = self._run_of(trial)
        metrics = {
            k: float(v)
            for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and ("/" in k)
        }
        self.tracker.log_metrics(
            run, metrics, step=int(result.get("target_step", result.get("training_iteration", 0)))
        )
        if self.log:  # a live line per running trial (its end line comes from _end)
            target = str(trial.config[TARGET])
            chain = chain_from_params(dict(trial.config), self.space, target).name
            name = f"{chain}#{seed_of(trial.config, self.space)}"
            line = self.progress[target].line(trial.trial_id, name, result)
            if line:
                print(line, flush=True)

    def _end(
        self, trial: Any, status: str, outcome: str, tags: Mapping[str, str] | None = None
    ) -> None:
        target = str(trial.config[TARGET])
        task = CATALOG[target]
        self.progress[target].forget(trial.trial_id)
        run = self.runs.pop(trial.trial_id, None)
        if run is not None:
            self.tracker.end_trial(
                run,
                status=status,  # type: ignore[arg-type]
                tags={**(tags or {}), OUTCOME_TAG: outcome},
            )
        if self.log:  # one progress line per trial (Ray's own logs stay in its session dir)
            last = trial.last_result or {}
            score = None if last.get("diverged") else last.get(selection_key(task))
            shown = (
                f"{'en' if task.has_train else 'avg'} dev {task.metric} {100 * score:.1f}"
                if score is not None
                else "no score"
            )
            chain = chain_from_params(dict(trial.config), self.space, target).name
            self.done[target] = self.done.get(target, 0) + 1
            print(
                f"  [{target} {self.done[target]}/{self.total[target]}] {chain:38s} "
                f"{shown:24s} {outcome}",
                flush=True,
            )

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get("diverged"):
            self._end(
                trial,
                "FAILED",
                "diverged",
                {DIVERGED_REASON_TAG: str(last.get("diverged_reason", ""))[:500]},
            )
            return
        target = str(trial.config[TARGET])
        finished = any(
            (key := parse_metric_key(k)) is not None and key[:2] == ("test", target) for k in last
        )
        where = {  # the nodes that ran it and the saved model (training.save_model)
            f"raystilts.{k}": str(last[k])
            for k in ("worker_nodes", "worker_ranks_per_node", "checkpoint_path")
            if last.get(k)
        }
        self._end(
            trial,
            "FINISHED" if finished else "KILLED",
            "finished" if finished else "stopped_early",
            where,
        )

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED", f"error (see {trial.local_path}/error.txt)")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for trial_id in list(self.runs):
            self.tracker.end_trial(
                self.runs.pop(trial_id), status="KILLED", tags={OUTCOME_TAG: "interrupted"}
            )


_PINNED_API: dict[str, str] = {}  # the State API address this process last pinned


def _init_ray(space: SearchSpace, run: SearchRun, use_gpu: bool) -> None:
    if ray.is_initialized():
        return
    env = {
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0, the legacy reporter prints nothing  # Train's print patch floods logs with datasets' messages
        "TOKENIZERS_PARALLELISM": "false",
        # a loaded machine (or a cold node pulling an image) starts workers slowly: Train's 60 s
        # default turned busy laptops' trials into controller errors
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ.get(
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "900"
        ),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
        **run.extra_env,
    }
    # Tune saves its experiment state at most every 10 s by default; a trial started after the
    # last save is unknown to --resume (its MLflow run stays KILLED and a new trial replaces
    # it). Searches have few, long trials: saving every 2 s costs little.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.update(
        {
            k: env[k]
            for k in (
                "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S",
                "RAY_TRAIN_ENABLE_PRINT_PATCH",
                "RAY_AIR_NEW_OUTPUT",
            )
        }
    )
    if run.address:
        try:
            ray.init(address=run.address, runtime_env={"env_vars": env}, log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            raise UserError(
                f"--address {run.address}: no Ray cluster there ({str(e).splitlines()[0]}); "
                "start one with `ray start --head` or `ray up cluster.yaml`, or drop --address"
            ) from None
        return
    # Locally, trials are limited by max_concurrent; give Ray enough logical CPUs for them and
    # pin torch threads so that concurrent workers share the physical cores instead of fighting.
    need = (
        space.search.max_concurrent
        * space.resources.workers_per_trial
        * space.resources.cpus_per_worker
    )
    # The dashboard stays on (bound to 127.0.0.1): Train V2 under Tune polls its controller
    # through the State API, which the dashboard serves; without it stopped trials leak. Its
    # address is pinned (inherited by the raylet and every worker): otherwise the State API
    # looks for "the" Ray on the machine, and with a second Ray running (another search) it
    # fails with "Found multiple active Ray instances" and trials hang.
    # (RAY_AUTH_MODE, which Ray reads when it is imported, is the CLI's to set: raystilts.cli)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dashboard_port = int(probe.getsockname()[1])
    # Ray's raylet warns "(raylet) WARNING: N PYTHON worker processes have been started ..."
    # once its live workers reach 4x its startup concurrency (= the CPU count: 8 workers on 2
    # cores), and no log level silences it (ray-project/ray#63800). A search's workers are
    # bounded by max_concurrent (Tune's trainable, Train's controller and workers per trial),
    # not the runaway nesting the warning is about, so the local raylet gets the documented
    # RayConfig override, raised to where a search does not reach it.
    os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(_startup_concurrency(need)))
    if os.environ.get("RAY_API_SERVER_ADDRESS") in (None, _PINNED_API.get("address")):
        _PINNED_API["address"] = f"http://127.0.0.1:{dashboard_port}"  # ours, not the user's
        os.environ["RAY_API_SERVER_ADDRESS"] = _PINNED_API["address"]
    ray.init(
        num_cpus=max(os.cpu_count() or 1, int(need + 1)),
        runtime_env={"env_vars": env},
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,  # workers' logs stay in Ray's session dir; trials print one line each
        logging_level=logging.WARNING,  # not "Started a local Ray instance" on every search
    )


def _startup_concurrency(trial_cpus: float) -> int:
    """The local raylet's ``worker_maximum_startup_concurrency`` (``T``): it warns when its live
    Python workers reach ``4 T + 8``. A search holds a handful per concurrent trial CPU (Tune's
    trainable, Train's controller and workers, their state actors), so 16 or twice the trials'
    CPUs keeps a search below it. It also caps how many workers start at once, which the
    search's own concurrency bounds far lower.

    >>> _startup_concurrency(2) >= 16, _startup_concurrency(40) >= 80
    (True, True)
    """
    return max(os.cpu_count() or 1, 16, 2 * math.ceil(trial_cpus))


def _check_address(address: str) -> None:
    """Fail in seconds, not after Ray's minute of retries, when nothing listens at host:port."""
    import socket

    hostport = address.removeprefix("ray://")
    if address == "auto" or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except (OSError, ValueError) as e:
        raise UserError(
            f"--address {address}: nothing answers there ({e}); start a cluster with "
            "`ray start --head` or `ray up cluster.yaml`, or drop --address"
        ) from None


def run_search(space: SearchSpace, *, run: SearchRun) -> dict[str, Any]:
    """Run the search of ``space``, one Tune run for all its targets; returns timing and trial
    counts per target."""
    t0 = time.perf_counter()
    _preflight(space, run)
    tracker = Tracker(
        tracking_uri=run.tracking_uri, experiment=space.name
    )  # fail fast on a bad URI
    if run.resume:
        tracker.close_open_runs()  # the killed driver's RUNNING runs: KILLED, reopened on resume
    # the prior's experiments are read now: a misspelt name is one line before Ray starts
    evidence = _earlier_evidence(space, tracker)
    needs = _needs(space, run.data_dir)
    ws = prepare_workspace(
        model=space.model,
        needs=needs,
        max_length=space.training.max_length,
        cache_dir=run.cache_dir,
        data_dir=run.data_dir,
        log=run.log,
    )
    use_gpu = _local_gpu(space, run)
    _init_ray(space, run, use_gpu)
    stopping.reclaim()  # ray.init's SIGTERM handler aborts the driver; ours stops it cleanly
    if run.address and space.resources.use_gpu == "auto":
        # the driver (a CPU head) says nothing about the cluster: ask the cluster
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        if run.log:
            print(
                f"use_gpu: auto -> {use_gpu} (the cluster has "
                f"{ray.cluster_resources().get('GPU', 0):g} GPUs now; set use_gpu: true or "
                "--gpus-per-worker to wait for autoscaled GPU workers)",
                flush=True,
            )
    storage = run.storage_path or str((run.workdir / "ray_results").resolve())
    # with a storage path, workers on any node fetch model and features through it
    ws_config = ws.share(needs, run.storage_path) if run.storage_path else ws.to_config()
    workers = space.search.max_concurrent * space.resources.workers_per_trial
    threads = (
        max(1, (os.cpu_count() or 1) // workers)
        if not run.address
        else max(1, int(space.resources.cpus_per_worker))
    )
    counts: dict[str, int] = {}
    failed: dict[str, int] = {}
    parent = _start_parent(tracker, space, storage)
    if not run.resume:  # what --resume compares against
        _write_fingerprint(space, storage)
    status, outcome = "FAILED", "error"
    try:
        warm = _warm_start(space, ws, tracker, parent, use_gpu=use_gpu, log=run.log)
        targets = (space, run, tracker, parent, ws_config, storage, threads, use_gpu, warm)
        _run_targets(_Targets(*targets, evidence=list(evidence), counts=counts, failed=failed))
        status, outcome = "FINISHED", "finished"
    except KeyboardInterrupt:
        status, outcome = "KILLED", "interrupted"
        raise
    finally:
        _end_search(tracker, parent, status, outcome, counts, failed)
    return {
        "seconds": time.perf_counter() - t0,
        "trials": counts,
        "failed": failed,
        "experiment": space.name,
        "tracking_uri": tracker.tracking_uri,
        "parent_run_id": parent,  # the CLI puts the answer on it (raystilts.report.answer)
    }


def _end_search(
    tracker: Tracker,
    parent: str,
    status: str,
    outcome: str,
    counts: Mapping[str, int],
    failed: Mapping[str, int],
) -> None:
    """End the parent run with the outcome and trial counts; whatever happened, no run of
    this search stays RUNNING."""
    try:
        tracker.end_search(
            parent,
            status=status,  # type: ignore[arg-type]
            tags={
                OUTCOME_TAG: outcome,
                "raystilts.trials": json.dumps(counts),
                "raystilts.failed": json.dumps(failed),
            },
        )
    finally:
        tracker.close_open_runs()


def _preflight(space: SearchSpace, run: SearchRun) -> None:
    """What can be checked before anything is created: a cluster's storage and address, and
    with --resume that there is a search to resume, of this very space."""
    if run.address and not run.storage_path:
        raise UserError(
            f"--address {run.address}: a cluster's nodes do not share this machine's disk; "
            "pass --storage-path s3://bucket/prefix (or a directory every node mounts)"
        )
    if run.storage_path:
        storage_lib.check(run.storage_path)
    if run.address:
        _check_address(run.address)  # before minutes of tokenization
    if run.resume:  # before anything is created
        storage = run.storage_path or str((run.workdir / "ray_results").resolve())
        if not tune.Tuner.can_restore(_experiment_path(storage, space.name)):
            older = [
                t
                for t in space.targets
                if tune.Tuner.can_restore(_experiment_path(storage, space.name, t))
            ]
            if older:
                raise UserError(
                    f"--resume: search {space.name!r} under {storage} was started by a raystilts "
                    f"that ran one Tune experiment per target ({', '.join(older)}); this one "
                    "runs all targets in one and cannot continue it: finish it with that "
                    "version, or run without --resume (and another --workdir)"
                )
            raise UserError(
                f"--resume: no interrupted search {space.name!r} under {storage}; pass the "
                "--workdir/--storage-path it ran with, or run without --resume"
            )
        _check_fingerprint(space, storage)


def _local_gpu(space: SearchSpace, run: SearchRun) -> bool:
    """Whether trials use GPUs (``use_gpu: auto``: this machine's CUDA); a local machine with
    fewer GPUs than a trial needs is one line here, not a Train that waits forever."""
    import torch

    use_gpu = (
        torch.cuda.is_available()
        if space.resources.use_gpu == "auto"
        else bool(space.resources.use_gpu)
    )
    gpus = space.resources.workers_per_trial * space.resources.gpus_per_worker
    if use_gpu and not run.address and torch.cuda.device_count() < gpus:
        # Train would wait for GPUs forever, silently: say so before anything starts
        raise UserError(
            f"resources.use_gpu: {space.resources.use_gpu} needs {gpus:g} "
            f"GPU(s) per trial, this machine has {torch.cuda.device_count()}; "
            "set use_gpu: auto/false or pass --address of a GPU cluster"
        )
    return use_gpu


def _start_parent(tracker: Tracker, space: SearchSpace, storage: str) -> str:
    """The search's parent run: one per search space (same space, same parent), the trials
    its children."""
    spec = json.dumps(space.to_dict(), sort_keys=True, default=str)
    # one parent run per search space (same space, same parent), the trials its children
    return tracker.start_search(
        search_id=f"{space.name}-{hashlib.sha256(spec.encode()).hexdigest()[:10]}",
        run_name=f"search {space.name}",
        params={
            "targets": json.dumps(list(space.targets)),
            "model": space.model,
            "intermediate_tasks": json.dumps(list(space.intermediate.tasks)),
            "max_chain_length": space.intermediate.max_chain_length,
            "num_samples": space.search.num_samples,
            "seeds": json.dumps(list(space.search.seeds)),
            "workers_per_trial": space.resources.workers_per_trial,
        },
        tags={
            SEARCH_TAG: space.name,
            "raystilts.storage_path": storage,
            "raystilts.space_yaml": space.source_path or "<dict>",  # a tag: paths may differ
        },
    )


def space_fingerprint(space: SearchSpace) -> str:
    """Hash of what a search searches: the space without ``resources`` (a resumed search may
    run on other hardware, e.g. ``--workers-per-trial``) and without where the YAML lives."""
    spec = {k: v for k, v in space.to_dict().items() if k != "resources"}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprint_path(storage: str, name: str) -> str:
    return (
        storage_lib.join(storage, f"{name}-space.json")
        if storage_lib.is_remote(storage)
        else str(Path(storage) / f"{name}-space.json")
    )


def _write_fingerprint(space: SearchSpace, storage: str) -> None:
    """Store the space's fingerprint with the search's Tune experiments (local or URI)."""
    from pyarrow import fs

    blob = json.dumps(
        {"fingerprint": space_fingerprint(space), "source": space.source_path}, sort_keys=True
    ).encode()
    path = _fingerprint_path(storage, space.name)
    if not storage_lib.is_remote(storage):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(blob)
        return
    filesystem, where = fs.FileSystem.from_uri(path)
    filesystem.create_dir(where.rpartition("/")[0], recursive=True)
    with filesystem.open_output_stream(where) as out:
        out.write(blob)


def _check_fingerprint(space: SearchSpace, storage: str) -> None:
    """Refuse to resume a search whose space was edited since it started: the restored trials
    and the new ones would answer different questions under one search."""
    from pyarrow import fs

    path = _fingerprint_path(storage, space.name)
    try:
        if storage_lib.is_remote(storage):
            filesystem, where = fs.FileSystem.from_uri(path)
            with filesystem.open_input_stream(where) as f:
                stored = json.loads(f.read())
        else:
            stored = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return  # a search started before fingerprints were stored: nothing to compare
    now = space_fingerprint(space)
    if stored.get("fingerprint") != now:
        where = space.source_path or f"space {space.name!r}"
        raise UserError(
            f"--resume: {where} changed since search {space.name!r} started (fingerprint "
            f"{stored.get('fingerprint')} then, {now} now); undo the edit to resume, or run "
            "without --resume (and another --workdir to keep the interrupted search)"
        )


def _experiment_name(name: str) -> str:
    """The Tune experiment of search ``name``: one for all its targets."""
    return f"{name}-search"


def _experiment_path(storage: str, name: str, target: str | None = None) -> str:
    """Where Tune keeps the experiment of a search (with ``target``: where raystilts before the
    one pool of targets kept one target's experiment)."""
    experiment = _experiment_name(name) if target is None else f"{name}-{target}"
    if storage_lib.is_remote(storage):
        return storage_lib.join(storage, experiment)
    return str(Path(storage) / experiment)


def _warm_start(
    space: SearchSpace, ws: Any, tracker: Tracker, parent: str, *, use_gpu: bool, log: bool
) -> dict[str, tuple[str, ...]]:
    """Rank each target's intermediate tasks on the base model (TextEmb, raystilts.train.transfer);
    the best ``warm_start_chains`` single-task chains are tried first. Logged on the search run."""
    settings = space.search
    if settings.warm_start == "none" or settings.warm_start_chains == 0:
        return {}
    if settings.algorithm == "grid":  # every chain runs anyway
        return {}
    if space.intermediate.max_chain_length < 1 or space.intermediate.min_chain_length > 1:
        return {}
    import torch

    from raystilts.train.transfer import rank_intermediates

    chosen: dict[str, tuple[str, ...]] = {}
    for target in space.targets:
        pool = space.intermediate.pool_for(target)
        if not pool:
            continue
        ranking = rank_intermediates(
            model_dir=ws.model,
            store=ws.features,
            target=CATALOG[target],
            intermediates=[CATALOG[t] for t in pool],
            pad_id=ws.pad_id,
            # the driver's own device: a CPU head of a GPU cluster embeds on CPU
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        chosen[target] = ranking.order  # the first warm_start_chains go first
        tracker.log_metrics(
            parent,
            {
                **{f"warm_start/{target}/{t}/score": v for t, v in ranking.scores.items()},
                f"warm_start/{target}/seconds": ranking.seconds,
            },
            step=0,
        )
        tracker.set_tags(
            parent,
            {f"raystilts.warm_start.{target}": f"{ranking.method}: " + PHASE_SEP.join(ranking.order)},
        )
        if log:
            print(
                f"{target}: warm start ({ranking.method}, {ranking.seconds:.1f}s) ranks "
                + ", ".join(f"{t} {ranking.scores[t]:.4f}" for t in ranking.order)
                + f"; tries {', '.join(chosen[target][: settings.warm_start_chains])} first",
                flush=True,
            )
    return chosen


@dataclass(slots=True)
class _Targets:
    """What the search's one Tune run shares; ``counts`` and ``failed`` (trials and errored
    trials per target) fill in once it ends."""

    space: SearchSpace
    run: SearchRun
    tracker: Tracker
    parent: str
    ws_config: dict[str, object]
    storage: str
    threads: int
    use_gpu: bool
    warm: Mapping[str, Sequence[str]]
    evidence: list[Evidence]  # the prior's (raystilts.search.prior) from earlier experiments
    counts: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


def _run_targets(ctx: _Targets) -> None:
    """One Tune run for every target: the pool (:func:`raystilts.search.pool.build_pool`) keeps
    ``max_concurrent`` trials of any target running while any target has work; each target
    keeps its own search, ASHA and selection; each target's finished trials join the other
    targets' prior as they finish."""
    space, run = ctx.space, ctx.run
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created" per target
    trainable = _Trainables(ctx)()
    path = _experiment_path(ctx.storage, space.name)
    if run.log:
        for target in space.targets:
            print(
                f"{target}: {space.search.num_samples} trials, selected on "
                f"{selection_key(CATALOG[target])}",
                flush=True,
            )
        print(
            f"{len(space.targets)} target(s) in one pool, {space.search.max_concurrent} "
            "trials at a time",
            flush=True,
        )
    if run.resume and tune.Tuner.can_restore(path):
        # finished trials stay finished; unfinished ones continue; errored ones stay errored
        # the restored RunConfig holds an unpickled copy of the old callback, which
        # reconnects to MLflow on unpickling (MlflowCallback.__setstate__)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True)
        if run.log:
            print(f"resuming {path}", flush=True)
        _fit(ctx, tuner)
        return
    tuner, searches = _new_tuner(ctx, trainable)
    _fit(ctx, tuner)
    if space.search.prior.other_targets and len(space.targets) > 1:
        # the prior as the last trials left it, on the search run (each target's from the others)
        evidence = [*ctx.evidence]
        for search in searches.values():
            evidence += evidence_from_search(search)
        for target in space.targets:
            _target_ranking(
                space, target, ctx.warm.get(target), evidence, ctx.tracker, ctx.parent, False
            )


def _new_tuner(ctx: _Targets, trainable: Any) -> tuple[tune.Tuner, dict[str, ChainSearch]]:
    """The search's Tune experiment, and each target's search in its pool: the same objects
    the tabular replay and the cluster simulation drive."""
    space = ctx.space
    searches = {}
    for target in space.targets:
        ranking, rerank = _target_ranking(
            space, target, ctx.warm.get(target), ctx.evidence, ctx.tracker, ctx.parent, ctx.run.log
        )
        searches[target] = build_search(space, target, ranking=ranking, rerank=rerank)
    pool = build_pool(space, searches, earlier=ctx.evidence, warm=ctx.warm)
    callback = MlflowCallback(tracker=ctx.tracker, space=space, parent=ctx.parent, log=ctx.run.log)
    tuner = tune.Tuner(
        trainable,
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=PoolSearcher(PoolTrials(pool)),  # the pool keeps max_concurrent
            scheduler=TargetSchedulers({t: _scheduler(space, t) for t in space.targets}),
            num_samples=sum(s.num_samples for s in searches.values()) * len(space.search.seeds),
            metric=SELECTION_SCORE,
            mode="max",
        ),
        run_config=tune.RunConfig(
            name=_experiment_name(space.name),
            storage_path=ctx.storage,
            callbacks=[callback],
            verbose=0,
        ),
    )
    return tuner, searches


def _fit(ctx: _Targets, tuner: tune.Tuner) -> None:
    """Run the search's Tune experiment and count its trials per target."""
    with stopping.tune_run():  # SIGTERM/Ctrl-C: Tune saves and stops, then we raise
        grid = tuner.fit()
    ctx.counts.update({t: 0 for t in ctx.space.targets})
    ctx.failed.update({t: 0 for t in ctx.space.targets})
    for i in range(len(grid)):
        result = grid[i]
        target = str((result.config or {}).get(TARGET, ""))
        if target in ctx.counts:
            ctx.counts[target] += 1
            ctx.failed[target] += result.error is not None


class TargetSchedulers(TrialScheduler):
    """The schedulers of every target in one Tune run: each trial goes to its target's
    (``TARGET`` in its config), so ASHA's rungs compare a target's trials only. Trials start
    in the order Tune created them (FIFO), as each scheduler here would start them itself.
    Runs on the Tune driver."""

    def __init__(self, schedulers: Mapping[str, TrialScheduler]) -> None:
        super().__init__()
        self.schedulers = dict(schedulers)
        self._fifo = FIFOScheduler()

    def _of(self, trial: Any) -> TrialScheduler:
        return self.schedulers[str(trial.config[TARGET])]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if not super().set_search_properties(metric, mode, **spec):
            return False
        return all(s.set_search_properties(metric, mode, **spec) for s in self.schedulers.values())

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        return str(self._of(trial).on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        return self._fifo.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return "; ".join(f"{t}: {s.debug_string()}" for t, s in self.schedulers.items())


def _scheduler(space: SearchSpace, target: str) -> Any:
    """ASHA over target steps where the space asks for it and the target trains, else FIFO."""
    # a retrieval target is not trained: nothing to stop early
    if space.search.scheduler.type == "asha" and CATALOG[target].has_train:
        # rungs in target steps, not in reports: a trial whose worker restarted reports
        # its first evaluations again, and a report count would run past max_t
        every = space.target_for(target).eval_every
        return BaselineKeepingASHA(
            space=space,
            target=target,
            time_attr="target_step",
            max_t=space.target_for(target).steps,
            grace_period=space.search.scheduler.grace_period * every,
            reduction_factor=space.search.scheduler.reduction_factor,
        )
    return FIFOScheduler()


class BaselineKeepingASHA(ASHAScheduler):
    """ASHA that never stops the baseline (the empty chain): every gain of the target is
    measured against it, and a baseline stopped early leaves the target with no gains at all.
    Its scores still enter the rungs, so the other trials are judged against it as before."""

    def __init__(self, *, space: SearchSpace, target: str, **asha: Any) -> None:
        super().__init__(**asha)
        self.space = space
        self.target = target

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        action: str = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and self._is_baseline(trial.config):
            return TrialScheduler.CONTINUE
        return action

    def _is_baseline(self, config: Mapping[str, Any]) -> bool:
        return not chain_from_params(dict(config), self.space, self.target).phases


class _Trainables:
    """The trial function of the search (every target's), with what its trials share."""

    def __init__(self, ctx: _Targets) -> None:
        self.ctx = ctx
        storage = ctx.storage
        # chains sharing a prefix train it once, trials on any node reading the same cache
        self.prefix_root, self.claims_root = (
            (
                storage_lib.join(storage, "raystilts-cache", name)
                if storage_lib.is_remote(storage)
                else str(Path(storage) / "raystilts-cache" / name)
            )
            for name in ("prefixes", "claims")
        )
        model = str(ctx.ws_config["model"])
        self.model_fingerprint = (
            storage_lib.content_key(Path(model)) if Path(model).is_dir() else model  # a hub id
        )

    def __call__(self) -> Any:
        ctx = self.ctx
        trainable = tune.with_parameters(
            _trial,
            space=ctx.space,
            workspace=ctx.ws_config,
            storage=ctx.storage,
            threads=ctx.threads,
            use_gpu=ctx.use_gpu,
            prefix_root=self.prefix_root,
            claims_root=self.claims_root,
            model_fingerprint=self.model_fingerprint,
        )
        return tune.with_resources(trainable, {"CPU": 0.01})  # the trial only waits


def _earlier_evidence(space: SearchSpace, tracker: Tracker) -> list[Evidence]:
    """Finished trials of ``search.prior.experiments`` in this search's tracking store.

    Raises:
        UserError: an experiment is not in the store (naming the field and the known ones).
    """
    evidence: list[Evidence] = []
    for name in space.search.prior.experiments:
        try:
            runs = load_runs(tracking_uri=tracker.tracking_uri, experiment=name)
        except UserError as e:
            raise UserError(
                f"search.prior.experiments: {e}; fix the name, or bring a published table in "
                "first (raystilts import TABLE.csv --experiment NAME)"
            ) from None
        evidence += evidence_from_runs(runs)
    return evidence


def _target_ranking(
    space: SearchSpace,
    target: str,
    warm: Sequence[str] | None,
    evidence: Sequence[Evidence],
    tracker: Tracker,
    parent: str,
    log: bool,
) -> tuple[tuple[str, ...] | None, Reranker | None]:
    """The warm start combined with the prior from other targets, and the prior's reranker
    (None without other targets' evidence); logged on the search run."""
    pool = space.intermediate.pool_for(target)
    prior = build_prior(evidence, tasks=pool, target=target)
    ranking = rank_tasks(prior, pool, warm)
    if prior.sources:
        line = prior.describe(pool, warm)
        tracker.set_tags(parent, {f"raystilts.search.prior.{target}": line[:5000]})
        tracker.log_metrics(
            parent,
            {f"prior/{target}/{t}/score": prior.score(t) for t in pool},
            step=0,
        )
        if log:
            print(f"{target}: {line}", flush=True)
    rerank = Reranker(prior, pool, tuple(warm) if warm else None) if prior.sources else None
    return ranking, rerank


def shutdown_ray() -> None:
    """Stop the local Ray (or leave the cluster) if this process started it."""
    if ray.is_initialized():
        ray.shutdown()
