"""Two Ray nodes on this machine (``ray start``), a search submitted as a Ray job.

The cluster path end to end, without a cloud: a head and a second node, each with one CPU, a
job that runs ``raystilts search --address auto --storage-path DIR``, trials whose two DDP
workers are placed on different nodes (STRICT_SPREAD). Checks that both nodes trained, that each
read the model and features from its own copy of what the driver published on the storage path,
and that MLflow records and checkpoints are complete. Slow: run by ``make test`` and CI.

The finalizer runs ``ray stop --force``, which stops every Ray process of this user.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAYSTILTS_NODE_CACHE": str(tmp_path_factory.mktemp("node-cache")),
    }
    port, dash = _free_port(), _free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [RAY, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", *common],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [RAY, "start", f"--address=127.0.0.1:{port}", *common],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield {**env, "GCS": f"127.0.0.1:{port}", "DASHBOARD": f"http://127.0.0.1:{dash}"}
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


SPACE = """
name: multinode
model: {model}
targets: [mini_xnli]
languages: [en, qab, qae]
intermediate: {{tasks: [mini_mnli, mini_ccg], max_chain_length: 1, lr: 1.0e-3, steps: 4}}
target: {{lr: 1.0e-3, steps: 4, eval_every: 2}}
training: {{batch_size: 8, max_length: 32, max_device_batch_size: 2, save_model: true}}
search: {{num_samples: 2, max_concurrent: 1, seeds: [0], scheduler: {{type: none}}}}
resources:
  workers_per_trial: 2
  cpus_per_worker: 0.4
  use_gpu: false
  placement_strategy: STRICT_SPREAD   # one worker on each node
"""


def test_job_on_two_nodes_trains_on_both_and_records_everything(
    cluster: dict[str, str], tmp_path: Path, tiny_model: Path, mini_data: Path
) -> None:

    from raystilts.tracking.store import load_runs

    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(model=tiny_model))
    shared = tmp_path / "shared"  # "a directory every node mounts"
    db = tmp_path / "mlflow.db"
    logs = _search_job(cluster, space, shared, db, tmp_path, mini_data, timeout_s=600)
    assert "mini_xnli: 2" in logs  # the driver's summary

    nodes = set(_ray_nodes(cluster["GCS"]))
    assert len(nodes) == 2
    runs = load_runs(tracking_uri=f"sqlite:///{db}", experiment="multinode")
    assert len(runs) == 2 and all(r.status == "FINISHED" for r in runs)
    for r in runs:
        assert set(r.tags["raystilts.worker_nodes"].split(",")) == nodes  # both nodes trained
        for lang in ("en", "qab", "qae"):
            assert 0.0 <= r.metrics[f"test/mini_xnli/{lang}/accuracy"] <= 1.0
        ckpt = Path(r.tags["raystilts.checkpoint_path"])
        assert ckpt.is_relative_to(shared) and (ckpt / "model.safetensors").is_file()
    # each node fetched its own copy of the published model and features, once
    node_cache = Path(cluster["RAYSTILTS_NODE_CACHE"])
    assert {d.name for d in node_cache.iterdir()} == nodes
    for d in node_cache.iterdir():
        assert len(list((d / "models").glob("*/model.safetensors"))) == 1
        assert not (d / "tokenizers").exists()  # the model directory carries its tokenizer
        assert any((d / "features").iterdir())
    assert (shared / "raystilts-cache" / "features").is_dir()
    assert (shared / "multinode-search").is_dir()  # Tune's experiment state (all targets)


POOL_SPACE = """
name: pool2
model: {model}
targets: [mini_xnli, mini_udpos]
languages: [en, qab]
intermediate: {{tasks: [mini_mnli], max_chain_length: 1, lr: 1.0e-3, steps: 6}}
target: {{lr: 1.0e-3, steps: 4, eval_every: 2}}
training: {{batch_size: 8, max_length: 32}}
search: {{algorithm: grid, max_concurrent: 2, seeds: [0], scheduler: {{type: none}}}}
resources: {{workers_per_trial: 1, cpus_per_worker: 0.4, use_gpu: false}}
"""


def test_two_targets_share_the_cluster_and_their_common_prefix_trains_once(
    cluster: dict[str, str], tmp_path: Path, tiny_model: Path, mini_data: Path
) -> None:
    """One Tune run for both targets: trials of both run at the same time on the two nodes,
    and the mini_mnli prefix (same phase, seed and settings for both targets) is trained by
    one trial and loaded by the other."""
    import sqlite3

    from raystilts.tracking.store import load_runs

    space = tmp_path / "space.yaml"
    space.write_text(POOL_SPACE.format(model=tiny_model))
    shared = tmp_path / "shared"
    db = tmp_path / "mlflow.db"
    logs = _search_job(cluster, space, shared, db, tmp_path, mini_data, timeout_s=900)
    assert "2 target(s) in one pool, 2 trials at a time" in logs

    runs = load_runs(tracking_uri=f"sqlite:///{db}", experiment="pool2")
    assert len(runs) == 4 and all(r.status == "FINISHED" for r in runs)  # 2 targets x 2 chains
    chained = [r for r in runs if r.params["chain_length"] == "1"]
    assert {r.params["target"] for r in chained} == {"mini_xnli", "mini_udpos"}
    trained = [r for r in chained if "phase0/train/loss" in r.metrics]
    loaded = [r for r in chained if r.metrics.get("phase0/cached") == 1.0]
    assert len(trained) == 1 and len(loaded) == 1, [r.metrics for r in chained]
    assert sum(r.metrics["prefix_cache/writes"] for r in chained) == 1.0
    claims = shared / "raystilts-cache" / "claims"
    assert claims.is_dir() and not list(claims.glob("*.claim"))  # every claim released
    # trials of both targets ran at the same time (one pool, not one target after another)
    with sqlite3.connect(db) as con:
        spans = con.execute(
            "SELECT t.value, r.start_time, r.end_time FROM runs r JOIN tags t "
            "ON t.run_uuid = r.run_uuid AND t.key = 'raystilts.target'"
        ).fetchall()
    overlap = [
        (a, b)
        for a in spans
        for b in spans
        if a[0] == "mini_xnli" and b[0] == "mini_udpos" and a[1] < b[2] and b[1] < a[2]
    ]
    assert overlap, spans
    assert (shared / "pool2-search").is_dir()  # one Tune experiment for both targets


def _job_client(dashboard: str) -> Any:
    """A job client once the head's dashboard answers: on a loaded machine it comes up seconds
    after `ray start` returns, and the client's first request fails while it is not there."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + 180
    while True:
        try:
            return JobSubmissionClient(dashboard)
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)


def _search_job(
    cluster: dict[str, str],
    space: Path,
    shared: Path,
    db: Path,
    tmp_path: Path,
    mini_data: Path,
    *,
    timeout_s: float,
) -> str:
    """Run `raystilts search SPACE` as a Ray job on the cluster; its logs once it succeeded."""
    from ray.job_submission import JobStatus

    entrypoint = " ".join(
        [
            sys.executable, "-m", "raystilts.cli", "search", str(space),
            "--address", "auto", "--storage-path", str(shared),
            "--workdir", str(tmp_path / "wd"), "--cache-dir", str(tmp_path / "driver-cache"),
            "--tracking-uri", f"sqlite:///{db}", "--data-dir", str(mini_data),
        ]
    )  # fmt: skip
    client = _job_client(cluster["DASHBOARD"])
    job = _submit(client, entrypoint)
    done = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
    deadline = time.monotonic() + timeout_s
    while client.get_job_status(job) not in done:
        assert time.monotonic() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(3)
    logs = str(client.get_job_logs(job))
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    return logs


def _submit(client: Any, entrypoint: str) -> str:
    """Submit once the head's job agent takes jobs: it starts after the dashboard, and until
    then the dashboard answers 500 "No available agent to submit job" (seen in CI under load)."""
    deadline = time.monotonic() + 180
    while True:
        try:
            return str(client.submit_job(entrypoint=entrypoint))
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(3)


def _ray_nodes(gcs: str) -> list[str]:
    """Node list from a separate process (this test process stays out of the cluster)."""
    import json

    code = (
        f"import json, ray; ray.init(address={gcs!r}, log_to_driver=False); "
        "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    return [str(n) for n in json.loads(out.stdout.strip().splitlines()[-1])]
