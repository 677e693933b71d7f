"""MLflow: the only package that imports mlflow (`store`).
"""

from __future__ import annotations

from raystilts.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    KIND_TAG,
    NOTE_TAG,
    OUTCOME_TAG,
    PARENT_RUN_TAG,
    SEARCH_ID_TAG,
    TRACKING_ERRORS,
    TRIAL_ID_TAG,
    RunRecord,
    Tracker,
    TrialStatus,
    default_tracking_uri,
    load_runs,
    ui_url,
)

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
