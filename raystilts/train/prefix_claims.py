"""Who is training a chain prefix now: expiring claims on the storage path, seen by every node.

    claims = PrefixClaims(root="s3://bucket/search/raystilts-cache/claims", ttl_s=600)
    if claims.claim(key, owner="trial_3/rank0"):      # ours: train it, then put it in the cache
        with claims.heartbeat(key, owner="trial_3/rank0"):
            ...train the prefix, PrefixCache.put(key, ...)...
        claims.release(key, owner="trial_3/rank0")
    else:                                             # someone else's: wait for the cache entry
        claims.holder(key)                            # None once released or expired

A :class:`raystilts.train.prefix_cache.PrefixCache` makes two processes of one node that miss
the same prefix take turns (a file lock), but two nodes, or a trial that starts while another
is an hour into training the prefix, would train it twice. A claim is a small JSON file
``<root>/<key>.claim`` (owner, expiry) on the search's storage path, so every node sees it; it
expires ``ttl_s`` after its last renewal, so a crashed trainer's claim lapses and nothing waits
forever, while a live trainer renews it (:meth:`heartbeat`) every ``ttl_s / 4``.

Object stores have no atomic create-if-absent: a claim is written, then read back, and the
writer holds it only if its own owner string is what it reads. Two writers within the same
instant may both read their own (eventual consistency) and both train: wasteful, never wrong,
since cache entries are immutable and the first complete one wins. ``clock`` is injectable so a
simulation (``benchmarks/cluster_sim.py``) runs claims on simulated time. No torch: the search
layer and the simulation import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from raystilts.data import storage

__all__ = ["CLAIM_TTL_S", "PrefixClaims"]

# Long enough that a heartbeat every ttl/4 survives a slow storage write or a GC pause, short
# enough that a crashed trainer's prefix is retried within minutes of a phase of hours.
CLAIM_TTL_S = 600.0


@dataclass(slots=True)
class PrefixClaims:
    """Expiring claims of prefix keys under ``root`` (a directory or a storage URI)."""

    root: str
    ttl_s: float = CLAIM_TTL_S
    clock: Callable[[], float] = time.time
    _fs: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ttl_s <= 0:
            raise ValueError(f"PrefixClaims ttl_s={self.ttl_s}: must be > 0")
        if storage.is_remote(self.root):
            from pyarrow import fs

            filesystem, where = fs.FileSystem.from_uri(self.root)
            filesystem.create_dir(where, recursive=True)  # file:// writes need it; s3: no-op
            self._fs = filesystem
            self.root = where
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # -- reading and writing one claim file --------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}.claim"

    def _read(self, key: str) -> dict[str, object] | None:
        try:
            if self._fs is None:
                blob = Path(self._path(key)).read_bytes()
            else:
                with self._fs.open_input_stream(self._path(key)) as f:  # type: ignore[attr-defined]
                    blob = f.read()
            data = json.loads(blob)
        except (OSError, ValueError):  # absent, or half-written by a crashed writer: no claim
            return None
        return data if isinstance(data, dict) else None

    def _write(self, key: str, owner: str) -> None:
        blob = json.dumps({"owner": owner, "expires": self.clock() + self.ttl_s}).encode()
        if self._fs is None:  # write aside, rename into place: readers never see half a claim
            tmp = f"{self._path(key)}.{uuid.uuid4().hex}.tmp"
            Path(tmp).write_bytes(blob)
            os.replace(tmp, self._path(key))
            return
        with self._fs.open_output_stream(self._path(key)) as out:  # type: ignore[attr-defined]
            out.write(blob)

    # -- public API --------------------------------------------------------------------------

    def holder(self, key: str) -> str | None:
        """The owner of ``key``'s unexpired claim, or None."""
        data = self._read(key)
        if data is None or float(data.get("expires", 0.0)) <= self.clock():  # type: ignore[arg-type]
            return None
        return str(data.get("owner"))

    def claim(self, key: str, owner: str) -> bool:
        """Claim ``key`` for ``owner`` unless another owner's claim is live; True if ours now
        (a new claim, a renewal of our own, or the takeover of an expired one)."""
        current = self.holder(key)
        if current is not None and current != owner:
            return False
        if self._fs is None and current is None and self._read(key) is None:
            try:  # a local root: create-if-absent is atomic, so exactly one claimant wins
                fd = os.open(self._path(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return self.holder(key) == owner
            os.close(fd)
        self._write(key, owner)
        return self.holder(key) == owner  # read back: a concurrent writer may have won

    def release(self, key: str, owner: str) -> None:
        """Drop ``owner``'s claim of ``key`` (someone else's is left alone)."""
        if self.holder(key) != owner:
            return
        with contextlib.suppress(OSError):
            if self._fs is None:
                os.remove(self._path(key))
            else:
                self._fs.delete_file(self._path(key))  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def heartbeat(self, key: str, owner: str) -> Iterator[None]:
        """Renew ``owner``'s claim every ``ttl_s / 4`` while the block runs (a thread)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl_s / 4):
                with contextlib.suppress(OSError):
                    self.claim(key, owner)

        thread = threading.Thread(target=renew, name=f"claim-{key[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
