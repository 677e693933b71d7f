"""The search on Ray Tune + Ray Train (the only package that imports ray): `driver`.
"""

from __future__ import annotations

from raystilts.search.driver import (
    RacingSearcher,
    SearchRun,
    chain_identity,
    run_search,
    shutdown_ray,
)

__all__ = [
    "RacingSearcher",
    "SearchRun",
    "chain_identity",
    "run_search",
    "shutdown_ray",
]
