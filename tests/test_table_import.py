"""``raystilts import`` of a transfer table, then ``analyze`` reads it like searched runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_transfer_tables import HEADER, TABLE

from raystilts.analysis import derived_config_key, describe_unused, runs_to_long
from raystilts.cli import main


def test_import_then_analyze_reads_the_table_like_a_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "t.csv"
    table.write_text(HEADER + TABLE)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["import", str(table), "--experiment", "pub", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "imported 12 runs (1 without a score, FAILED) of 2 targets" in out
    assert "left out: 2 self-transfer rows, 1 'mean' rows" in out
    # a second import of the same file would count every run twice: refused in one line
    assert main(["import", str(table), "--experiment", "pub", "--tracking-uri", uri]) == 2
    assert "already in experiment 'pub'" in capsys.readouterr().err
    assert main(["analyze", "--experiment", "pub", "--tracking-uri", uri, "--format", "json"]) == 0
    captured = capsys.readouterr()
    best = {r["target"]: r for r in json.loads(captured.out)["best_chains"]}
    assert best["x"]["chain"] == ["a"] and best["y"]["chain"] == ["a"]
    assert best["x"]["n_seeds"] == 2 and best["x"]["n_candidates"] == 4  # a, b, c, baseline
    # c's second seed has no score: its run is FAILED, and said so, not dropped silently
    assert "analyze: 1 of 12 runs not used; status FAILED: 1 (" in captured.err


def test_runs_without_config_key_group_by_chain_and_hyperparameters() -> None:
    def run(run_id: str, seed: str, lr: str, status: str = "FINISHED") -> SimpleNamespace:
        params = {"target": "x", "chain": "m>x", "seed": seed, "metric": "acc", "lr": lr}
        metrics = {"dev/x/en/acc": 0.5, "test/x/de/acc": 0.4}
        return SimpleNamespace(
            run_id=run_id, status=status, params=params, tags={}, metrics=metrics
        )

    runs = [run("r1", "0", "1e-3"), run("r2", "1", "1e-3"), run("r3", "0", "3e-3")]
    keys = [derived_config_key(r) for r in runs]
    assert keys[0] == keys[1] != keys[2]  # seeds of one config share it; another lr does not
    assert set(runs_to_long(runs)["config_key"].unique()) == set(keys)
    assert describe_unused(runs) is None
    odd = [
        run("k1", "0", "1e-3", status="KILLED"),
        SimpleNamespace(run_id="n1", status="FINISHED", params={}, tags={}, metrics={}),
        SimpleNamespace(
            run_id="d1",
            status="FINISHED",
            params={"target": "x", "metric": "acc"},
            tags={},
            metrics={"dev/x/en/acc": 0.5},
        ),
    ]
    line = describe_unused([*runs, *odd])
    assert line == (
        "analyze: 3 of 6 runs not used; status KILLED: 1 (k1); "
        "no target param or raystilts.target tag: 1 (n1); no test score: 1 (d1)"
    )


def test_imported_seed_numbers_stay_distinct_when_labels_mix_numbers_and_names(
    tmp_path: Path,
) -> None:
    from raystilts.core.transfer_tables import imported_runs, read_table

    rows = "".join(
        f"a,x,en,{seed},{score},,acc,f.csv\n"
        for seed, score in (("b", 0.6), ("0", 0.7), ("3", 0.5))
    )
    path = tmp_path / "t.csv"
    path.write_text(HEADER + rows)
    table = read_table(path)
    runs, _ = imported_runs(table, source="f.csv")
    numbers = sorted(r.params["seed"] for r in runs)
    assert numbers == ["0", "1", "2"]  # positions: "b" would have been numbered "0" too
    assert {r.params["table_seed"] for r in runs} == {"b", "0", "3"}


def test_unused_line_says_asha_stops_are_the_search_working() -> None:
    """A trial ASHA stopped early ends KILLED (no test scores): the line names the scheduler, so
    a newcomer does not read it as a failure; an interrupted search's trials say how to go on."""

    def run(run_id: str, outcome: str) -> SimpleNamespace:
        return SimpleNamespace(
            run_id=run_id,
            status="KILLED",
            params={"target": "x", "metric": "acc"},
            tags={"raystilts.outcome": outcome},
            metrics={"dev/x/en/acc": 0.5},
        )

    line = describe_unused(
        [run("a1", "stopped_early"), run("a2", "stopped_early"), run("i1", "interrupted")]
    )
    assert line == (
        "analyze: 3 of 3 runs not used; stopped early by the ASHA scheduler (as intended; no "
        "final evaluation): 2 (a1, a2); interrupted by a stopped search (--resume continues "
        "them): 1 (i1)"
    )
