"""The run schema: how a configuration is identified in the runs a search writes.

A configuration is a trial's hyperparameters without its seed; the runs that share its
``config_key`` are its seeds (the search races them, ``analyze`` pairs them with the
baseline's). Searched runs and imported published tables compute it the same way, here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["config_key"]


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
