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
    from ray.job_submission import JobStatus, JobSubmissionClient

    from raystilts.tracking.store import load_runs

    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(model=tiny_model))
    shared = tmp_path / "shared"  # "a directory every node mounts"
    db = tmp_path / "mlflow.db"
    entrypoint = " ".join(
        [
            sys.executable, "-m", "raystilts.cli", "search", str(space),
            "--address", "auto", "--storage-path", str(shared),
            "--workdir", str(tmp_path / "wd"), "--cache-dir", str(tmp_path / "driver-cache"),
            "--tracking-uri", f"sqlite:///{db}", "--data-dir", str(mini_data),
        ]
    )  # fmt: skip
    client = JobSubmissionClient(cluster["DASHBOARD"])
    job = client.submit_job(entrypoint=entrypoint)
    deadline = time.monotonic() + 600
    while client.get_job_status(job) not in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    ):
        assert time.monotonic() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(3)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
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
    assert (shared / "multinode-pool").is_dir()  # Tune's experiment state: one for all targets


POOLED = """
name: pooled
model: {model}
targets: [mini_xnli, mini_udpos]
languages: [en, qab]
intermediate: {{tasks: [mini_mnli], min_chain_length: 0, max_chain_length: 1, lr: 1.0e-3,
               steps: 6}}
target: {{lr: 1.0e-3, steps: 4, eval_every: 2}}
training: {{batch_size: 8, max_length: 32}}
search: {{algorithm: grid, max_concurrent: 2, seeds: [0], scheduler: {{type: none}}}}
resources: {{workers_per_trial: 1, cpus_per_worker: 0.4, use_gpu: false}}
"""


def test_two_targets_share_one_pool_and_train_their_common_prefix_once(
    cluster: dict[str, str], tmp_path: Path, tiny_model: Path, mini_data: Path
) -> None:
    """Each target runs its baseline and mini_mnli>target (one seed: the same prefix for both
    targets). Trials of both targets run together from one pool; of the two chained trials one
    trains the prefix and the other reads it."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from raystilts.tracking.store import load_runs

    space = tmp_path / "space.yaml"
    space.write_text(POOLED.format(model=tiny_model))
    shared, db = tmp_path / "shared", tmp_path / "mlflow.db"
    entrypoint = " ".join(
        [
            sys.executable, "-m", "raystilts.cli", "search", str(space),
            "--address", "auto", "--storage-path", str(shared),
            "--workdir", str(tmp_path / "wd"), "--cache-dir", str(tmp_path / "driver-cache"),
            "--tracking-uri", f"sqlite:///{db}", "--data-dir", str(mini_data),
        ]
    )  # fmt: skip
    client = JobSubmissionClient(cluster["DASHBOARD"])
    job = client.submit_job(entrypoint=entrypoint)
    deadline = time.monotonic() + 600
    while client.get_job_status(job) not in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    ):
        assert time.monotonic() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(3)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    runs = load_runs(tracking_uri=f"sqlite:///{db}", experiment="pooled")
    assert sorted(r.params["target"] for r in runs) == ["mini_udpos"] * 2 + ["mini_xnli"] * 2
    assert all(r.status == "FINISHED" for r in runs)
    import sqlite3

    with sqlite3.connect(db) as con:  # MLflow's own start and end times of the trial runs
        spans = con.execute(
            "SELECT p.value, r.start_time, r.end_time FROM runs r JOIN params p ON p.run_uuid = "
            "r.run_uuid AND p.key = 'target'"
        ).fetchall()
    assert any(  # trials of the two targets ran at the same time
        t1 != t2 and s1 < e2 and s2 < e1 for t1, s1, e1 in spans for t2, s2, e2 in spans
    )
    # the prefix was trained once: one entry in the cache, one run read it instead
    entries = [d for d in (shared / "raystilts-cache" / "prefixes").iterdir() if d.is_dir()]
    assert len(entries) == 1
    chained = [r for r in runs if r.params["chain_length"] == "1"]  # mini_mnli>target
    assert sorted(r.metrics.get("phase0/cached", 0.0) for r in chained) == [0.0, 1.0]


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
