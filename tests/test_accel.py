"""The step's speed choices (raystilts.train.accel) and the throughput benchmark's batch replay."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from raystilts.data import FeatureStore
from raystilts.tasks import CATALOG
from raystilts.train.accel import (
    adamw,
    autocast,
    bf16_active,
    cpu_has_bf16,
    flags_have_bf16,
    to_device,
)

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_cpu_flags_name_native_bf16() -> None:
    assert flags_have_bf16("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx2\n")
    assert flags_have_bf16("flags\t: fpu amx_bf16 amx_tile\n")
    assert not flags_have_bf16("flags\t: fpu sse avx512f avx512bw avx2\n")  # emulated bf16
    assert not flags_have_bf16("no flags line here")


def test_bf16_only_when_asked_and_native() -> None:
    cpu = torch.device("cpu")
    assert not bf16_active(cpu, False, cpu=True)
    assert not bf16_active(cpu, True)  # CPU bf16 is opt-in
    assert bf16_active(cpu, True, cpu=True) == cpu_has_bf16()
    x = torch.ones(4, 4)
    with autocast(cpu, True, cpu=True):
        y = x @ x
    assert y.dtype == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    with autocast(cpu, True):
        assert (x @ x).dtype == torch.float32


def test_adamw_is_fused_on_cpu_and_steps() -> None:
    w = torch.nn.Parameter(torch.ones(3, 3))
    opt = adamw([{"params": [w], "weight_decay": 0.0}], lr=0.1)
    assert opt.defaults["fused"] is True  # torch >= 2.4 has the CPU kernel
    (w * 2).sum().backward()
    opt.step()
    assert torch.all(w < 1.0)


def test_to_device_on_cpu_keeps_tensors() -> None:
    batch = {"input_ids": torch.arange(6).reshape(2, 3)}
    out = to_device(batch, torch.device("cpu"))
    assert torch.equal(out["input_ids"], batch["input_ids"])


def test_throughput_replays_the_runners_batches(
    tiny_model: Path, mini_data: Path, feature_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trainer is fed ``runner_batches``: they must be exactly the rows the runner trains on,
    in its order, across epochs (mini_udpos has one batch per epoch)."""
    import raystilts.train.runner as runner
    from raystilts.train.models import build_model

    bench = load_benchmark("throughput")
    store = FeatureStore(cache_dir=feature_dir, tokenizer_dir=tiny_model, max_length=48)
    task = CATALOG["mini_udpos"]
    store.ensure(task, "train", "en", data_dir=mini_data)
    seen: list[list[int]] = []
    real = runner.collate

    def spy(feats, idx, **kw):  # type: ignore[no-untyped-def]
        seen.append(list(idx))
        return real(feats, idx, **kw)

    monkeypatch.setattr(runner, "collate", spy)
    model = build_model(str(tiny_model), task, None, seed=0, pad_id=1)
    settings = runner.TrainSettings(batch_size=8, bf16=False)
    phase = runner.Phase(task=task, lr=1e-3, steps=6)
    runner._train_phase(
        model, phase, store=store, settings=settings, dist=runner.Dist(), seed=3, pad_id=1
    )
    feats = store.load_train(task)
    assert seen == bench.runner_batches(feats, batch_size=8, seed=3, steps=6)
    assert len({tuple(b) for b in seen}) > 1
