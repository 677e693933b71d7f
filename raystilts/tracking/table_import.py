"""``raystilts import``: a published transfer table's runs into MLflow, as searched runs.

    raystilts import shared/data/transfer/pruksachatkun2020.csv --experiment pruksachatkun
    raystilts analyze --experiment pruksachatkun

Each (intermediate, target, seed) of the table becomes one FINISHED trial run (params
``target``, ``chain``, ``intermediate``, ``seed``, ``config_key``; metrics
``{split}/{target}/{lang}/score``; see :func:`raystilts.core.transfer_tables.imported_runs`), so ``analyze``,
``report`` and the search's prior (``search.prior.experiments``) read them like searched runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from raystilts.core.errors import UserError
from raystilts.core.schema import IMPORTED_FROM_TAG, OUTCOME_TAG
from raystilts.core.transfer_tables import imported_runs, read_table
from raystilts.tracking.store import Tracker

__all__ = ["import_table"]

_BATCH = 100  # params per log_batch call (MLflow's limit)


def import_table(path: str | Path, *, experiment: str, tracking_uri: str) -> str:
    """Write the table's runs to ``experiment``; returns a one-line summary.

    Raises:
        UserError: the table is malformed, or this file was imported into the experiment
            already (a second import would count every run twice).
    """
    table = read_table(path)
    source = str(Path(path).resolve())
    runs, left_out = imported_runs(table, source=source)
    if not runs:
        raise UserError(
            f"import: {path} has only self-transfer rows ({left_out}: intermediate = target), "
            "which are no chains; nothing to import"
        )
    tracker = Tracker(tracking_uri=tracking_uri, experiment=experiment)
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    quoted = source.replace("'", "\\'")
    done = client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`{IMPORTED_FROM_TAG}` = '{quoted}'",
        max_results=1,
    )
    if done:
        raise UserError(
            f"import: {path} is already in experiment {experiment!r} "
            f"({tracker.tracking_uri}); use another --experiment or delete that one first"
        )
    now = int(time.time() * 1000)
    for run in runs:
        tags = {**run.tags, OUTCOME_TAG: "imported"}
        created = client.create_run(tracker.experiment_id, run_name=run.name, tags=tags)
        run_id = created.info.run_id
        params = [Param(k, v) for k, v in run.params.items()]
        metrics = [Metric(k, v, now, 0) for k, v in run.metrics.items()]
        for i in range(0, max(len(params), len(metrics)), _BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + _BATCH], params=params[i : i + _BATCH])
        client.set_terminated(run_id, status=run.status)
    failed = sum(r.status != "FINISHED" for r in runs)
    return (
        f"imported {len(runs)} runs ({failed} without a score, FAILED) of "
        f"{len({r.params['target'] for r in runs})} targets from {path} into experiment {experiment!r} "
        f"({tracker.tracking_uri}); left out: {left_out} self-transfer rows, "
        f"{table.skipped.get('seed = mean (derived)', 0)} 'mean' rows"
    )
