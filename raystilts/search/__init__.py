"""The search: its logic without Ray (`searcher`: proposals, seed racing, neighbours, duplicates;
`prior`: what other targets and earlier searches say about intermediate tasks) and its Ray
adapter (`driver`: Ray Tune + Ray Train, the only module that imports ray).

The driver's public names are re-exported lazily, so that importing ``raystilts.search.searcher``
(the tabular replay does) never starts importing Ray.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raystilts.search.driver import RacingSearcher, SearchRun, run_search, shutdown_ray
    from raystilts.search.searcher import chain_identity

__all__ = ["RacingSearcher", "SearchRun", "chain_identity", "run_search", "shutdown_ray"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # chain_identity is pure: taken from the searcher, without Ray
        home = "searcher" if name == "chain_identity" else "driver"
        return getattr(import_module(f"raystilts.search.{home}"), name)
    raise AttributeError(f"module 'raystilts.search' has no attribute {name!r}")
