"""Tracker and load_runs against a real sqlite store (one database per module: migrations take
about 3 s; every test uses its own experiment)."""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import pytest

from raystilts import tracking
from raystilts.errors import UserError
from raystilts.tracking import Tracker, default_tracking_uri, load_runs

PARAMS = {
    "target": "mini_xnli",
    "chain": "mini_mnli>mini_xnli",
    "intermediate": ["mini_mnli"],
    "chain_length": 1,
    "seed": 0,
    "phase0_lr": 3e-5,
    "config_key": "abc123",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracking")


@pytest.fixture(scope="module")
def uri(workdir: Path) -> str:
    return default_tracking_uri(workdir)


@pytest.fixture
def tracker(uri: str, request: pytest.FixtureRequest) -> Tracker:
    return Tracker(tracking_uri=uri, experiment=request.node.name)


def _start(tracker: Tracker, trial_id: str, **params: object) -> str:
    return tracker.start_trial(
        trial_id=trial_id,
        run_name=f"run {trial_id}",
        params={**PARAMS, **params},
        tags={"raystilts.search": tracker.experiment, "raystilts.target": "mini_xnli"},
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_default_tracking_uri_is_absolute(tmp_path: Path) -> None:
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_trial_lifecycle(tracker: Tracker) -> None:
    run_id = _start(tracker, "t_00000")
    tracker.log_metrics(run_id, {"dev/mini_xnli/en/accuracy": 0.5, "train/loss": 2.0}, step=10)
    tracker.log_metrics(run_id, {"dev/mini_xnli/en/accuracy": 0.75}, step=20)
    tracker.end_trial(run_id, status="FINISHED", tags={"raystilts.outcome": "completed"})

    [record] = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert record.run_id == run_id
    assert record.status == "FINISHED"
    assert record.metrics == {"dev/mini_xnli/en/accuracy": 0.75, "train/loss": 2.0}
    assert record.params["intermediate"] == '["mini_mnli"]'
    assert record.params["seed"] == "0"
    assert record.params["phase0_lr"] == "3e-05"
    assert record.tags["raystilts.trial_id"] == "t_00000"
    assert record.tags["raystilts.outcome"] == "completed"
    assert tracker.finished_trial_ids() == {"t_00000"}


def test_restarted_trial_reuses_its_run(tracker: Tracker) -> None:
    first = _start(tracker, "t_00001")
    tracker.end_trial(first, status="KILLED")
    again = _start(tracker, "t_00001")

    assert again == first
    [record] = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert record.status == "RUNNING"
    assert record.params["config_key"] == "abc123"


def test_restart_with_changed_param_is_a_user_error(tracker: Tracker) -> None:
    tracker.end_trial(_start(tracker, "t_00002"), status="KILLED")
    with pytest.raises(UserError, match=r"phase0_lr='3e-05', now '0.001'"):
        _start(tracker, "t_00002", phase0_lr=1e-3)
    [record] = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert record.status == "KILLED"  # the conflicting restart left the run untouched


def test_close_open_runs_kills_running_runs(tracker: Tracker) -> None:
    done = _start(tracker, "t_done")
    tracker.end_trial(done, status="FINISHED")
    _start(tracker, "t_left1")
    _start(tracker, "t_left2")

    assert tracker.close_open_runs() == 2
    assert tracker.close_open_runs() == 0
    records = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    by_trial = {r.tags["raystilts.trial_id"]: r for r in records}
    assert by_trial["t_done"].status == "FINISHED"
    for trial in ("t_left1", "t_left2"):
        assert by_trial[trial].status == "KILLED"
        assert by_trial[trial].tags["raystilts.outcome"] == "interrupted"
    assert tracker.finished_trial_ids() == {"t_done"}


def test_nan_metric_is_logged(tracker: Tracker) -> None:
    run_id = _start(tracker, "t_nan")
    tracker.log_metrics(run_id, {"dev/mini_xnli/en/accuracy": math.nan}, step=1)
    [record] = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert math.isnan(record.metrics["dev/mini_xnli/en/accuracy"])


def test_load_runs_paginates(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "_PAGE_SIZE", 2)
    ids = [_start(tracker, f"t_page{i}") for i in range(5)]
    records = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert sorted(r.run_id for r in records) == sorted(ids)


def test_artifacts_land_beside_the_database(
    tracker: Tracker, workdir: Path, tmp_path: Path
) -> None:
    (tmp_path / "report.txt").write_text("hello")
    run_id = _start(tracker, "t_art")
    tracker.log_artifacts(run_id, tmp_path)
    stored = list((workdir / "mlartifacts" / tracker.experiment).rglob("report.txt"))
    assert [p.read_text() for p in stored] == ["hello"]


def test_unknown_experiment_lists_known_ones(tracker: Tracker) -> None:
    with pytest.raises(UserError, match=r"experiment 'nope' not found in sqlite:.*known: .*"):
        load_runs(tracking_uri=tracker.tracking_uri, experiment="nope")


def test_missing_sqlite_database(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_runs(tracking_uri=default_tracking_uri(tmp_path), experiment="x")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("call", ["tracker", "load_runs"])
def test_unreachable_server_fails_fast_on_one_line(call: str) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(UserError) as info:
        if call == "tracker":
            Tracker(tracking_uri=uri, experiment="x")
        else:
            load_runs(tracking_uri=uri, experiment="x")
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"tracking URI {uri} unreachable (")
    assert message.endswith("start the server or pass --tracking-uri sqlite:///path/mlflow.db")
