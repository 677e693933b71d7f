"""Resolve where a search's model, data and tokenized features live, and prepare them once.

    ws = prepare_workspace(model="embedded", tasks=[...], languages={...}, max_length=64,
                           cache_dir=default_cache_dir())

``model: embedded`` means the project's own offline assets: the synthetic benchmark is generated
and the tiny base model pretrained (both cached). Any other value is a Hugging Face hub id or a
local path, and tasks are read from ``data_dir``. Every (task, split, language) a search needs
is featurized here, on the driver, before any trial starts: trials only read the cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from raystilts.data import FeatureStore
from raystilts.embedded.generate import BENCHMARK_VERSION, generate
from raystilts.embedded.pretrain import ensure_base_model
from raystilts.errors import UserError
from raystilts.tasks import TaskSpec

__all__ = ["Workspace", "default_cache_dir", "prepare_workspace"]


def default_cache_dir() -> Path:
    """``$RAYSTILTS_CACHE`` or ``~/.cache/raystilts``: assets reused across searches."""
    return Path(os.environ.get("RAYSTILTS_CACHE", Path.home() / ".cache" / "raystilts")).resolve()


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    model: str  # what from_pretrained gets: a local directory or a hub id
    data_dir: Path
    features: FeatureStore
    pad_id: int
    misses: int  # how many (task, split, language) triples were tokenized now

    def to_config(self) -> dict[str, object]:
        """Plain values to ship to trial workers (paths must be shared by all of them)."""
        return {
            "model": self.model,
            "data_dir": str(self.data_dir),
            "feature_dir": str(self.features.cache_dir),
            "tokenizer_dir": str(self.features.tokenizer_dir),
            "max_length": self.features.max_length,
            "pad_id": self.pad_id,
        }

    @staticmethod
    def store_from_config(cfg: Mapping[str, object]) -> FeatureStore:
        return FeatureStore(
            cache_dir=Path(str(cfg["feature_dir"])),
            tokenizer_dir=Path(str(cfg["tokenizer_dir"])),
            max_length=int(str(cfg["max_length"])),
        )


def prepare_workspace(
    *,
    model: str,
    needs: Iterable[tuple[TaskSpec, str, str]],
    max_length: int,
    cache_dir: Path,
    data_dir: Path | None = None,
    log: bool = True,
) -> Workspace:
    """Make sure model, data and features exist; ``needs`` lists (task, split, language)."""
    if model == "embedded":
        data_dir = generate(cache_dir / f"embedded-data-v{BENCHMARK_VERSION}-seed0", seed=0)
        model_dir = str(ensure_base_model(cache_dir, log=log))
    else:
        if data_dir is None:
            raise UserError(
                f"model '{model}': pass --data-dir DIR with <task>/<lang>/<split>.jsonl files"
            )
        # a local path travels to workers whose working directory differs: make it absolute
        model_dir = str(Path(model).resolve()) if Path(model).exists() else model
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except OSError as e:
        raise UserError(
            f"model '{model}': cannot load its tokenizer ({str(e).splitlines()[0]}); "
            "give a local directory with the model, or make the hub reachable"
        ) from None
    tok_dir = (
        Path(model_dir) if Path(model_dir).is_dir() else _save_tokenizer(tok, cache_dir, model)
    )
    store = FeatureStore(
        cache_dir=cache_dir / "features", tokenizer_dir=tok_dir, max_length=max_length
    )
    misses = sum(
        store.ensure(task, split, lang, data_dir=data_dir, tokenizer=tok)
        for task, split, lang in needs
    )
    if log and misses:
        print(f"tokenized {misses} (task, split, language) sets into {store.cache_dir}", flush=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Workspace(
        model=model_dir, data_dir=data_dir, features=store, pad_id=int(pad), misses=misses
    )


def _save_tokenizer(tok: object, cache_dir: Path, model: str) -> Path:
    out = cache_dir / "tokenizers" / model.replace("/", "--")
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))  # type: ignore[attr-defined]
    return out
