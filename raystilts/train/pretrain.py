"""Build the embedded base model: a Unigram tokenizer and a tiny XLM-R pretrained with MLM.

    python -m raystilts.train.pretrain ~/.cache/raystilts   # prints the model directory

The model is built from ``XLMRobertaConfig`` (random init) and pretrained briefly with masked
language modelling on the unlabelled text of every synthetic language, so that it has the one
property the study needs: representations shared across languages. The result is cached in a
content-addressed directory and reused by every later search.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from raystilts.core.progress import Bar
from raystilts.tasks.embedded import CORPUS_VERSION, unlabelled_corpus

__all__ = ["PRETRAIN_VERSION", "PretrainSettings", "build_tokenizer", "ensure_base_model"]

PRETRAIN_VERSION = "2"  # bump when the tokenizer or training recipe changes: new cache entry


@dataclass(frozen=True, slots=True, kw_only=True)
class PretrainSettings:
    seed: int = 0
    vocab_size: int = 1000  # the synthetic lexicons total ~350 word forms: words stay whole
    hidden_size: int = 128  # tiny: trains in about a minute on two CPU cores
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    max_length: int = 64
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    sentences_per_language: int = 6000

    def key(self) -> str:
        blob = json.dumps(
            {**asdict(self), "corpus": CORPUS_VERSION, "recipe": PRETRAIN_VERSION}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# A 5-step tiny encoder for tests and benchmark smoke runs: pretraining the real base model takes
# minutes, far more than the rest of such a run; the scores it gives mean nothing.
SMOKE_PRETRAIN = PretrainSettings(
    steps=5,
    batch_size=8,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    sentences_per_language=200,
)


def build_tokenizer(lines: list[str], *, vocab_size: int) -> Any:
    """A Unigram tokenizer (XLM-R's model type and special ids) wrapped as XLM-R's fast tokenizer.

    The pieces are estimated directly as a unigram LM: every word form of the corpus (the
    synthetic lexicons hold a few hundred) with its log frequency, plus single characters as a
    fallback, capped at ``vocab_size``. ``tokenizers``' Unigram trainer stops at a few hundred
    pieces on a lexicon this small and splits words into letters.
    """
    import math
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizer

    words = Counter(w for line in lines for w in line.split())
    chars = Counter(c for w, n in words.items() for c in w for _ in range(n))
    total = sum(words.values()) + sum(chars.values())
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]  # XLM-R's ids 0..3
    pieces = [
        ("\u2581" + w, math.log(n / total))
        for w, n in words.most_common(vocab_size - len(chars) - 6)
    ]
    pieces += [(c, math.log(n / total) - 10.0) for c, n in chars.items()] + [("\u2581", -20.0)]
    tok = Tokenizer(
        models.Unigram(specials + pieces + [("<mask>", 0.0)], unk_id=3, byte_fallback=False)
    )
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return XLMRobertaTokenizer(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


def _pretrain(out: Path, settings: PretrainSettings, *, log: bool) -> None:
    import torch
    from transformers import (
        DataCollatorForLanguageModeling,
        XLMRobertaConfig,
        XLMRobertaForMaskedLM,
        get_cosine_schedule_with_warmup,
    )

    torch.manual_seed(settings.seed)
    lines = unlabelled_corpus(
        seed=settings.seed, sentences_per_language=settings.sentences_per_language
    )
    tokenizer = build_tokenizer(lines, vocab_size=settings.vocab_size)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        intermediate_size=settings.intermediate_size,
        max_position_embeddings=settings.max_length
        + 2,  # XLM-R offsets positions by padding_idx + 1
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    model = XLMRobertaForMaskedLM(config)
    enc = tokenizer(lines, truncation=True, max_length=settings.max_length)["input_ids"]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    sched = get_cosine_schedule_with_warmup(opt, max(1, settings.steps // 10), settings.steps)
    gen = torch.Generator().manual_seed(settings.seed)
    model.train()
    bar = Bar("pretraining (MLM)", total=settings.steps) if log else None
    for step in range(settings.steps):
        idx = torch.randint(len(enc), (settings.batch_size,), generator=gen).tolist()
        batch = collate([{"input_ids": enc[i]} for i in idx])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if bar is not None and (step % 10 == 9 or step + 1 == settings.steps):
            bar.advance(
                10 if step % 10 == 9 else settings.steps % 10, suffix=f"loss {loss.item():.3f}"
            )
    if bar is not None:
        bar.close()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" for one tiny shard: noise
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "raystilts_pretrain.json").write_text(json.dumps(asdict(settings), indent=1) + "\n")


def ensure_base_model(
    cache_dir: Path, settings: PretrainSettings | None = None, *, log: bool = True
) -> Path:
    """Return the directory of the pretrained embedded model, building it once (process-safe)."""
    settings = settings or PretrainSettings()
    out = cache_dir / f"embedded-model-{settings.key()}"
    done = out / "raystilts_pretrain.json"
    if done.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if done.exists():  # another process built it while we waited
            return out
        if log:
            print(f"pretraining the embedded base model once (cached in {out}) ...", flush=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        _pretrain(tmp, settings, log=log)
        tmp.rename(out)
    return out


if __name__ == "__main__":
    import sys

    print(ensure_base_model(Path(sys.argv[1] if len(sys.argv) > 1 else ".raystilts-cache")))
