"""Padding removed from the compute: a batch's rows packed end to end into fewer, fuller rows.

    batch = collate(feats, idx, pad_id=1)                       # (B, T), padded to the longest
    if packable(batch) and (start := position_start(model_type, pad_id=1)) is not None:
        batch = pack(batch, position_start=start, limit=512, pad_id=1)  # (R, W), R*W <= B*T

A padded batch computes every pad slot through every layer. Packed, each row holds several
sequences one after the other and the model is told where each starts by ``position_ids`` that
restart at every sequence: transformers (5) then builds a block-diagonal attention mask from
them (``masking_utils.find_packed_sequence_indices``, the path ``DataCollatorWithFlattening``
uses), so no token attends across sequences, and every position embedding is the one the row
had alone. The loss is unchanged where it is a mean over labelled tokens (tagging, masked LM):
the same labelled tokens, one after the other. A kind with one label per row (classification,
multiple choice, QA spans) reads one position per row and is never packed.

Only families checked to honour packed ``position_ids`` are packed (:data:`PACKED_FAMILIES`;
``tests/test_packing.py`` compares packed and padded logits for each); others keep padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from raystilts.metrics.scores import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

__all__ = ["PACKED_FAMILIES", "pack", "packable", "position_start"]

# model_type -> whether its positions start after the padding index (fairseq's RoBERTa layout,
# pad_id + 1) or at 0; each builds its attention mask with create_bidirectional_mask from
# position_ids when no 2D mask is given (checked in tests/test_packing.py)
PACKED_FAMILIES = {"xlm-roberta": True, "roberta": True, "bert": False}
_INPUTS = ("input_ids", "token_type_ids", "labels")
_PACKABLE_KEYS = frozenset({*_INPUTS, "attention_mask"})
_WIDTHS = (1, 2, 4, 8)  # row widths tried, in multiples of the batch's longest row


def position_start(model_type: str, *, pad_id: int) -> int | None:
    """The position id of a sequence's first token in ``model_type``, or None when that family
    is not known to support packed rows (its batches then stay padded)."""
    if model_type not in PACKED_FAMILIES:
        return None
    return pad_id + 1 if PACKED_FAMILIES[model_type] else 0


def packable(batch: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``batch`` is single-sequence rows with per-token labels: (B, T) inputs and
    labels of the same shape, nothing else (no QA span, no per-row label)."""
    ids, labels = batch.get("input_ids"), batch.get("labels")
    if ids is None or labels is None or "attention_mask" not in batch:
        return False
    return ids.ndim == 2 and labels.shape == ids.shape and set(batch) <= _PACKABLE_KEYS


def _first_fit(lengths: list[int], width: int) -> list[list[int]]:
    """Rows of sequence indices, longest first, each into the first row with room."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


def pack(
    batch: Mapping[str, torch.Tensor],
    *,
    position_start: int,
    limit: int,
    pad_id: int,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, torch.Tensor]:
    """``batch`` (padded, :func:`packable`) as packed rows with ``position_ids`` and no
    ``attention_mask`` (module docstring). The row width is the one of 1, 2, 4 or 8 times the
    longest sequence (at most ``limit``, the model's positions) that leaves the fewest slots;
    a row's unused tail is a sequence of its own (pad ids, positions from the start, labels
    ignored), so it never attends to a real token nor they to it."""
    import torch

    lengths: list[int] = batch["attention_mask"].sum(1).tolist()
    longest = max(lengths)
    width, rows = longest, _first_fit(lengths, longest)  # one sequence a row always fits
    for mult in _WIDTHS[1:]:
        wider = longest * mult
        if wider > limit:
            break
        fitted = _first_fit(lengths, wider)
        if len(fitted) * wider < len(rows) * width:
            width, rows = wider, fitted
    fill = {"input_ids": pad_id, "token_type_ids": 0, "labels": ignore_index}
    out = {
        k: torch.full((len(rows), width), fill[k], dtype=batch[k].dtype)
        for k in _INPUTS
        if k in batch
    }
    positions = torch.empty((len(rows), width), dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = lengths[i]
            for k, v in out.items():
                v[r, at : at + n] = batch[k][i, :n]
            positions[r, at : at + n] = torch.arange(position_start, position_start + n)
            at += n
        # the tail: its own sequence of pad tokens (a position jump starts it)
        positions[r, at:] = torch.arange(position_start, position_start + width - at)
    out["position_ids"] = positions
    return out
