"""Best-chain selection and rendering on hand-built runs with hand-computed expectations."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from raystilts.analysis import TargetResult, best_chains, render, runs_to_long


@dataclass(frozen=True)
class Run:
    run_id: str
    status: str
    params: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _run(
    run_id: str,
    chain: str,
    seed: int,
    config_key: str,
    *,
    dev_en: float,
    test: dict[str, float] | None = None,
    metric: str = "accuracy",
) -> Run:
    """A trial of ``chain``; ``test=None`` is a run ASHA stopped after a dev evaluation."""
    *intermediate, target = chain.split(">")
    metrics = {
        f"dev/{target}/en/{metric}": dev_en,
        f"dev/{target}/en/loss": 9.0,  # not the primary metric
        f"dev/{target}/avg/{metric}": 0.0,  # the logged average is recomputed, not read
        "train/loss": 1.0,  # not the 4-part layout
    }
    for lang, value in (test or {}).items():
        metrics[f"test/{target}/{lang}/{metric}"] = value
    if intermediate:  # intermediate tasks' own scores must not leak into the target's
        metrics[f"dev/{intermediate[0]}/en/{metric}"] = 0.99
    return Run(
        run_id=run_id,
        status="FINISHED" if test else "KILLED",
        params={
            "target": target,
            "chain": chain,
            "intermediate": json.dumps(intermediate),
            "chain_length": str(len(intermediate)),
            "seed": str(seed),
            "model": "tiny",
            "metric": metric,
            "config_key": config_key,
        },
        tags={"raystilts.target": target, "raystilts.trial_id": run_id},
        metrics=metrics,
    )


XNLI = "mini_xnli"
UDPOS = "mini_udpos"
RUNS = [
    # mini_xnli baseline, selected (dev 0.71)
    _run("b0", XNLI, 0, "kb", dev_en=0.70, test={"en": 0.80, "de": 0.60, "sw": 0.40}),
    _run("b1", XNLI, 1, "kb", dev_en=0.72, test={"en": 0.82, "de": 0.62, "sw": 0.44}),
    # a worse baseline config (dev 0.65) with better test scores: never used
    _run("bb0", XNLI, 0, "kb2", dev_en=0.65, test={"en": 0.90, "de": 0.90, "sw": 0.90}),
    _run("bb1", XNLI, 1, "kb2", dev_en=0.65, test={"en": 0.90, "de": 0.90, "sw": 0.90}),
    # the best chain (dev 0.76)
    _run(
        "m0",
        f"mini_mnli>{XNLI}",
        0,
        "k1",
        dev_en=0.75,
        test={"en": 0.84, "de": 0.66, "sw": 0.45},
    ),
    _run(
        "m1",
        f"mini_mnli>{XNLI}",
        1,
        "k1",
        dev_en=0.77,
        test={"en": 0.86, "de": 0.68, "sw": 0.47},
    ),
    # seed 1 stopped early with a high dev score that must not count (else 0.865 would win)
    _run(
        "q0",
        f"mini_qqp>{XNLI}",
        0,
        "k2",
        dev_en=0.74,
        test={"en": 0.99, "de": 0.99, "sw": 0.99},
    ),
    _run("q1", f"mini_qqp>{XNLI}", 1, "k2", dev_en=0.99),
    # stopped early in both seeds: not a candidate
    _run("mq0", f"mini_mnli>mini_qqp>{XNLI}", 0, "k3", dev_en=0.95),
    _run("mq1", f"mini_mnli>mini_qqp>{XNLI}", 1, "k3", dev_en=0.96),
    # mini_udpos: no baseline; three chains tie on dev, fewest phases then name wins
    *(
        _run(f"u{key}{seed}", chain, seed, key, dev_en=0.5, test=test, metric="f1")
        for key, chain, test in [
            ("u1", f"mini_mnli>{UDPOS}", {"en": 0.9, "de": 0.7, "ja": 0.3}),
            ("u2", f"mini_qqp>{UDPOS}", {"en": 0.1, "de": 0.1, "ja": 0.1}),
            ("u3", f"mini_mnli>mini_qqp>{UDPOS}", {"en": 0.1, "de": 0.1, "ja": 0.1}),
        ]
        for seed in (0, 1)
    ),
]


@pytest.fixture(scope="module")
def results() -> list[TargetResult]:
    return best_chains(runs_to_long(RUNS))


def test_runs_to_long_keeps_layout_rows_only() -> None:
    long = runs_to_long(RUNS)
    assert long.columns == [
        "run_id",
        "status",
        "target",
        "chain",
        "intermediate",
        "seed",
        "config_key",
        "primary_metric",
        "split",
        "task",
        "lang",
        "metric",
        "value",
    ]
    assert "avg" not in long["lang"].to_list()
    b0 = long.filter(run_id="b0")
    assert b0.height == 5  # dev en accuracy + dev en loss + three test languages
    assert b0["intermediate"].to_list()[0] == []
    assert long.filter(run_id="mq0")["intermediate"].to_list()[0] == [
        "mini_mnli",
        "mini_qqp",
    ]
    assert long["seed"].dtype.is_integer()


def test_runs_to_long_of_nothing_has_the_schema() -> None:
    long = runs_to_long([])
    assert long.height == 0
    assert long.schema == runs_to_long(RUNS).schema


def test_best_chain_selected_on_english_dev(results: list[TargetResult]) -> None:
    assert [r.target for r in results] == [UDPOS, XNLI]
    xnli = results[1]
    assert xnli.chain == ["mini_mnli"]
    assert xnli.chain_name == f"mini_mnli>{XNLI}"
    assert xnli.config_key == "k1"
    assert xnli.metric == "accuracy"
    assert xnli.n_seeds == 2
    assert xnli.n_candidates == 4  # kb, kb2, k1, k2 (k3 never finished)
    assert xnli.dev_en == pytest.approx(0.76)
    assert xnli.languages == pytest.approx({"en": 0.85, "de": 0.67, "sw": 0.46})
    assert xnli.baseline_config_key == "kb"
    assert xnli.baseline == pytest.approx({"en": 0.81, "de": 0.61, "sw": 0.42})
    assert xnli.gains == pytest.approx({"en": 0.04, "de": 0.06, "sw": 0.04})
    assert xnli.avg == pytest.approx((0.85 + 0.67 + 0.46) / 3)
    assert xnli.baseline_avg == pytest.approx((0.81 + 0.61 + 0.42) / 3)
    assert xnli.gain_avg == pytest.approx(0.14 / 3)


def test_ties_prefer_fewer_phases_then_name_and_missing_baseline(
    results: list[TargetResult],
) -> None:
    udpos = results[0]
    assert udpos.chain_name == f"mini_mnli>{UDPOS}"
    assert udpos.metric == "f1"
    assert udpos.n_candidates == 3
    assert udpos.languages == pytest.approx({"en": 0.9, "de": 0.7, "ja": 0.3})
    assert udpos.baseline == {}
    assert udpos.gains == {}
    assert udpos.avg == pytest.approx(0.633333, abs=1e-6)
    assert math.isnan(udpos.baseline_avg)
    assert math.isnan(udpos.gain_avg)


def test_baseline_can_win() -> None:
    runs = [
        _run("b", XNLI, 0, "kb", dev_en=0.8, test={"en": 0.8, "de": 0.5}),
        _run("m", f"mini_mnli>{XNLI}", 0, "k1", dev_en=0.7, test={"en": 0.9, "de": 0.9}),
    ]
    [result] = best_chains(runs_to_long(runs))
    assert result.chain == []
    assert result.chain_name == XNLI
    assert result.gains == {"en": 0.0, "de": 0.0}


def test_no_finished_run_gives_no_result() -> None:
    assert best_chains(runs_to_long([_run("s", XNLI, 0, "k", dev_en=0.9)])) == []
    assert render([], "table").startswith("no target")
    assert json.loads(render([], "json")) == []


def test_render_json_round_trip(results: list[TargetResult]) -> None:
    loaded = json.loads(render(results, "json"))
    required = {
        "target",
        "chain",
        "chain_name",
        "metric",
        "dev_en",
        "languages",
        "baseline",
    }
    required |= {"gains", "gain_avg", "avg", "baseline_avg", "n_seeds"}
    assert all(required <= set(item) for item in loaded)
    udpos, xnli = loaded
    assert xnli["chain"] == ["mini_mnli"]
    assert xnli["gains"]["de"] == pytest.approx(0.06)
    assert udpos["gain_avg"] is None  # NaN is not JSON


def test_render_csv_one_row_per_target_language(results: list[TargetResult]) -> None:
    rows = list(csv.DictReader(io.StringIO(render(results, "csv"))))
    assert len(rows) == 6
    assert {"target", "chain_name", "lang", "test", "baseline", "gain"} <= set(rows[0])
    sw = next(r for r in rows if r["target"] == XNLI and r["lang"] == "sw")
    assert float(sw["test"]) == pytest.approx(0.46)
    assert float(sw["gain"]) == pytest.approx(0.04)
    assert next(r for r in rows if r["target"] == UDPOS)["baseline"] == ""


def test_render_table(results: list[TargetResult]) -> None:
    table = render(results, "table")
    assert f"{XNLI}  best chain: mini_mnli>{XNLI}  (en dev accuracy 76.0, 4 configs" in table
    assert f"no baseline run for {UDPOS}" in table
    lines = table.splitlines()
    assert any(line.split() == ["de", "67.0", "61.0", "+6.0"] for line in lines)
    assert any(line.split() == ["avg", "63.3", "-", "-"] for line in lines)
    assert max(len(line) for line in lines) <= 100


def test_end_to_end_through_mlflow(tmp_path: Path) -> None:
    from raystilts.tracking import Tracker, default_tracking_uri, load_runs

    tracker = Tracker(tracking_uri=default_tracking_uri(tmp_path), experiment="e2e")
    for run in RUNS[:6]:
        run_id = tracker.start_trial(
            trial_id=run.run_id, run_name=run.run_id, params=run.params, tags=run.tags
        )
        tracker.log_metrics(run_id, {k: 0.0 for k in run.metrics}, step=1)  # superseded
        tracker.log_metrics(run_id, run.metrics, step=2)
        tracker.end_trial(run_id, status="FINISHED")

    records = load_runs(tracking_uri=tracker.tracking_uri, experiment="e2e")
    [result] = best_chains(runs_to_long(records))
    assert result.chain_name == f"mini_mnli>{XNLI}"
    assert result.gains == pytest.approx({"en": 0.04, "de": 0.06, "sw": 0.04})
