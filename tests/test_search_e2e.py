"""A real search end to end: Ray Tune + OptunaSearch + ASHA, TorchTrainer workers (DDP over gloo),
MLflow on the driver, polars analysis. Slow (Ray start-up): marked, and run by `make test` / CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raystilts.space import load_space_dict
from raystilts.tasks import CATALOG

pytestmark = pytest.mark.slow


def _space(
    model: Path, *, workers: int, seeds: list[int], samples: int, name: str
) -> dict[str, object]:
    return {
        "name": name,
        "model": str(model),
        "targets": ["mini_xnli", "mini_udpos"],
        "languages": ["en", "qab", "qae"],
        "intermediate": {
            "tasks": ["mini_mnli", "mini_ccg"],
            "max_chain_length": 2,
            "lr": {"low": 1e-4, "high": 1e-2},
            "steps": 4,
        },
        "target": {"lr": 1e-3, "steps": 4, "eval_every": 2},
        "training": {"batch_size": 8, "max_length": 32},
        "search": {
            "num_samples": samples,
            "max_concurrent": 2,
            "seeds": seeds,
            "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        },
        "resources": {"workers_per_trial": workers, "cpus_per_worker": 1, "use_gpu": False},
    }


@pytest.fixture(scope="module")
def ray_local():  # type: ignore[no-untyped-def]
    import ray

    yield
    ray.shutdown()


@pytest.mark.parametrize(("workers", "seeds", "samples"), [(1, [1], 3), (2, [0], 3)])
def test_search_logs_every_trial_and_analysis_reads_it(
    workers: int,
    seeds: list[int],
    samples: int,
    tmp_path: Path,
    tiny_model: Path,
    mini_data: Path,
    ray_local: None,
) -> None:
    from raystilts.analysis import best_chains, render, runs_to_long
    from raystilts.search import SearchRun, run_search
    from raystilts.tracking import default_tracking_uri, load_runs

    space = load_space_dict(
        _space(tiny_model, workers=workers, seeds=seeds, samples=samples, name=f"e2e{workers}"),
        catalog=CATALOG,
    )
    uri = default_tracking_uri(tmp_path)
    summary = run_search(
        space,
        run=SearchRun(
            workdir=tmp_path,
            cache_dir=tmp_path / "cache",
            tracking_uri=uri,
            data_dir=mini_data,
            log=False,
        ),
    )
    n = samples
    assert summary["trials"] == {"mini_xnli": n, "mini_udpos": n}

    runs = load_runs(tracking_uri=uri, experiment=f"e2e{workers}")
    assert len(runs) == 2 * n  # one run per trial, no duplicates
    assert len({r.tags["raystilts.trial_id"] for r in runs}) == 2 * n
    by_config: dict[str, set[str]] = {}
    for r in runs:
        by_config.setdefault(r.params["config_key"], set()).add(r.params["seed"])
    assert all(s == {str(x) for x in seeds} for s in by_config.values())  # each config: every seed
    assert all(r.status in ("FINISHED", "KILLED") for r in runs), [
        r.status for r in runs
    ]  # none RUNNING
    baselines = [r for r in runs if r.params["chain_length"] == "0"]
    assert {r.params["target"] for r in baselines} == {"mini_xnli", "mini_udpos"}  # baseline_first
    finished = [r for r in runs if r.status == "FINISHED"]
    assert finished
    for r in finished:
        target = r.params["target"]
        assert r.params["workers_per_trial"] == str(workers)
        for lang in ("en", "qab", "qae"):
            for split in ("dev", "test"):
                assert 0.0 <= r.metrics[f"{split}/{target}/{lang}/accuracy"] <= 1.0
        assert r.tags["raystilts.chain"] == r.params["chain"]
        assert json.loads(r.params["intermediate"]) == r.params["chain"].split(">")[:-1]
    results = best_chains(runs_to_long(runs))
    assert [x.target for x in results] == ["mini_udpos", "mini_xnli"]
    for x in results:
        assert set(x.languages) == {"en", "qab", "qae"}
        assert set(x.baseline) == {"en", "qab", "qae"}
    records = json.loads(render(results, "json"))
    assert {"target", "chain", "languages", "baseline", "gain_avg"} <= records[0].keys()
