"""Tracker and load_runs against a real sqlite store (one database per module: migrations take
about 3 s; every test uses its own experiment)."""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from raystilts.core.errors import UserError
from raystilts.tracking import store as tracking
from raystilts.tracking.store import (
    KIND_TAG,
    PARENT_RUN_TAG,
    SEARCH_ID_TAG,
    RunRecord,
    Tracker,
    TrialStatus,
    default_tracking_uri,
    load_runs,
)

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


def _comparable(records: Sequence[RunRecord]) -> list[tuple[object, ...]]:
    """RunRecords as tuples where NaN equals NaN (dataclass equality says nan != nan)."""
    return [
        (
            r.run_id,
            r.status,
            r.params,
            r.tags,
            {k: "nan" if math.isnan(v) else v for k, v in r.metrics.items()},
        )
        for r in records
    ]


def _start_search(tracker: Tracker, search_id: str = "s1", **params: object) -> str:
    return tracker.start_search(
        search_id=search_id,
        run_name=f"search {search_id}",
        params={"num_samples": 4, "targets": ["mini_xnli"], **params},
        tags={"raystilts.search": tracker.experiment},
    )


def test_search_parent_with_trial_children(tracker: Tracker) -> None:
    parent = _start_search(tracker)
    children = [
        tracker.start_trial(
            trial_id=f"t_child{i}",
            run_name=f"child {i}",
            params={**PARAMS, "seed": i},
            tags={"raystilts.target": "mini_xnli", "raystilts.chain": str(PARAMS["chain"])},
            parent_run_id=parent,
        )
        for i in range(2)
    ]
    for child in children:
        tracker.log_metrics(child, {"test/mini_xnli/qaa/accuracy": 0.4}, step=1)
        tracker.end_trial(child, status="FINISHED")
    tracker.end_search(parent, status="FINISHED", tags={"raystilts.outcome": "completed"})

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags[KIND_TAG] == "search"
    assert parent_run.data.tags[SEARCH_ID_TAG] == "s1"
    assert parent_run.data.tags["raystilts.outcome"] == "completed"
    assert parent_run.data.params == {"num_samples": "4", "targets": '["mini_xnli"]'}
    for child in children:
        tags = client.get_run(child).data.tags
        assert tags[PARENT_RUN_TAG] == parent
        assert tags[KIND_TAG] == "trial"
    records = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert sorted(r.run_id for r in records) == sorted(children)
    assert tracker.finished_trial_ids() == {"t_child0", "t_child1"}


def test_resumed_search_reuses_and_reopens_its_parent(tracker: Tracker) -> None:
    first = _start_search(tracker)
    tracker.end_search(first, status="FINISHED")
    other = _start_search(tracker, search_id="s2")
    again = _start_search(tracker)

    assert again == first != other
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    assert client.get_run(first).info.status == "RUNNING"
    with pytest.raises(UserError, match=r"search s1 already logged param num_samples='4', now '8'"):
        _start_search(tracker, num_samples=8)
    with pytest.raises(ValueError, match="search id 's 1' must match"):
        _start_search(tracker, search_id="s 1")


def test_close_open_runs_covers_parents(tracker: Tracker) -> None:
    parent = _start_search(tracker)
    child = tracker.start_trial(
        trial_id="t_orphan", run_name="orphan", params=PARAMS, tags={}, parent_run_id=parent
    )
    assert tracker.close_open_runs() == 2
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    for run_id in (parent, child):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags["raystilts.outcome"] == "interrupted"


def test_log_summary_is_a_finished_run_with_artifacts(
    tracker: Tracker, workdir: Path, tmp_path: Path
) -> None:
    (tmp_path / "table.txt").write_text("best chains")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "gains.csv").write_text("lang,gain\n")
    parent = _start_search(tracker)
    run_id = tracker.log_summary(
        run_name="report",
        local_dir=tmp_path,
        tags={"raystilts.search": tracker.experiment, PARENT_RUN_TAG: parent},
        metrics={"gain/mini_xnli/avg/accuracy": 0.02},
    )
    run = MlflowClient(tracking_uri=tracker.tracking_uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "report"
    assert run.data.tags[KIND_TAG] == "summary"
    assert run.data.tags[PARENT_RUN_TAG] == parent
    assert run.data.metrics == {"gain/mini_xnli/avg/accuracy": 0.02}
    stored = workdir / "mlartifacts" / tracker.experiment / run_id / "artifacts"
    assert sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*.*")) == [
        "plots/gains.csv",
        "table.txt",
    ]
    assert load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment) == []
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        tracker.log_summary(run_name="r", local_dir=tmp_path / "missing", tags={})


def test_runs_without_kind_tag_count_as_trials(tracker: Tracker) -> None:
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    old = client.create_run(tracker.experiment_id, run_name="from an old store").info.run_id
    _start_search(tracker)
    [record] = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert record.run_id == old
    assert KIND_TAG not in record.tags


def _varied_store(tracker: Tracker) -> None:
    """Runs that exercise every corner the sqlite reader must agree with MLflow on."""
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    parent = _start_search(tracker)
    key = "dev/mini_xnli/en/accuracy"
    base_ms = 1_700_000_000_000
    runs = []
    statuses: list[TrialStatus | None] = ["FINISHED", "KILLED", "FAILED", None, "FINISHED"]
    for i, status in enumerate(statuses):
        run_id = tracker.start_trial(
            trial_id=f"t_var{i}",
            run_name=f"var {i}",
            params={**PARAMS, "seed": i, "note": "x" * 500},
            tags={"raystilts.target": "mini_xnli", "raystilts.chain": str(PARAMS["chain"])},
            parent_run_id=parent,
        )
        runs.append(run_id)
        if status is not None:  # None: left RUNNING
            tracker.end_trial(run_id, status=status, tags={"raystilts.outcome": status.lower()})
    # Latest value: highest step wins even when logged earlier; on a tie the newest timestamp,
    # then the largest value.
    client.log_batch(
        runs[0],
        metrics=[
            Metric(key, 0.9, base_ms, 20),
            Metric(key, 0.1, base_ms + 5, 10),
            Metric("test/mini_xnli/qaa/accuracy", 0.3, base_ms, 7),
            Metric("test/mini_xnli/qaa/accuracy", 0.2, base_ms + 1, 7),
            Metric("test/mini_xnli/qab/accuracy", 0.3, base_ms, 7),
            Metric("test/mini_xnli/qab/accuracy", 0.5, base_ms, 7),
        ],
        synchronous=True,
    )
    tracker.log_metrics(runs[1], {key: math.nan, "test/mini_xnli/qaa/f1": math.inf}, step=3)
    tracker.log_metrics(runs[1], {"test/mini_xnli/qaa/accuracy": -math.inf}, step=3)
    tracker.log_metrics(runs[2], {key: 0.5}, step=1)
    tracker.log_metrics(runs[2], {key: math.nan}, step=2)  # a later NaN is the latest value
    client.log_batch(runs[3], params=[Param("extra", "")], tags=[RunTag("empty", "")])
    client.delete_run(runs[4])  # deleted runs are left out
    tracker.end_search(parent, status="FINISHED")
    # Another experiment in the same store must not leak in.
    other = Tracker(tracking_uri=tracker.tracking_uri, experiment=f"{tracker.experiment}_other")
    other.start_trial(trial_id="t_var0", run_name="other", params=PARAMS, tags={})


def test_sqlite_reader_matches_the_client(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    _varied_store(tracker)
    db_path = tracking._sqlite_path(tracker.tracking_uri)
    assert db_path is not None
    fast = tracking._load_runs_sqlite(
        db_path, uri=tracker.tracking_uri, experiment=tracker.experiment
    )
    slow = tracking._load_runs_client(tracker.tracking_uri, tracker.experiment)

    assert _comparable(fast) == _comparable(slow)
    assert len(fast) == 5  # the search parent and four trials; the deleted run is gone
    by_trial = {r.tags.get("raystilts.trial_id", "parent"): r for r in fast}
    first = by_trial["t_var0"]
    assert first.metrics["dev/mini_xnli/en/accuracy"] == 0.9
    assert first.metrics["test/mini_xnli/qaa/accuracy"] == 0.2
    assert first.metrics["test/mini_xnli/qab/accuracy"] == 0.5
    assert math.isnan(by_trial["t_var2"].metrics["dev/mini_xnli/en/accuracy"])
    assert by_trial["t_var3"].status == "RUNNING"
    with caplog.at_level(logging.WARNING, logger="raystilts.tracking.store"):
        public = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert caplog.records == []  # the fast path was taken
    assert _comparable(public) == _comparable([r for r in fast if r.tags[KIND_TAG] == "trial"])


def test_unexpected_schema_falls_back_to_the_client(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _varied_store(tracker)
    expected = _comparable(
        load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    )
    monkeypatch.setitem(tracking._SQLITE_COLUMNS, "runs", ("run_uuid", "status", "renamed"))
    with caplog.at_level(logging.WARNING, logger="raystilts.tracking.store"):
        records = load_runs(tracking_uri=tracker.tracking_uri, experiment=tracker.experiment)
    assert _comparable(records) == expected
    [warning] = caplog.messages
    assert "through MlflowClient (slower)" in warning
    assert "table 'runs' lacks column(s) renamed" in warning


@pytest.mark.parametrize("reader", ["sqlite", "client"])
def test_deleted_experiment_is_unknown_in_both_readers(tracker: Tracker, reader: str) -> None:
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    gone = Tracker(tracking_uri=tracker.tracking_uri, experiment=f"{tracker.experiment}_gone")
    client.delete_experiment(gone.experiment_id)
    with pytest.raises(UserError, match=r"experiment '.*_gone' not found in sqlite:") as info:
        if reader == "sqlite":
            db_path = tracking._sqlite_path(tracker.tracking_uri)
            assert db_path is not None
            tracking._load_runs_sqlite(
                db_path, uri=tracker.tracking_uri, experiment=gone.experiment
            )
        else:
            tracking._load_runs_client(tracker.tracking_uri, gone.experiment)
    known = str(info.value).partition("known: ")[2].split(", ")
    assert tracker.experiment in known
    assert gone.experiment not in known


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bogus://x", "unknown scheme 'bogus'"),
        ("file:///tmp/x", "file store is retired"),
    ],
)
def test_unusable_tracking_uris_are_one_line(uri: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as e:
        Tracker(tracking_uri=uri, experiment="x")
    assert len(str(e.value).splitlines()) == 1


def test_an_empty_experiment_name_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="experiment name is empty"):
        Tracker(tracking_uri=default_tracking_uri(tmp_path), experiment=" ")
