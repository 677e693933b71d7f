"""Model families: tiny random XLM-R, mBERT (BERT), mDeBERTa (DeBERTa-v2) and decoder-only
(Llama, GPT-2) models built from configs next to the tiny model's tokenizer; each trains one
step and evaluates every task type the issue asks of it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from kinds_data import MC, MLM, NER, PAIR, QA, TATOEBA, needs

from raystilts.data.features import TOKENIZER_FILES, FeatureStore
from raystilts.tasks.catalog import TaskSpec
from raystilts.train.models import (
    ChoiceScorer,
    build_model,
    encoder_state,
    load_encoder_state,
)
from raystilts.train.runner import ChainPlan, Phase, TrainSettings, run_chain

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def _config(family: str, vocab: int) -> object:
    import transformers as tf

    if family == "bert":
        return tf.BertConfig(
            vocab_size=vocab, intermediate_size=64, max_position_embeddings=128, **SMALL
        )
    if family == "deberta-v2":
        return tf.DebertaV2Config(
            vocab_size=vocab,
            intermediate_size=64,
            max_position_embeddings=128,
            relative_attention=True,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            type_vocab_size=0,
            **SMALL,
        )
    if family == "llama":
        return tf.LlamaConfig(
            vocab_size=vocab,
            intermediate_size=64,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=None,
            **SMALL,
        )
    if family == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab,
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=128,
            bos_token_id=0,
            eos_token_id=2,
        )
    raise ValueError(family)


def tiny_family(tokenizer_dir: Path, family: str, out: Path) -> Path:
    """A random ``family`` model saved with save_pretrained beside a copy of the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    config = _config(family, vocab)
    torch.manual_seed(0)
    auto = AutoModelForCausalLM if family in ("llama", "gpt2") else AutoModelForMaskedLM
    auto.from_config(config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def family_store(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FeatureStore]:
    from kinds_data import use_fixture_examples

    with pytest.MonkeyPatch.context() as mp:
        use_fixture_examples(mp)
        store = FeatureStore(
            cache_dir=tmp_path_factory.mktemp("families"), tokenizer_dir=tiny_model, max_length=32
        )
        for task in (PAIR, MC, QA, NER, MLM, TATOEBA):
            for t, split, lang in needs(task):
                store.ensure(t, split, lang, data_dir=None)
        yield store


@pytest.fixture(scope="module")
def families(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families-models")
    built = {
        f: tiny_family(tiny_model, f, root / f) for f in ("bert", "deberta-v2", "llama", "gpt2")
    }
    return {"xlm-roberta": tiny_model, **built}


def _chain(
    store: FeatureStore,
    model: str,
    phases: list[TaskSpec],
    target: TaskSpec,
    *,
    steps: int = 1,
    final_model_dir: Path | None = None,
) -> dict[str, float]:
    plan = ChainPlan(
        phases=tuple(Phase(task=t, lr=1e-3, steps=1) for t in phases),
        target=Phase(task=target, lr=1e-3, steps=steps),
        eval_every=0,
        eval_languages=target.languages,
        seed=0,
    )
    return run_chain(
        plan,
        base_model=model,
        store=store,
        settings=TrainSettings(batch_size=4, eval_batch_size=8),
        report=lambda _: None,
        pad_id=1,
        final_model_dir=final_model_dir,
    )


@pytest.mark.parametrize("family", ["xlm-roberta", "bert", "deberta-v2"])
def test_encoder_family_trains_and_evaluates_every_kind(
    family: str, families: dict[str, Path], family_store: FeatureStore
) -> None:
    """MLM > QA > NER > MC > classification carries one encoder through five heads (BERT's
    pooler exists under some of them only); then a retrieval target on a trained encoder."""
    model = str(families[family])
    out = _chain(family_store, model, [MLM, QA, NER, MC], PAIR)
    for i in range(4):
        assert 0.0 <= out[f"phase{i}/dev_en"] <= 1.0, i
    assert 0.0 <= out["test/k_pair/de/accuracy"] <= 1.0
    out = _chain(family_store, model, [PAIR], TATOEBA, steps=0)
    assert 0.0 <= out["test/k_tatoeba/fr/accuracy"] <= 1.0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_decoder_family_classification_and_multiple_choice(
    family: str, families: dict[str, Path], family_store: FeatureStore, tmp_path: Path
) -> None:
    model = str(families[family])
    out = _chain(family_store, model, [PAIR], MC, final_model_dir=tmp_path / "final")
    assert 0.0 <= out["phase0/dev_en"] <= 1.0
    assert 0.0 <= out["test/k_mc/de/accuracy"] <= 1.0
    assert (tmp_path / "final" / "config.json").is_file()  # the scorer saves as HF model
    out = _chain(family_store, model, [MC], PAIR)
    assert 0.0 <= out["test/k_pair/en/accuracy"] <= 1.0


def test_decoder_multiple_choice_is_a_one_logit_scorer_with_pad_from_eos(
    families: dict[str, Path],
) -> None:
    mc = build_model(str(families["gpt2"]), MC, None, seed=0)
    assert isinstance(mc, ChoiceScorer) and mc.config.num_labels == 1
    assert mc.config.pad_token_id == 2  # GPT-2 has none: eos, as its classifier needs
    ids = torch.tensor([[[5, 6, 7, 1], [5, 8, 1, 1]]])  # (B=1, C=2, T=4), right-padded
    mask = (ids != 1).long()
    out = mc(input_ids=ids, attention_mask=mask, labels=torch.tensor([1]))
    assert out.logits.shape == (1, 2) and out.loss.ndim == 0
    llama = build_model(str(families["llama"]), PAIR, None, seed=0, pad_id=1)
    assert llama.config.pad_token_id == 1  # the id batches are padded with


def test_encoder_state_moves_between_heads_and_refuses_another_architecture(
    families: dict[str, Path],
) -> None:
    bert = str(families["bert"])
    mc = build_model(bert, MC, None, seed=0)  # BERT multiple choice has a pooler
    qa = build_model(bert, QA, None, seed=1)  # QA has none
    state = encoder_state(mc)
    assert any(k.startswith("pooler.") for k in state)
    load_encoder_state(qa.base_model, state)  # extra pooler keys: fine
    back = build_model(bert, PAIR, encoder_state(qa), seed=2)  # missing pooler: pretrained kept
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(back.base_model.state_dict()[emb], state[emb])
    xlmr = build_model(str(families["xlm-roberta"]), PAIR, None, seed=0)
    with pytest.raises(ValueError, match="does not fit"):
        load_encoder_state(xlmr.base_model, state)
