"""Task kinds: one module per kind owns what follows from a task's type, not its data.

    from raystilts.kinds import get_kind
    kind = get_kind(task.kind)            # e.g. raystilts.kinds.qa.QA
    cols = kind.featurize(task, examples, tokenizer, max_length=384, split="dev")
    batch = kind.collate(feats, [0, 1, 2], pad_id=1)
    model = kind.build_head(base_model, config, task)
    scores = kind.evaluate(ev, task, feats, "de", {})

Each module (``classification``, ``multiple_choice``, ``tagging``, ``qa``, ``retrieval``,
``mlm``) defines one :class:`raystilts.kinds.base.Kind` subclass and its instance ``KIND``:
featurization, collation, the head class, scoring and made-up canonical examples. Adding a kind
is one new module plus one line in :data:`_MODULES` (and its name in
``raystilts.tasks.catalog.TaskKind``, which tasks may be declared with).

The registry imports a kind's module on first use: the modules that define torch modules
(a multiple-choice scorer, a pooling embedder) import torch, and ``raystilts.data`` and this
package must stay importable without it.
"""

from __future__ import annotations

import functools
import importlib

from raystilts.kinds.base import IGNORE_INDEX, EvalContext, Features, Kind

__all__ = ["IGNORE_INDEX", "KIND_NAMES", "EvalContext", "Features", "Kind", "get_kind"]

# kind name (TaskSpec.kind) -> the module under raystilts.kinds that defines its KIND
_MODULES: dict[str, str] = {
    "classification": "classification",
    "multiple_choice": "multiple_choice",
    "tagging": "tagging",
    "qa": "qa",
    "retrieval": "retrieval",
    "mlm": "mlm",
}
KIND_NAMES: tuple[str, ...] = tuple(_MODULES)


@functools.cache
def get_kind(name: str) -> Kind:
    """The kind named ``name`` (a task's ``kind``); ValueError naming the known ones."""
    if name not in _MODULES:
        raise ValueError(f"no task kind {name!r}; known: {', '.join(KIND_NAMES)}")
    kind = getattr(importlib.import_module(f"raystilts.kinds.{_MODULES[name]}"), "KIND", None)
    if not isinstance(kind, Kind) or kind.name != name:
        raise TypeError(f"raystilts.kinds.{_MODULES[name]}.KIND is not the Kind {name!r}")
    return kind
