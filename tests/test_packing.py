"""Packed rows (raystilts.data.packing) compute what padded rows compute, family by family."""

from __future__ import annotations

import pytest
import torch

from raystilts.data.packing import PACKED_FAMILIES, pack, packable, position_start

PAD = 1


def padded_batch(lengths: list[int], vocab: int = 50) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    labels = torch.full((len(lengths), width), -100)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(3, vocab, (n,), generator=gen)
        mask[r, :n] = 1
        labels[r, 1 : n - 1] = torch.randint(0, 5, (n - 2,), generator=gen)  # no label on specials
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tiny(model_type: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.for_model(
        model_type,
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=72,
        pad_token_id=PAD,
        num_labels=5,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_config(config).eval()


@pytest.mark.parametrize("model_type", sorted(PACKED_FAMILIES))
def test_packed_rows_give_the_padded_rows_logits_and_loss(model_type: str) -> None:
    lengths = [9, 3, 7, 7, 4, 12, 5, 2 + 1]
    batch = padded_batch(lengths)
    model = tiny(model_type)
    start = position_start(model_type, pad_id=PAD)
    assert start is not None
    packed = pack(batch, position_start=start, limit=64, pad_id=PAD)
    assert packed["input_ids"].numel() < batch["input_ids"].numel()
    assert "attention_mask" not in packed  # packed detection needs it absent
    with torch.no_grad():
        ref = model(**batch)
        out = model(**packed)
    real = batch["labels"] != -100
    assert torch.allclose(out.loss, ref.loss, atol=1e-5)
    # the labelled tokens, in packing order, carry the same logits
    got = out.logits[packed["labels"] != -100]
    want = ref.logits[real]
    assert got.shape == want.shape
    assert torch.allclose(got.sort(0).values, want.sort(0).values, atol=1e-5)


def test_pack_keeps_every_token_once_and_restarts_positions() -> None:
    batch = padded_batch([5, 5, 2 + 1, 8])
    out = pack(batch, position_start=2, limit=64, pad_id=PAD)
    real = batch["input_ids"][batch["attention_mask"].bool()]
    kept = out["input_ids"][out["input_ids"] != PAD]
    assert sorted(kept.tolist()) == sorted(real.tolist())
    # every sequence starts at position 2: as many starts as sequences plus the rows' tails
    starts = int((out["position_ids"] == 2).sum())
    assert 4 <= starts <= 4 + out["input_ids"].shape[0]
    assert int(out["position_ids"].max()) < 2 + out["input_ids"].shape[1]


def test_only_single_sequence_token_label_batches_pack() -> None:
    batch = padded_batch([4, 3])
    assert packable(batch)
    assert not packable({**batch, "labels": torch.tensor([0, 1])})  # one label per row
    assert not packable({**batch, "start_positions": torch.tensor([0, 1])})  # QA spans
    three_d = {"input_ids": torch.ones(2, 3, 4), "attention_mask": torch.ones(2, 3, 4)}
    assert not packable(three_d)  # multiple choice
    assert position_start("gpt2", pad_id=PAD) is None  # not checked: stays padded
    assert position_start("xlm-roberta", pad_id=PAD) == PAD + 1
    assert position_start("bert", pad_id=0) == 0
