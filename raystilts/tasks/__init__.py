"""What a task is and where its data comes from: the catalog (`catalog`), the data sources
(`sources`), made-up fixtures in each source's schema (`fixtures`) and the embedded benchmark
(`embedded`). No torch.
"""

from __future__ import annotations

from raystilts.tasks.catalog import (
    CATALOG,
    TaskSpec,
    data_fingerprint,
    example_text,
    get_task,
    read_examples,
    selection_key,
    task_labels,
    with_labels,
)

__all__ = [
    "CATALOG",
    "TaskSpec",
    "data_fingerprint",
    "example_text",
    "get_task",
    "read_examples",
    "selection_key",
    "task_labels",
    "with_labels",
]
