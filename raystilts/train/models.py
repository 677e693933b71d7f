"""Task models: one pretrained encoder, a head chosen by task kind, the encoder carried on.

    model = build_model("xlm-roberta-large", task, encoder_state=None, seed=0, pad_id=1)
    state = encoder_state(model)                        # what the next phase starts from
    model = build_model(base, next_task, state, seed=1)  # same encoder weights, fresh head

The head is the task kind's (:meth:`raystilts.kinds.Kind.build_head`, Hugging Face auto
classes, so any family with the class works): sequence classification, token classification,
multiple choice (decoder-only families, which have no such class, score each (context, choice)
with :class:`ChoiceScorer`), question answering, masked LM, and for retrieval the bare model
mean-pooled over one layer (:class:`Embedder`).

The encoder is the model's ``base_model`` (the ``base_model_prefix`` submodule), so its state
dict has the same keys under every head, with one exception: BERT-style families build a
pooler for sequence classification and multiple choice but not for tagging, QA or MLM.
:func:`load_encoder_state` therefore tolerates missing or unexpected ``pooler.*`` keys (a
missing pooler keeps its pretrained weights) and fails loudly on any other mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from raystilts.kinds import get_kind
from raystilts.kinds.multiple_choice import ChoiceScorer
from raystilts.kinds.retrieval import Embedder, retrieval_layer

if TYPE_CHECKING:
    from raystilts.tasks.catalog import TaskSpec

__all__ = [
    "ChoiceScorer",
    "Embedder",
    "build_model",
    "encoder_of",
    "encoder_state",
    "load_encoder_state",
    "replace_encoder",
    "retrieval_layer",
    "unwrap",
]

_TOLERATED = ("pooler.",)  # built by some heads of BERT-style families and not by others


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _owner(model: nn.Module) -> nn.Module:
    """The Hugging Face model that holds the encoder under its ``base_model_prefix``."""
    model = unwrap(model)
    return model.scorer if isinstance(model, ChoiceScorer) else model


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder (``base_model``) of a task model, an :class:`Embedder`, a
    :class:`ChoiceScorer` or a :class:`raystilts.train.mixture.MultiTaskModel`."""
    owner = _owner(model)
    prefix = str(getattr(owner, "base_model_prefix", ""))
    found = getattr(owner, prefix, owner) if prefix else owner
    if not isinstance(found, nn.Module):
        raise TypeError(f"{type(owner).__name__}: no encoder module under {prefix!r}")
    return found


def replace_encoder(model: nn.Module, encoder: nn.Module) -> None:
    """Make ``model`` use ``encoder`` (a module object shared with other task models)."""
    owner = _owner(model)
    prefix = str(getattr(owner, "base_model_prefix", ""))
    if not prefix or not isinstance(getattr(owner, prefix, None), nn.Module):
        raise TypeError(f"{type(owner).__name__}: no encoder under base_model_prefix {prefix!r}")
    setattr(owner, prefix, encoder)


def encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the encoder's weights: what :func:`build_model` loads next phase."""
    return {k: v.detach().clone() for k, v in encoder_of(model).state_dict().items()}


def load_encoder_state(encoder: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a previous phase's encoder weights; only ``pooler.*`` keys may differ (module
    docstring). Anything else missing or unexpected means another architecture: ValueError."""
    hint = "every phase of a chain must use the same base model"
    try:
        result = encoder.load_state_dict(dict(state), strict=False)
    except RuntimeError as e:  # shapes differ: another size of model
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise ValueError(
            f"the carried encoder does not fit {type(encoder).__name__}: {first}; {hint}"
        ) from None
    bad_missing = [k for k in result.missing_keys if not k.startswith(_TOLERATED)]
    bad_extra = [k for k in result.unexpected_keys if not k.startswith(_TOLERATED)]
    if bad_missing or bad_extra:
        raise ValueError(
            f"the carried encoder does not fit {type(encoder).__name__}: missing "
            f"{bad_missing[:3]} unexpected {bad_extra[:3]} ({len(bad_missing)} and "
            f"{len(bad_extra)} keys); {hint}"
        )


def build_model(
    base_model: str,
    task: TaskSpec,
    encoder_state: Mapping[str, torch.Tensor] | None,
    *,
    seed: int,
    pad_id: int | None = None,
    retrieval_layer: int | None = None,
) -> nn.Module:
    """``base_model`` (hub id or local path) with a fresh head for ``task``'s kind (module
    docstring), the encoder weights of the last phase if given. ``pad_id`` (the id batches are
    padded with) becomes the config's pad token where it has none: decoder-only sequence
    classification finds each sequence's last token by it."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights newly initialized" is the point of a new head
    hf_logging.disable_progress_bar()
    config = AutoConfig.from_pretrained(base_model)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_id if pad_id is not None else config.eos_token_id
    torch.manual_seed(seed)
    model = get_kind(task.kind).build_head(
        base_model, config, task, retrieval_layer=retrieval_layer
    )
    if encoder_state is not None:
        load_encoder_state(encoder_of(model), encoder_state)
    return model
