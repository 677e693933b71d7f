"""Torch training without Ray: models and heads (`models`), multi-task mixtures (`mixture`),
the chain runner (`runner`), the prefix cache (`prefix_cache`), TextEmb transferability
(`transfer`), the embedded base model's pretraining (`pretrain`), the per-search workspace
(`workspace`: base model and tokenized features, prepared once on the driver) and the
best-checkpoint keeper (`checkpointing`). Import the module you
need: this package imports nothing so that a pure caller does not pay for torch.
"""

from __future__ import annotations

