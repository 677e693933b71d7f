"""A real search over real task types (issue 3): ``raystilts search`` through Ray Tune and
Ray Train workers, on the catalog's made-up fixtures and a tiny model, with a target of every
kind (classification, multiple choice, extractive QA, tagging, retrieval) after one
intermediate phase that mixes a task of every other trainable kind (QA, multiple choice,
masked LM: one shared encoder, a head per kind). Slow: marked, run by CI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raystilts.tasks.catalog import CATALOG
from raystilts.tasks.fixtures import write_fixtures

pytestmark = pytest.mark.slow

TARGETS = {  # target -> (kind, the languages evaluated)
    "pawsx": ("classification", ["en", "de"]),
    "xcopa": ("multiple_choice", ["en", "et", "zh"]),
    "xquad": ("qa", ["en", "ar"]),
    "panx": ("tagging", ["en", "sw"]),
    "bucc": ("retrieval", ["de", "fr"]),
}


def test_search_over_every_task_type_logs_per_language_metrics(
    tmp_path: Path, tiny_model: Path
) -> None:
    from raystilts.tracking.store import default_tracking_uri, load_runs

    data = write_fixtures(
        tmp_path / "data", tasks=[*TARGETS, "squad_v1", "hellaswag", "wiki_mlm", "xnli"]
    )
    space = {
        "name": "kinds",
        "model": str(tiny_model),
        "targets": list(TARGETS),
        "languages": {t: langs for t, (_, langs) in TARGETS.items()},
        "intermediate": {
            "tasks": ["squad_v1", "hellaswag", "wiki_mlm"],
            "min_chain_length": 3,  # the one chain: hellaswag+squad_v1+wiki_mlm>target
            "max_chain_length": 3,
            "forms": ["mixture"],
            "lr": 1e-3,
            "steps": 2,
        },
        "target": {"lr": 1e-3, "steps": 2, "eval_every": 1},
        "training": {"batch_size": 4, "max_length": 32},
        "search": {
            "num_samples": 2,
            "max_concurrent": 1,
            "seeds": [0],
            "baseline_first": False,
            "warm_start": "none",
            "algorithm": "grid",
        },
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "use_gpu": False},
    }
    path = tmp_path / "kinds.yaml"
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    cli = [sys.executable, "-m", "raystilts.cli"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    check = subprocess.run(
        [*cli, "validate", str(path)], capture_output=True, text=True, env=env, check=False
    )
    assert check.returncode == 0, check.stderr
    done = subprocess.run(
        [*cli, "search", str(path), "--workdir", str(tmp_path / "w"), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    runs = load_runs(tracking_uri=default_tracking_uri(tmp_path / "w"), experiment="kinds")
    assert all(r.status == "FINISHED" for r in runs), [(r.params["chain"], r.status) for r in runs]
    by_target: dict[str, list[str]] = {}
    for r in runs:
        by_target.setdefault(r.params["target"], []).append(r.params["chain"])
    assert set(by_target) == set(TARGETS)
    assert all(chains == [f"hellaswag+squad_v1+wiki_mlm>{t}"] for t, chains in by_target.items())
    trained = 0
    for r in runs:
        target = r.params["target"]
        kind, langs = TARGETS[target]
        assert CATALOG[target].kind == kind
        for lang in langs:
            split = "test" if "test" in CATALOG[target].splits(lang) else "dev"  # XCOPA's en
            for metric in CATALOG[target].benchmark_metrics:
                value = r.metrics[f"{split}/{target}/{lang}/{metric}"]
                assert 0.0 <= value <= 1.0, (target, lang, metric, value)
        if r.metrics.get("phase0/cached") == 1.0:  # another target's trial trained it
            continue
        trained += 1
        assert math.isfinite(r.metrics["phase0/train/loss"])
        for task in ("hellaswag", "squad_v1", "wiki_mlm"):  # each head scored on its dev set
            assert 0.0 <= r.metrics[f"phase0/dev_en/{task}"] <= 1.0
    # the shared intermediate phase trains once; the prefix cache serves the other targets
    assert trained == 1, trained
    analysis = subprocess.run(
        [*cli, "analyze", "--experiment", "kinds", "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert analysis.returncode == 0, analysis.stderr
    for target in TARGETS:
        assert target in analysis.stdout
