"""MLflow bookkeeping for searches: one experiment per search, a parent run per search, one child
run per trial.

This is the only module that imports mlflow. It talks to the store through an explicit
:class:`mlflow.tracking.MlflowClient` (never the global active-run state), so a Tune callback on
the driver can own every run and end it on every exit path: no run is left RUNNING when a trial
finishes, stops early, fails, or the search is interrupted (:meth:`Tracker.close_open_runs`).

Layout of an experiment (see DESIGN.md); ``raystilts.kind`` says which kind a run is:

- ``search``: one parent run per search (:meth:`Tracker.start_search`), found again by its
  ``raystilts.search_id`` tag when the search resumes; params and tags of the whole search.
- ``trial``: one run per Tune trial (:meth:`Tracker.start_trial`), a child of the search run
  through MLflow's ``mlflow.parentRunId`` tag (what the UI nests runs by).
  params: ``target``, ``chain`` (``mini_mnli>mini_xnli``), ``intermediate`` (JSON list),
  ``chain_length``, ``seed``, ``model``, ``metric``, per-phase hyperparameters, ``config_key``;
  tags: ``raystilts.target``, ``raystilts.chain``, ``raystilts.trial_id``, ``raystilts.search``
  and, once ended, ``raystilts.outcome``;
  metrics: ``{split}/{task}/{lang}/{metric}`` keys (one per language), logged with the step.
- ``summary``: a finished run holding a report's files as artifacts (:meth:`Tracker.log_summary`).

:func:`load_runs` returns the trial runs only (runs without ``raystilts.kind``, from stores
written before parents existed, count as trials). For a ``sqlite:///`` store it reads MLflow's
tables directly, which is much faster than ``MlflowClient.search_runs`` on large searches.

Example (a throwaway sqlite store)::

    tracker = Tracker(tracking_uri=default_tracking_uri(Path("runs")), experiment="demo")
    parent = tracker.start_search(search_id="demo", run_name="demo", params={"samples": 4},
                                  tags={SEARCH_TAG: "demo"})
    run_id = tracker.start_trial(trial_id="t1", run_name="mini_xnli s0", params={"seed": 0},
                                 tags={SEARCH_TAG: "demo"}, parent_run_id=parent)
    tracker.log_metrics(run_id, {"dev/mini_xnli/en/accuracy": 0.61}, step=100)
    tracker.end_trial(run_id, status="FINISHED")
    tracker.end_search(parent, status="FINISHED")
    records = load_runs(tracking_uri=tracker.tracking_uri, experiment="demo")  # the trial only
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raystilts.core.errors import UserError
from raystilts.core.schema import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    KIND_TAG,
    NOTE_TAG,
    OUTCOME_TAG,
    PARENT_RUN_TAG,
    SEARCH_ID_TAG,
    TRIAL_ID_TAG,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "KIND_TAG",
    "NOTE_TAG",
    "OUTCOME_TAG",
    "PARENT_RUN_TAG",
    "SEARCH_ID_TAG",
    "TRACKING_ERRORS",
    "TRIAL_ID_TAG",
    "RunRecord",
    "Tracker",
    "TrialStatus",
    "default_tracking_uri",
    "load_runs",
    "ui_url",
]


RunKind = Literal["search", "trial", "summary"]

# Per-request limits of MLflow's log_batch (the REST API rejects larger batches).
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_TAGS_PER_BATCH = 100
_PAGE_SIZE = 1000  # search_runs' largest page
_PROBE_TIMEOUT_S = 3.0  # fail fast: mlflow's own client retries for minutes by default
_SQLITE_PREFIX = "sqlite:///"
# the backends MLflow 3 serves runs from (its file store is retired)
_SCHEMES = {"sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks"}
_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")  # trial/search ids are quoted into filter strings
# What load_runs reads from a sqlite store (MLflow 3.17.2's schema); anything missing means a
# schema this module was not checked against, and load_runs goes through MlflowClient instead.
_SQLITE_COLUMNS = {
    "experiments": ("experiment_id", "name", "lifecycle_stage"),
    "runs": ("run_uuid", "status", "start_time", "lifecycle_stage", "experiment_id"),
    "params": ("run_uuid", "key", "value"),
    "tags": ("run_uuid", "key", "value"),
    "latest_metrics": ("run_uuid", "key", "value", "is_nan"),
}
_log = logging.getLogger(__name__)

TrialStatus = Literal["FINISHED", "KILLED", "FAILED"]
# What a store can raise that is not our bug (a server that went away, a full artifact store,
# a run deleted meanwhile): callers outside this package catch these without importing mlflow.
TRACKING_ERRORS: tuple[type[Exception], ...] = (MlflowException, UserError, OSError)
_T = TypeVar("_T")


def default_tracking_uri(workdir: Path) -> str:
    """The embedded default store: an absolute sqlite URI under ``workdir``.

    >>> default_tracking_uri(Path("/tmp/w"))
    'sqlite:////tmp/w/mlflow.db'
    """
    return f"{_SQLITE_PREFIX}{workdir.resolve()}/mlflow.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One MLflow run as plain data, for :mod:`raystilts.analysis.tables`.

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
        if not experiment.strip():
            raise UserError("the experiment name is empty; give one (--experiment NAME)")
        self.experiment = experiment
        _check_reachable(self.tracking_uri)
        db_path = _sqlite_path(self.tracking_uri)
        if db_path is not None:
            try:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(
                    f"cannot create {db_path.parent} for the MLflow store ({e.strerror}); "
                    "pass a writable --workdir or another --tracking-uri"
                ) from None
            # "Creating initial MLflow database tables..." on a new store: not the user's concern
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
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
            if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made by an older version
                self._client.set_experiment_tag(
                    found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                )
            return str(found.experiment_id)
        if artifact_root is None and db_path is not None:
            artifact_root = db_path.parent / "mlartifacts"
        location = None
        if artifact_root is not None:
            location = (artifact_root.resolve() / _safe_dirname(self.experiment)).as_uri()
        return str(
            self._client.create_experiment(
                self.experiment,
                artifact_location=location,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        )

    def start_search(
        self,
        *,
        search_id: str,
        run_name: str,
        params: Mapping[str, object],
        tags: Mapping[str, str],
    ) -> str:
        """Open (or reopen) the parent run of a search and return its run id.

        Trials become its children through ``start_trial(parent_run_id=...)``, so the MLflow UI
        shows one expandable row per search. Idempotent by the ``raystilts.search_id`` tag: a
        resumed search reuses its parent run and sets it RUNNING again (also when it had
        ended). Tagged ``raystilts.kind=search``. Params follow :meth:`start_trial`'s rules.

        Raises:
            UserError: the reused run already has a param with a different value.
        """
        return self._open_run(
            id_tag=SEARCH_ID_TAG,
            id_value=search_id,
            what="search",
            run_name=run_name,
            params=params,
            tags={**tags, SEARCH_ID_TAG: search_id, KIND_TAG: "search"},
            reopen_finished=True,
        )

    def start_trial(
        self,
        *,
        trial_id: str,
        run_name: str,
        params: Mapping[str, object],
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        """Open (or reopen) the run of a Tune trial and return its run id.

        Idempotent: a run already tagged with ``trial_id`` is reused, so a restarted or resumed
        trial never duplicates its run; an unfinished one is set RUNNING again. Params are
        logged once; values that are not strings are written as JSON (lists) or ``str()``.
        Tagged ``raystilts.kind=trial``; with ``parent_run_id`` (from :meth:`start_search`)
        also ``mlflow.parentRunId``, which nests the run under its search in the UI.

        Raises:
            UserError: a reused run already has a param with a different value (params are
                immutable in MLflow), e.g. a search resumed with an edited search space.
        """
        all_tags = {**tags, TRIAL_ID_TAG: trial_id, KIND_TAG: "trial"}
        if parent_run_id is not None:
            all_tags[PARENT_RUN_TAG] = parent_run_id
        return self._open_run(
            id_tag=TRIAL_ID_TAG,
            id_value=trial_id,
            what="trial",
            run_name=run_name,
            params=params,
            tags=all_tags,
            reopen_finished=False,
        )

    def _open_run(
        self,
        *,
        id_tag: str,
        id_value: str,
        what: str,
        run_name: str,
        params: Mapping[str, object],
        tags: Mapping[str, str],
        reopen_finished: bool,
    ) -> str:
        if not _ID_RE.match(id_value):
            raise ValueError(f"{what} id {id_value!r} must match {_ID_RE.pattern}")
        existing = self._find_run(id_tag, id_value)
        logged: Mapping[str, str] = {} if existing is None else existing.data.params
        new_params: list[Param] = []
        for key, value in params.items():  # check before touching the run
            text = _param_text(value)
            if key not in logged:
                new_params.append(Param(key, text))
            elif logged[key] != text:
                raise UserError(
                    f"{what} {id_value} already logged param {key}={logged[key]!r}, now "
                    f"{text!r}; resume with the same search space or use a new experiment"
                )
        if existing is None:
            run = self._client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
            run_id: str = run.info.run_id
        else:
            run_id = existing.info.run_id
            if reopen_finished or existing.info.status != "FINISHED":
                self._client.update_run(run_id, status="RUNNING")
            self._log_tags(run_id, tags)
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

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags on a run (e.g. the warm start's ranking on the search run)."""
        self._log_tags(run_id, tags)

    def describe(self, run_id: str, markdown: str) -> None:
        """Set the run's description, the markdown the UI shows on the run's page."""
        self._log_tags(run_id, {NOTE_TAG: markdown})

    def end_trial(
        self, run_id: str, *, status: TrialStatus, tags: Mapping[str, str] | None = None
    ) -> None:
        """End a run with ``status``; ``tags`` (e.g. ``{"raystilts.outcome": "stopped_early"}``)
        are set first so a reader never sees a terminated run without its outcome."""
        self._end_run(run_id, status=status, tags=tags)

    def end_search(
        self, run_id: str, *, status: TrialStatus, tags: Mapping[str, str] | None = None
    ) -> None:
        """End the parent run of a search (after its trials), like :meth:`end_trial`."""
        self._end_run(run_id, status=status, tags=tags)

    def _end_run(self, run_id: str, *, status: TrialStatus, tags: Mapping[str, str] | None) -> None:
        if status not in ("FINISHED", "KILLED", "FAILED"):
            raise ValueError(f"status {status!r} must be FINISHED, KILLED or FAILED")
        if tags:
            self._log_tags(run_id, tags)
        self._client.set_terminated(run_id, status=status)

    def close_open_runs(self) -> int:
        """Mark every RUNNING run of the experiment KILLED (outcome ``interrupted``): trials,
        search parents (after their children) and anything else.

        Call at the end of a search and before resuming one; returns how many were closed.
        """
        running = sorted(
            self._search("attributes.status = 'RUNNING'"),
            key=lambda r: r.data.tags.get(KIND_TAG) == "search",
        )
        for run in running:
            self._end_run(run.info.run_id, status="KILLED", tags={OUTCOME_TAG: "interrupted"})
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

    def log_summary(
        self,
        *,
        run_name: str,
        local_dir: Path,
        tags: Mapping[str, str],
        metrics: Mapping[str, float] | None = None,
    ) -> str:
        """Record a report as a new FINISHED run tagged ``raystilts.kind=summary``: the files
        under ``local_dir`` become its artifacts, ``metrics`` (e.g. gains) are logged at step 0.

        Every call makes a new run (a report is a snapshot). Pass
        ``{"mlflow.parentRunId": search_run_id}`` in ``tags`` to nest it under a search.
        :func:`load_runs` skips it. If logging fails the run ends FAILED, never RUNNING.

        Raises:
            ValueError: ``local_dir`` is not a directory.
        """
        if not local_dir.is_dir():
            raise ValueError(f"summary directory {local_dir} does not exist or is not a directory")
        run = self._client.create_run(
            self.experiment_id, run_name=run_name, tags={**tags, KIND_TAG: "summary"}
        )
        run_id: str = run.info.run_id
        try:
            if metrics:
                self.log_metrics(run_id, metrics, step=0)
            self._client.log_artifacts(run_id, str(local_dir))
        except BaseException:
            self._client.set_terminated(run_id, status="FAILED")
            raise
        self._client.set_terminated(run_id, status="FINISHED")
        return run_id

    def _find_run(self, id_tag: str, id_value: str) -> Run | None:
        runs = list(self._search(f"tags.`{id_tag}` = '{id_value}'"))
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


def ui_url(server: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's runs table, in model-training mode.

    MLflow 3.17 opens an experiment on its GenAI overview (an empty "Traces" page) whatever
    the experiment's kind tag says; the ``workflowType`` query lands on the runs table.

    >>> ui_url("http://127.0.0.1:5000/", "3")
    'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning'
    """
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def load_runs(*, tracking_uri: str, experiment: str) -> list[RunRecord]:
    """The active trial runs of ``experiment`` as :class:`RunRecord` (oldest first).

    Search parents and summaries (``raystilts.kind`` ``search``/``summary``) are skipped; runs
    without the tag count as trials. Deleted runs are left out, as MLflow's UI does.

    A ``sqlite:///`` store is read with the stdlib ``sqlite3`` module from MLflow's own tables
    (runs, params, tags, latest_metrics, experiments), in one read transaction: for 10,000 runs
    of a few hundred metric keys this takes seconds, where ``MlflowClient.search_runs`` builds
    an ORM object per metric and takes minutes. The result is the same as the client's (tests
    compare both); ``latest_metrics`` already holds MLflow's latest value per key (highest
    step, then newest timestamp, then largest value). If the tables or columns differ from
    MLflow 3.17.2's, or sqlite cannot read the file, a warning gives the reason and the client
    path is used. Other stores (http(s) servers) always go through the client.

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
    if db_path is not None:
        try:
            records = _load_runs_sqlite(db_path, uri=uri, experiment=experiment)
        except _NoFastPath as exc:
            _log.warning("load_runs: reading %s through MlflowClient (slower): %s", uri, exc)
        else:
            return [r for r in records if _is_trial(r.tags)]
    return [r for r in _load_runs_client(uri, experiment) if _is_trial(r.tags)]


def _is_trial(tags: Mapping[str, str]) -> bool:
    return tags.get(KIND_TAG, "trial") == "trial"


def _load_runs_client(uri: str, experiment: str) -> list[RunRecord]:
    """Every active run of ``experiment`` through MlflowClient (any store)."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        known = [e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        raise _unknown_experiment(experiment, uri, known)
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


class _NoFastPath(Exception):
    """The sqlite store cannot be read directly; the message says why."""


def _load_runs_sqlite(db_path: Path, *, uri: str, experiment: str) -> list[RunRecord]:
    """Every active run of ``experiment`` from MLflow's sqlite tables (same result as
    :func:`_load_runs_client`, without MLflow's ORM)."""
    try:
        # Read-only: never creates, migrates or locks the store for writers beyond the read.
        conn = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise _NoFastPath(f"sqlite cannot open {db_path}: {exc}") from None
    try:
        conn.execute("BEGIN")  # one snapshot for all queries below
        _check_sqlite_schema(conn)
        found = conn.execute(
            "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?",
            (experiment,),
        ).fetchall()
        if len(found) > 1:  # MLflow workspaces: only the client knows which one is meant
            raise _NoFastPath(f"{len(found)} experiments are named {experiment!r}")
        if not found or found[0][1] != "active":
            known = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM experiments WHERE lifecycle_stage = 'active'"
                )
            ]
            raise _unknown_experiment(experiment, uri, known)
        experiment_id = found[0][0]
        runs = conn.execute(
            "SELECT run_uuid, status, start_time FROM runs "
            "WHERE experiment_id = ? AND lifecycle_stage = 'active'",
            (experiment_id,),
        ).fetchall()
        params, tags, metrics = _sqlite_run_values(conn, experiment_id, [r[0] for r in runs])
    except sqlite3.Error as exc:
        raise _NoFastPath(f"sqlite cannot read {db_path}: {exc}") from None
    finally:
        conn.close()
    runs.sort(key=lambda row: (row[2] or 0, row[0]))
    return [
        RunRecord(
            run_id=run_id,
            status=status,
            params=params[run_id],
            tags=tags[run_id],
            metrics=metrics[run_id],
        )
        for run_id, status, _ in runs
    ]


def _sqlite_run_values(
    conn: sqlite3.Connection, experiment_id: int | str, run_ids: list[str]
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], dict[str, dict[str, float]]]:
    """Params, tags and latest metrics of the experiment's active runs, by run id."""
    params: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
    tags: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
    metrics: dict[str, dict[str, float]] = {run_id: {} for run_id in run_ids}
    in_experiment = (
        "WHERE run_uuid IN (SELECT run_uuid FROM runs "
        "WHERE experiment_id = ? AND lifecycle_stage = 'active')"
    )
    for table, into in (("params", params), ("tags", tags)):
        for run_id, key, value in conn.execute(
            f"SELECT run_uuid, key, value FROM {table} {in_experiment}", (experiment_id,)
        ):
            into[run_id][key] = value
    # One query per run, its rows straight into a dict (C): metrics are most of the rows
    # (10,000 runs x a few hundred keys), and a single query would build a run_uuid string,
    # an is_nan int and a 4-tuple per row and loop over them in Python (about 40% more CPU).
    # MLflow stores NaN as 0.0 with is_nan = 1; NULL marks it here (values are NOT NULL).
    per_run = (
        "SELECT key, CASE WHEN is_nan THEN NULL ELSE value END "
        "FROM latest_metrics WHERE run_uuid = ?"
    )
    for run_id in metrics:
        values = dict(conn.execute(per_run, (run_id,)))
        if None in values.values():
            values = {k: math.nan if v is None else v for k, v in values.items()}
        metrics[run_id] = values
    return params, tags, metrics


def _check_sqlite_schema(conn: sqlite3.Connection) -> None:
    for table, wanted in _SQLITE_COLUMNS.items():
        # PRAGMA cannot take a bound parameter; table names are this module's constants.
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            raise _NoFastPath(f"table {table!r} is missing (not an MLflow 3.17 store?)")
        missing = [column for column in wanted if column not in have]
        if missing:
            raise _NoFastPath(
                f"table {table!r} lacks column(s) {', '.join(missing)} "
                f"(schema differs from MLflow 3.17.2's)"
            )


def _unknown_experiment(experiment: str, uri: str, known: list[str]) -> UserError:
    return UserError(
        f"experiment {experiment!r} not found in {uri}; "
        f"known: {', '.join(sorted(known)) or '(none)'}"
    )


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
    scheme = uri.partition(":")[0].lower().partition("+")[0]  # postgresql+psycopg2: a driver
    if scheme == "file":
        raise UserError(
            f"tracking URI {uri!r}: MLflow's file store is retired; use "
            f"sqlite:///{Path(uri.partition('://')[2]).resolve()}/mlflow.db or http://host:port"
        )
    if scheme not in _SCHEMES:
        raise UserError(
            f"tracking URI {uri!r}: unknown scheme {scheme!r}; use sqlite:///PATH, "
            "http(s)://host:port, or a database URI (postgresql://, mysql://, mssql://)"
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
