"""The benchmarks' own reference paths: a benchmark whose reference is wrong reports false alarms.

benchmarks/ is not a package: the scripts are loaded from their files, as CI runs them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from raystilts.analysis import best_chains, runs_to_long
from raystilts.tracking import Tracker, default_tracking_uri, load_runs

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scaling() -> Iterator[ModuleType]:
    module = _load("analysis_scaling")
    yield module
    sys.modules.pop(module.__name__, None)


# The shape that made analysis_scaling.py's pandas path disagree with best_chains at full size:
# the best chain finished only seed 2 (ASHA stopped seeds 0 and 1 after a dev report), the
# baseline finished all three seeds, and one baseline test score is NaN. Seed-paired gains use
# the baseline's seed 2 alone; the baseline's mean over seeds 0-2 would give other numbers.
TARGET = "xnli"
CHAIN = f"mnli>{TARGET}"
BASE_TEST = {  # per seed: en, de, sw
    0: {"en": 0.80, "de": 0.60, "sw": 0.40},
    1: {"en": 0.70, "de": 0.50, "sw": 0.30},
    2: {"en": 0.78, "de": float("nan"), "sw": 0.44},
}
CHAIN_TEST_SEED2 = {"en": 0.83, "de": 0.66, "sw": 0.47}
PAIRED_GAINS = {"en": 0.05, "sw": 0.03}  # de: the baseline's seed 2 has no score there


def _trial(
    tracker: Tracker, name: str, chain: str, seed: int, *, dev_en: float, test: dict[str, float]
) -> None:
    *intermediate, target = chain.split(">")
    params = {
        "target": target,
        "chain": chain,
        "intermediate": json.dumps(intermediate),
        "seed": str(seed),
        "metric": "accuracy",
        "config_key": f"key-{chain}",
    }
    run_id = tracker.start_trial(trial_id=name, run_name=name, params=params, tags={})
    tracker.log_metrics(run_id, {f"dev/{target}/en/accuracy": dev_en}, step=1)
    if test:
        tracker.log_metrics(
            run_id, {f"test/{target}/{lang}/accuracy": v for lang, v in test.items()}, step=2
        )
    tracker.end_trial(run_id, status="FINISHED" if test else "KILLED")


def test_scaling_reference_pairs_seeds_like_best_chains(
    tmp_path: Path, scaling: ModuleType
) -> None:
    import mlflow

    tracker = Tracker(tracking_uri=default_tracking_uri(tmp_path), experiment=scaling.EXPERIMENT)
    for seed, test in BASE_TEST.items():
        _trial(tracker, f"b{seed}", TARGET, seed, dev_en=0.70, test=test)
    for seed in (0, 1):  # stopped early with dev scores only: not tested, not paired
        _trial(tracker, f"m{seed}", CHAIN, seed, dev_en=0.90, test={})
    _trial(tracker, "m2", CHAIN, 2, dev_en=0.75, test=CHAIN_TEST_SEED2)

    [ours] = best_chains(
        runs_to_long(load_runs(tracking_uri=tracker.tracking_uri, experiment=scaling.EXPERIMENT))
    )
    assert ours.chain_name == CHAIN and ours.n_paired_seeds == 1
    assert ours.gains == pytest.approx(PAIRED_GAINS)

    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI to child processes: restore the
    # variable as it was (None unsets it), or later tests' searches log to this store
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracker.tracking_uri)
    try:
        frame = mlflow.search_runs(experiment_names=[scaling.EXPERIMENT])
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]
    [theirs] = scaling._pandas_best_chains(frame)
    assert theirs.chain_name == CHAIN and theirs.baseline_config_key == f"key-{TARGET}"
    assert theirs.gains == pytest.approx(PAIRED_GAINS)
    assert scaling._compare([ours], [theirs]) == []
