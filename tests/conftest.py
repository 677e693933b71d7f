"""Shared fixtures: the embedded benchmark and a tiny, briefly pretrained model, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test touches a hub
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raystilts.tasks.embedded import generate

    return generate(tmp_path_factory.mktemp("mini"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real XLM-R-shaped model and tokenizer, MLM-pretrained for a few steps only (fast)."""
    from raystilts.train.pretrain import PretrainSettings, ensure_base_model

    settings = PretrainSettings(
        steps=5,
        batch_size=8,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        sentences_per_language=200,
    )
    return ensure_base_model(tmp_path_factory.mktemp("model"), settings, log=False)


@pytest.fixture(scope="session")
def feature_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")
