"""A two-target search on one machine: one pool of trials, one Tune experiment, the targets'
common prefix trained once. Slow (Ray start-up): run by ``make test`` and CI. Ray is started and
stopped by the search itself (no ``ray stop``)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPACE = """
name: pooled
model: {model}
targets: [mini_xnli, mini_udpos]
languages: [en, qab]
intermediate: {{tasks: [mini_mnli], min_chain_length: 0, max_chain_length: 1, lr: 1.0e-3,
               steps: 6}}
target: {{lr: 1.0e-3, steps: 4, eval_every: 2}}
training: {{batch_size: 8, max_length: 32}}
search: {{algorithm: grid, max_concurrent: 2, seeds: [0], scheduler: {{type: none}}}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, use_gpu: false}}
"""


def test_two_targets_run_at_once_and_share_their_prefix(
    tmp_path: Path, tiny_model: Path, mini_data: Path
) -> None:
    """Each target runs its baseline and mini_mnli>target (one seed: the same prefix for both
    targets). The first two trials (one per target) run together from one pool; of the two
    chained trials one trains the prefix and the other reads it."""
    from raystilts.tracking.store import load_runs

    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(model=tiny_model))
    db = tmp_path / "mlflow.db"
    out = subprocess.run(
        [
            sys.executable, "-m", "raystilts.cli", "search", str(space),
            "--workdir", str(tmp_path / "wd"), "--cache-dir", str(tmp_path / "cache"),
            "--tracking-uri", f"sqlite:///{db}", "--data-dir", str(mini_data),
        ],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 targets in one pool" in out.stdout
    runs = load_runs(tracking_uri=f"sqlite:///{db}", experiment="pooled")
    assert sorted(r.params["target"] for r in runs) == ["mini_udpos"] * 2 + ["mini_xnli"] * 2
    assert all(r.status == "FINISHED" for r in runs)
    with sqlite3.connect(db) as con:  # MLflow's start and end times of the trial runs
        spans = con.execute(
            "SELECT p.value, r.start_time, r.end_time FROM runs r JOIN params p ON p.run_uuid = "
            "r.run_uuid AND p.key = 'target'"
        ).fetchall()
    assert any(  # trials of the two targets ran at the same time
        t1 != t2 and s1 < e2 and s2 < e1 for t1, s1, e1 in spans for t2, s2, e2 in spans
    )
    prefixes = tmp_path / "wd" / "ray_results" / "raystilts-cache" / "prefixes"
    assert len([d for d in prefixes.iterdir() if d.is_dir()]) == 1  # trained once
    chained = [r for r in runs if r.params["chain_length"] == "1"]  # mini_mnli>target
    assert sorted(r.metrics.get("phase0/cached", 0.0) for r in chained) == [0.0, 1.0]
