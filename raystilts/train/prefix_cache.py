"""Train a shared chain prefix once: a content-addressed cache of encoder states after each phase.

    keys = prefix_keys(base_model_fingerprint=model_fp, phases=[PhaseKey(...), ...], seed=3,
                       settings_fingerprint=settings_fingerprint(batch_size=32, ...))
    cache = PrefixCache(root="s3://bucket/search/prefix-cache", local_dir=Path("/tmp/node"))
    depth, encoder = cache.longest_hit(keys)     # phases[:depth] need no training
    ...train phase i...; cache.put(keys[i], encoder_state, {"chain_prefix": "mnli>squad_v1"})

Two chains of a search that start with the same phases (same base model, tasks, learning rates,
steps, seed, training settings and featurized data) reach the same encoder after those phases,
so the second one loads it instead of training it again. The key of a prefix hashes all of that;
the keys of one chain's prefixes are ``key(phases[:1]), key(phases[:2]), ...`` (they nest).

Layout under ``root``:

- a local directory: ``<root>/<key>/{encoder.safetensors, manifest.json}``, written in a
  temporary sibling and renamed into place, so an entry appears whole or not at all; a file lock
  ``<root>/<key>.lock`` makes a second writer (or a :meth:`PrefixCache.claim`) wait.
- a URI (``s3://``, ``gs://``, ``file://``): ``<root>/<key>/<attempt>/{encoder.safetensors,
  manifest.json, .complete}`` published with :func:`raystilts.data.storage.publish` (marker last).
  Object stores have no atomic rename and no lock every node sees, so each writer uploads its own
  attempt and never touches another's: the first complete attempt wins, and two trials on two
  nodes that miss the same prefix at the same moment may both train it (wasteful, never
  corrupt). Processes of one node still serialise on a lock in ``local_dir``. Reads go through a
  node-local copy (:func:`raystilts.data.storage.fetch`).

Across nodes, a prefix is trained once with ``claims`` (a
:class:`raystilts.train.prefix_claims.PrefixClaims` on the search's storage path): before training
a missing prefix, :meth:`PrefixCache.turn` says whether it is cached now, this trial's to train
(it holds the claim, renewed while it trains, dropped by :meth:`put` or :meth:`close`) or being
trained by another live trial, to wait for; a crashed trainer's claim expires, and the prefix is
then trained by whoever asks next.

Every read checks the weights against the sha256 in the manifest. A damaged entry (flipped
bytes, truncated file, missing manifest) is logged with its key, removed and treated as a miss,
so the prefix is trained again and the entry rebuilt; a damaged node-local copy is fetched
again before the remote entry is blamed. Entries are immutable once complete: a valid entry is
never rewritten, which is why readers need no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from filelock import FileLock

from raystilts.data import storage
from raystilts.train.prefix_claims import PrefixClaims

__all__ = [
    "RUNNER_VERSION",
    "WAIT_POLL_S",
    "CacheStats",
    "PhaseKey",
    "PrefixCache",
    "prefix_key",
    "prefix_keys",
    "settings_fingerprint",
]

# Bump when the runner trains a phase differently for the same inputs (optimizer, schedule,
# seeding, batching, head init): every cached prefix then misses instead of being reused wrongly.
RUNNER_VERSION = "2"  # 2: per-token-label batches packed (raystilts.data.packing)

Turn = Literal["cached", "train", "wait"]  # PrefixCache.turn: what to do about a missing prefix
# How often a trial waiting for another trial's prefix looks again (and, under DDP, tells the
# other ranks it still waits: far inside any collective's timeout)
WAIT_POLL_S = 10.0

_WEIGHTS = "encoder.safetensors"
_MANIFEST = "manifest.json"
_FORMAT = 1
_CHUNK = 8 << 20

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseKey:
    """What one intermediate phase contributes to a prefix key.

    ``data_fingerprint`` names the featurized training data; the FeatureStore entry name
    (``store.path(task, "train", "en").name``) is content-addressed by task, split, language,
    tokenizer, max length and featurizer version, so it is the natural value.
    """

    task: str
    lr: float
    steps: int
    data_fingerprint: str

    def __post_init__(self) -> None:
        if not self.task:
            raise ValueError("PhaseKey.task is empty; pass the task's registry name, e.g. 'mnli'")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"PhaseKey.lr={self.lr!r}: must be a positive finite float")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"PhaseKey.steps={self.steps!r}: must be a positive int")
        if not self.data_fingerprint:
            raise ValueError(
                f"PhaseKey.data_fingerprint is empty for task {self.task!r}; pass the "
                "FeatureStore entry name of its train features"
            )


def _digest(obj: object) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def settings_fingerprint(
    *,
    batch_size: int,
    grad_accum: int,
    warmup_ratio: float,
    weight_decay: float,
    max_grad_norm: float,
    world_size: int = 1,
    bf16: bool = False,
    packed: bool = False,
) -> str:
    """A hash of the training settings a phase's result depends on, and of ``RUNNER_VERSION``.

    ``world_size`` belongs here because each rank reads a different shard of every epoch;
    ``bf16`` should be whether bf16 autocast is actually in effect (it changes the numbers);
    ``packed`` whether packable batches are packed (their dropout masks fall differently).

    >>> a = settings_fingerprint(batch_size=32, grad_accum=1, warmup_ratio=0.1,
    ...                          weight_decay=0.01, max_grad_norm=1.0)
    >>> a == settings_fingerprint(batch_size=16, grad_accum=1, warmup_ratio=0.1,
    ...                           weight_decay=0.01, max_grad_norm=1.0)
    False
    """
    return _digest(
        {
            "runner_version": RUNNER_VERSION,
            "batch_size": int(batch_size),
            "grad_accum": int(grad_accum),
            "warmup_ratio": float(warmup_ratio),
            "weight_decay": float(weight_decay),
            "max_grad_norm": float(max_grad_norm),
            "world_size": int(world_size),
            "bf16": bool(bf16),
            "packed": bool(packed),
        }
    )[:16]


def prefix_key(
    *,
    base_model_fingerprint: str,
    phases: Sequence[PhaseKey],
    seed: int,
    settings_fingerprint: str,
) -> str:
    """The cache key of the encoder after training ``phases`` in order (``p<depth>-<hash>``).

    >>> ph = [PhaseKey(task="mnli", lr=2e-5, steps=100, data_fingerprint="mnli-train-en-x"),
    ...       PhaseKey(task="squad_v1", lr=3e-5, steps=50, data_fingerprint="squad-train-en-y")]
    >>> k = lambda p: prefix_key(base_model_fingerprint="m", phases=p, seed=0,
    ...                          settings_fingerprint="s")
    >>> k(ph[:1]).startswith("p1-"), k(ph[:1]) != k(ph), k(ph) != k(ph[::-1])
    (True, True, True)
    """
    if not phases:
        raise ValueError("prefix_key needs at least one phase; the empty prefix is the base model")
    if not base_model_fingerprint or not settings_fingerprint:
        raise ValueError(
            f"base_model_fingerprint={base_model_fingerprint!r}, "
            f"settings_fingerprint={settings_fingerprint!r}: both must be non-empty"
        )
    body = {
        "format": _FORMAT,
        "base_model": base_model_fingerprint,
        "seed": int(seed),
        "settings": settings_fingerprint,
        # repr() of a float round-trips exactly, so 2e-5 and 2.0e-5 are one key, 2e-5 and 2.1e-5 two
        "phases": [[p.task, repr(float(p.lr)), p.steps, p.data_fingerprint] for p in phases],
    }
    return f"p{len(phases)}-{_digest(body)[:32]}"


def prefix_keys(
    *,
    base_model_fingerprint: str,
    phases: Sequence[PhaseKey],
    seed: int,
    settings_fingerprint: str,
) -> list[str]:
    """``[prefix_key(phases[:1]), ..., prefix_key(phases)]``: the nested keys of one chain."""
    return [
        prefix_key(
            base_model_fingerprint=base_model_fingerprint,
            phases=phases[:k],
            seed=seed,
            settings_fingerprint=settings_fingerprint,
        )
        for k in range(1, len(phases) + 1)
    ]


@dataclass(slots=True)
class CacheStats:
    """Counters of one :class:`PrefixCache` object (one process); report them as trial metrics.

    ``phases_requested`` grows by ``len(keys)`` per :meth:`PrefixCache.longest_hit`;
    ``phases_saved`` by the depth it found, and by one per :meth:`PrefixCache.get` hit (a prefix
    that another process finished while this one waited in :meth:`PrefixCache.claim`).
    """

    hits: int = 0  # lookups (longest_hit, get or a cached turn) that returned a state
    misses: int = 0  # lookups that returned none
    damaged: int = 0  # entries found damaged or partial, reported and removed
    rebuilds: int = 0  # puts that rewrote an entry this object had found damaged
    writes: int = 0  # puts that wrote an entry
    skipped_writes: int = 0  # puts that found a complete entry already there (idempotent)
    phases_requested: int = 0
    phases_saved: int = 0
    waits: int = 0  # prefixes another trial was training when this one needed them
    waited_s: float = 0.0  # time spent waiting for them

    @property
    def saved_share(self) -> float:
        """Share of requested phase trainings that a cache hit made unnecessary."""
        return self.phases_saved / self.phases_requested if self.phases_requested else 0.0

    def as_metrics(self, prefix: str = "prefix_cache/") -> dict[str, float]:
        names = (
            "hits",
            "misses",
            "damaged",
            "rebuilds",
            "writes",
            "skipped_writes",
            "phases_requested",
            "phases_saved",
            "waits",
            "waited_s",
        )
        out = {f"{prefix}{n}": float(getattr(self, n)) for n in names}
        out[f"{prefix}saved_share"] = self.saved_share
        return out


class _Damaged(Exception):
    """An entry failed verification; the message says why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_entry(
    directory: Path, key: str, state: Mapping[str, torch.Tensor], meta: Mapping[str, object]
) -> None:
    """Weights first, manifest (with their sha256) last: a directory without one is partial."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    weights = directory / _WEIGHTS
    save_file(tensors, str(weights), metadata={"raystilts.prefix_key": key})
    _fsync(weights)
    manifest = {
        "format": _FORMAT,
        "key": key,
        "runner_version": RUNNER_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "weights": {"file": _WEIGHTS, "sha256": _sha256(weights), "bytes": weights.stat().st_size},
        "tensors": len(tensors),
        "parameters": sum(t.numel() for t in tensors.values()),
        "meta": dict(meta),
    }
    (directory / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    _fsync(directory / _MANIFEST)


def _read_manifest(directory: Path, key: str) -> dict[str, Any]:
    path = directory / _MANIFEST
    if not path.is_file():
        raise _Damaged("no manifest.json (a partial entry)")
    try:
        manifest = json.loads(path.read_text())
        expected = manifest["weights"]["sha256"], int(manifest["weights"]["bytes"])
    except (ValueError, KeyError, TypeError) as e:
        raise _Damaged(f"unreadable manifest.json ({e})") from None
    if manifest.get("key") != key:
        raise _Damaged(f"manifest names key {manifest.get('key')!r}")
    return dict(manifest, _expected=expected)


def _check_weights(directory: Path, key: str) -> dict[str, Any]:
    """The manifest, once the weights file matches its size and sha256; else _Damaged."""
    manifest = _read_manifest(directory, key)
    sha, size = manifest["_expected"]
    weights = directory / _WEIGHTS
    if not weights.is_file():
        raise _Damaged(f"no {_WEIGHTS}")
    if weights.stat().st_size != size:
        raise _Damaged(f"{_WEIGHTS} has {weights.stat().st_size} bytes, manifest says {size}")
    actual = _sha256(weights)
    if actual != sha:
        raise _Damaged(f"{_WEIGHTS} sha256 {actual[:12]}… != manifest {str(sha)[:12]}…")
    return manifest


def _verified_state(directory: Path, key: str) -> dict[str, torch.Tensor]:
    """The entry's tensors on CPU, or _Damaged if size, sha256 or format disagree."""
    from safetensors.torch import load_file

    manifest = _check_weights(directory, key)
    weights = directory / _WEIGHTS
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as e:  # a valid hash of an invalid file: written by something else
        raise _Damaged(f"{_WEIGHTS} does not load ({e})") from None
    if len(state) != manifest.get("tensors"):
        raise _Damaged(f"{len(state)} tensors, manifest says {manifest.get('tensors')}")
    return state


class PrefixCache:
    """Encoder states after chain prefixes, under ``root`` (a directory or a storage URI).

    ``local_dir`` is this node's scratch space for a URI ``root``: staging of uploads, node
    copies of remote entries and lock files. A local ``root`` needs none of it (entries are
    written in place, locks live beside them). ``claims`` (and this process's ``owner`` name,
    the same when a trial restarts) make a prefix trained once across nodes (:meth:`turn`).
    Safe across processes; use one object per thread.
    """

    def __init__(
        self,
        *,
        root: str,
        local_dir: Path,
        claims: PrefixClaims | None = None,
        owner: str = "",
        poll_s: float = WAIT_POLL_S,
    ) -> None:
        if not root:
            raise ValueError("PrefixCache root is empty; pass a directory or an s3:// gs:// URI")
        if claims is not None and not owner:
            raise ValueError("PrefixCache with claims needs an owner (e.g. the trial's name)")
        self.root = root
        self.local_dir = Path(local_dir)
        self.remote = storage.is_remote(root)
        if self.remote:
            storage.check(root)  # a one-line UserError now, not at the first put
        self.claims = claims
        self.owner = owner
        self.poll_s = poll_s
        self.stats = CacheStats()
        self._locks: dict[str, FileLock] = {}
        self._found_damaged: set[str] = set()
        self._held: dict[str, contextlib.ExitStack] = {}  # claims held, with their heartbeats

    # -- public API ----------------------------------------------------------------------------

    def longest_hit(self, keys: Sequence[str]) -> tuple[int, dict[str, torch.Tensor] | None]:
        """``(k, state)`` for the deepest cached ``keys[k-1]`` (keys nest: ``keys[i]`` is the
        prefix of ``i + 1`` phases), verified; ``(0, None)`` when none is cached."""
        self.stats.phases_requested += len(keys)
        for depth in range(len(keys), 0, -1):
            state = self._read(keys[depth - 1])
            if state is not None:
                self.stats.hits += 1
                self.stats.phases_saved += depth
                return depth, state
        self.stats.misses += 1
        return 0, None

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The verified state of one key, or None; counts one saved phase on a hit."""
        state = self._read(key)
        if state is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
            self.stats.phases_saved += 1
        return state

    def meta(self, key: str) -> dict[str, object] | None:
        """The ``meta`` a complete entry was put with (e.g. the phase's metrics), unverified."""
        for directory in self._local_candidates(key):
            with contextlib.suppress(_Damaged, OSError):
                return dict(_read_manifest(directory, key)["meta"])
        return None

    def put(
        self, key: str, encoder_state: Mapping[str, torch.Tensor], meta: Mapping[str, object]
    ) -> None:
        """Store ``encoder_state`` under ``key`` unless a complete entry is there (idempotent).

        ``meta`` must be JSON-serialisable (chain prefix text, phase metrics, ...).
        """
        try:
            json.dumps(dict(meta), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"PrefixCache.put meta for {key}: not JSON-serialisable ({e})"
            ) from None
        if not encoder_state:
            raise ValueError(f"PrefixCache.put {key}: encoder_state is empty")
        with self._lock(key):
            if self.remote:
                wrote = self._put_remote(key, encoder_state, meta)
            else:
                wrote = self._put_local(key, encoder_state, meta)
        self._drop(key)  # in the cache now: waiters take it from there
        if wrote:
            self.stats.writes += 1
            if key in self._found_damaged:
                self.stats.rebuilds += 1
                self._found_damaged.discard(key)
        else:
            self.stats.skipped_writes += 1

    def turn(self, key: str) -> tuple[Turn, dict[str, torch.Tensor] | None]:
        """One look before training the missing prefix ``key``: ``("cached", state)`` once its
        entry is there (counted as a hit), ``("train", None)`` when it is this owner's to train
        (no claims; or the claim is ours now: new, a restarted trial's own, or one that expired
        with its crashed holder; renewed until :meth:`put` or :meth:`close`), ``("wait", None)``
        while another live owner trains it. Ask again every ``poll_s`` while waiting."""
        state = self._read(key)
        if state is not None:
            self.stats.hits += 1
            self.stats.phases_saved += 1
            return "cached", state
        if self.claims is None or key in self._held:
            return "train", None
        if not self.claims.claim(key, self.owner):
            return "wait", None
        held = contextlib.ExitStack()  # on close: the heartbeat stops, then the claim goes
        held.callback(self.claims.release, key, self.owner)
        held.enter_context(self.claims.heartbeat(key, self.owner))
        self._held[key] = held
        # it may have been completed between the look and the claim: then nothing to train
        state = self._read(key)
        if state is not None:
            self._drop(key)
            self.stats.hits += 1
            self.stats.phases_saved += 1
            return "cached", state
        return "train", None

    def close(self) -> None:
        """Drop every claim this object holds (a trial ending, trained or not)."""
        for key in list(self._held):
            self._drop(key)

    def _drop(self, key: str) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            with contextlib.suppress(OSError):
                held.close()

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[None]:
        """Hold ``key``'s lock while training its prefix, so another process of this node (any
        process, for a local root) that wants the same prefix waits, then :meth:`get` hits.

            with cache.claim(keys[i]):
                state = cache.get(keys[i])
                if state is None:
                    state = train(...)
                    cache.put(keys[i], state, meta)

        :meth:`put` and :meth:`get` inside the block reuse the held lock.
        """
        with self._lock(key):
            yield

    # -- local root -----------------------------------------------------------------------------

    def _entry(self, key: str) -> Path:
        return Path(self.root) / key

    def _lock(self, key: str) -> FileLock:
        base = Path(self.root) if not self.remote else self.local_dir / "locks"
        base.mkdir(parents=True, exist_ok=True)
        path = str(base / f"{key}.lock")
        if path not in self._locks:  # one object per path: re-entering it does not deadlock
            self._locks[path] = FileLock(path)
        return self._locks[path]

    def _put_local(
        self, key: str, state: Mapping[str, torch.Tensor], meta: Mapping[str, object]
    ) -> bool:
        entry = self._entry(key)
        if entry.exists():
            try:
                _check_weights(entry, key)
                return False  # complete and intact: entries are never rewritten
            except _Damaged as e:
                self._report_damaged(key, entry, str(e))
                shutil.rmtree(entry, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".tmp-{key}-"))
        try:
            _write_entry(tmp, key, state, meta)
            try:
                tmp.rename(entry)
            except OSError:
                # a writer that held no lock we see (another node on a shared mount) won
                if (entry / _MANIFEST).is_file():
                    return False
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def _read(self, key: str) -> dict[str, torch.Tensor] | None:
        if self.remote:
            return self._read_remote(key)
        entry = self._entry(key)
        if not entry.exists():
            return None
        try:
            return _verified_state(entry, key)
        except (_Damaged, OSError):
            pass
        # check again under the lock before deleting: a writer may have replaced it meanwhile
        with self._lock(key):
            if not entry.exists():
                return None
            try:
                return _verified_state(entry, key)
            except (_Damaged, OSError) as e:
                self._report_damaged(key, entry, str(e))
                shutil.rmtree(entry, ignore_errors=True)
                return None

    def _report_damaged(self, key: str, where: object, why: str) -> None:
        log.warning(
            "prefix cache entry %s at %s is damaged (%s): removed; the prefix will be "
            "trained again and the entry rebuilt",
            key,
            where,
            why,
        )
        self.stats.damaged += 1
        self._found_damaged.add(key)

    def _local_candidates(self, key: str) -> list[Path]:
        if not self.remote:
            return [self._entry(key)]
        out = []
        for attempt in self._complete_attempts(key):
            with contextlib.suppress(Exception):
                out.append(storage.fetch(storage.join(self.root, key, attempt), self._fetched))
        return out

    # -- remote root ----------------------------------------------------------------------------

    @property
    def _fetched(self) -> Path:
        return self.local_dir / "fetched"

    def _fs(self, uri: str) -> tuple[Any, str]:
        from pyarrow import fs

        return fs.FileSystem.from_uri(uri)

    def _complete_attempts(self, key: str) -> list[str]:
        """Attempt names under ``<root>/<key>/`` that carry the marker, oldest name first."""
        from pyarrow import fs

        filesystem, path = self._fs(storage.join(self.root, key))
        infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
        names = sorted(i.base_name for i in infos if i.type == fs.FileType.Directory)
        done = []
        for name in names:
            marker = filesystem.get_file_info(f"{path}/{name}/{storage.COMPLETE_MARKER}")
            if marker.type != fs.FileType.NotFound:
                done.append(name)  # one without a marker is being uploaded, or its writer died
        return done

    def _read_remote(self, key: str) -> dict[str, torch.Tensor] | None:
        for attempt in self._complete_attempts(key):
            uri = storage.join(self.root, key, attempt)
            why = ""
            for _ in range(2):  # a damaged node copy is fetched again before the entry is blamed
                try:
                    local = storage.fetch(uri, self._fetched)
                except Exception as e:  # deleted by another reader between listing and fetch
                    why = f"fetch failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                    break
                try:
                    return _verified_state(local, key)
                except (_Damaged, OSError) as e:
                    why = str(e)
                    shutil.rmtree(local, ignore_errors=True)
            if why.startswith("fetch failed"):
                continue
            # complete attempts are immutable, so deleting a damaged one never loses a good one
            self._report_damaged(key, uri, why)
            filesystem, path = self._fs(uri)
            with contextlib.suppress(Exception):
                filesystem.delete_dir(path)
        return None

    def _put_remote(
        self, key: str, state: Mapping[str, torch.Tensor], meta: Mapping[str, object]
    ) -> bool:
        if self._complete_attempts(key):
            return False  # first complete writer wins; readers verify it
        staging = self.local_dir / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=staging, prefix=f"{key}-"))
        try:
            _write_entry(tmp, key, state, meta)
            # time first, so attempts list oldest first; uuid so two writers never share a path
            attempt = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            storage.publish(tmp, storage.join(self.root, key, attempt))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True
