"""benchmarks/gpu_check.py on CPU with a tiny config: the runner and Trainer both train, and
the model FLOPs per token match a hand count."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import torch


def load_benchmark(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_flops_per_token_hand_counted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    gpu = load_benchmark("gpu_check")
    config = XLMRobertaConfig(vocab_size=1000, num_labels=3, **gpu.TINY)
    model = XLMRobertaForSequenceClassification(config)
    h, f = 64, 128
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h  # attention, FFN, 2 LNs
    head = (h * h + h) + (h * 3 + 3)  # classifier dense + projection
    n = 2 * layer + head  # embeddings (and their LayerNorm) are lookups, not matmuls
    assert gpu.flops_per_token(model, 128) == 6 * n + 12 * 2 * h * 128


def test_gpu_check_runs_on_cpu_with_a_tiny_config(capsys) -> None:  # type: ignore[no-untyped-def]
    gpu = load_benchmark("gpu_check")
    args = gpu.parse(["--smoke", "--lengths", "32", "--gpus", "1", "--peak-tflops", "1"])
    results = gpu.check(args)
    assert set(results) == {"raystilts/1/32", "trainer/1/32"}
    for r in results.values():
        assert r.tokens_per_s_per_gpu > 0 and r.peak_mem_gib > 0
        assert 0 < r.mfu < 1 and math.isfinite(r.seconds)
    # without a peak (a CPU has none in the table) MFU is not made up
    assert math.isnan(gpu.peak_tflops(torch.device("cpu"), None))
    assert "tokens/s per GPU" in capsys.readouterr().out
