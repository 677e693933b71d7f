"""raystilts: search intermediate-task chains (STILTs) for cross-lingual zero-shot transfer.

Heavy layers (torch, ray, mlflow, polars) are imported lazily by the modules that need them.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
