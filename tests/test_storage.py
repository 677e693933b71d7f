"""Shipping model and features through a storage path: publish once, fetch once per node."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from raystilts.core.errors import UserError
from raystilts.data import storage
from raystilts.tasks.catalog import CATALOG
from raystilts.train.workspace import open_workspace, prepare_workspace


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".complete"
    }


@pytest.mark.parametrize("scheme", ["file://", ""])
def test_publish_then_fetch_round_trip(tmp_path: Path, scheme: str) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"\x00" * 10)
    (src / "sub" / "b.txt").write_text("hello")
    uri = f"{scheme}{tmp_path / 'remote' / 'entry'}"
    storage.publish(src, uri)
    (src / "a.bin").write_bytes(b"changed")  # published entries are immutable: not re-uploaded
    storage.publish(src, uri)
    got = storage.fetch(uri, tmp_path / "node")
    assert _tree(got) == {"a.bin": b"\x00" * 10, "sub/b.txt": b"hello"}
    assert storage.fetch(uri, tmp_path / "node") == got  # once per node


def test_incomplete_upload_is_redone_and_never_fetched(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_text("full")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "x").write_text("half")  # a crashed upload: no marker
    with pytest.raises(UserError, match="no complete copy"):
        storage.fetch(f"file://{remote}", tmp_path / "node")
    storage.publish(src, f"file://{remote}")
    assert (storage.fetch(f"file://{remote}", tmp_path / "node") / "x").read_text() == "full"


def test_concurrent_fetches_make_one_copy(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}").write_bytes(bytes([i]) * 1000)
    uri = storage.publish(src, f"file://{tmp_path / 'remote'}")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(storage.fetch(uri, tmp_path / "node")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and _tree(results[0]) == _tree(src)
    assert [p.name for p in (tmp_path / "node").iterdir() if not p.name.endswith(".lock")] == [
        results[0].name
    ]


def test_bad_storage_uri_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"storage path 'nosuch://x'.*s3://") as e:
        storage.publish(tmp_path, "nosuch://x")
    assert "\n" not in str(e.value)


def test_workspace_shared_through_storage_reads_the_same_features(
    tmp_path: Path, tiny_model: Path, mini_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = CATALOG["mini_xnli"]
    needs = [(task, "train", "en"), (task, "test", "qac")]
    ws = prepare_workspace(
        model=str(tiny_model),
        needs=needs,
        max_length=32,
        cache_dir=tmp_path / "driver-cache",
        data_dir=mini_data,
        log=False,
    )
    cfg = ws.share(needs, f"file://{tmp_path / 'bucket'}")
    monkeypatch.setenv("RAYSTILTS_NODE_CACHE", str(tmp_path / "nodes"))
    model, store, tok_dir = open_workspace(cfg, node="node-b")
    assert Path(model).is_relative_to(tmp_path / "nodes" / "node-b")
    assert tok_dir.is_relative_to(tmp_path / "nodes" / "node-b")
    assert store.cache_dir.is_relative_to(tmp_path / "nodes" / "node-b")
    assert tok_dir == Path(model)  # shipped once: the model directory holds the tokenizer
    assert not (tmp_path / "bucket" / "raystilts-cache" / "tokenizers").exists()
    assert (Path(model) / "model.safetensors").read_bytes() == (
        tiny_model / "model.safetensors"
    ).read_bytes()
    for t, split, lang in needs:
        assert store.load(t, split, lang) == ws.features.load(t, split, lang)
    # a plain (one-machine) config points at the driver's cache
    model0, store0, _ = open_workspace(ws.to_config(), node="node-a")
    assert model0 == ws.model and store0.cache_dir == ws.features.cache_dir


def test_unwritable_storage_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_text("x")
    with pytest.raises(UserError, match=r"cannot write .*writable") as e:
        storage.publish(src, str(blocker / "entry"))
    assert "\n" not in str(e.value)
