"""Featurize tasks once per search, cache the features, and batch them for training.

    store = FeatureStore(cache_dir=Path(".raystilts/features"), tokenizer_dir=model_dir, max_length=64)
    path = store.ensure(task, "train", "en", data_dir=data_dir)     # tokenizes once, then reuses
    feats = store.load(task, "train", "en")                          # any process, any trial
    train = store.load_train(task)            # the train splits of task.train_languages, joined

Features are keyed by (task, split, language, tokenizer content, max length, featurization
version): every trial of a search, in any worker process, reads the same Arrow files and none
tokenizes again. ``TaskSpec.max_length`` (e.g. 384 for QA) overrides the store's max length for
that task. Batches are length-grouped and padded per batch (dynamic padding).

Featurization, collation and the rest of what depends on a task's type live in the task's
kind (:mod:`raystilts.kinds`, one module per kind); :func:`featurize` and :func:`collate` look
the kind up. ``Features``, ``doc_stride``, ``mlm_collator``, ``IGNORE_INDEX`` and
``MLM_PROBABILITY`` are re-exported from there for older imports.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from raystilts.kinds import KIND_NAMES, get_kind
from raystilts.kinds.base import IGNORE_INDEX, Features, collate_rows
from raystilts.kinds.mlm import MLM_PROBABILITY, mlm_collator
from raystilts.kinds.qa import doc_stride
from raystilts.tasks.catalog import TaskSpec, data_fingerprint, read_examples

if TYPE_CHECKING:
    import datasets
    import torch

__all__ = [
    "FEATURIZE_VERSION",
    "IGNORE_INDEX",
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
    "needs_of",
    "tokenizer_fingerprint",
]

# 2: every task type, token_type_ids, per-task max length; 3: QA segment ids, retrieval texts
# (a kind's featurize changed: bump it, so that no cache serves the old features)
FEATURIZE_VERSION = "3"
MEGA_BATCH = 4  # batches per length-sorted group: see `batches`
EXAMPLES_FILE = "examples.jsonl"  # QA evaluation entries keep the examples decoding needs


# the files a Hugging Face tokenizer is saved as (one family uses some of them)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "spm.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",  # Llama/Gemma-style sentencepiece
    "added_tokens.json",
)


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    """A hash of the tokenizer files, so a changed tokenizer never reads stale features."""
    h = hashlib.sha256()
    for name in sorted(TOKENIZER_FILES):
        p = tokenizer_dir / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def dev_language(task: TaskSpec) -> str:
    """The language a training phase of ``task`` is scored in (its dev split): English, or
    the first training language of a task trained without English (an MLM phase)."""
    return "en" if "en" in task.train_languages else task.train_languages[0]


def needs_of(
    task: TaskSpec, *, target: bool, languages: Sequence[str] = ()
) -> set[tuple[TaskSpec, str, str]]:
    """The (task, split, language) feature sets a chain reads for ``task``: its train split in
    every training language (when it has training data) and its dev split in
    :func:`dev_language`; as a target, also dev and test in each of ``languages`` (only the
    splits :meth:`TaskSpec.splits` lists for a language)."""
    out: set[tuple[TaskSpec, str, str]] = set()
    if task.has_train:
        out.update((task, "train", lang) for lang in task.train_languages)
        out.add((task, "dev", dev_language(task)))
    if target:
        for lang in languages:
            out.update((task, s, lang) for s in ("dev", "test") if s in task.splits(lang))
    return out


def featurize(
    task: TaskSpec,
    examples: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    max_length: int,
    split: str = "dev",
) -> dict[str, list[Any]]:
    """Tokenize canonical examples of ``task`` into columns (no padding: batches pad), as its
    kind does (:meth:`raystilts.kinds.Kind.featurize`). ``split`` matters for QA only (train
    windows carry answer positions, the others what decoding needs)."""
    if task.kind not in KIND_NAMES:
        raise ValueError(f"task {task.name!r}: no featurization for task type {task.kind!r}")
    return get_kind(task.kind).featurize(
        task, examples, tokenizer, max_length=max_length, split=split
    )


# model types whose position ids start after the padding index (fairseq's RoBERTa layout)
_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"})


def model_token_limit(model_dir: Path) -> int | None:
    """The most tokens a sequence may have for the model saved in ``model_dir``: the smaller of
    the tokenizer's ``model_max_length`` and the model config's position count (RoBERTa-style
    models lose ``pad_token_id + 1`` positions); None when neither file says."""
    import json

    limits: list[int] = []
    tok_cfg = model_dir / "tokenizer_config.json"
    if tok_cfg.is_file():
        n = json.loads(tok_cfg.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(n, int | float) and 0 < n < 1_000_000:  # HF writes 1e30 for "no limit"
            limits.append(int(n))
    cfg_path = model_dir / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        n = cfg.get("max_position_embeddings")
        if isinstance(n, int) and n > 0:
            if cfg.get("model_type") in _OFFSET_POSITIONS:
                n -= int(cfg.get("pad_token_id") or 0) + 1
            limits.append(n)
    return min(limits) if limits else None


class FeatureStore:
    """A content-addressed cache of featurized (task, split, language) triples, safe across processes."""

    def __init__(
        self,
        *,
        cache_dir: Path,
        tokenizer_dir: Path,
        max_length: int,
        data_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.tokenizer_dir = tokenizer_dir
        self.max_length = max_length
        # "task/split/lang" -> raystilts.tasks.catalog.data_fingerprint, set by the driver (track_data)
        # and shipped to workers with the workspace config, so both name entries alike
        self.data_keys: dict[str, str] = dict(data_keys or {})
        self._fingerprint = tokenizer_fingerprint(tokenizer_dir)
        self.model_limit = model_token_limit(tokenizer_dir)

    def max_length_for(self, task: TaskSpec) -> int:
        """The task's own ``max_length`` (QA: 384) where it sets one, else the store's; never
        more tokens than the model has positions for (a tiny model may have only 64)."""
        wanted = task.max_length or self.max_length
        return min(wanted, self.model_limit) if self.model_limit else wanted

    def track_data(
        self, needs: Iterable[tuple[TaskSpec, str, str]], *, data_dir: Path | None
    ) -> None:
        """Key the entries of ``needs`` on the data they are read from (local file or hub)."""
        for task, split, lang in needs:
            fp = data_fingerprint(task, split, lang, data_dir)
            self.data_keys[f"{task.name}/{split}/{lang}"] = fp

    def path(self, task: TaskSpec, split: str, lang: str) -> Path:
        length = self.max_length_for(task)
        key = f"{task.name}-{split}-{lang}-tok{self._fingerprint}-len{length}-v{FEATURIZE_VERSION}"
        data = self.data_keys.get(f"{task.name}/{split}/{lang}")
        return self.cache_dir / (f"{key}-d{data}" if data else key)

    def train_paths(self, task: TaskSpec) -> list[Path]:
        """The entries :meth:`load_train` reads (one per training language)."""
        return [self.path(task, "train", lang) for lang in task.train_languages]

    def ensure(
        self,
        task: TaskSpec,
        split: str,
        lang: str,
        *,
        data_dir: Path | None,
        tokenizer: Any = None,
    ) -> bool:
        """Featurize into the cache unless present; returns True when it tokenized (a cache miss)."""
        out = self.path(task, split, lang)
        if (out / "dataset_info.json").is_file():
            return False
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(out) + ".lock"):
            if (out / "dataset_info.json").is_file():
                return False
            import datasets
            from transformers import AutoTokenizer

            tok = tokenizer or AutoTokenizer.from_pretrained(str(self.tokenizer_dir))
            examples = read_examples(task, split, lang, data_dir=data_dir)
            cols = featurize(task, examples, tok, max_length=self.max_length_for(task), split=split)
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            datasets.Dataset.from_dict(cols).save_to_disk(str(tmp))
            if get_kind(task.kind).keeps_examples(split):  # QA decodes from the examples
                with (tmp / EXAMPLES_FILE).open("w", encoding="utf-8") as f:
                    for ex in examples:
                        f.write(json.dumps(ex, ensure_ascii=False) + "\n")
            tmp.rename(out)
        return True

    def load(self, task: TaskSpec, split: str, lang: str) -> Features:
        """The features as plain lists (``datasets`` 5 columns are lazy: indexing them one row
        at a time in the batch loop cost more than the model's forward pass)."""
        path = self.path(task, split, lang)
        table = _load_from_disk(path).data
        cols = {name: table.column(name).to_pylist() for name in table.column_names}
        examples: list[dict[str, Any]] = []
        if (path / EXAMPLES_FILE).is_file():
            with (path / EXAMPLES_FILE).open(encoding="utf-8") as f:
                examples = [json.loads(line) for line in f if line.strip()]
        return Features(
            input_ids=cols.pop("input_ids"),
            labels=cols.pop("labels", []),
            kind=task.kind,
            columns=cols,
            examples=examples,
        )

    def load_train(self, task: TaskSpec) -> Features:
        """The training rows of ``task``: its train split in each of ``task.train_languages``
        (one cache entry per language, joined here), in that order."""
        return Features.concat([self.load(task, "train", lang) for lang in task.train_languages])


def _load_from_disk(path: Path) -> datasets.Dataset:
    import datasets

    return datasets.load_from_disk(str(path))


def collate(
    feats: Features, idx: Sequence[int], *, pad_id: int, mlm: Any = None
) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest sequence (dynamic padding): model inputs and, where the
    rows have them, training targets, as the rows' kind collates them
    (:meth:`raystilts.kinds.Kind.collate`: multiple choice ``(B, C, T)``, MLM masked by ``mlm``,
    :func:`mlm_collator`). ``"plain"`` rows (text embeddings) are padded sequences."""
    if feats.kind in KIND_NAMES:
        return get_kind(feats.kind).collate(feats, idx, pad_id=pad_id, mlm=mlm)
    return collate_rows(feats, idx, pad_id=pad_id)


def batches(
    lengths: Sequence[int],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[int]]:
    """One epoch of length-grouped batches for this rank (every rank gets the same count).

    Indices are shuffled, grouped in mega-batches of ``MEGA_BATCH`` batches, sorted by length
    inside each (so a batch pads little), cut into batches, and the batches are shuffled again.
    Mega-batches stay small on purpose: where length correlates with the label (NLI hypotheses
    that drop or add words), Hugging Face's default of 50 made batches nearly single-label and
    cost 20 points of dev accuracy on the embedded NLI task; 4 kept most of the padding saving.
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = get_length_grouped_indices(
        list(lengths), batch_size, mega_batch_mult=MEGA_BATCH, generator=gen
    )
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    perm = torch.randperm(len(chunks), generator=gen).tolist()
    chunks = [chunks[p] for p in perm]
    usable = len(chunks) - len(chunks) % world_size if len(chunks) >= world_size else len(chunks)
    mine = chunks[rank:usable:world_size]
    return mine or chunks[:1]  # a tiny set still yields a batch on every rank


def eval_batches(lengths: Sequence[int], *, batch_size: int) -> Iterator[list[int]]:
    """Evaluation batches sorted by length (least padding); order does not matter for metrics."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]
