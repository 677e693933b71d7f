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
    from raystilts.train.pretrain import SMOKE_PRETRAIN, ensure_base_model

    settings = SMOKE_PRETRAIN
    return ensure_base_model(tmp_path_factory.mktemp("model"), settings, log=False)


@pytest.fixture(scope="session")
def feature_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")
