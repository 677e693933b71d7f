"""The answer on the search's parent run (raystilts.report.answer) and the UI link, on a real sqlite
MLflow store of hand-computable runs (tests/test_analysis.py's issue-5 runs)."""

from __future__ import annotations

from pathlib import Path

from test_analysis import MNLI, XNLI, issue5_runs, write_store

from raystilts.report.answer import publish_answer
from raystilts.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    Tracker,
    default_tracking_uri,
    ui_url,
)


def test_parent_run_carries_best_chains_and_report(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = write_store(tmp_path, issue5_runs(), "answer")
    tracker = Tracker(tracking_uri=uri, experiment="answer")  # an experiment made elsewhere
    parent = tracker.start_search(search_id="answer-1", run_name="search answer", params={},
                                  tags={})  # fmt: skip
    files = publish_answer(tracking_uri=uri, experiment="answer", parent_run_id=parent)
    assert {"report.html", "report.md", "analysis.json", "heatmap.png"} <= set(files)

    client = MlflowClient(tracking_uri=uri)
    note = client.get_run(parent).data.tags[NOTE_TAG]
    assert f"**{XNLI}**: `{MNLI}`" in note  # the selected chain, as analyze selects it
    assert "| lang | best | baseline | gain |" in note and "| **avg** |" in note
    listed = {a.path for a in client.list_artifacts(parent)}
    assert {"report.html", "analysis.json"} <= listed
    experiment = client.get_experiment(tracker.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND  # set on an old experiment


def test_new_experiment_is_a_model_training_one(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(tracking_uri=uri, experiment="fresh")
    tags = MlflowClient(tracking_uri=uri).get_experiment(tracker.experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert ui_url("http://h:1/", tracker.experiment_id) == (
        f"http://h:1/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning"
    )
