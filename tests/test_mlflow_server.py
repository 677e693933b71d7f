"""Tracker against a real ``mlflow server`` on loopback, checked through the REST API the UI uses.

The server is started once per module in its own process group (sqlite backend and artifact
destination under tmp, job execution off, one worker: two processes, about 550 MB) and killed in
the fixture's finalizer, whatever the tests did. Starting it takes 7-18 s on two cores; the
whole module about 25 s, plus 15 s where a headless chromium renders the UI pages.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raystilts.tracking import KIND_TAG, PARENT_RUN_TAG, Tracker, load_runs, ui_url

pytestmark = pytest.mark.slow

LANGS = ("en", "qaa", "qab")
_START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log_path = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: the uvicorn child dies with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path)
        yield url
    finally:
        _stop(proc)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(
        f"mlflow server not healthy after {_START_TIMEOUT_S:.0f} s:\n{log_path.read_text()}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):  # workers left by a parent that exited alone
        os.killpg(proc.pid, signal.SIGKILL)


def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.load(response)
    return result


def _get(url: str, endpoint: str, **query: str) -> dict[str, Any]:
    with urllib.request.urlopen(
        f"{url}{endpoint}?{urllib.parse.urlencode(query)}", timeout=30
    ) as r:
        result: dict[str, Any] = json.load(r)
    return result


def _runs_by_rest(url: str, experiment: str) -> list[dict[str, Any]]:
    """Every run of ``experiment`` as the UI sees it, tags and params flattened to dicts."""
    found = _post(url, "/api/2.0/mlflow/experiments/search", {"max_results": 1000})
    [exp_id] = [e["experiment_id"] for e in found["experiments"] if e["name"] == experiment]
    runs, token = [], None
    while True:
        body: dict[str, Any] = {"experiment_ids": [exp_id], "max_results": 1000}
        if token:
            body["page_token"] = token
        page = _post(url, "/api/2.0/mlflow/runs/search", body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            break
    return [
        {
            "run_id": run["info"]["run_id"],
            "status": run["info"]["status"],
            "tags": {t["key"]: t["value"] for t in run["data"].get("tags", [])},
            "params": {p["key"]: p["value"] for p in run["data"].get("params", [])},
            "metrics": {m["key"]: m["value"] for m in run["data"].get("metrics", [])},
        }
        for run in runs
    ]


def _artifact_paths(url: str, run_id: str, path: str = "") -> list[str]:
    listing = _get(url, "/api/2.0/mlflow/artifacts/list", run_id=run_id, path=path)
    paths = []
    for entry in listing.get("files", []):
        if entry.get("is_dir"):
            paths += _artifact_paths(url, run_id, entry["path"])
        else:
            paths.append(entry["path"])
    return sorted(paths)


def _trial_metrics(seed: int, *, finished: bool) -> dict[str, float]:
    """Per-language dev (and, when finished, test) scores in the DESIGN.md key layout."""
    splits = ("dev", "test") if finished else ("dev",)
    metrics = {
        f"{split}/mini_xnli/{lang}/accuracy": 0.5 + 0.01 * seed + 0.001 * i
        for split in splits
        for i, lang in enumerate(LANGS)
    }
    for split in splits:
        metrics[f"{split}/mini_xnli/avg/accuracy"] = 0.5 + 0.01 * seed
    return metrics


@dataclass(frozen=True)
class LoggedSearch:
    experiment: str
    parent: str
    summary: str
    trials: dict[str, tuple[str, int, str]]  # run id -> (chain, seed, outcome)


@pytest.fixture(scope="module")
def search(server: str, tmp_path_factory: pytest.TempPathFactory) -> LoggedSearch:
    """A search logged through Tracker over http: parent, three trials, a summary."""
    experiment = "server_search"
    tracker = Tracker(tracking_uri=server, experiment=experiment)
    parent = tracker.start_search(
        search_id="server_search-1",
        run_name="search server_search",
        params={"num_samples": 3, "targets": ["mini_xnli"]},
        tags={"raystilts.search": experiment},
    )
    chains = ["mini_xnli", "mini_mnli>mini_xnli", "mini_qqp>mini_xnli"]
    endings = [("FINISHED", "completed"), ("KILLED", "stopped_early"), ("FAILED", "error")]
    trials = {}
    for seed, (chain, (status, outcome)) in enumerate(zip(chains, endings, strict=True)):
        run_id = tracker.start_trial(
            trial_id=f"trial_{seed}",
            run_name=f"{chain}#{seed}",
            params={"target": "mini_xnli", "chain": chain, "seed": seed, "metric": "accuracy"},
            tags={"raystilts.target": "mini_xnli", "raystilts.chain": chain},
            parent_run_id=parent,
        )
        tracker.log_metrics(run_id, _trial_metrics(seed, finished=False), step=50)
        if outcome == "completed":
            tracker.log_metrics(run_id, _trial_metrics(seed, finished=True), step=100)
        tracker.end_trial(run_id, status=status, tags={"raystilts.outcome": outcome})  # type: ignore[arg-type]
        trials[run_id] = (chain, seed, outcome)
    report = tmp_path_factory.mktemp("report")
    (report / "plots").mkdir()
    (report / "best_chains.txt").write_text("mini_xnli  best chain: mini_xnli\n")
    (report / "plots" / "gains.csv").write_text("lang,gain\nqaa,0.0\n")
    summary = tracker.log_summary(
        run_name="report server_search",
        local_dir=report,
        tags={"raystilts.search": experiment, PARENT_RUN_TAG: parent},
        metrics={"gain/mini_xnli/avg/accuracy": 0.0},
    )
    tracker.end_search(parent, status="FINISHED", tags={"raystilts.outcome": "completed"})
    return LoggedSearch(experiment=experiment, parent=parent, summary=summary, trials=trials)


def test_search_layout_over_http(server: str, search: LoggedSearch) -> None:
    experiment, parent, summary = search.experiment, search.parent, search.summary
    trials = search.trials
    runs = {run["run_id"]: run for run in _runs_by_rest(server, experiment)}
    assert set(runs) == {parent, summary, *trials}
    assert [r["run_id"] for r in runs.values() if r["status"] == "RUNNING"] == []
    assert runs[parent]["tags"][KIND_TAG] == "search"
    assert runs[parent]["tags"]["raystilts.search_id"] == "server_search-1"
    assert runs[parent]["params"] == {"num_samples": "3", "targets": '["mini_xnli"]'}
    for run_id, (chain, seed, outcome) in trials.items():
        run = runs[run_id]
        assert run["tags"][PARENT_RUN_TAG] == parent
        assert run["tags"][KIND_TAG] == "trial"
        assert run["tags"]["raystilts.target"] == "mini_xnli"
        assert run["tags"]["raystilts.chain"] == chain
        assert run["tags"]["raystilts.outcome"] == outcome
        assert run["params"]["chain"] == chain
        assert run["params"]["seed"] == str(seed)
        expected = _trial_metrics(seed, finished=outcome == "completed")
        assert run["metrics"] == pytest.approx(expected)
    completed = runs[next(r for r, t in trials.items() if t[2] == "completed")]
    assert {f"test/mini_xnli/{lang}/accuracy" for lang in LANGS} <= set(completed["metrics"])
    assert runs[summary]["status"] == "FINISHED"
    assert runs[summary]["tags"][KIND_TAG] == "summary"
    assert runs[summary]["tags"][PARENT_RUN_TAG] == parent
    assert _artifact_paths(server, summary) == ["best_chains.txt", "plots/gains.csv"]

    records = load_runs(tracking_uri=server, experiment=experiment)
    assert sorted(r.run_id for r in records) == sorted(trials)
    for record in records:
        assert record.params == runs[record.run_id]["params"]
        assert record.tags == runs[record.run_id]["tags"]
        assert record.metrics == pytest.approx(runs[record.run_id]["metrics"])


def _chromium() -> str | None:
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


@pytest.mark.skipif(
    _chromium() is None,
    reason="no headless chromium (Debian: apt-get install chromium-headless-shell; "
    "playwright's pip wheel downloads its browsers from a CDN)",
)
def test_ui_nests_trials_and_compares_languages(
    server: str, search: LoggedSearch, tmp_path: Path
) -> None:
    """The MLflow UI itself, rendered by headless chromium: the experiment page shows the
    search as one collapsed row (children nest by mlflow.parentRunId), and the compare page of
    the trials shows their names, chain params and per-language metric keys. Screenshots are
    left in tmp_path for a person to look at."""
    [exp_id] = [
        e["experiment_id"]
        for e in _post(server, "/api/2.0/mlflow/experiments/search", {"max_results": 1000})[
            "experiments"
        ]
        if e["name"] == search.experiment
    ]
    runs = json.dumps(sorted(search.trials))
    compare = (
        f"{server}/#/compare-runs?runs={urllib.parse.quote(runs)}"
        f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}"
    )
    experiment_page = _render(f"{server}/#/experiments/{exp_id}/runs", tmp_path / "runs.png")
    assert "search server_search" in experiment_page
    for chain, seed, _ in search.trials.values():
        assert html.escape(f"{chain}#{seed}") not in experiment_page  # nested, collapsed
    compare_page = _render(compare, tmp_path / "compare.png")
    assert f"Comparing {len(search.trials)} Runs" in compare_page
    for chain, seed, _ in search.trials.values():
        assert html.escape(f"{chain}#{seed}") in compare_page
    assert "test/mini_xnli/qaa/accuracy" in compare_page


def _render(url: str, screenshot: Path) -> str:
    """The DOM of ``url`` after its scripts ran (and a screenshot beside)."""
    browser = _chromium()
    assert browser is not None
    common = [browser, "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"]
    subprocess.run(
        [
            *common,
            "--window-size=1600,1200",
            "--hide-scrollbars",
            f"--screenshot={screenshot}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    done = subprocess.run(
        [*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    )
    return done.stdout


def test_resumed_search_over_http_reuses_its_parent(server: str) -> None:
    tracker = Tracker(tracking_uri=server, experiment="server_resume")
    first = tracker.start_search(search_id="resume-1", run_name="s", params={}, tags={})
    tracker.end_search(first, status="KILLED")
    again = tracker.start_search(search_id="resume-1", run_name="s", params={}, tags={})
    assert again == first
    [run] = _runs_by_rest(server, "server_resume")
    assert run["status"] == "RUNNING"
    assert tracker.close_open_runs() == 1
    [run] = _runs_by_rest(server, "server_resume")
    assert run["status"] == "KILLED"
    assert run["tags"]["raystilts.outcome"] == "interrupted"


@pytest.mark.skipif(
    _chromium() is None,
    reason="no headless chromium (Debian: apt-get install chromium-headless-shell)",
)
def test_printed_link_opens_the_trials_not_the_genai_overview(
    server: str, search: LoggedSearch, tmp_path: Path
) -> None:
    """The link a search prints (tracking.ui_url) lands on the runs table with the search's
    parent row; the experiment's plain address opens MLflow 3's GenAI overview instead, which
    does not list runs (so this test would fail on the plain address)."""
    tracker = Tracker(tracking_uri=server, experiment=search.experiment)
    link = ui_url(server, tracker.experiment_id)
    page = _render(link, tmp_path / "link.png")
    (tmp_path / "link.html").write_text(page)
    assert "search server_search" in page  # the parent row the trials nest under
    plain = _render(f"{server}/#/experiments/{tracker.experiment_id}", tmp_path / "plain.png")
    (tmp_path / "plain.html").write_text(plain)
    assert "search server_search" not in plain
