"""Resolve where a search's model, data and tokenized features live, and prepare them once.

    ws = prepare_workspace(model="embedded", tasks=[...], languages={...}, max_length=64,
                           cache_dir=default_cache_dir())

``model: embedded`` means the project's own offline assets: the synthetic benchmark is generated
and the tiny base model pretrained (both cached). Any other value is a Hugging Face hub id or a
local path; tasks are read from ``data_dir`` when given (files in each task's own schema), else
from the Hugging Face hub (raystilts.tasks.catalog.read_examples), and the embedded tasks need it. Every (task, split, language) a search needs
is featurized here, on the driver, before any trial starts: trials only read the cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from raystilts.core.errors import UserError
from raystilts.core.progress import Bar
from raystilts.data import FeatureStore
from raystilts.data import storage as storage_lib
from raystilts.tasks import TaskSpec
from raystilts.tasks.embedded import BENCHMARK_VERSION, generate
from raystilts.train.pretrain import ensure_base_model

__all__ = ["Workspace", "default_cache_dir", "open_workspace", "prepare_workspace"]


def default_cache_dir() -> Path:
    """``$RAYSTILTS_CACHE`` or ``~/.cache/raystilts``: assets reused across searches."""
    return Path(os.environ.get("RAYSTILTS_CACHE", Path.home() / ".cache" / "raystilts")).resolve()


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    model: str  # what from_pretrained gets: a local directory or a hub id
    data_dir: Path | None  # None: tasks come from the hub
    features: FeatureStore
    pad_id: int
    misses: int  # how many (task, split, language) triples were tokenized now

    def to_config(self) -> dict[str, object]:
        """Plain values to ship to trial workers (paths must be shared by all of them)."""
        return {
            "model": self.model,
            "data_dir": str(self.data_dir) if self.data_dir is not None else None,
            "feature_dir": str(self.features.cache_dir),
            "tokenizer_dir": str(self.features.tokenizer_dir),
            "max_length": self.features.max_length,
            "data_keys": dict(self.features.data_keys),
            "pad_id": self.pad_id,
        }

    def share(self, needs: Iterable[tuple[TaskSpec, str, str]], storage: str) -> dict[str, object]:
        """Publish the model (if local), tokenizer and the needed features under ``storage``
        (an ``s3://``/``gs://``/``file://`` URI or a directory every node mounts) and return the
        config with which workers on any node fetch them (:func:`open_workspace`)."""
        root = storage_lib.join(storage, "raystilts-cache")

        def put(local: Path, kind: str) -> str:
            return storage_lib.publish(
                local,
                storage_lib.join(root, kind, f"{local.name}-{storage_lib.content_key(local)}"),
            )

        model_dir = Path(self.model)
        entries = sorted({self.features.path(t, s, lang).name for t, s, lang in needs})
        for name in entries:  # feature entries are content-addressed already
            storage_lib.publish(
                self.features.cache_dir / name, storage_lib.join(root, "features", name)
            )
        model_uri = put(model_dir, "models") if model_dir.is_dir() else None
        same = model_dir.is_dir() and model_dir.resolve() == self.features.tokenizer_dir.resolve()
        return {
            **self.to_config(),
            "remote": {
                "model": model_uri,
                # a local model directory holds its tokenizer: ship it once, not twice
                "tokenizer": model_uri if same else put(self.features.tokenizer_dir, "tokenizers"),
                "features": storage_lib.join(root, "features"),
                "entries": entries,
            },
        }

    @staticmethod
    def store_from_config(cfg: Mapping[str, object]) -> FeatureStore:
        return FeatureStore(
            cache_dir=Path(str(cfg["feature_dir"])),
            tokenizer_dir=Path(str(cfg["tokenizer_dir"])),
            max_length=int(str(cfg["max_length"])),
            data_keys=cfg.get("data_keys"),  # type: ignore[arg-type]
        )


def open_workspace(cfg: Mapping[str, object], *, node: str) -> tuple[str, FeatureStore, Path]:
    """On a worker: (model for from_pretrained, feature store, tokenizer dir) of a workspace
    config. A shared config (:meth:`Workspace.share`) is fetched once per node into
    ``node_cache_root()/<node>``; a plain one points at the driver's cache (one machine)."""
    remote = cfg.get("remote")
    if not isinstance(remote, Mapping):
        store = Workspace.store_from_config(cfg)
        return str(cfg["model"]), store, store.tokenizer_dir
    local = storage_lib.node_cache_root() / node
    model = (
        str(storage_lib.fetch(str(remote["model"]), local / "models"))
        if remote["model"]
        else str(cfg["model"])  # a hub id: each node downloads it into its Hugging Face cache
    )
    tok_dir = (
        Path(model)
        if remote["tokenizer"] == remote["model"]
        else storage_lib.fetch(str(remote["tokenizer"]), local / "tokenizers")
    )
    features = local / "features"
    for name in remote["entries"]:  # type: ignore[attr-defined]
        copy = storage_lib.fetch(storage_lib.join(str(remote["features"]), name), features)
        link = features / name
        if not link.exists():  # the store looks entries up by name
            tmp = features / f".{name}.{os.getpid()}"
            tmp.symlink_to(copy, target_is_directory=True)
            tmp.replace(link)
    store = FeatureStore(
        cache_dir=features,
        tokenizer_dir=tok_dir,
        max_length=int(str(cfg["max_length"])),
        data_keys=cfg.get("data_keys"),  # type: ignore[arg-type]
    )
    return model, store, tok_dir


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
    needs = list(needs)
    embedded_dir: Path | None = None
    user_dir = data_dir
    if model == "embedded":
        embedded_dir = generate(cache_dir / f"embedded-data-v{BENCHMARK_VERSION}-seed0", seed=0)
        data_dir = data_dir or embedded_dir
        model_dir = str(ensure_base_model(cache_dir, log=log))
    else:
        local = sorted({t.name for t, _, _ in needs if t.source == "embedded"})
        if data_dir is None and local:  # hub tasks need no directory; embedded ones do
            raise UserError(
                f"model '{model}' with embedded task(s) {', '.join(local)}: pass --data-dir DIR "
                "with <task>/<lang>/<split>.jsonl files (or use model: embedded)"
            )
        # a local path travels to workers whose working directory differs: make it absolute
        model_dir = str(Path(model).resolve()) if Path(model).exists() else model
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except OSError as e:
        why = str(e).splitlines()[0]
        if model == "embedded":  # our own cache entry, damaged (a full disk, a killed copy)
            raise UserError(
                f"the cached embedded model {model_dir} is damaged ({why}); delete that "
                "directory and run again (it is rebuilt in about two minutes)"
            ) from None
        raise UserError(
            f"model '{model}': cannot load its tokenizer ({why}); "
            "give a local directory with the model, or make the hub reachable"
        ) from None
    _check_length(model, model_dir, max_length)
    tok_dir = (
        Path(model_dir) if Path(model_dir).is_dir() else _save_tokenizer(tok, cache_dir, model)
    )
    store = FeatureStore(
        cache_dir=cache_dir / "features", tokenizer_dir=tok_dir, max_length=max_length
    )

    def source_dir(task: TaskSpec) -> Path | None:
        # real tasks read --data-dir (or the hub); embedded tasks their generated directory
        if embedded_dir is not None:
            return embedded_dir if task.source == "embedded" else user_dir
        return data_dir

    for task, split, lang in needs:
        store.track_data([(task, split, lang)], data_dir=source_dir(task))
    misses = _tokenize(store, needs, source_dir, tok, log=log)
    if log and misses:
        print(f"tokenized {misses} (task, split, language) sets into {store.cache_dir}", flush=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Workspace(
        model=model_dir, data_dir=data_dir, features=store, pad_id=int(pad), misses=misses
    )


# model types whose position ids start after the padding index (RoBERTa's scheme)
_PADDING_OFFSET_MODELS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert"})


def _check_length(model: str, model_dir: str, max_length: int) -> None:
    """``training.max_length`` within the model's positions: longer inputs fail every trial
    with an index error inside the workers, after Ray and tokenization (one line now)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError):
        return  # the tokenizer loaded; a config the workers cannot read fails there, named
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return  # relative or rotary positions: no fixed limit
    pad = getattr(config, "pad_token_id", None)
    if config.model_type in _PADDING_OFFSET_MODELS and isinstance(pad, int):
        positions -= pad + 1
    if max_length > positions:
        raise UserError(
            f"training.max_length: {max_length} is longer than model '{model}' takes "
            f"({positions} tokens); set it <= {positions}"
        )


def _tokenize(
    store: FeatureStore,
    needs: list[tuple[TaskSpec, str, str]],
    source_dir: Callable[[TaskSpec], Path | None],
    tok: object,
    *,
    log: bool,
) -> int:
    """Featurize what the cache lacks, with one progress bar (datasets' own bars, one per set
    saved, filled pages on a first run); returns how many sets were tokenized."""
    import datasets

    todo = {n for n in needs if not (store.path(*n) / "dataset_info.json").is_file()}
    bar = Bar("tokenizing", total=len(todo)) if log and todo else None
    bars_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    misses = 0
    try:
        for task, split, lang in needs:
            misses += store.ensure(task, split, lang, data_dir=source_dir(task), tokenizer=tok)
            if bar is not None and (task, split, lang) in todo:
                bar.advance(suffix=f"{task.name} {lang} {split}")
    finally:
        if bars_on:
            datasets.enable_progress_bars()
        if bar is not None:
            bar.close()
    return misses


def _save_tokenizer(tok: object, cache_dir: Path, model: str) -> Path:
    out = cache_dir / "tokenizers" / model.replace("/", "--")
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))  # type: ignore[attr-defined]
    return out
