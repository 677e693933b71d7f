"""The run schema: what lands in MLflow (and in Tune's results), defined once.

Every module that writes or reads runs takes its names from here: the runner and the search
build metric keys with :func:`metric_key`, the analysis takes them apart with
:func:`parse_metric_key` (or the same fields, vectorised), and tags are the constants below.

- Metric keys: ``{split}/{task}/{lang}/{metric}`` (``dev/xnli/de/accuracy``) and
  ``{split}/{task}/avg/{metric}`` over a task's languages.
- Tags of a trial run: :data:`TARGET_TAG`, :data:`CHAIN_TAG`, :data:`TRIAL_ID_TAG`,
  :data:`SEARCH_TAG` (the search's experiment name), once ended :data:`OUTCOME_TAG`; every run
  has :data:`KIND_TAG` (``search``, ``trial`` or ``summary``).
- A configuration is a trial's hyperparameters without its seed; the runs that share its
  ``config_key`` are its seeds (the search races them, ``analyze`` pairs them with the
  baseline's). Searched runs and imported published tables compute it the same way, here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "AVG",
    "CHAIN_TAG",
    "DIVERGED_REASON_TAG",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "IMPORTED_FROM_TAG",
    "IMPORTED_NOTE_TAG",
    "KEY_FIELDS",
    "KEY_SEP",
    "KIND_TAG",
    "MIX",
    "NOTE_TAG",
    "OUTCOME_TAG",
    "PARENT_RUN_TAG",
    "PHASE_SEP",
    "SEARCH_ID_TAG",
    "SEARCH_TAG",
    "SELECTION_SCORE",
    "SPLITS",
    "TARGET_TAG",
    "TRIAL_ID_TAG",
    "MetricKey",
    "chain_name",
    "config_key",
    "metric_key",
    "parse_metric_key",
]

# A chain prints as its phases then its target, joined by PHASE_SEP; the tasks of a mixed
# (multi-task) phase are joined by MIX: "mnli+qqp>squad_v1>xnli". The baseline prints as "xnli".
PHASE_SEP = ">"
MIX = "+"
KEY_SEP = "/"
KEY_FIELDS = ("split", "task", "lang", "metric")  # the parts of a metric key, in order
SPLITS = ("dev", "test")  # dev: model selection; test: reporting
AVG = "avg"  # the "language" of a task's mean over its languages

# In Tune's results only (no "/": MLflow never logs it): a trial's selection metric under one
# name for every target, so that one Tune experiment holds the trials of all targets
SELECTION_SCORE = "selection_score"

TARGET_TAG = "raystilts.target"
CHAIN_TAG = "raystilts.chain"
SEARCH_TAG = "raystilts.search"  # the search's experiment name, on its runs
TRIAL_ID_TAG = "raystilts.trial_id"
SEARCH_ID_TAG = "raystilts.search_id"
OUTCOME_TAG = "raystilts.outcome"  # finished | diverged | stopped_early | error | interrupted
DIVERGED_REASON_TAG = "raystilts.diverged_reason"
KIND_TAG = "raystilts.kind"  # search | trial | summary
IMPORTED_FROM_TAG = "raystilts.imported_from"  # on runs of a published table: its file name
IMPORTED_NOTE_TAG = "raystilts.imported_note"
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under this run id
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the run's description (markdown) in the UI
# MLflow 3 opens an experiment of unknown kind as a GenAI one (an empty "Traces" page); ours
# are model training. The tag alone does not change the landing page in 3.17: ui_url() does.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


class MetricKey(NamedTuple):
    split: str  # dev | test
    task: str
    lang: str  # a language code, or AVG
    metric: str


def metric_key(split: str, task: str, lang: str, metric: str) -> str:
    """The key of one score: ``metric_key("dev", "xnli", "de", "accuracy")`` is
    ``"dev/xnli/de/accuracy"``."""
    return KEY_SEP.join((split, task, lang, metric))


def parse_metric_key(key: str) -> MetricKey | None:
    """The parts of a metric key, or None for another key (``prefix_cache/hits``...).

    >>> parse_metric_key("test/xnli/avg/accuracy")
    MetricKey(split='test', task='xnli', lang='avg', metric='accuracy')
    >>> parse_metric_key("prefix_cache/hits") is None, parse_metric_key("prior/xnli/mnli/score")
    (True, None)
    """
    parts = key.split(KEY_SEP)
    if len(parts) != len(KEY_FIELDS) or parts[0] not in SPLITS:  # prior/{target}/{task}/score
        return None
    return MetricKey(*parts)


def chain_name(phases: Sequence[str], target: str) -> str:
    """``chain_name(["mnli+qqp", "squad_v1"], "xnli")`` is ``"mnli+qqp>squad_v1>xnli"``."""
    return PHASE_SEP.join([*phases, target])


def config_key(params: Mapping[str, Any], target: str) -> str:
    """Hash of a trial's hyperparameters without its seed: runs sharing it are seeds of one config.

    >>> config_key({"chain": "mnli", "seed": 0}, "xnli") == config_key({"chain": "mnli", "seed": 1}, "xnli")
    True
    """
    blob = json.dumps(
        {k: v for k, v in params.items() if k != "seed"} | {"target": target},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
