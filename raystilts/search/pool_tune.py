"""Ray Tune's view of a :class:`raystilts.search.pool.SearchPool`: one experiment, every target.

    searcher = PoolSearcher(pool)                                  # proposes trials of any target
    scheduler = PerTargetScheduler({"xnli": ASHAScheduler(...), "panx": FIFOScheduler()})
    callback = PerTargetCallback({"xnli": MlflowCallback(...), "panx": MlflowCallback(...)})

A trial's config carries its target (``raystilts.search.pool.TARGET``); every result carries
``SCORE``, the target's own selection metric under one name, because one Tune experiment ranks
on one key while targets are selected on different metrics (accuracy, F1, ...). Each target
keeps its own early-stopping rungs (ASHA's are in that target's steps) and its own MLflow
callback: these classes only route by the trial's target.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from raystilts.search.pool import TARGET, PoolLaunch, PrefixesInTraining, SearchPool
from raystilts.search.searcher import DONE

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = ["SCORE", "PerTargetCallback", "PerTargetScheduler", "PoolSearcher", "target_of"]

# Every result's copy of its target's selection metric (``raystilts.tasks.selection_key``).
SCORE: Final = "selection_score"


def target_of(trial: Trial) -> str:
    return str(trial.config[TARGET])


class PoolSearcher(Searcher):
    """Proposes the pool's next trial (any target) and reports scores back; runs on the driver.
    ``suggest`` returns None to make Tune ask again and ``Searcher.FINISHED`` once every target
    is done. Its state (the pool: every target's Optuna study and seed race) pickles."""

    def __init__(self, pool: SearchPool, *, training: PrefixesInTraining | None = None) -> None:
        self.pool = pool
        self.trials: dict[str, tuple[str, str, int]] = {}  # trial id -> (target, key, seed index)
        # with a pool whose ``blocked`` is ``training``: which trials are still in their prefix
        self.training = training
        super().__init__(metric=SCORE, mode="max")

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        return True  # metric and mode are fixed; the space is the pool's

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        step = self.pool.suggest()
        if step is DONE:
            return Searcher.FINISHED  # type: ignore[return-value]
        if not isinstance(step, PoolLaunch):
            return None
        self.trials[trial_id] = (step.target, step.launch.key, step.launch.index)
        if self.training is not None:
            self.training.started(trial_id, step.target, step.launch)
        return step.config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if self.training is not None:  # a first report comes from the target phase
            self.training.progressed(trial_id)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if self.training is not None:
            self.training.progressed(trial_id)
        if trial_id not in self.trials:
            return
        target, key, index = self.trials[trial_id]
        value = (result or {}).get(SCORE) if not error else None
        score = float(value) if isinstance(value, (int, float)) else math.nan
        self.pool.report(target, key, index, score)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"pool": self.pool, "trials": self.trials, "training": self.training}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class PerTargetScheduler(TrialScheduler):
    """Each trial's events go to its target's scheduler (ASHA rungs are in that target's steps);
    which pending trial runs next is plain FIFO: the searcher already chose the order."""

    def __init__(self, schedulers: Mapping[str, TrialScheduler]) -> None:
        super().__init__()
        self.schedulers = dict(schedulers)
        self.fifo = FIFOScheduler()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        for s in self.schedulers.values():
            s.set_search_properties(metric, mode, **spec)
        self._metric = metric
        return True

    def _of(self, trial: Trial) -> TrialScheduler:
        return self.schedulers.get(target_of(trial), self.fifo)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        return str(self._of(trial).on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        return self.fifo.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return "Per-target scheduling: " + ", ".join(
            f"{t}: {type(s).__name__}" for t, s in self.schedulers.items()
        )


class PerTargetCallback(tune.Callback):
    """Routes each trial's events to its target's callback (one MLflow callback per target);
    the experiment's end goes to all of them. Runs on the driver."""

    def __init__(self, callbacks: Mapping[str, tune.Callback]) -> None:
        self.callbacks = dict(callbacks)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.callbacks[target_of(trial)].on_trial_start(iteration, trials, trial, **info)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[Any, Any], **info: Any
    ) -> None:
        self.callbacks[target_of(trial)].on_trial_result(iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.callbacks[target_of(trial)].on_trial_complete(iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.callbacks[target_of(trial)].on_trial_error(iteration, trials, trial, **info)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for callback in self.callbacks.values():
            callback.on_experiment_end(trials, **info)
