"""The prefix-checkpoint cache: nested keys, verified reads, real corruption, real concurrency."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from raystilts.train.prefix_cache import (
    PhaseKey,
    PrefixCache,
    prefix_key,
    prefix_keys,
    settings_fingerprint,
)

PHASES = (
    PhaseKey(task="mnli", lr=2e-5, steps=100, data_fingerprint="mnli-train-en-tokA-len128-v1"),
    PhaseKey(
        task="squad_v1", lr=3e-5, steps=50, data_fingerprint="squad_v1-train-en-tokA-len128-v1"
    ),
    PhaseKey(task="panx", lr=1e-5, steps=20, data_fingerprint="panx-train-en-tokA-len128-v1"),
)
SETTINGS: dict[str, Any] = {
    "batch_size": 32,
    "grad_accum": 1,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
}


def _keys(phases: tuple[PhaseKey, ...] = PHASES, **over: Any) -> list[str]:
    args: dict[str, Any] = {
        "base_model_fingerprint": "model123",
        "phases": phases,
        "seed": 0,
        "settings_fingerprint": settings_fingerprint(**SETTINGS),
    }
    args.update(over)
    return prefix_keys(**args)


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embeddings.word_embeddings.weight": torch.randn(64, 8, generator=g),
        "encoder.layer.0.attention.self.query.bias": torch.randn(8, generator=g),
        "encoder.layer.0.output.LayerNorm.weight": torch.ones(8) * seed,
    }


def _equal(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor]) -> bool:
    return a is not None and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)


@pytest.fixture(params=["local", "file-uri"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    path = tmp_path / "prefix-cache"
    return str(path) if request.param == "local" else f"file://{path}"


def _cache(root: str, tmp_path: Path, node: str = "node0") -> PrefixCache:
    return PrefixCache(root=root, local_dir=tmp_path / node)


def _weights_files(root: str, key: str) -> list[Path]:
    base = Path(root.removeprefix("file://")) / key
    return sorted(base.rglob("encoder.safetensors"))


def _flip_bytes(path: Path) -> None:
    """Corrupt the tensor data (past the safetensors header) on disk, keeping the size."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 40, len(data) - 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# -- keys -----------------------------------------------------------------------------------------


def test_keys_nest_and_are_deterministic() -> None:
    keys = _keys()
    assert [k.split("-")[0] for k in keys] == ["p1", "p2", "p3"]
    assert keys == _keys()  # equal inputs, equal keys
    assert keys[:2] == _keys(PHASES[:2])  # the prefix of a chain is the chain of its prefix
    assert len(set(keys)) == 3


@pytest.mark.parametrize(
    "change",
    [
        "lr",
        "steps",
        "data_fingerprint",
        "task",
        "order",
        "seed",
        "base_model",
        "settings",
        "world_size",
    ],
)
def test_any_component_changes_the_key(change: str) -> None:
    base = _keys()
    first = PHASES[0]
    if change == "lr":
        other = _keys((dataclasses.replace(first, lr=2.1e-5), *PHASES[1:]))
    elif change == "steps":
        other = _keys((dataclasses.replace(first, steps=101), *PHASES[1:]))
    elif change == "data_fingerprint":
        other = _keys((dataclasses.replace(first, data_fingerprint="mnli-tokB"), *PHASES[1:]))
    elif change == "task":
        other = _keys((dataclasses.replace(first, task="xnli"), *PHASES[1:]))
    elif change == "order":
        other = _keys((PHASES[1], PHASES[0], PHASES[2]))
    elif change == "seed":
        other = _keys(seed=1)
    elif change == "base_model":
        other = _keys(base_model_fingerprint="model456")
    elif change == "settings":
        other = _keys(settings_fingerprint=settings_fingerprint(**{**SETTINGS, "grad_accum": 2}))
    else:
        other = _keys(settings_fingerprint=settings_fingerprint(**SETTINGS, world_size=2))
    assert not set(base) & set(other)  # a change in the first phase changes every nested key


def test_a_change_in_a_later_phase_keeps_the_earlier_keys() -> None:
    other = _keys((*PHASES[:2], dataclasses.replace(PHASES[2], lr=5e-5)))
    assert other[:2] == _keys()[:2] and other[2] != _keys()[2]


def test_equal_floats_written_differently_give_one_key() -> None:
    a = _keys((dataclasses.replace(PHASES[0], lr=2e-5),))
    b = _keys((dataclasses.replace(PHASES[0], lr=2.0e-5),))
    assert a == b


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("lr", 0.0, "lr=0.0"), ("steps", 0, "steps=0"), ("data_fingerprint", "", "FeatureStore")],
)
def test_bad_phase_key_is_rejected(field: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(PHASES[0], **{field: value})


def test_empty_prefix_has_no_key() -> None:
    with pytest.raises(ValueError, match="at least one phase"):
        prefix_key(base_model_fingerprint="m", phases=(), seed=0, settings_fingerprint="s")


# -- reads and writes -----------------------------------------------------------------------------


def test_put_then_longest_hit_round_trips(root: str, tmp_path: Path) -> None:
    cache = _cache(root, tmp_path)
    keys = _keys()
    assert cache.longest_hit(keys) == (0, None)
    cache.put(keys[0], _state(1), {"chain_prefix": "mnli", "phase0/dev_en": 0.5})
    depth, state = cache.longest_hit(keys)
    assert depth == 1 and _equal(state, _state(1))
    assert cache.meta(keys[0]) == {"chain_prefix": "mnli", "phase0/dev_en": 0.5}
    # a second process (fresh object, other node dir) sees it as well
    depth, state = _cache(root, tmp_path, "node1").longest_hit(keys)
    assert depth == 1 and _equal(state, _state(1))


def test_longest_hit_picks_the_deepest_cached_prefix(root: str, tmp_path: Path) -> None:
    cache = _cache(root, tmp_path)
    keys = _keys()
    cache.put(keys[0], _state(1), {})
    cache.put(keys[1], _state(2), {})
    depth, state = cache.longest_hit(keys)
    assert depth == 2 and _equal(state, _state(2))
    # a chain that diverges after phase 2 still reuses its first two phases
    other = _keys((*PHASES[:2], dataclasses.replace(PHASES[2], steps=999)))
    depth, state = cache.longest_hit(other)
    assert depth == 2 and _equal(state, _state(2))
    # and one that only shares phase 1 reuses that
    depth, state = cache.longest_hit(_keys((PHASES[0], PHASES[2])))
    assert depth == 1 and _equal(state, _state(1))


def test_put_is_idempotent(root: str, tmp_path: Path) -> None:
    cache = _cache(root, tmp_path)
    key = _keys()[0]
    cache.put(key, _state(1), {"n": 1})
    cache.put(key, _state(7), {"n": 2})  # a complete entry is never rewritten
    assert _equal(cache.get(key), _state(1))
    assert len(_weights_files(root, key)) == 1
    assert (cache.stats.writes, cache.stats.skipped_writes) == (1, 1)


def test_bad_meta_is_rejected(tmp_path: Path) -> None:
    cache = _cache(str(tmp_path / "c"), tmp_path)
    with pytest.raises(ValueError, match="JSON"):
        cache.put(_keys()[0], _state(1), {"obj": object()})


# -- faults, injected for real --------------------------------------------------------------------


def test_corrupted_entry_is_reported_rebuilt_and_nothing_finished_is_lost(
    root: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(root, tmp_path)
    keys = _keys()
    cache.put(keys[0], _state(1), {})
    cache.put(keys[1], _state(2), {})
    [weights] = _weights_files(root, keys[1])
    _flip_bytes(weights)

    with caplog.at_level(logging.WARNING, logger="raystilts.train.prefix_cache"):
        depth, state = cache.longest_hit(keys)
    # the damaged deeper entry is a miss, the intact shorter prefix still hits
    assert depth == 1 and _equal(state, _state(1))
    assert any(keys[1] in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert _weights_files(root, keys[1]) == []  # removed, not served again
    assert cache.stats.damaged == 1

    cache.put(keys[1], _state(2), {})  # the runner retrains phase 2 and puts it again
    assert cache.stats.rebuilds == 1
    depth, state = _cache(root, tmp_path, "node1").longest_hit(keys)
    assert depth == 2 and _equal(state, _state(2))


def test_put_over_a_damaged_entry_rebuilds_it(tmp_path: Path) -> None:
    root = str(tmp_path / "c")
    cache = _cache(root, tmp_path)
    key = _keys()[0]
    cache.put(key, _state(1), {})
    _flip_bytes(_weights_files(root, key)[0])
    cache.put(key, _state(1), {})  # not skipped as "already there": it is checked first
    assert _equal(cache.get(key), _state(1))
    assert (cache.stats.damaged, cache.stats.rebuilds, cache.stats.writes) == (1, 1, 2)


def test_truncated_weights_are_a_miss(root: str, tmp_path: Path) -> None:
    cache = _cache(root, tmp_path)
    key = _keys()[0]
    cache.put(key, _state(1), {})
    [weights] = _weights_files(root, key)
    weights.write_bytes(weights.read_bytes()[:100])
    assert cache.get(key) is None
    assert cache.stats.damaged == 1


def test_partial_entry_without_manifest_is_a_miss(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = _cache(str(root), tmp_path)
    key = _keys()[0]
    cache.put(key, _state(1), {})
    (root / key / "manifest.json").unlink()  # a writer that crashed before its last file
    assert cache.longest_hit([key]) == (0, None)
    assert not (root / key).exists()
    cache.put(key, _state(1), {})
    assert _equal(cache.get(key), _state(1))


def test_remote_upload_without_marker_is_ignored_not_deleted(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    cache = _cache(f"file://{remote}", tmp_path)
    key = _keys()[0]
    partial = remote / key / "00000000000000000001-deadbeef"
    partial.mkdir(parents=True)
    (partial / "encoder.safetensors").write_bytes(b"half an upload")
    assert cache.get(key) is None
    assert partial.exists()  # another node may still be uploading it
    cache.put(key, _state(3), {})
    assert _equal(_cache(f"file://{remote}", tmp_path, "node1").get(key), _state(3))


def test_damaged_node_copy_is_fetched_again_not_blamed_on_the_remote(tmp_path: Path) -> None:
    remote = f"file://{tmp_path / 'remote'}"
    cache = _cache(remote, tmp_path)
    key = _keys()[0]
    cache.put(key, _state(1), {})
    assert _equal(cache.get(key), _state(1))  # makes the node copy
    [copy] = sorted((tmp_path / "node0" / "fetched").rglob("encoder.safetensors"))
    _flip_bytes(copy)
    assert _equal(cache.get(key), _state(1))
    assert cache.stats.damaged == 0 and len(_weights_files(remote, key)) == 1


# -- concurrency, with real processes -------------------------------------------------------------


def _put_in_process(root: str, local_dir: str, key: str, seed: int, barrier: Any) -> None:
    cache = PrefixCache(root=root, local_dir=Path(local_dir))
    barrier.wait()  # both processes write at the same moment
    cache.put(key, _state(seed), {"writer": seed})


def test_concurrent_puts_from_two_processes_leave_one_valid_entry(
    root: str, tmp_path: Path
) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    key = _keys()[0]
    procs = [
        # the same node dir: the lock serialises them; a remote root on two nodes is tested below
        ctx.Process(target=_put_in_process, args=(root, str(tmp_path / "node0"), key, s, barrier))
        for s in (1, 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(_weights_files(root, key)) == 1
    state = _cache(root, tmp_path, "reader").get(key)
    assert _equal(state, _state(1)) or _equal(state, _state(2))


def test_concurrent_puts_from_two_nodes_on_a_remote_root_both_stay_valid(
    tmp_path: Path,
) -> None:
    """No lock spans nodes: both may upload, each to its own attempt; every read is valid."""
    root = f"file://{tmp_path / 'remote'}"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    key = _keys()[0]
    procs = [
        ctx.Process(
            target=_put_in_process, args=(root, str(tmp_path / f"node{s}"), key, s, barrier)
        )
        for s in (1, 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert 1 <= len(_weights_files(root, key)) <= 2
    first = _cache(root, tmp_path, "reader").get(key)
    assert first is not None and (_equal(first, _state(1)) or _equal(first, _state(2)))
    # every reader picks the same attempt (oldest name first)
    assert _equal(_cache(root, tmp_path, "reader2").get(key), first)


def _claim_and_train(
    root: str, local_dir: str, key: str, claimed: Any, waiting: Any, out: Any
) -> None:
    cache = PrefixCache(root=root, local_dir=Path(local_dir))
    if claimed.is_set():  # the second process: the first one holds the claim
        waiting.set()
    with cache.claim(key):
        claimed.set()
        state = cache.get(key)
        if state is None:
            waiting.wait(timeout=60)  # "training" until the second one is at the door
            time.sleep(0.5)
            cache.put(key, _state(5), {})
            out.put("trained")
        else:
            out.put("hit" if _equal(state, _state(5)) else "wrong state")


def test_claim_makes_a_second_process_wait_then_hit(root: str, tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    claimed, waiting, out = ctx.Event(), ctx.Event(), ctx.Queue()
    key = _keys()[0]
    args = (root, str(tmp_path / "node0"), key, claimed, waiting, out)
    first = ctx.Process(target=_claim_and_train, args=args)
    first.start()
    assert claimed.wait(timeout=60)
    second = ctx.Process(target=_claim_and_train, args=args)
    second.start()
    for p in (first, second):
        p.join(timeout=120)
    assert [p.exitcode for p in (first, second)] == [0, 0]
    assert [out.get(timeout=5), out.get(timeout=5)] == ["trained", "hit"]


# -- stats ----------------------------------------------------------------------------------------


def test_stats_count_hits_misses_and_saved_phases(tmp_path: Path) -> None:
    cache = _cache(str(tmp_path / "c"), tmp_path)
    keys = _keys()
    cache.longest_hit(keys)  # cold: 3 phases to train
    cache.put(keys[0], _state(1), {})
    cache.put(keys[1], _state(2), {})
    cache.longest_hit(keys)  # 2 of 3 saved
    assert cache.get(keys[2]) is None
    s = cache.stats
    assert (s.hits, s.misses, s.writes, s.phases_requested, s.phases_saved) == (1, 2, 2, 6, 2)
    assert s.saved_share == pytest.approx(2 / 6)
    assert cache.stats.as_metrics()["prefix_cache/phases_saved"] == 2.0


# -- claims: one trainer per prefix across nodes -----------------------------------------------


def _claiming(root: str, tmp_path: Path, owner: str, clock: Any = time.time) -> PrefixCache:
    from raystilts.train.prefix_claims import PrefixClaims

    claims = PrefixClaims(root=str(tmp_path / "claims"), ttl_s=30.0, clock=clock)
    return PrefixCache(root=root, local_dir=tmp_path / owner, claims=claims, owner=owner)


def test_turn_gives_a_prefix_to_one_trainer_and_the_others_wait_for_its_entry(
    root: str, tmp_path: Path
) -> None:
    key = _keys()[0]
    one, two = _claiming(root, tmp_path, "one"), _claiming(root, tmp_path, "two")
    assert one.turn(key) == ("train", None)
    assert one.turn(key) == ("train", None)  # asking again: still ours
    assert two.turn(key) == ("wait", None)  # another node's trial is training it
    one.put(key, _state(1), {})  # in the cache: the claim is dropped
    assert one.claims is not None and one.claims.holder(key) is None
    turn, state = two.turn(key)
    assert turn == "cached" and _equal(state, _state(1))
    assert two.stats.hits == 1 and two.stats.phases_saved == 1


def test_a_crashed_trainers_claim_expires_and_close_drops_held_claims(tmp_path: Path) -> None:
    now = [0.0]
    key = _keys()[0]
    root = str(tmp_path / "c")
    crashed = _claiming(root, tmp_path, "crashed", clock=lambda: now[0])
    assert crashed.claims is not None and crashed.claims.claim(key, "crashed")  # no heartbeat
    waiter = _claiming(root, tmp_path, "waiter", clock=lambda: now[0])
    assert waiter.turn(key)[0] == "wait"
    now[0] = 31.0  # past the ttl: nothing waits forever
    assert waiter.turn(key)[0] == "train"
    waiter.close()  # the trial ended without putting it (stopped, failed): others may train
    assert waiter.claims is not None and waiter.claims.holder(key) is None
    with pytest.raises(ValueError, match="owner"):
        PrefixCache(root=root, local_dir=tmp_path, claims=waiter.claims)
