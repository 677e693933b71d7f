"""A real search end to end: Ray Tune + OptunaSearch + ASHA, TorchTrainer workers (DDP over gloo),
MLflow on the driver, polars analysis. Slow (Ray start-up): marked, and run by `make test` / CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raystilts.core.space import load_space_dict
from raystilts.tasks.catalog import CATALOG

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
            # ASHA where it applies (one seed); several seeds run whole (the space says so)
            "scheduler": (
                {"type": "asha", "grace_period": 1, "reduction_factor": 2}
                if len(seeds) == 1
                else {"type": "none"}
            ),
        },
        "resources": {"workers_per_trial": workers, "cpus_per_worker": 1, "use_gpu": False},
    }


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import os

    import ray

    # workers copy what a search publishes on its storage path here (set before Ray starts)
    node_cache = tmp_path_factory.mktemp("node-cache")
    old = os.environ.get("RAYSTILTS_NODE_CACHE")
    os.environ["RAYSTILTS_NODE_CACHE"] = str(node_cache)
    yield node_cache
    ray.shutdown()
    if old is None:
        os.environ.pop("RAYSTILTS_NODE_CACHE")
    else:
        os.environ["RAYSTILTS_NODE_CACHE"] = old


@pytest.mark.parametrize(("workers", "seeds", "samples"), [(1, [0, 1], 2), (2, [0], 3)])
def test_search_logs_every_trial_and_analysis_reads_it(
    workers: int,
    seeds: list[int],
    samples: int,
    tmp_path: Path,
    tiny_model: Path,
    mini_data: Path,
    ray_local: Path,
) -> None:
    """With 2 workers the search also goes through a storage URI (file://, as s3:// would),
    accumulates gradients (micro-batches of 2) and saves each finished trial's model."""
    from raystilts.analysis.tables import best_chains, render, runs_to_long
    from raystilts.search.driver import SearchRun, run_search
    from raystilts.tracking.store import default_tracking_uri, load_runs

    raw = _space(tiny_model, workers=workers, seeds=seeds, samples=samples, name=f"e2e{workers}")
    shared = workers > 1
    if shared:
        raw["training"] = {
            "batch_size": 8,
            "max_length": 32,
            "max_device_batch_size": 2,
            "save_model": True,
        }
    space = load_space_dict(raw, catalog=CATALOG)
    uri = default_tracking_uri(tmp_path)
    bucket = tmp_path / "bucket"
    summary = run_search(
        space,
        run=SearchRun(
            workdir=tmp_path,
            cache_dir=tmp_path / "cache",
            tracking_uri=uri,
            data_dir=mini_data,
            storage_path=f"file://{bucket}" if shared else None,
            log=False,
        ),
    )
    # seeds are raced (raystilts.core.racing): every config runs its first seed, and the others only
    # when it is within reach of the best; the first config (the baseline) always runs them all
    runs = load_runs(tracking_uri=uri, experiment=f"e2e{workers}")
    n = len(runs)
    assert sum(summary["trials"].values()) == n  # one run per trial, no duplicates
    assert len({r.tags["raystilts.trial_id"] for r in runs}) == n
    by_config: dict[tuple[str, str], set[str]] = {}
    for r in runs:
        by_config.setdefault((r.params["target"], r.params["config_key"]), set()).add(
            r.params["seed"]
        )
    assert len(by_config) == 2 * samples  # num_samples distinct configs per target
    every, first = {str(x) for x in seeds}, {str(seeds[0])}
    assert all(s in (every, first) for s in by_config.values())
    for r in runs:
        if r.params["chain_length"] == "0":
            assert by_config[(r.params["target"], r.params["config_key"])] == every
    assert 2 * (samples + len(seeds) - 1) <= n <= 2 * samples * len(seeds)
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

    # the search is a parent run with every trial as its child (the MLflow UI nests them)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(f"e2e{workers}")
    assert exp is not None
    every = client.search_runs([exp.experiment_id])
    parents = [r for r in every if r.data.tags.get("raystilts.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # the warm start ranked the pool on the base model and is recorded on the search run
    for target in ("mini_xnli", "mini_udpos"):
        order = parents[0].data.tags[f"raystilts.warm_start.{target}"]
        assert order.startswith("textemb-cosine: ")
        assert set(order.split(": ")[1].split(">")) == {"mini_mnli", "mini_ccg"}
        assert parents[0].data.metrics[f"warm_start/{target}/seconds"] > 0
    for r in finished:  # every trial went through the prefix cache
        if r.params["chain_length"] != "0":
            assert r.metrics["prefix_cache/phases_requested"] >= 1
    assert {r.run_id for r in runs} == {
        r.info.run_id
        for r in every
        if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    }
    for r in finished:
        nodes = r.tags["raystilts.worker_nodes"].split(",")
        assert len(nodes) == 1  # one local node
        assert r.tags["raystilts.worker_ranks_per_node"] == str(workers)
    if shared:  # workers read the node's copy of what the driver published, not its cache
        node_dirs = list(ray_local.iterdir())
        assert [d.name for d in node_dirs] == [nodes[0]]
        assert any((node_dirs[0] / "features").iterdir())
        assert (bucket / "raystilts-cache" / "features").is_dir()
        claims = bucket / "raystilts-cache" / "claims"  # the prefix cache's turns, on the URI
        assert claims.is_dir() and not list(claims.glob("*.claim"))  # all released
        for r in finished:
            ckpt = Path(r.tags["raystilts.checkpoint_path"].removeprefix("file://"))
            assert ckpt.is_relative_to(bucket), ckpt
            assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
            assert (ckpt / "tokenizer.json").is_file()  # loads on its own
    else:
        assert all("raystilts.checkpoint_path" not in r.tags for r in runs)


def test_diverging_trial_is_recorded_and_the_search_goes_on(
    tmp_path: Path, tiny_model: Path, mini_data: Path, ray_local: Path
) -> None:
    """A learning rate that turns the loss into NaN: the trial ends FAILED with outcome
    ``diverged`` and no fake scores in MLflow; the other trial of the search finishes."""
    from raystilts.search.driver import SearchRun, run_search
    from raystilts.tracking.store import default_tracking_uri, load_runs

    raw = _space(tiny_model, workers=1, seeds=[0], samples=2, name="nan")
    raw["targets"] = ["mini_xnli"]
    raw["intermediate"] = {"tasks": ["mini_mnli"], "max_chain_length": 1, "lr": 1e30, "steps": 4}
    raw["search"] = {
        "num_samples": 2,
        "max_concurrent": 1,
        "seeds": [0],
        "scheduler": {"type": "none"},
    }
    space = load_space_dict(raw, catalog=CATALOG)
    uri = default_tracking_uri(tmp_path)
    summary = run_search(
        space,
        run=SearchRun(
            workdir=tmp_path, cache_dir=tmp_path / "cache", tracking_uri=uri, data_dir=mini_data,
            log=False,
        ),
    )  # fmt: skip
    assert summary["trials"] == {"mini_xnli": 2}
    runs = {r.params["chain"]: r for r in load_runs(tracking_uri=uri, experiment="nan")}
    assert set(runs) == {"mini_xnli", "mini_mnli>mini_xnli"}
    bad, good = runs["mini_mnli>mini_xnli"], runs["mini_xnli"]
    assert bad.status == "FAILED" and bad.tags["raystilts.outcome"] == "diverged"
    assert "mini_mnli" in bad.tags["raystilts.diverged_reason"]
    assert not any(k.startswith(("dev/", "test/")) for k in bad.metrics)
    assert good.status == "FINISHED" and "test/mini_xnli/qab/accuracy" in good.metrics


def test_grid_search_with_a_mixture_runs_every_chain(
    tmp_path: Path, tiny_model: Path, mini_data: Path, ray_local: Path
) -> None:
    """search.algorithm: grid runs every chain of the space once, a mixed phase included,
    through Ray Train; the mixture's runs are named a+b>target and carry per-task dev scores."""
    from raystilts.search.driver import SearchRun, run_search
    from raystilts.tracking.store import default_tracking_uri, load_runs

    raw = _space(tiny_model, workers=1, seeds=[0], samples=1, name="grid")
    raw["targets"] = ["mini_xnli"]
    raw["intermediate"] = {
        "tasks": ["mini_mnli", "mini_ccg"],
        "max_chain_length": 2,
        "forms": ["mixture"],
        "mixture": {"sampling": "proportional"},
        "lr": 1e-3,
        "steps": 4,
    }
    raw["search"] = {"algorithm": "grid", "max_concurrent": 2, "scheduler": {"type": "none"}}
    space = load_space_dict(raw, catalog=CATALOG)
    uri = default_tracking_uri(tmp_path)
    summary = run_search(
        space,
        run=SearchRun(
            workdir=tmp_path, cache_dir=tmp_path / "cache", tracking_uri=uri, data_dir=mini_data,
            log=False,
        ),
    )  # fmt: skip
    assert summary["trials"] == {"mini_xnli": 4}
    runs = {r.params["chain"]: r for r in load_runs(tracking_uri=uri, experiment="grid")}
    assert set(runs) == {
        "mini_xnli",
        "mini_mnli>mini_xnli",
        "mini_ccg>mini_xnli",
        "mini_ccg+mini_mnli>mini_xnli",
    }
    mixed = runs["mini_ccg+mini_mnli>mini_xnli"]
    assert mixed.status == "FINISHED"
    assert json.loads(mixed.params["intermediate"]) == ["mini_ccg+mini_mnli"]
    for task in ("mini_ccg", "mini_mnli"):
        assert 0.0 <= mixed.metrics[f"phase0/dev_en/{task}"] <= 1.0
