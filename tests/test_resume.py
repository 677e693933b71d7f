"""A search whose driver is killed (SIGKILL, mid-trial) continues with ``--resume``.

Finished trials are not trained again (their MLflow runs keep their end time), unfinished ones
continue under their own run, and no run is left RUNNING or duplicated. Slow (two searches):
run by ``make test`` and CI. The test ends with ``ray stop --force`` to reap the Ray processes
the killed driver left behind (it stops every Ray process of this user).
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
name: resume
model: {model}
targets: [mini_xnli]
languages: [en, qab]
intermediate: {{tasks: [mini_mnli, mini_ccg], max_chain_length: 1, lr: 1.0e-3, steps: 30}}
target: {{lr: 1.0e-3, steps: 30, eval_every: 10}}
training: {{batch_size: 8, max_length: 32}}
search: {{num_samples: 3, max_concurrent: 1, seeds: [0], scheduler: {{type: none}},
          warm_start: none}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, use_gpu: false}}
"""


def _runs(db: Path) -> list[tuple[str, str, str, int | None]]:
    """(trial id, run id, status, end time) of the trial runs."""
    with sqlite3.connect(db) as con:
        return list(
            con.execute(
                "SELECT t.value, r.run_uuid, r.status, r.end_time FROM runs r JOIN tags t "
                "ON t.run_uuid = r.run_uuid AND t.key = 'raystilts.trial_id'"
            )
        )


def test_killed_search_resumes_without_retraining_or_duplicates(
    tmp_path: Path, tiny_model: Path, mini_data: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(model=tiny_model))
    db = tmp_path / "mlflow.db"
    cmd = [
        sys.executable, "-m", "raystilts.cli", "search", str(space),
        "--workdir", str(tmp_path / "wd"), "--cache-dir", str(tmp_path / "cache"),
        "--tracking-uri", f"sqlite:///{db}", "--data-dir", str(mini_data),
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while True:  # kill once one trial has finished and the next one is training
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            try:
                rows = _runs(db) if db.exists() else []
            except sqlite3.OperationalError:  # MLflow made the file, not yet its tables
                rows = []
            if any(s == "FINISHED" for _, _, s, _ in rows) and any(
                s == "RUNNING" for _, _, s, _ in rows
            ):
                time.sleep(5)  # past Tune's next experiment-state save (every 2 s)
                break
            time.sleep(1)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"],
                       capture_output=True, timeout=120, env=env)  # fmt: skip
    before = {trial: (run, status, end) for trial, run, status, end in _runs(db)}
    finished = {t: v for t, v in before.items() if v[1] == "FINISHED"}
    assert finished and any(v[1] == "RUNNING" for v in before.values())

    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env,
                           timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout

    after = _runs(db)
    assert len({t for t, *_ in after}) == len(after) == 3  # one run per trial, no duplicates
    assert all(status in ("FINISHED", "KILLED") for _, _, status, _ in after)
    assert sum(status == "FINISHED" for _, _, status, _ in after) == 3
    by_trial = {t: (run, status, end) for t, run, status, end in after}
    for trial, (run, _, end) in finished.items():
        assert by_trial[trial] == (run, "FINISHED", end)  # not trained again
    for trial, (run, status, _) in before.items():
        if status == "RUNNING":  # the interrupted trial continued under its own run
            assert by_trial[trial][0] == run
    with sqlite3.connect(db) as con:
        kinds = dict(con.execute(
            "SELECT r.status, count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "AND t.key = 'raystilts.kind' AND t.value = 'search' GROUP BY r.status"
        ).fetchall())  # fmt: skip
    assert kinds == {"FINISHED": 1}  # one search run, reopened and finished
