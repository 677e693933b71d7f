"""From rows to batches: featurization and the tokenized-feature store (`features`), extractive
QA windows and span decoding (`qa`), and the storage path that ships a search's model and
features to every node (`storage`).
"""

from __future__ import annotations

from raystilts.data.features import (
    FEATURIZE_VERSION,
    MLM_PROBABILITY,
    TOKENIZER_FILES,
    Features,
    FeatureStore,
    batches,
    collate,
    dev_language,
    doc_stride,
    eval_batches,
    featurize,
    mlm_collator,
    model_token_limit,
    needs_of,
    tokenizer_fingerprint,
)

__all__ = [
    "FEATURIZE_VERSION",
    "MLM_PROBABILITY",
    "TOKENIZER_FILES",
    "FeatureStore",
    "Features",
    "batches",
    "collate",
    "dev_language",
    "doc_stride",
    "eval_batches",
    "featurize",
    "mlm_collator",
    "model_token_limit",
    "needs_of",
    "tokenizer_fingerprint",
]
