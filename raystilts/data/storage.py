"""Ship a search's model and tokenized features through its storage path to every node.

    uri = publish(Path("~/.cache/raystilts/features/mini_xnli-dev-en-..."), "s3://bucket/run/cache/features/mini_xnli-dev-en-...")
    local = fetch(uri, Path("/tmp/raystilts-node-cache/<node>"))   # on a worker, once per node

On one machine trials read the driver's cache directly. On a cluster the driver's disk is not
the workers' disk, so the driver publishes what the search needs under the storage path
(``s3://…``, ``gs://…`` or a directory every node mounts) and each worker copies it to its node
once: later trials on that node reuse the copy. Entries are named by content (feature entries
by task, split, language, tokenizer and featurization version, not by the data files'
bytes; model directories by their files' names, sizes and head and tail bytes), so a published
entry is never rewritten; a ``.complete`` marker is written last, so a half-finished upload or
download is redone, never read. Any filesystem pyarrow knows
works (``file://`` included, which is how the tests exercise the remote path).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from filelock import FileLock

from raystilts.core.errors import UserError

__all__ = [
    "COMPLETE_MARKER",
    "check",
    "content_key",
    "fetch",
    "is_remote",
    "join",
    "node_cache_root",
    "publish",
]

COMPLETE_MARKER = ".complete"  # written last by publish(): the copy is whole


def is_remote(path: str) -> bool:
    """A URI with a scheme (``s3://``, ``gs://``, ``file://``), as opposed to a local path."""
    return "://" in path


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def node_cache_root() -> Path:
    """Where a worker keeps its node's copies: ``$RAYSTILTS_NODE_CACHE`` or the temp dir."""
    default = Path(tempfile.gettempdir()) / "raystilts-node-cache"
    return Path(os.environ.get("RAYSTILTS_NODE_CACHE", default))


def content_key(directory: Path) -> str:
    """A short hash of a directory's file names, sizes and contents (large files: head+tail)."""
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if not p.is_file():
            continue
        size = p.stat().st_size
        h.update(f"{p.relative_to(directory).as_posix()}\0{size}\0".encode())
        with p.open("rb") as f:
            if size <= 2 << 20:
                h.update(f.read())
            else:  # model weights: hashing gigabytes per search buys nothing over head and tail
                h.update(f.read(1 << 20))
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read())
    return h.hexdigest()[:16]


def _fs(uri: str) -> tuple[object, str]:
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri if is_remote(uri) else str(Path(uri).resolve()))
    except Exception as e:
        raise UserError(
            f"storage path {uri!r}: {str(e).splitlines()[0]}; use s3://bucket/prefix, "
            "gs://bucket/prefix or a directory that every node mounts"
        ) from None


def check(uri: str) -> None:
    """Raise a one-line UserError now if pyarrow cannot resolve ``uri`` (before any work)."""
    _fs(uri)


def _exists(filesystem: object, path: str) -> bool:
    from pyarrow import fs

    info = filesystem.get_file_info(path)  # type: ignore[attr-defined]
    return bool(info.type != fs.FileType.NotFound)


def publish(local_dir: Path, uri: str) -> str:
    """Copy ``local_dir`` to ``uri`` unless a complete copy is there; returns ``uri``.

    On a filesystem (a shared directory) the copy is staged in a unique sibling and renamed
    into place, so two drivers publishing the same entry never interleave their writes. On an
    object store every object is written whole, and both writers write the same bytes (the
    entry is content-addressed); the marker goes last either way.

    Raises:
        UserError: the storage path cannot be written (permissions, credentials, no bucket).
    """
    from pyarrow import fs

    filesystem, path = _fs(uri)
    marker = f"{path}/{COMPLETE_MARKER}"
    try:
        if _exists(filesystem, marker):
            return uri
        local = isinstance(filesystem, fs.LocalFileSystem)
        target = f"{path}.tmp-{uuid.uuid4().hex}" if local else path
        filesystem.create_dir(target, recursive=True)  # type: ignore[attr-defined]
        fs.copy_files(
            str(local_dir.resolve()),
            target,
            source_filesystem=fs.LocalFileSystem(),
            destination_filesystem=filesystem,  # type: ignore[arg-type]
        )
        with filesystem.open_output_stream(f"{target}/{COMPLETE_MARKER}") as out:  # type: ignore[attr-defined]
            out.write(b"ok\n")
        if local:
            if not _exists(filesystem, marker):  # leftovers of an unstaged, crashed copy
                shutil.rmtree(path, ignore_errors=True)
            try:
                os.rename(target, path)  # atomic; fails if another writer got there first
            except OSError:
                shutil.rmtree(target, ignore_errors=True)
                if not _exists(filesystem, marker):
                    raise
    except OSError as e:
        raise UserError(
            f"storage path {uri}: cannot write ({str(e).splitlines()[0]}); check that it "
            "exists and is writable (for s3:// or gs://: the bucket and the credentials)"
        ) from None
    return uri


def fetch(uri: str, local_root: Path) -> Path:
    """A complete local copy of the directory at ``uri`` under ``local_root``, made once.

    Safe when several workers of one node ask at once (a file lock); a copy is built in a
    temporary sibling and renamed into place.

    Raises:
        UserError: nothing complete was published at ``uri``.
    """
    from pyarrow import fs

    dest = local_root / hashlib.sha256(uri.encode()).hexdigest()[:20]
    if (dest / COMPLETE_MARKER).exists():
        return dest
    local_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / COMPLETE_MARKER).exists():
            return dest
        filesystem, path = _fs(uri)
        if not _exists(filesystem, f"{path}/{COMPLETE_MARKER}"):
            raise UserError(
                f"{uri}: no complete copy there; the search driver publishes it before trials "
                "start, so check that every node can read the storage path"
            )
        tmp = Path(tempfile.mkdtemp(dir=local_root, prefix=dest.name + "."))
        try:
            fs.copy_files(
                path,
                str(tmp),
                source_filesystem=filesystem,  # type: ignore[arg-type]
                destination_filesystem=fs.LocalFileSystem(),
            )
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"{uri}: cannot read ({str(e).splitlines()[0]}); every node needs read access "
                "to the storage path"
            ) from None
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest
