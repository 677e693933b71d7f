"""A trial whose Ray Train worker is killed mid-chain recovers (for real: SIGKILL).

The worker dies while the target phase trains, after the intermediate phase finished. Ray
Train restarts the worker group (``resources.max_failures``), the chain resumes from its last
completed phase (the prefix cache holds it), and the trial ends FINISHED under the same, single
MLflow run, with ASHA on: its rungs count target steps, so the evaluations the restarted chain
reports again do not push the trial past ASHA's last rung early. Slow: run by ``make test`` and
CI.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPACE = """
name: faults
model: {model}
targets: [mini_xnli]
languages: [en, qab]
intermediate: {{tasks: [mini_mnli], min_chain_length: 1, max_chain_length: 1, lr: 1.0e-3,
               steps: 20}}
target: {{lr: 1.0e-3, steps: 400, eval_every: 100}}
training: {{batch_size: 8, max_length: 32}}
search: {{num_samples: 1, max_concurrent: 1, seeds: [0], scheduler: {{type: asha}},
          baseline_first: false, warm_start: none}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, use_gpu: false, max_failures: 2}}
"""


def _train_workers() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::RayTrainWorker"):
                pids.append(int(proc.name))
    return pids


def test_killed_worker_resumes_from_its_last_phase_under_the_same_run(
    tmp_path: Path, tiny_model: Path, mini_data: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(model=tiny_model))
    db = tmp_path / "mlflow.db"
    prefixes = tmp_path / "wd" / "ray_results" / "raystilts-cache" / "prefixes"
    log = (tmp_path / "search.log").open("w")
    search = subprocess.Popen(
        [sys.executable, "-m", "raystilts.cli", "search", str(space),
         "--workdir", str(tmp_path / "wd"), "--cache-dir", str(tmp_path / "cache"),
         "--tracking-uri", f"sqlite:///{db}", "--data-dir", str(mini_data)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 600
        while not killed:  # once phase 0 is cached, the worker is in the target phase
            assert search.poll() is None, (tmp_path / "search.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "search.log").read_text()[-3000:]
            if list(prefixes.glob("p1-*/manifest.json")):
                time.sleep(2)
                for pid in _train_workers():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.5)
        assert search.wait(timeout=900) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        if search.poll() is None:
            search.kill()
    with sqlite3.connect(db) as con:
        runs = con.execute(
            "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "AND t.key = 'raystilts.kind' AND t.value = 'trial'"
        ).fetchall()
        assert len(runs) == 1 and runs[0][1] == "FINISHED"  # same run, no duplicate
        metrics = dict(
            con.execute(
                "SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (runs[0][0],)
            ).fetchall()
        )
    assert metrics["phase0/cached"] == 1.0  # resumed from the completed phase, not retrained
    assert 0.0 <= metrics["test/mini_xnli/qab/accuracy"] <= 1.0
    assert killed and not set(killed) & set(_train_workers())
