"""MLflow bookkeeping for searches: one experiment per search, one run per trial.

This is the only module that imports mlflow. It talks to the store through an explicit
:class:`mlflow.tracking.MlflowClient` (never the global active-run state), so a Tune callback on
the driver can own every run and end it on every exit path: no run is left RUNNING when a trial
finishes, stops early, fails, or the search is interrupted (:meth:`Tracker.close_open_runs`).

Layout of one run (see DESIGN.md):

- params: ``target``, ``chain`` (``mini_mnli>mini_xnli``), ``intermediate`` (JSON list),
  ``chain_length``, ``seed``, ``model``, ``metric``, per-phase hyperparameters, ``config_key``;
- tags: ``raystilts.target``, ``raystilts.chain``, ``raystilts.trial_id``, ``raystilts.search``
  and, once ended, ``raystilts.outcome``;
- metrics: ``{split}/{task}/{lang}/{metric}`` keys, logged with the training step.

Example (a throwaway sqlite store)::

    tracker = Tracker(tracking_uri=default_tracking_uri(Path("runs")), experiment="demo")
    run_id = tracker.start_trial(trial_id="t1", run_name="mini_xnli s0", params={"seed": 0},
                                 tags={"raystilts.search": "demo"})
    tracker.log_metrics(run_id, {"dev/mini_xnli/en/accuracy": 0.61}, step=100)
    tracker.end_trial(run_id, status="FINISHED")
    records = load_runs(tracking_uri=tracker.tracking_uri, experiment="demo")
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient

from raystilts.errors import UserError

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = [
    "OUTCOME_TAG",
    "TRIAL_ID_TAG",
    "RunRecord",
    "Tracker",
    "default_tracking_uri",
    "load_runs",
]

TRIAL_ID_TAG = "raystilts.trial_id"
OUTCOME_TAG = "raystilts.outcome"

# Per-request limits of MLflow's log_batch (the REST API rejects larger batches).
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_TAGS_PER_BATCH = 100
_PAGE_SIZE = 1000  # search_runs' largest page
_PROBE_TIMEOUT_S = 3.0  # fail fast: mlflow's own client retries for minutes by default
_SQLITE_PREFIX = "sqlite:///"
_TRIAL_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")  # quoted verbatim into a filter string

TrialStatus = Literal["FINISHED", "KILLED", "FAILED"]
_T = TypeVar("_T")


def default_tracking_uri(workdir: Path) -> str:
    """The embedded default store: an absolute sqlite URI under ``workdir``.

    >>> default_tracking_uri(Path("/tmp/w"))
    'sqlite:////tmp/w/mlflow.db'
    """
    return f"{_SQLITE_PREFIX}{workdir.resolve()}/mlflow.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One MLflow run as plain data, for :mod:`raystilts.analysis`.

    ``metrics`` holds the latest value per key (MLflow's choice: highest step, then newest).
    """

    run_id: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


class Tracker:
    """Owns the MLflow runs of one search (one experiment); use it from the Tune driver.

    The experiment is fetched or created on construction. Its artifact location is an absolute
    ``file://`` URI (``artifact_root``; by default ``mlartifacts/<experiment>`` beside a sqlite
    database) so artifacts never land in Ray's per-trial temp directories. With an http(s)
    server and no ``artifact_root``, the server chooses (``mlflow-artifacts:/``).

    Raises:
        UserError: the server is unreachable, or the experiment exists but is deleted.
    """

    def __init__(
        self, *, tracking_uri: str, experiment: str, artifact_root: Path | None = None
    ) -> None:
        self.tracking_uri = _normalise_uri(tracking_uri)
        self.experiment = experiment
        _check_reachable(self.tracking_uri)
        db_path = _sqlite_path(self.tracking_uri)
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id: str = self._get_or_create_experiment(artifact_root, db_path)

    def _get_or_create_experiment(self, artifact_root: Path | None, db_path: Path | None) -> str:
        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.lifecycle_stage != "active":
                raise UserError(
                    f"experiment {self.experiment!r} in {self.tracking_uri} is deleted; "
                    f"restore it (mlflow experiments restore --experiment-id "
                    f"{found.experiment_id}) or choose another experiment name"
                )
            return str(found.experiment_id)
        if artifact_root is None and db_path is not None:
            artifact_root = db_path.parent / "mlartifacts"
        location = None
        if artifact_root is not None:
            location = (artifact_root.resolve() / _safe_dirname(self.experiment)).as_uri()
        return str(self._client.create_experiment(self.experiment, artifact_location=location))

    def start_trial(
        self,
        *,
        trial_id: str,
        run_name: str,
        params: Mapping[str, object],
        tags: Mapping[str, str],
    ) -> str:
        """Open (or reopen) the run of a Tune trial and return its run id.

        Idempotent: a run already tagged with ``trial_id`` is reused, so a restarted or resumed
        trial never duplicates its run; an unfinished one is set RUNNING again. Params are
        logged once; values that are not strings are written as JSON (lists) or ``str()``.

        Raises:
            UserError: a reused run already has a param with a different value (params are
                immutable in MLflow), e.g. a search resumed with an edited search space.
        """
        if not _TRIAL_ID_RE.match(trial_id):
            raise ValueError(f"trial id {trial_id!r} must match {_TRIAL_ID_RE.pattern}")
        all_tags = {**tags, TRIAL_ID_TAG: trial_id}
        existing = self._find_trial_run(trial_id)
        logged: Mapping[str, str] = {} if existing is None else existing.data.params
        new_params: list[Param] = []
        for key, value in params.items():  # check before touching the run
            text = _param_text(value)
            if key not in logged:
                new_params.append(Param(key, text))
            elif logged[key] != text:
                raise UserError(
                    f"trial {trial_id} already logged param {key}={logged[key]!r}, now "
                    f"{text!r}; resume with the same search space or use a new experiment"
                )
        if existing is None:
            run = self._client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
            run_id: str = run.info.run_id
        else:
            run_id = existing.info.run_id
            if existing.info.status != "FINISHED":
                self._client.update_run(run_id, status="RUNNING")
            self._log_tags(run_id, all_tags)
        for chunk in _chunks(new_params, _MAX_PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=chunk, synchronous=True)
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        """Log one report's metrics at ``step`` (NaN is stored as NaN, infinities are clipped
        to the largest float by MLflow)."""
        now_ms = int(time.time() * 1000)
        batch = [Metric(key, float(value), now_ms, step) for key, value in metrics.items()]
        for chunk in _chunks(batch, _MAX_METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=chunk, synchronous=True)

    def end_trial(
        self, run_id: str, *, status: TrialStatus, tags: Mapping[str, str] | None = None
    ) -> None:
        """End a run with ``status``; ``tags`` (e.g. ``{"raystilts.outcome": "stopped_early"}``)
        are set first so a reader never sees a terminated run without its outcome."""
        if status not in ("FINISHED", "KILLED", "FAILED"):
            raise ValueError(f"status {status!r} must be FINISHED, KILLED or FAILED")
        if tags:
            self._log_tags(run_id, tags)
        self._client.set_terminated(run_id, status=status)

    def close_open_runs(self) -> int:
        """Mark every RUNNING run of the experiment KILLED (outcome ``interrupted``).

        Call at the end of a search and before resuming one; returns how many were closed.
        """
        running = list(self._search("attributes.status = 'RUNNING'"))
        for run in running:
            self.end_trial(run.info.run_id, status="KILLED", tags={OUTCOME_TAG: "interrupted"})
        return len(running)

    def finished_trial_ids(self) -> set[str]:
        """Tune trial ids whose run is FINISHED (a resumed search skips them)."""
        return {
            run.data.tags[TRIAL_ID_TAG]
            for run in self._search("attributes.status = 'FINISHED'")
            if TRIAL_ID_TAG in run.data.tags
        }

    def log_artifacts(self, run_id: str, local_dir: Path) -> None:
        """Copy the files under ``local_dir`` into the run's artifact location."""
        self._client.log_artifacts(run_id, str(local_dir))

    def _find_trial_run(self, trial_id: str) -> Run | None:
        runs = list(self._search(f"tags.`{TRIAL_ID_TAG}` = '{trial_id}'"))
        if not runs:
            return None
        # Duplicates can only come from outside this class; prefer the run that got furthest.
        runs.sort(key=lambda r: (r.info.status != "FINISHED", -(r.info.start_time or 0)))
        return runs[0]

    def _log_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        batch = [RunTag(key, str(value)) for key, value in tags.items()]
        for chunk in _chunks(batch, _MAX_TAGS_PER_BATCH):
            self._client.log_batch(run_id, tags=chunk, synchronous=True)

    def _search(self, filter_string: str) -> Iterator[Run]:
        return _search_all(self._client, self.experiment_id, filter_string)


def load_runs(*, tracking_uri: str, experiment: str) -> list[RunRecord]:
    """All active runs of ``experiment`` as :class:`RunRecord` (oldest first).

    Raises:
        UserError: the store is unreachable or missing, or the experiment does not exist.
    """
    uri = _normalise_uri(tracking_uri)
    _check_reachable(uri)
    db_path = _sqlite_path(uri)
    if db_path is not None and not db_path.is_file():
        # Opening a missing sqlite file would silently create an empty store.
        raise UserError(
            f"tracking database {db_path} does not exist; run a search first "
            f"or pass --tracking-uri pointing at an existing store"
        )
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        known = sorted(e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY))
        raise UserError(
            f"experiment {experiment!r} not found in {uri}; known: {', '.join(known) or '(none)'}"
        )
    runs = sorted(
        _search_all(client, str(found.experiment_id), ""),
        key=lambda r: (r.info.start_time or 0, r.info.run_id),
    )
    return [
        RunRecord(
            run_id=run.info.run_id,
            status=run.info.status,
            params=dict(run.data.params),
            tags=dict(run.data.tags),
            metrics=dict(run.data.metrics),
        )
        for run in runs
    ]


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> Iterator[Run]:
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=_PAGE_SIZE,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def _check_reachable(uri: str) -> None:
    """Probe an http(s) tracking server once with a short timeout.

    MLflow's client retries a refused connection with exponential backoff for minutes; probing
    here keeps a typo'd URI a one-line error without touching process-wide MLFLOW_* settings.
    Any HTTP answer (even 404) counts as reachable.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=_PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        detail = getattr(reason, "strerror", None) or str(reason) or type(exc).__name__
        raise UserError(
            f"tracking URI {uri} unreachable ({detail}); start the server or pass "
            f"--tracking-uri sqlite:///path/mlflow.db"
        ) from None


def _normalise_uri(uri: str) -> str:
    """Make a relative sqlite URI absolute (Ray workers run in other directories).

    A bare path (no scheme) would select MLflow's retired file store: refuse it with the fix.
    """
    if "://" not in uri and not uri.startswith("databricks"):
        raise UserError(
            f"tracking URI {uri!r} has no scheme; use sqlite:///{Path(uri).resolve()} for a local "
            "database or http://host:port for a server"
        )
    path = _sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    query = uri[len(_SQLITE_PREFIX) :].partition("?")[2]
    return f"{_SQLITE_PREFIX}{path.resolve()}" + (f"?{query}" if query else "")


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other schemes and in-memory)."""
    if not uri.startswith(_SQLITE_PREFIX):
        return None
    path = uri[len(_SQLITE_PREFIX) :].partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


def _safe_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def _param_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
