"""Task models: one pretrained encoder, a head chosen by task type, the encoder carried on.

    model = build_model("xlm-roberta-large", task, encoder_state=None, seed=0, pad_id=1)
    state = encoder_state(model)                        # what the next phase starts from
    model = build_model(base, next_task, state, seed=1)  # same encoder weights, fresh head

Heads by task type (Hugging Face auto classes, so any family with the class works):

==================  ==================================================================
classification      ``AutoModelForSequenceClassification``
tagging             ``AutoModelForTokenClassification`` (first-subword labels)
multiple_choice     ``AutoModelForMultipleChoice``; decoder-only families, which have no
                    such class, score each (context, choice) with a one-logit
                    ``AutoModelForSequenceClassification`` (:class:`ChoiceScorer`)
qa                  ``AutoModelForQuestionAnswering`` (start/end logits)
mlm                 ``AutoModelForMaskedLM``
retrieval           ``AutoModel``, mean-pooled hidden states of one layer (:class:`Embedder`)
==================  ==================================================================

The encoder is the model's ``base_model`` (the ``base_model_prefix`` submodule), so its state
dict has the same keys under every head, with one exception: BERT-style families build a
pooler for sequence classification and multiple choice but not for tagging, QA or MLM.
:func:`load_encoder_state` therefore tolerates missing or unexpected ``pooler.*`` keys (a
missing pooler keeps its pretrained weights) and fails loudly on any other mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

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


def retrieval_layer(num_layers: int, layer: int | None) -> int:
    """Index into ``hidden_states`` (0 = embeddings, ``num_layers`` = last layer): the middle
    layer by default, as XTREME pools for BUCC and Tatoeba; a negative ``layer`` counts from
    the top (``-1`` = last layer)."""
    if layer is None:
        return num_layers // 2
    index = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= index <= num_layers:
        raise ValueError(
            f"retrieval_layer {layer} is outside the model's layers 0..{num_layers} "
            f"(or -1..-{num_layers + 1} from the top)"
        )
    return index


class Embedder(nn.Module):
    """A bare encoder that returns one vector per sequence: the mean over non-pad tokens of
    hidden layer ``layer`` (``forward(...) -> (B, H)``). Used by retrieval, which trains
    nothing: its inputs are compared by cosine similarity."""

    base_model_prefix = "model"

    def __init__(self, model: nn.Module, *, layer: int | None = None) -> None:
        super().__init__()
        self.model = model
        config: Any = model.config
        layers = int(config.num_hidden_layers)
        self.layer = retrieval_layer(layers, layer)

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kw
        )
        hidden = out.hidden_states[self.layer]  # (B, T, H)
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, H)

    def save_pretrained(self, path: str) -> None:
        self.model.save_pretrained(path)  # type: ignore[operator]


class ChoiceScorer(nn.Module):
    """Multiple choice for families without ``AutoModelForMultipleChoice`` (decoder-only:
    Llama, GPT-2, Qwen...): a one-logit ``AutoModelForSequenceClassification`` scores every
    (context, choice) sequence (at its last non-pad token, as the class does) and a softmax over
    each example's choices gives the loss, exactly like the encoders' multiple-choice heads.

    Takes and returns what ``AutoModelForMultipleChoice`` does: ``input_ids`` (B, C, T),
    ``attention_mask`` (B, C, T), optional ``labels`` (B,); ``logits`` (B, C) and ``loss``.
    """

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    @property
    def config(self) -> Any:
        return self.scorer.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        **kw: Any,
    ) -> Any:
        from transformers.modeling_outputs import MultipleChoiceModelOutput

        b, c, t = input_ids.shape
        flat = {k: v.reshape(b * c, t) for k, v in kw.items() if v is not None}
        scores = self.scorer(
            input_ids=input_ids.reshape(b * c, t),
            attention_mask=attention_mask.reshape(b * c, t),
            **flat,
        ).logits  # (B*C, 1)
        logits = scores.reshape(b, c)  # (B, C)
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return MultipleChoiceModelOutput(loss=loss, logits=logits)

    def save_pretrained(self, path: str) -> None:
        self.scorer.save_pretrained(path)  # type: ignore[operator]


def _head_class(kind: str, config: Any) -> Any:
    import transformers as tf
    from transformers.models.auto import modeling_auto

    if kind == "multiple_choice":
        if type(config) in modeling_auto.MODEL_FOR_MULTIPLE_CHOICE_MAPPING:
            return tf.AutoModelForMultipleChoice
        return None  # ChoiceScorer over sequence classification
    heads = {
        "classification": tf.AutoModelForSequenceClassification,
        "tagging": tf.AutoModelForTokenClassification,
        "qa": tf.AutoModelForQuestionAnswering,
        "mlm": tf.AutoModelForMaskedLM,
        "retrieval": tf.AutoModel,
    }
    if kind not in heads:
        raise ValueError(f"no model head for task type {kind!r}; known: {', '.join(heads)}")
    return heads[kind]


def build_model(
    base_model: str,
    task: TaskSpec,
    encoder_state: Mapping[str, torch.Tensor] | None,
    *,
    seed: int,
    pad_id: int | None = None,
    retrieval_layer: int | None = None,
) -> nn.Module:
    """``base_model`` (hub id or local path) with a fresh head for ``task``'s type (module
    docstring), the encoder weights of the last phase if given. ``pad_id`` (the id batches are
    padded with) becomes the config's pad token where it has none: decoder-only sequence
    classification finds each sequence's last token by it."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights newly initialized" is the point of a new head
    hf_logging.disable_progress_bar()
    config = AutoConfig.from_pretrained(base_model)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_id if pad_id is not None else config.eos_token_id
    torch.manual_seed(seed)
    cls = _head_class(task.kind, config)
    model: nn.Module
    if task.kind == "retrieval":
        model = Embedder(cls.from_pretrained(base_model, config=config), layer=retrieval_layer)
    elif cls is None:
        config.num_labels = 1
        scorer = AutoModelForSequenceClassification.from_pretrained(base_model, config=config)
        model = ChoiceScorer(scorer)
    elif task.kind in ("classification", "tagging"):
        config.num_labels = task.num_labels
        model = cls.from_pretrained(base_model, config=config)
    else:
        model = cls.from_pretrained(base_model, config=config)
    if encoder_state is not None:
        load_encoder_state(encoder_of(model), encoder_state)
    return model
