"""A search sent SIGTERM mid-trial (as ``ray job stop``, Slurm or a spot preemption do) stops
cleanly and continues with the command its last line prints.

Clean means: exit code 143, no traceback or C++ stack dump, the running trial's run and the
search's parent run end KILLED (none left RUNNING), and the Ray processes it started are gone
when it exits. The printed ``--resume`` command then finishes the search without retraining the
finished trial. Slow (two searches): run by ``make test`` and CI. Ray runs under its own temp
dir here, so "its processes are gone" does not depend on other Ray instances on the machine.
"""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPACE = """
name: stop
model: {model}
targets: [mini_xnli]
languages: [en, qab]
intermediate: {{tasks: [mini_mnli, mini_ccg], max_chain_length: 1, lr: 1.0e-3, steps: 30}}
target: {{lr: 1.0e-3, steps: 60, eval_every: 10}}
training: {{batch_size: 8, max_length: 32}}
search: {{num_samples: 3, max_concurrent: 1, seeds: [0], scheduler: {{type: none}},
          warm_start: none}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, use_gpu: false}}
"""
CONTINUE = "raystilts: continue with: raystilts "


def _runs(db: Path, kind: str) -> dict[str, tuple[str, str, int | None]]:
    """run id -> (status, outcome tag, end time) of the runs of one ``raystilts.kind``."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT r.run_uuid, r.status, o.value, r.end_time FROM runs r JOIN tags k "
            "ON k.run_uuid = r.run_uuid AND k.key = 'raystilts.kind' AND k.value = ? "
            "LEFT JOIN tags o ON o.run_uuid = r.run_uuid AND o.key = 'raystilts.outcome'",
            (kind,),
        ).fetchall()
    return {run: (status, outcome, end) for run, status, outcome, end in rows}


def _ray_processes(ray_tmp: str) -> list[str]:
    """Command lines of live processes started by the Ray under ``ray_tmp``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if ray_tmp in cmd:
                found.append(f"{proc.name}: {cmd[:200]}")
    return found


def _wait_mid_trial(proc: subprocess.Popen[bytes], db: Path, log: Path) -> None:
    """Until one trial finished and the next one is training."""
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        try:
            trials = _runs(db, "trial").values() if db.exists() else []
        except sqlite3.OperationalError:  # MLflow made the file, not yet its tables
            trials = []
        statuses = [s for s, _, _ in trials]
        if "FINISHED" in statuses and "RUNNING" in statuses:
            time.sleep(3)  # into the trial's training
            return
        time.sleep(1)


def test_sigterm_mid_trial_stops_cleanly_and_the_printed_command_resumes(
    tmp_path: Path, tiny_model: Path, mini_data: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(model=tiny_model))
    db = tmp_path / "mlflow.db"
    ray_tmp = tempfile.mkdtemp(prefix="rs-stop-")  # short: Ray's socket paths have a limit
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmp}
    args = [
        "search", str(space), "--workdir", str(tmp_path / "wd"),
        "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", f"sqlite:///{db}",
        "--data-dir", str(mini_data),
    ]  # fmt: skip
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen([sys.executable, "-m", "raystilts.cli", *args], stdout=out,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
        try:
            _wait_mid_trial(first, db, log)
            first.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` does
            code = first.wait(timeout=180)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 143, text[-3000:]
    assert "Traceback" not in text and "*** SIG" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith(CONTINUE) and last.endswith(" --resume"), text[-3000:]
    time.sleep(2)  # Ray's processes exit on their own once shut down
    assert not _ray_processes(ray_tmp), _ray_processes(ray_tmp)

    trials = _runs(db, "trial")
    assert sorted(s for s, _, _ in trials.values()) == ["FINISHED", "KILLED"]
    assert [o for s, o, _ in trials.values() if s == "KILLED"] == ["interrupted"]
    assert [s for s, _, _ in _runs(db, "search").values()] == ["KILLED"]

    resumed = subprocess.run(
        [sys.executable, "-m", "raystilts.cli", *shlex.split(last.removeprefix(CONTINUE))],
        capture_output=True, text=True, env=env, timeout=1800,  # a loaded 2-core box is slow
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    after = _runs(db, "trial")
    assert [s for s, _, _ in after.values()] == ["FINISHED"] * 3  # one run per trial
    for run, (status, _, end) in trials.items():
        if status == "FINISHED":
            assert after[run][2] == end  # not trained again
    assert [s for s, _, _ in _runs(db, "search").values()] == ["FINISHED"]
