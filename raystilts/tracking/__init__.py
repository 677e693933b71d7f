"""MLflow: the only package that imports mlflow (`store`).
"""

from __future__ import annotations

from raystilts.tracking.store import (
    KIND_TAG,
    OUTCOME_TAG,
    PARENT_RUN_TAG,
    SEARCH_ID_TAG,
    TRIAL_ID_TAG,
    RunRecord,
    Tracker,
    TrialStatus,
    default_tracking_uri,
    load_runs,
)

__all__ = [
    "KIND_TAG",
    "OUTCOME_TAG",
    "PARENT_RUN_TAG",
    "SEARCH_ID_TAG",
    "TRIAL_ID_TAG",
    "RunRecord",
    "Tracker",
    "TrialStatus",
    "default_tracking_uri",
    "load_runs",
]
